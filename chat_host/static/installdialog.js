// @ts-check
// The install dialog: a weblet bundle (a stored blob from the inventory, or a
// file uploaded from this computer: a zip or a single HTML file), the pet name
// it will have, and the powers its guest is given. HOST is marked dangerous
// and needs an extra confirmation. Everything is one install_weblet() call:
// the daemon checks the bundle, and nothing is left behind if it refuses.
// Before that, the chosen bundle's manifest is read by the daemon
// (inspect_weblet) so the dialog can say what it declares beyond its powers:
// a weblet that declares WebRTC may send data to any address.

import { byId, h, replaceChildren } from "./dom.js";
import { PET_NAME, suggestWebletName } from "./parse.js";

/**
 * The largest file sent: the bundle travels in one CapTP frame (16 MiB at
 * most, captp/session.py Limits), with room left for the call around it.
 */
export const MAX_UPLOAD_BYTES = 16 * 1024 * 1024 - 64 * 1024;

/** What each choice means, in plain words. */
export const POWER_CHOICES = [
  { level: "NONE", title: "None", text: "no powers: its own names and mailbox only — the safe default" },
  { level: "ENDO", title: "Network", text: "can look up capabilities by locator and reach the peer network" },
  { level: "HOST", title: "Host", text: "full control of your agent — only for code you trust completely", danger: true },
  { level: "CUSTOM", title: "Custom", text: "only the names you pick below, nothing else" },
];

/** The warning line for a manifest that declares WebRTC (docs/security.md). */
export const WEBRTC_WARNING = "Declares WebRTC: its page may open peer-to-peer connections and send data " +
  "to any address, not only to the sites it lists. Install it only if it needs that.";

export class InstallDialog {
  /**
   * @param {{install: (bundle: Uint8Array|string, name: string, powers: string|string[], from: string) => Promise<void>,
   *          inspect: (bundle: Uint8Array|string) => Promise<{webrtc?: boolean}>,
   *          entries: () => Array<{name: string, type: string}>,
   *          onClose: () => void}} hooks  `install` rejects (with a readable message) to keep the dialog open
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {HTMLDialogElement} */
    this.dialog = byId("install-dialog");
    /** @type {HTMLFormElement} */
    this.form = byId("install-form");
    /** @type {HTMLSelectElement} */
    this.blobSelect = byId("install-blob");
    this.noBlobs = byId("install-no-blobs");
    /** @type {HTMLInputElement} */
    this.fileInput = byId("install-file");
    /** @type {HTMLInputElement} */
    this.nameInput = byId("install-name");
    this.powersEl = byId("install-powers");
    this.customEl = byId("install-custom");
    this.confirmEl = byId("install-host-confirm");
    /** @type {HTMLInputElement} */
    this.confirmBox = byId("install-host-ok");
    this.error = byId("install-error");
    this.webrtcEl = byId("install-webrtc");
    /** Bumped per bundle choice: an answer about an earlier choice is dropped. */
    this.inspected = 0;
    /** @type {HTMLButtonElement} */
    this.submitButton = byId("install-submit");
    /** The name was typed by the user (then choosing a bundle leaves it alone). */
    this.nameTyped = false;

    replaceChildren(this.powersEl, POWER_CHOICES.map((c) => h("label", {
      class: `power-choice${c.danger ? " danger" : ""}`, dataset: { level: c.level },
    },
    h("input", { type: "radio", name: "install-powers", value: c.level }),
    h("span", { class: "power-title" }, c.title, h("code", null, c.level),
      c.danger ? h("span", { class: "danger-tag" }, "dangerous") : null),
    h("span", { class: "power-text" }, c.text))));

