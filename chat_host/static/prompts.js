// @ts-check
// Permission prompts: a weblet asking its host for something.
//
// A weblet's page asks with E(powers).request("HOST", description, name); the
// request reaches this agent's inbox from the weblet's guest handle. Such a
// request is shown as an Allow/Deny dialog drawn by this page — never inside
// the weblet's frame, which could dress up a fake one — naming the weblet by
// its pet name and title, with its description as text. Allow answers with
// the value of a name picked from the inventory; Deny declines. Requests from
// anyone else stay in the inbox as before; a prompt closed without answering
// (Esc, "Later") leaves its request pending there.
//
// Prompt spam (issue 9, item 13): the daemon lets one sender have only a few
// requests waiting at a time (DaemonLimits.pending_requests), and here the
// user can close a weblet's whole queue at once and see no more prompts from
// it ("Block requests from this weblet", for as long as the tab lives); its
// requests stay in the inbox, to answer or dismiss there. The dialog says how
// many more prompts are waiting.
//
// What to give (issue 10, item 8): the "Give it" list leads with what a
// weblet usually asks for — values, then directories — then the rest, and
// ends with agent powers (hosts and guests, AGENT): giving one hands the
// weblet everything that agent can do, so they are grouped under a
// "dangerous" heading and Allow needs the same extra tick as a HOST install.

import { byId, h, replaceChildren } from "./dom.js";
import { NAME_PATH } from "./parse.js";
import { LEVEL_WORDS } from "./weblets.js";

/**
 * Allow is not clickable for this long after a prompt appears, so a click
 * meant for the weblet's page (which may time its request to a click) cannot
 * land on Allow instead.
 */
const ARM_DELAY_MS = 500;
/** Longest description shown; a weblet writes it, so it is bounded like any untrusted text. */
const MAX_DESCRIPTION = 500;

/**
 * The "Give it" list's groups, in order. `types`: the formula types a group
 * holds (null: every type no other group takes). Agent powers come last.
 */
export const GIVE_GROUPS = [
  { key: "values", title: "Values", types: ["marshal", "readable-blob", "text-store", "eval"] },
  { key: "directories", title: "Directories", types: ["directory"] },
  { key: "other", title: "Other", types: null },
  { key: "agents", title: "Agent powers — dangerous", types: ["host", "guest"], danger: true },
];

/** The group a name of formula type `type` goes in. */
export function giveGroup(type) {
  return GIVE_GROUPS.find((g) => g.types?.includes(type)) ?? GIVE_GROUPS.find((g) => g.types === null);
}

/**
 * The names a prompt offers, grouped and in order: [{group, names}], empty
 * groups left out. In each group pet names come first, then special names
 * (SELF, AGENT, …), each alphabetically.
 * @param {Array<{name: string, type: string}>} entries
 */
export function giveChoices(entries) {
  const bySpecialThenName = (a, b) => Number(/^[A-Z]/.test(a)) - Number(/^[A-Z]/.test(b)) || (a < b ? -1 : a > b ? 1 : 0);
  return GIVE_GROUPS.map((group) => ({
    group,
    names: entries.filter((e) => giveGroup(e.type) === group && NAME_PATH.test(e.name))
      .map((e) => e.name).sort(bySpecialThenName),
  })).filter((g) => g.names.length > 0);
}

/** What ticking the box for giving agent powers means, in words (`AGENT` is your own). */
function dangerText(name) {
  return name === "AGENT"
    ? "I trust this weblet completely: AGENT is my own agent — it may do anything I can, with every name I have."
    : `I trust this weblet completely: ${name} is an agent's powers — it may do anything that agent can, with every name it has.`;
}

