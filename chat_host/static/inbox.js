// @ts-check
// The inbox: the agent's messages, followed live, with actions.
//
// Requests can be resolved with a named value or rejected; values attached
// to packages can be adopted under a name; any message can be dismissed.
// Records come from follow_messages ({add}/{update}/{dismiss}); the sender is
// a handle id, shown by the names this agent has for it — for a weblet's
// request, the weblet's names (the daemon says which weblet: from_weblet).

import { byId, h, replaceChildren } from "./dom.js";

export class Inbox {
  /**
   * @param {{
   *   senderNames: (record: any) => string[],
   *   act: (label: string, method: string, ...args: any[]) => Promise<boolean>,
   * }} hooks  `act` calls the agent and reports the outcome; true on success
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.root = byId("inbox");
    this.countEl = byId("inbox-count");
    /** number → record */
    this.messages = new Map();
    this.loaded = false;
    this.render();
  }

  beginSession() {
    this.loaded = false;
  }

  /** The session's first answer replaces what a previous session showed. */
  load(records) {
    this.messages.clear();
    for (const r of records) this.messages.set(r.number, r);
    this.loaded = true;
    this.render();
  }

  /** The records held now. */
  records() {
    return [...this.messages.values()];
  }

  /** A follow_messages event. */
  apply(event) {
    if (event.add) this.messages.set(event.add.number, event.add);
    else if (event.update) this.messages.set(event.update.number, event.update);
    else if (event.dismiss !== undefined) this.messages.delete(event.dismiss);
    this.render();
  }

  /** Sender names changed (the inventory moved): redraw the senders only. */
  refreshSenders() {
    for (const el of /** @type {NodeListOf<HTMLElement>} */ (this.root.querySelectorAll(".message"))) {
      const record = this.messages.get(Number(el.dataset.number));
      const from = el.querySelector(".from");
      if (record && from) from.textContent = this.senderText(record);
    }
  }

  senderText(record) {
    const all = this.hooks.senderNames(record);
    const names = all.filter((n) => n !== "SELF");
    if (names.length) return names[0];
    if (all.includes("SELF")) return "you";
    if (typeof record.from_title === "string") return `weblet “${record.from_title || "untitled"}” (no longer named)`;
    return `unknown sender ${String(record.from).slice(0, 8)}…`;
  }

  render() {
    this.root.dataset.state = this.loaded ? "ready" : "loading";
    const records = [...this.messages.values()].sort((a, b) => a.number - b.number);
    const pending = records.filter((r) => r.type === "request" && !r.settled).length;
    this.countEl.textContent = records.length ? (pending ? `${pending} pending · ${records.length}` : String(records.length)) : "";
    if (!this.loaded && records.length === 0) {
      replaceChildren(this.root, h("p", { class: "placeholder" }, "Loading messages…"));
      return;
    }
    if (records.length === 0) {
      replaceChildren(this.root, h("p", { class: "placeholder" }, "No messages."));
      return;
    }
    // Keep what the user is typing in a card's fields across redraws.
    const drafts = this.saveDrafts();
    replaceChildren(this.root, records.reverse().map((r) => this.renderMessage(r)));
    this.restoreDrafts(drafts);
  }

  saveDrafts() {
    const drafts = new Map();
    for (const input of /** @type {NodeListOf<HTMLInputElement>} */ (this.root.querySelectorAll("input[data-draft]"))) {
      drafts.set(input.dataset.draft, { value: input.value, focused: input === document.activeElement });
    }
    return drafts;
  }

  restoreDrafts(drafts) {
    for (const input of /** @type {NodeListOf<HTMLInputElement>} */ (this.root.querySelectorAll("input[data-draft]"))) {
      const draft = drafts.get(input.dataset.draft);
      if (!draft) continue;
      input.value = draft.value;
      if (draft.focused) input.focus();
    }
  }

  renderMessage(r) {
    const isRequest = r.type === "request";
    const state = isRequest ? r.settled ?? "pending" : "package";
    return h("article", {
      class: `message ${isRequest ? "request" : "package"} ${state}`,
      dataset: { number: String(r.number), state },
    },
    h("header", { class: "message-header" },
      h("span", { class: "message-number" }, `#${r.number}`),
      h("span", { class: "from" }, this.senderText(r)),
      h("span", { class: "message-kind" }, isRequest ? "requests" : "says"),
      h("time", { class: "message-time", datetime: String(r.date ?? ""), title: String(r.date ?? "") }, shortTime(r.date)),
      h("button", {
        class: "icon-button dismiss", type: "button", title: "Dismiss (delete) this message",
        "aria-label": `Dismiss message ${r.number}`,
        onclick: () => this.hooks.act(`Dismissed message ${r.number}.`, "dismiss", r.number),
      }, "Dismiss")),
    isRequest ? this.renderRequest(r) : this.renderPackage(r));
  }

  renderRequest(r) {
    const body = h("p", { class: "message-body" }, String(r.description ?? ""));
    if (r.settled) {
      return [body, h("p", { class: `message-status ${r.settled}` },
        r.settled === "fulfilled" ? "Answered" : "Declined")];
    }
    const nameInput = h("input", {
      class: "inline-input", list: "pet-names", placeholder: "name to send", spellcheck: "false",
      "aria-label": `Name to answer request ${r.number} with`, dataset: { draft: `resolve-${r.number}` },
    });
    const error = h("p", { class: "form-error", hidden: true });
    const resolve = async (event) => {
      event.preventDefault();
      const name = nameInput.value.trim();
      if (!name) {
        showError(error, "Pick a name from your inventory to answer with.");
        nameInput.focus();
        return;
      }
      await this.hooks.act(`Answered request ${r.number} with ${name}.`, "resolve", r.number, name);
    };
    return [body,
      h("form", { class: "message-actions", onsubmit: resolve },
        nameInput,
        h("button", { class: "button small primary", type: "submit", dataset: { action: "resolve" } }, "Resolve"),
        h("button", {
          class: "button small secondary", type: "button", dataset: { action: "reject" },
          onclick: () => this.hooks.act(`Declined request ${r.number}.`, "reject", r.number, "declined"),
        }, "Reject")),
      error];
  }

  renderPackage(r) {
    const strings = Array.isArray(r.strings) ? r.strings : [];
    const names = Array.isArray(r.names) ? r.names : [];
    const parts = [];
    strings.forEach((s, i) => {
      parts.push(String(s));
      if (i < names.length) parts.push(h("span", { class: "edge", title: "an attached value" }, `@${names[i]}`));
    });
    const body = h("p", { class: "message-body" }, parts);
    const adopts = names.map((edge) => {
      const nameInput = h("input", {
        class: "inline-input", value: String(edge), spellcheck: "false",
        "aria-label": `Name for @${edge}`, dataset: { draft: `adopt-${r.number}-${edge}` },
      });
      return h("form", {
        class: "message-actions",
        onsubmit: (event) => {
          event.preventDefault();
          const name = nameInput.value.trim() || String(edge);
          this.hooks.act(`Adopted @${edge} as ${name}.`, "adopt", r.number, edge, name);
        },
      },
      h("span", { class: "edge" }, `@${edge}`), h("span", { class: "muted" }, "as"), nameInput,
      h("button", { class: "button small primary", type: "submit", dataset: { action: "adopt" } }, "Adopt"));
    });
    return [body, ...adopts];
  }
}

function showError(el, text) {
  el.textContent = text;
  el.hidden = false;
}

function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" });
}