    for (const radio of this.form.querySelectorAll('input[name="install-source"]')) {
      radio.addEventListener("change", () => this.showSource());
    }
    this.powersEl.addEventListener("change", () => this.showPowers());
    this.blobSelect.addEventListener("change", () => {
      this.suggestName(this.blobSelect.value);
      this.inspect();
    });
    this.fileInput.addEventListener("change", () => {
      this.suggestName(this.fileInput.files?.[0]?.name ?? "");
      this.inspect();
    });
    this.nameInput.addEventListener("input", () => {
      this.nameTyped = this.nameInput.value.trim() !== "";
    });
    byId("install-cancel").addEventListener("click", () => this.dialog.close());
    this.form.addEventListener("submit", (event) => this.submit(event));
    this.dialog.addEventListener("close", () => this.hooks.onClose());
  }

  /**
   * Open, optionally prefilled: {bundle, name, powers}.
   * @param {{bundle?: string, name?: string|null, powers?: string|string[]}} [prefill]
   */
  open(prefill = {}) {
    this.error.hidden = true;
    this.confirmBox.checked = false;
    this.fileInput.value = "";
    const blobs = this.hooks.entries().filter((e) => e.type === "readable-blob").map((e) => e.name).sort();
    replaceChildren(this.blobSelect,
      h("option", { value: "" }, blobs.length ? "Choose a stored bundle…" : "(no stored blobs)"),
      blobs.map((n) => h("option", { value: n }, n)));
    this.noBlobs.hidden = blobs.length > 0;
    const fromInventory = prefill.bundle !== undefined || blobs.length > 0;
    this.setSource(fromInventory ? "inventory" : "file");
    this.blobSelect.value = prefill.bundle && blobs.includes(prefill.bundle) ? prefill.bundle : "";
    this.nameInput.value = prefill.name ?? "";
    this.nameTyped = Boolean(prefill.name);
    if (!prefill.name && this.blobSelect.value) this.suggestName(this.blobSelect.value);
    this.inspect();

    const powers = prefill.powers ?? "NONE";
    const level = Array.isArray(powers) ? "CUSTOM" : powers;
    this.renderCustom(Array.isArray(powers) ? powers : []);
    for (const radio of this.powersEl.querySelectorAll("input")) radio.checked = radio.value === level;
    this.showPowers();

    if (!this.dialog.open) this.dialog.showModal();
    (this.source() === "inventory" ? this.blobSelect : this.fileInput).focus();
  }

  source() {
    return /** @type {HTMLInputElement | null} */ (this.form.querySelector('input[name="install-source"]:checked'))?.value ?? "inventory";
  }

  setSource(value) {
    for (const radio of /** @type {NodeListOf<HTMLInputElement>} */ (this.form.querySelectorAll('input[name="install-source"]'))) radio.checked = radio.value === value;
    this.showSource();
  }

  showSource() {
    this.inspect();
    const fromFile = this.source() === "file";
    this.blobSelect.hidden = fromFile;
    this.noBlobs.hidden = fromFile || this.blobSelect.options.length > 1;
    this.fileInput.hidden = !fromFile;
  }

  /** The chosen bundle, unread: a stored blob's name, a File, or null. */
  chosen() {
    if (this.source() === "file") return this.fileInput.files?.[0] ?? null;
    return this.blobSelect.value || null;
  }

  /**
   * Ask the daemon what the chosen bundle declares, and show a warning line
   * if it declares WebRTC. A bundle it cannot read shows nothing here:
   * Install then says why.
   */
  async inspect() {
    const turn = ++this.inspected;
    this.webrtcEl.hidden = true;
    const chosen = this.chosen();
    if (!chosen || (typeof chosen !== "string" && chosen.size > MAX_UPLOAD_BYTES)) return;
    let manifest;
    try {
      const bundle = typeof chosen === "string" ? chosen : new Uint8Array(await chosen.arrayBuffer());
      manifest = await this.hooks.inspect(bundle);
    } catch {
      return;
    }
    if (turn !== this.inspected || manifest?.webrtc !== true) return;
    this.webrtcEl.textContent = WEBRTC_WARNING;
    this.webrtcEl.hidden = false;
  }

  level() {
    return /** @type {HTMLInputElement | null} */ (this.powersEl.querySelector("input:checked"))?.value ?? "NONE";
  }

  showPowers() {
    const level = this.level();
    for (const label of /** @type {NodeListOf<HTMLElement>} */ (this.powersEl.querySelectorAll(".power-choice"))) {
      label.classList.toggle("selected", label.dataset.level === level);
    }
    this.customEl.hidden = level !== "CUSTOM";
    this.confirmEl.hidden = level !== "HOST";
    if (level !== "HOST") this.confirmBox.checked = false;
  }

  renderCustom(checked) {
    const names = this.hooks.entries().map((e) => e.name).filter((n) => PET_NAME.test(n)).sort();
    const chosen = new Set(checked);
    replaceChildren(this.customEl,
      names.length === 0
        ? h("p", { class: "muted" }, "No names to give yet.")
        : names.map((n) => h("label", { class: "check" },
          h("input", { type: "checkbox", value: n, checked: chosen.has(n) }), h("code", null, n))));
  }

  suggestName(source) {
    if (this.nameTyped || !source) return;
    const taken = new Set(this.hooks.entries().map((e) => e.name));
    this.nameInput.value = suggestWebletName(source, taken);
  }

  /** The form as install arguments, or an Error saying what to fix. */
  async read() {
    let bundle;
    let from;
    if (this.source() === "file") {
      const file = this.fileInput.files?.[0];
      if (!file) throw new Error("Choose a file: a weblet's .zip, or a single .html file.");
      if (file.size > MAX_UPLOAD_BYTES) {
        throw new Error(`${file.name} is too large (${(file.size / 1048576).toFixed(1)} MiB; at most 16 MiB can be sent).`);
      }
      bundle = new Uint8Array(await file.arrayBuffer());
      from = `upload: ${file.name}`;
    } else {
      bundle = this.blobSelect.value;
      if (!bundle) throw new Error("Choose a stored bundle, or upload a file.");
      from = bundle;
    }
    const name = this.nameInput.value.trim();
    if (!PET_NAME.test(name)) {
      throw new Error(name ? `${JSON.stringify(name)} is not a pet name (lowercase letters, digits and -).` : "Give the weblet a name.");
    }
    const level = this.level();
    /** @type {string | string[]} */
    let powers = level;
    if (level === "CUSTOM") {
      powers = [.../** @type {NodeListOf<HTMLInputElement>} */ (this.customEl.querySelectorAll("input:checked"))].map((box) => box.value);
      if (powers.length === 0) throw new Error("Pick at least one name to give, or choose None.");
    }
    if (level === "HOST" && !this.confirmBox.checked) {
      throw new Error("Host powers give this code full control of your agent: tick the confirmation to go on.");
    }
    return { bundle, name, powers, from };
  }

  async submit(event) {
    event.preventDefault();
    this.submitButton.disabled = true;
    try {
      let args;
      try {
        args = await this.read();
      } catch (error) {
        this.showError(error.message);
        return;
      }
      this.error.hidden = true;
      try {
        await this.hooks.install(args.bundle, args.name, args.powers, args.from);
        this.dialog.close();
      } catch (error) {
        this.showError(error?.message ?? String(error));
      }
    } finally {
      this.submitButton.disabled = false;
    }
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = false;
  }
}