export class PermissionPrompts {
  /**
   * @param {{identify: (handleId: string) => Promise<{name: string|null, info: any}|null>,
   *          entries: () => Array<{name: string, type: string}>,
   *          answer: (label: string, method: string, ...args: any[]) => Promise<boolean>,
   *          onClose: () => void}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {HTMLDialogElement} */
    this.dialog = byId("permission-dialog");
    /** @type {HTMLFormElement} */
    this.form = byId("permission-form");
    this.whoEl = byId("permission-who");
    this.detailEl = byId("permission-detail");
    this.askEl = byId("permission-description");
    /** @type {HTMLSelectElement} */
    this.select = byId("permission-name");
    this.error = byId("permission-error");
    /** @type {HTMLButtonElement} */
    this.allowButton = byId("permission-allow");
    /** @type {HTMLButtonElement} */
    this.denyButton = byId("permission-deny");
    this.dangerEl = byId("permission-danger-confirm");
    /** @type {HTMLInputElement} */
    this.dangerBox = byId("permission-danger-ok");
    this.dangerText = byId("permission-danger-text");
    /** Requests shown (or queued) as a prompt this session: each is prompted once. */
    this.prompted = new Set();
    /** Requests whose sender is being looked up. */
    this.checking = new Set();
    /** Requests answered or dismissed meanwhile (never prompted after that). */
    this.done = new Set();
    /** Requests waiting for a prompt: {record, weblet}. */
    this.queue = [];
    /** Senders (handle ids) whose requests are not prompted any more in this tab. */
    this.blocked = new Set();
    this.queueEl = byId("permission-queue");
    this.current = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.armTimer = undefined;
    this.form.addEventListener("submit", (event) => this.allow(event));
    this.denyButton.addEventListener("click", () => this.deny());
    byId("permission-later").addEventListener("click", () => this.dialog.close());
    byId("permission-block").addEventListener("click", () => this.block());
    this.select.addEventListener("change", () => this.chose());
    this.dialog.addEventListener("close", () => this.closed());
  }

  /** A new session: pending requests are looked at again. */
  beginSession() {
    this.prompted.clear();
    this.done.clear();
    this.queue = [];
    if (this.dialog.open) this.dialog.close();
  }

  /**
   * Look at inbox records: each pending request from a weblet gets a prompt.
   * Called again whenever the inventory changes: a request whose sender was
   * not known as a weblet yet (the weblet's name had not arrived) is looked
   * at again then.
   */
  consider(records) {
    for (const record of records) {
      if (record?.type !== "request") continue;
      if (record.settled) {
        this.settled(record.number);
        continue;
      }
      if (this.prompted.has(record.number) || this.checking.has(record.number)) continue;
      if (this.blocked.has(String(record.from))) continue;
      this.checking.add(record.number);
      this.hooks.identify(String(record.from)).then((weblet) => {
        if (!weblet || this.prompted.has(record.number) || this.done.has(record.number)) return;
        if (this.blocked.has(String(record.from))) return;
        this.prompted.add(record.number);
        this.queue.push({ record, weblet });
        this.showNext();
      }, () => {}).finally(() => this.checking.delete(record.number));
    }
  }

  /** Request `number` was answered (here, in the inbox, or from the CLI): its prompt goes. */
  settled(number) {
    this.done.add(number);
    this.queue = this.queue.filter((q) => q.record.number !== number);
    if (this.current?.record.number === number && this.dialog.open) this.dialog.close();
  }

  /** Dismissed messages cannot be answered any more. */
  dismissed(number) {
    this.settled(number);
  }

  /** Close the current prompt and every queued one from the same sender; prompt none from it again. */
  block() {
    const current = this.current;
    if (!current) return;
    const sender = String(current.record.from);
    this.blocked.add(sender);
    this.queue = this.queue.filter((q) => String(q.record.from) !== sender);
    this.dialog.close();
  }

  showNext() {
    if (this.current || this.queue.length === 0) return;
    this.current = this.queue.shift();
    const { record, weblet } = this.current;
    const more = this.queue.length;
    const fromSame = this.queue.filter((q) => String(q.record.from) === String(record.from)).length;
    this.queueEl.hidden = more === 0;
    this.queueEl.textContent = more === 0 ? "" : `${more} more waiting (${fromSame} from this weblet).`;
    const title = String(weblet.info.title || weblet.name || "A weblet");
    const level = String(weblet.info.level ?? "");
    replaceChildren(this.whoEl, h("strong", { class: "permission-title" }, title), " asks:");
    replaceChildren(this.askEl, cut(String(record.description ?? "")));
    replaceChildren(this.detailEl,
      "weblet ", h("code", null, weblet.name ?? "(unnamed)"),
      " · installed with ", h("span", { class: `level-badge level-${level.toLowerCase()}` }, level),
      LEVEL_WORDS[level] ? ` (${LEVEL_WORDS[level]})` : "",
      ` · request #${record.number}`);
    const choices = giveChoices(this.hooks.entries());
    replaceChildren(this.select,
      h("option", { value: "" }, choices.length ? "Choose a name…" : "(no names to give)"),
      choices.map(({ group, names }) => h("optgroup", { label: group.title, dataset: { group: group.key } },
        names.map((n) => h("option", { value: n, dataset: group.danger ? { danger: "true" } : {} }, n)))));
    this.chose();
    this.allowButton.disabled = true;
    this.armed = false;
    clearTimeout(this.armTimer);
    this.armTimer = setTimeout(() => {
      this.armed = true;
      this.arm();
    }, ARM_DELAY_MS);
    this.dialog.dataset.number = String(record.number);
    this.dialog.showModal();
    this.select.focus();
  }

  arm() {
    this.allowButton.disabled = !(this.armed && this.select.value);
  }

  /** Is the chosen name an agent's powers? */
  dangerous() {
    return this.select.selectedOptions[0]?.dataset.danger === "true";
  }

  /** A name was chosen: agent powers ask for the extra tick (afresh for each choice). */
  chose() {
    const danger = this.dangerous();
    this.dangerEl.hidden = !danger;
    this.dangerBox.checked = false;
    this.dangerText.textContent = danger ? dangerText(this.select.value) : "";
    this.dialog.classList.toggle("danger", danger);
    this.error.hidden = true;
    this.arm();
  }

  async allow(event) {
    event.preventDefault();
    const current = this.current;
    const name = this.select.value;
    if (!current || !this.armed || !name) return;
    if (this.dangerous() && !this.dangerBox.checked) {
      this.error.textContent = `${name} gives this weblet an agent's full powers: tick the confirmation to go on.`;
      this.error.hidden = false;
      return;
    }
    await this.answer(current, `Allowed: ${current.weblet.name ?? "the weblet"} gets ${name} (request ${current.record.number}).`,
      "resolve", current.record.number, name);
  }

  async deny() {
    const current = this.current;
    if (!current) return;
    await this.answer(current, `Denied request ${current.record.number} from ${current.weblet.name ?? "a weblet"}.`,
      "reject", current.record.number, "denied");
  }

  async answer(current, label, method, ...args) {
    this.allowButton.disabled = true;
    this.denyButton.disabled = true;
    try {
      if (await this.hooks.answer(label, method, ...args)) {
        if (this.current === current) this.dialog.close();
      } else {
        this.error.textContent = "That did not work (see the transcript); try again or answer from the inbox.";
        this.error.hidden = false;
      }
    } finally {
      this.denyButton.disabled = false;
      this.arm();
    }
  }

  closed() {
    clearTimeout(this.armTimer);
    this.current = null;
    delete this.dialog.dataset.number;
    this.hooks.onClose();
    // The next one after this frame, so one prompt visibly closes before another opens.
    setTimeout(() => this.showNext(), 0);
  }
}

function cut(text) {
  return text.length > MAX_DESCRIPTION ? `${text.slice(0, MAX_DESCRIPTION)}…` : text;
}
