// @ts-check
// The widget manager in the chat page (`/weblets`, or the Weblets… button): an
// install box (from a store, a URL or a file, with a progress line for
// downloads), and the host's weblets — built-ins marked — each with an enable
// switch, its chat commands (from its manifest's interface.commands: name,
// arguments, read-only or writes), settings (its panels' config as JSON), an
// update badge (asking again only for the powers the new version adds) and
// Uninstall. Everything is `E(host).weblets()` (daemon/weblet_manager.py):
// the daemon owns the list; this page only shows it.
//
// Below the list, the chat agent's view (`E(host).agent()`, docs/agent.md):
// the "Always" grants per weblet+command, each with Revoke, and the newest
// audit rows — time, weblet, command, arguments, who asked, decision, outcome
// and its detail.
//
// Every manifest and catalogue string is shown as text: the DOM is built with
// dom.js's `h`, whose strings become text nodes; nothing here sets HTML.

import { byId, h, replaceChildren } from "./dom.js";
import { formatError } from "./format.js";
import { MAX_UPLOAD_BYTES } from "./installdialog.js";
import { ASKED_BY } from "./agent.js";
import { LEVEL_WORDS } from "./weblets.js";

/** The store shown first (the one shipped with ocapd). */
const DEFAULT_STORE = "examples";
/** Audit rows the manager shows (newest first); `ocapd audit` and GET /api/audit have them all. */
const AUDIT_SHOWN = 50;
/** An audit decision, in words. */
const DECISION_WORDS = {
  read_only: "read-only", once: "allowed once", always: "allowed always", granted: "allowed (always)",
  denied: "denied", expired: "expired", invalid: "refused",
};
/** A panel's config, as the registry caps it (daemon/registry.py MAX_CONFIG_BYTES). */
const MAX_CONFIG_BYTES = 16 * 1024;

/**
 * @typedef {{name?: string, description?: string, args?: Record<string, string>, readOnly?: boolean}} CommandSpec
 * @typedef {{panel: string, label: string|null, url: string|null, config: Record<string, any>}} PanelRow
 * @typedef {{id: string, name: string, builtin: boolean, formula: string|null, title: string, description: string,
 *            kind: string, version: string, source: string, source_ref: string, store: string|null,
 *            store_id: string|null, enabled: boolean, level: string|null, live: boolean,
 *            manifest: Record<string, any>, instances: PanelRow[],
 *            update: {version: string, powers_added: string[], notes: string}|null}} Entry
 */

/** Bytes in words: 812 B, 12.3 KiB, 4.1 MiB. */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 1024) return `${Math.max(0, Math.round(n || 0))} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

/** The progress line's text for `{received, total}`. */
export function progressText(what, progress) {
  const { received, total } = progress;
  if (typeof total === "number" && total > 0) {
    const percent = Math.min(100, Math.floor((received * 100) / total));
    return `Downloading ${what}… ${formatBytes(received)} of ${formatBytes(total)} (${percent}%)`;
  }
  return `Downloading ${what}… ${formatBytes(received)}`;
}

/** A manifest's commands as [name, spec] pairs (anything malformed is skipped). */
export function commandsOf(manifest) {
  const commands = manifest?.interface?.commands;
  if (!commands || typeof commands !== "object") return [];
  return Object.entries(commands).filter(([, spec]) => spec && typeof spec === "object");
}

/** `(by: number, text: string)` for a command's args, or "". */
export function argsText(args) {
  const pairs = args && typeof args === "object" ? Object.entries(args) : [];
  return pairs.length ? `(${pairs.map(([k, t]) => `${k}: ${String(t)}`).join(", ")})` : "";
}

export class WebletManagerView {
  /**
   * @param {{manager: () => Promise<any>, callOn: (ref: any, method: string, ...args: any[]) => Promise<any>,
   *          nameOf: (entry: Entry) => string,
   *          open: (entry: Entry) => Promise<void>,
   *          changed: (entry: Entry, what: "enabled"|"disabled"|"removed"|"updated"|"installed") => void,
   *          agent: () => Promise<any>,
   *          onClose: () => void}} hooks  agent: the host's chat agent, E(host).agent()
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {HTMLDialogElement} */
    this.dialog = byId("manager-dialog");
    this.grantsEl = byId("agent-grants");
    this.auditEl = byId("agent-audit");
    this.listEl = byId("manager-list");
    this.storeEl = byId("manager-store");
    this.countEl = byId("manager-count");
    /** @type {HTMLSelectElement} */
    this.storeSelect = byId("manager-store-name");
    /** @type {HTMLInputElement} */
    this.urlInput = byId("manager-url");
    /** @type {HTMLInputElement} */
    this.fileInput = byId("manager-file");
    /** @type {HTMLInputElement} */
    this.nameInput = byId("manager-name");
    this.progressEl = byId("manager-progress");
    /** @type {HTMLProgressElement} */
    this.progressBar = byId("manager-progress-bar");
    this.progressText = byId("manager-progress-text");
    this.errorEl = byId("manager-error");
    /** @type {Entry[]} */
    this.entries = [];
    /** Weblet id → what is unfolded under its row ("settings" | "update" | "remove"). */
    this.unfolded = new Map();
    /** One install or update at a time: its progress is the one line. */
    this.busy = false;
    /** Bumped per render of the list: a late answer about an older list is dropped. */
    this.generation = 0;

    for (const radio of this.dialog.querySelectorAll('input[name="manager-source"]')) {
      radio.addEventListener("change", () => this.showSource());
    }
    byId("manager-close").addEventListener("click", () => this.dialog.close());
    byId("manager-url-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const url = this.urlInput.value.trim();
      if (!url) return this.fail("Give the weblet's https:// address.");
      this.install({ url }, null, url);
    });
    byId("manager-file-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = this.fileInput.files?.[0];
      if (!file) return this.fail("Choose a .zip or .html file.");
      if (file.size > MAX_UPLOAD_BYTES) return this.fail(`${file.name} is larger than ${formatBytes(MAX_UPLOAD_BYTES)}.`);
      const bytes = new Uint8Array(await file.arrayBuffer());
      this.install({ filename: file.name.slice(0, 255) }, bytes, file.name);
    });
    this.storeSelect.addEventListener("change", () => this.loadStore());
    this.dialog.addEventListener("close", () => this.hooks.onClose());
  }

  get isOpen() {
    return this.dialog.open;
  }

  async open() {
    if (!this.dialog.open) {
      this.dialog.showModal();
      byId("manager-body").focus(); // not the ✕ (showModal's first focusable): Esc closes, arrows scroll
    }
    this.errorEl.hidden = true;
    if (!this.busy) this.progressEl.hidden = true;
    this.showSource();
    await Promise.all([this.refresh().then(() => this.refreshAgent()), this.loadStores()]);
  }

  close() {
    this.dialog.close();
  }

  showSource() {
    const checked = /** @type {HTMLInputElement|null} */ (this.dialog.querySelector('input[name="manager-source"]:checked'));
    const source = checked?.value ?? "store";
    for (const pane of this.dialog.querySelectorAll("[data-source-pane]")) {
      /** @type {HTMLElement} */ (pane).hidden = /** @type {HTMLElement} */ (pane).dataset.sourcePane !== source;
    }
  }

  fail(error) {
    this.errorEl.textContent = typeof error === "string" ? error : formatError(error);
    this.errorEl.hidden = false;
  }

  // -- the list ---------------------------------------------------------------------------------

  async refresh() {
    const generation = ++this.generation;
    try {
      const m = await this.hooks.manager();
      const entries = await this.hooks.callOn(m, "list");
      if (generation !== this.generation) return;
      this.entries = Array.isArray(entries) ? entries : [];
      this.renderList();
    } catch (error) {
      if (generation === this.generation) this.fail(error);
    }
  }

  renderList() {
    const installed = this.entries.filter((e) => !e.builtin).length;
    this.countEl.textContent = `${installed} installed`;
    this.listEl.dataset.state = "ready";
    replaceChildren(this.listEl, this.entries.map((entry) => this.renderEntry(entry)));
  }

  /** @param {Entry} entry */
  renderEntry(entry) {
    const manifest = entry.manifest ?? {};
    const title = String(entry.title || manifest.title || entry.name);
    const level = entry.level ? String(entry.level) : "";
    const commands = commandsOf(manifest);
    const unfolded = this.unfolded.get(entry.id);
    const name = entry.builtin ? entry.name : this.hooks.nameOf(entry);
    return h("li", {
      class: "mw", dataset: { id: entry.id, name, enabled: String(entry.enabled), builtin: String(entry.builtin), kind: entry.kind },
    },
    h("div", { class: "mw-main" },
      h("div", { class: "mw-head" },
        h("h3", { class: "mw-title", title }, title),
        entry.builtin ? h("span", { class: "tag tag-builtin", title: "part of ocapd's chat page: always on" }, "built-in") : null,
        h("span", { class: "mw-version" }, `v${entry.version}`),
        entry.update ? h("button", {
          class: "tag tag-update", type: "button", dataset: { action: "update" },
          title: `Version ${entry.update.version} is in the store ${entry.store ?? ""}`,
          onclick: () => this.toggle(entry, "update"),
        }, `Update to ${entry.update.version}`) : null),
      h("p", { class: "mw-meta" },
        entry.builtin ? "part of ocapd's chat page" : h("code", { class: "mw-name", title: "its name in your inventory" }, name),
        entry.builtin ? null : ` · ${sourceText(entry)}`,
        entry.kind && entry.kind !== "iframe" && !entry.builtin ? ` · ${entry.kind}` : null,
        level ? " · " : null,
        level ? h("span", {
          class: `level-badge level-${level.toLowerCase()}`, title: `installed with ${level} powers: ${LEVEL_WORDS[level] ?? level}`,
        }, level) : null),
      manifest.description ? h("p", { class: "mw-description" }, String(manifest.description)) : null,
      this.renderCommands(commands, entry.enabled)),
    h("div", { class: "mw-side" },
      h("label", { class: "switch", title: entry.builtin ? "Built-ins are always on" : "Off: the agent does not see it and its panels close" },
        h("input", {
          type: "checkbox", role: "switch", class: "mw-enabled", checked: entry.enabled, disabled: entry.builtin,
          "aria-label": `${title} enabled`,
          onchange: (event) => this.setEnabled(entry, /** @type {HTMLInputElement} */ (event.target).checked),
        }),
        h("span", { class: "switch-track", "aria-hidden": "true" }),
        h("span", { class: "switch-text" }, entry.enabled ? "Enabled" : "Disabled")),
      entry.builtin ? null : h("div", { class: "mw-actions" },
        h("button", {
          class: "button small primary", type: "button", dataset: { action: "open" }, disabled: !entry.enabled,
          title: entry.enabled ? "Open it in the weblet panel" : "Enable it first", onclick: () => this.openEntry(entry),
        }, "Open"),
        h("button", {
          class: "button small secondary", type: "button", dataset: { action: "settings" },
          "aria-expanded": String(unfolded === "settings"), onclick: () => this.toggle(entry, "settings"),
        }, "Settings"),
        h("button", {
          class: "button small danger", type: "button", dataset: { action: "uninstall" },
          onclick: () => this.toggle(entry, "remove"),
        }, "Uninstall"))),
    unfolded ? h("div", { class: "mw-detail", dataset: { detail: unfolded } }, this.renderDetail(entry, unfolded)) : null);
  }

  renderCommands(commands, enabled) {
    if (!commands.length) return h("p", { class: "mw-chat muted" }, "Chat: —");
    return h("div", { class: "mw-chat", dataset: { off: String(!enabled) } },
      h("span", { class: "mw-chat-label" }, enabled ? "Chat:" : "Chat (when enabled):"),
      h("ul", { class: "mw-commands" }, commands.map(([cname, spec]) => h("li", {
        class: "mw-command", dataset: { command: cname, readonly: String(spec.readOnly === true) },
      },
      h("code", { class: "mw-command-name" }, cname, argsText(spec.args)),
      h("span", {
        class: `tag ${spec.readOnly === true ? "tag-read" : "tag-write"}`,
        title: spec.readOnly === true ? "runs without asking" : "asks you before it runs",
      }, spec.readOnly === true ? "read-only" : "writes"),
      spec.description ? h("span", { class: "mw-command-description" }, String(spec.description)) : null))));
  }

  toggle(entry, what) {
    if (this.unfolded.get(entry.id) === what) this.unfolded.delete(entry.id);
    else this.unfolded.set(entry.id, what);
    this.renderList();
    const detail = this.listEl.querySelector(`.mw[data-id="${CSS.escape(entry.id)}"] .mw-detail`);
    /** @type {HTMLElement|null} */ (detail?.querySelector("textarea, button") ?? null)?.focus();
  }

  renderDetail(entry, what) {
    if (what === "settings") return this.renderSettings(entry);
    if (what === "update") return this.renderUpdate(entry);
    return this.renderRemove(entry);
  }

  renderSettings(entry) {
    const panels = entry.instances ?? [];
    if (!panels.length) {
      return h("p", { class: "muted small" }, "No panels yet: Open makes one. A panel's settings are kept with it.");
    }
    return panels.map((panel) => {
      const text = JSON.stringify(panel.config ?? {}, null, 2);
      const area = h("textarea", {
        class: "mw-config", rows: String(Math.min(10, Math.max(3, text.split("\n").length))), spellcheck: "false",
        "aria-label": `Settings of panel ${panel.panel} (JSON)`, value: text,
      });
      const status = h("span", { class: "small mw-config-status", role: "status" });
      const save = async () => {
        let config;
        try {
          config = JSON.parse(area.value);
        } catch (error) {
          status.textContent = `Not JSON: ${error instanceof Error ? error.message : String(error)}`;
          status.dataset.state = "error";
          return;
        }
        if (!config || typeof config !== "object" || Array.isArray(config)) {
          status.textContent = "Settings are a JSON object: { … }";
          status.dataset.state = "error";
          return;
        }
        if (new TextEncoder().encode(JSON.stringify(config)).length > MAX_CONFIG_BYTES) {
          status.textContent = `At most ${formatBytes(MAX_CONFIG_BYTES)} of JSON.`;
          status.dataset.state = "error";
          return;
        }
        try {
          const m = await this.hooks.manager();
          await this.hooks.callOn(m, "set_instance_config", entry.id, panel.panel, config);
          panel.config = config;
          status.textContent = "Saved. The panel reads it when it (re)loads.";
          status.dataset.state = "ok";
        } catch (error) {
          status.textContent = formatError(error);
          status.dataset.state = "error";
        }
      };
      return h("div", { class: "mw-panel", dataset: { panel: panel.panel } },
        h("div", { class: "mw-panel-head" },
          h("span", { class: "small" }, "Panel "), h("code", { class: "small" }, panel.panel)),
        area,
        h("div", { class: "mw-panel-actions" },
          h("button", { class: "button small primary", type: "button", dataset: { action: "save" }, onclick: save }, "Save"),
          status));
    });
  }

  renderUpdate(entry) {
    const update = entry.update;
    if (!update) return h("p", { class: "muted small" }, "This is the newest version.");
    const added = Array.isArray(update.powers_added) ? update.powers_added : [];
    return [
      h("p", { class: "small" }, `${entry.title} ${entry.version} → ${update.version}`),
      update.notes ? h("p", { class: "small muted mw-notes" }, String(update.notes)) : null,
      added.length
        ? [h("p", { class: "small declares-warning" }, "The new version also asks for:"),
          h("ul", { class: "mw-powers" }, added.map((p) => h("li", null, h("code", null, String(p)))))]
        : h("p", { class: "small muted" }, "It asks for no powers the installed version did not."),
      h("div", { class: "mw-panel-actions" },
        h("button", {
          class: "button small primary", type: "button", dataset: { action: "apply-update" },
          onclick: () => this.update(entry, update.version, added),
        }, added.length ? `Update and allow ${added.join(", ")}` : `Update to ${update.version}`),
        h("button", {
          class: "button small secondary", type: "button", onclick: () => this.toggle(entry, "update"),
        }, "Not now")),
    ];
  }

  renderRemove(entry) {
    const panels = (entry.instances ?? []).length;
    return [
      h("p", { class: "small" }, `Uninstall ${entry.title}? It stops, and its names`,
        panels ? ` and ${panels} panel${panels === 1 ? "" : "s"}` : "", " go. What it was given stays yours."),
      h("div", { class: "mw-panel-actions" },
        h("button", {
          class: "button small danger", type: "button", dataset: { action: "confirm-uninstall" },
          onclick: () => this.remove(entry),
        }, "Uninstall"),
        h("button", { class: "button small secondary", type: "button", onclick: () => this.toggle(entry, "remove") }, "Keep it")),
    ];
  }

  // -- the chat agent: grants and the audit ---------------------------------------------------

  /** The title of weblet `id` as the list shows it, else `name`. */
  titleOf(id, name) {
    const entry = this.entries.find((e) => e.id === id);
    return String(entry?.title || entry?.manifest?.title || name || id);
  }

  async refreshAgent() {
    let agent;
    try {
      agent = await this.hooks.agent();
    } catch {
      this.grantsEl.dataset.state = this.auditEl.dataset.state = "none";
      replaceChildren(this.grantsEl, h("li", { class: "muted small" }, "No chat agent here."));
      replaceChildren(this.auditEl);
      return;
    }
    try {
      const [grants, audit] = await Promise.all([
        this.hooks.callOn(agent, "grants"), this.hooks.callOn(agent, "audit", -1, AUDIT_SHOWN)]);
      this.renderGrants(agent, Array.isArray(grants) ? grants : []);
      this.renderAudit(Array.isArray(audit) ? audit : []);
    } catch (error) {
      this.fail(error);
    }
  }

  renderGrants(agent, grants) {
    this.grantsEl.dataset.state = "ready";
    if (!grants.length) {
      replaceChildren(this.grantsEl, h("li", { class: "muted small" },
        "None: every command that changes things asks you first. \"Always\" in the Allow dialog adds one here."));
      return;
    }
    replaceChildren(this.grantsEl, grants.map((g) => h("li", { class: "grant", dataset: { tool: String(g.tool) } },
      h("span", { class: "grant-title" }, this.titleOf(g.weblet, g.weblet_name)),
      h("code", { class: "grant-tool" }, String(g.tool)),
      h("span", { class: "small muted" }, `since ${timeText(g.created)}`),
      h("button", {
        class: "button small secondary", type: "button", dataset: { action: "revoke" },
        title: "Ask me again before this command runs",
        onclick: async () => {
          try {
            await this.hooks.callOn(agent, "revoke", String(g.weblet), String(g.command));
          } catch (error) {
            this.fail(error);
          }
          await this.refreshAgent();
        },
      }, "Revoke"))));
  }

  renderAudit(rows) {
    this.auditEl.dataset.state = "ready";
    if (!rows.length) {
      replaceChildren(this.auditEl, h("p", { class: "muted small" }, "No calls yet."));
      return;
    }
    const newest = [...rows].sort((a, b) => b.seq - a.seq);
    replaceChildren(this.auditEl, h("table", { class: "audit-table" },
      h("thead", null, h("tr", null, ["Time", "Weblet", "Command", "Arguments", "Asked", "Decision", "Outcome"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, newest.map((r) => h("tr", {
        class: "audit-row", dataset: { call: String(r.call), decision: String(r.decision), outcome: String(r.outcome) },
      },
      h("td", { class: "audit-time" }, timeText(r.time)),
      h("td", { class: "audit-weblet", title: String(r.weblet_name) }, this.titleOf(r.weblet, r.weblet_name)),
      h("td", null, h("code", { class: "audit-command" }, String(r.command))),
      h("td", null, h("code", { class: "audit-args" }, String(r.args))),
      h("td", { class: "audit-asked" }, ASKED_BY[r.asked_by] ?? String(r.asked_by)),
      h("td", { class: "audit-decision" }, DECISION_WORDS[r.decision] ?? String(r.decision)),
      h("td", { class: "audit-outcome" }, String(r.outcome), r.detail ? h("div", { class: "audit-detail small muted" }, String(r.detail)) : null))))));
  }

  // -- acting -----------------------------------------------------------------------------------

  async setEnabled(entry, enabled) {
    try {
      const m = await this.hooks.manager();
      await this.hooks.callOn(m, "enable", entry.id, enabled);
      entry.enabled = enabled;
      this.hooks.changed(entry, enabled ? "enabled" : "disabled");
    } catch (error) {
      this.fail(error);
    }
    await this.refresh();
  }

  async openEntry(entry) {
    this.dialog.close();
    await this.hooks.open(entry);
  }

  async remove(entry) {
    try {
      const m = await this.hooks.manager();
      await this.hooks.callOn(m, "remove", entry.id);
      this.unfolded.delete(entry.id);
      this.hooks.changed(entry, "removed");
    } catch (error) {
      this.fail(error);
    }
    await Promise.all([this.refresh(), this.loadStore()]);
  }

  async update(entry, version, accepted) {
    const result = await this.run(`${entry.title} ${version}`,
      (m) => this.hooks.callOn(m, "start_update", entry.id, version, accepted));
    if (result) {
      this.unfolded.delete(entry.id);
      this.hooks.changed(result.weblet ?? entry, "updated");
      this.done(`Updated ${entry.title} to ${version}.`);
    }
    await Promise.all([this.refresh(), this.loadStore()]);
  }

  /** Install from `spec` (and `bytes` for a file); `what` names it in the progress line. */
  async install(spec, bytes, what) {
    const name = this.nameInput.value.trim();
    const full = name ? { ...spec, name } : spec;
    const result = await this.run(what, (m) => bytes
      ? this.hooks.callOn(m, "start_install", full, bytes)
      : this.hooks.callOn(m, "start_install", full));
    if (result) {
      this.nameInput.value = "";
      this.urlInput.value = "";
      this.fileInput.value = "";
      this.hooks.changed(result, "installed");
      this.done(`Installed ${result.title || result.name} as ${result.name}. Open it from the list below.`);
      this.unfolded.delete(result.id);
    }
    await Promise.all([this.refresh(), this.loadStore()]);
    if (result) {
      this.listEl.querySelector(`.mw[data-id="${CSS.escape(String(result.id))}"]`)?.scrollIntoView({ block: "nearest" });
    }
  }

  /** Start a job (start_install / start_update), follow its progress line, and return its result (null on failure). */
  async run(what, start) {
    if (this.busy) {
      this.fail("One install at a time: wait for the one in progress.");
      return null;
    }
    this.busy = true;
    this.errorEl.hidden = true;
    this.dialog.dataset.busy = "true";
    this.showProgress(`Starting ${what}…`, null);
    try {
      const m = await this.hooks.manager();
      const job = await start(m);
      for (;;) {
        const { done, value } = await this.hooks.callOn(job, "next");
        if (done) break;
        if (value?.progress) {
          const { received, total } = value.progress;
          const complete = typeof total === "number" && received >= total;
          this.showProgress(complete ? `Checking and installing ${what}…` : progressText(what, value.progress),
            typeof total === "number" && total > 0 ? received / total : null);
        } else if (value?.done === undefined) {
          this.showProgress(`Installing ${what}…`, null);
        }
      }
      return await this.hooks.callOn(job, "result");
    } catch (error) {
      this.progressEl.hidden = true;
      this.fail(error);
      return null;
    } finally {
      this.busy = false;
      delete this.dialog.dataset.busy;
    }
  }

  showProgress(text, fraction) {
    this.progressEl.hidden = false;
    this.progressEl.dataset.state = "running";
    this.progressText.textContent = text;
    if (fraction === null) this.progressBar.removeAttribute("value");
    else this.progressBar.value = Math.max(0, Math.min(1, fraction));
  }

  done(text) {
    this.progressEl.hidden = false;
    this.progressEl.dataset.state = "done";
    this.progressBar.value = 1;
    this.progressText.textContent = text;
  }

  // -- the store --------------------------------------------------------------------------------

  async loadStores() {
    try {
      const m = await this.hooks.manager();
      const names = await this.hooks.callOn(m, "stores");
      const current = this.storeSelect.value || DEFAULT_STORE;
      replaceChildren(this.storeSelect, (Array.isArray(names) ? names : []).map((n) => h("option", { value: String(n) }, String(n))));
      if ([...this.storeSelect.options].some((o) => o.value === current)) this.storeSelect.value = current;
      await this.loadStore();
    } catch (error) {
      this.fail(error);
    }
  }

  async loadStore() {
    const store = this.storeSelect.value;
    if (!store) {
      replaceChildren(this.storeEl, h("p", { class: "muted small" }, "No stores."));
      return;
    }
    this.storeEl.dataset.state = "loading";
    try {
      const m = await this.hooks.manager();
      const catalogue = await this.hooks.callOn(m, "store", store);
      if (this.storeSelect.value !== store) return;
      this.storeEl.dataset.state = "ready";
      const items = Array.isArray(catalogue?.weblets) ? catalogue.weblets : [];
      replaceChildren(this.storeEl, items.length
        ? h("ul", { class: "store-items" }, items.map((item) => this.renderStoreItem(store, item)))
        : h("p", { class: "muted small" }, "This store lists no weblets."));
    } catch (error) {
      this.storeEl.dataset.state = "error";
      replaceChildren(this.storeEl, h("p", { class: "form-error" }, formatError(error)));
    }
  }

  renderStoreItem(store, item) {
    const versions = Array.isArray(item.versions) ? item.versions : [];
    const select = h("select", { class: "select small-select", "aria-label": `Version of ${item.title}` },
      versions.map((v, i) => h("option", { value: String(v.version) }, `${v.version}${i === 0 ? " (newest)" : ""}`)));
    const powersOf = () => versions.find((v) => v.version === select.value)?.powers ?? [];
    const powersEl = h("span", { class: "small muted store-powers" });
    const showPowers = () => {
      const powers = powersOf();
      powersEl.textContent = powers.length ? `will ask for: ${powers.join(", ")}` : "asks for no powers";
    };
    select.addEventListener("change", showPowers);
    showPowers();
    const installed = item.installed;
    return h("li", { class: "store-item", dataset: { id: String(item.id), installed: String(Boolean(installed)) } },
      h("div", { class: "store-text" },
        h("div", { class: "mw-head" },
          h("span", { class: "store-title" }, String(item.title)),
          installed ? h("span", { class: "tag tag-installed" }, `installed ${installed.version}`) : null,
          item.update_available ? h("span", { class: "tag tag-update" }, `update: ${item.latest}`) : null),
        item.description ? h("p", { class: "small muted store-description" }, String(item.description)) : null,
        powersEl),
      h("div", { class: "store-actions" },
        select,
        h("button", {
          class: `button small ${installed ? "secondary" : "primary"}`, type: "button", dataset: { action: "install" },
          disabled: Boolean(installed),
          title: installed ? "Installed: update it from its row in the list" : `Install ${item.title} with no powers`,
          onclick: () => this.install({ store, id: item.id, version: select.value }, null, String(item.title)),
        }, installed ? "Installed" : "Install")));
  }
}

/** Seconds since the epoch as local date and time, to the second. */
function timeText(seconds) {
  const date = new Date(Number(seconds) * 1000);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function sourceText(entry) {
  if (entry.source === "store") return `from the store ${entry.store ?? ""}`.trim();
  if (entry.source === "url") return `from ${entry.source_ref}`;
  if (entry.source === "file") return entry.source_ref ? `from the file ${entry.source_ref}` : "from a file";
  return String(entry.source);
}
