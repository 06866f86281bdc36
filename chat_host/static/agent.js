// @ts-check
// The chat agent in the chat page (docs/agent.md, "In the chat page").
//
// Plain text typed in the chat (anything not a `/command`) goes to the host's
// chat agent, E(host).agent(), with the page's open panels as the visible
// hint; the agent's server side picks the command from manifests it holds
// (never from this page). Each call shows in the transcript as the weblet's:
// a line labelled with its title, the command, the arguments, the status, and
// the result or the error — all as text (dom.js's `h`; manifest strings, the
// arguments and results are the weblet's and may be markup).
//
// A call that writes waits as `needs_permission` until the user answers in the
// Allow dialog this page draws — never inside a weblet's frame, which could
// dress up a fake one: the weblet's title, the command, its description and
// arguments, and Allow once / Always for this weblet+command / Deny. Calls
// queue, one dialog at a time; "Later" closes the dialog without answering
// (the call keeps waiting; its transcript line reopens it) so the page is never
// locked behind a queue, and "Later for this weblet" sets aside all of one
// weblet's waiting calls at once. Calls asked for elsewhere (a model, an MCP client,
// a script, another tab) come from the server as they happen: each session
// follows `follow_pending()` — the waiting list first, then every call that
// starts to wait and every one that ends, with how it ended (expired, answered
// elsewhere) for its line. Nothing is polled: the server pushes each change.

import { Float64 } from "/_ocapd/captp.js";
import { byId, h, replaceChildren } from "./dom.js";
import { formatValue } from "./format.js";

/** Allow is not clickable for this long after the dialog shows (a click meant for a weblet must not land on it). */
const ARM_DELAY_MS = 500;
/** Newest audit rows read to learn how a call the page did not answer ended. */
const AUDIT_LOOKBACK = 200;
/** Longest argument or result text shown; they are the weblet's, so bounded like any untrusted text. */
const MAX_TEXT = 2000;
/** Longest text of a model's own words shown: the server keeps this many (model.py's MAX_REPLY), so none is lost here. */
const MAX_MODEL_WORDS = 4000;
/** Longest line about one waiting call (a tool name and a weblet title, both capped by the manifest's rules). */
const MAX_NOTE = 500;

/** Who asked for a call, in words. */
export const ASKED_BY = { user: "you typed it", model: "the model chose it", mcp: "an MCP client called it" };

/** A call's status, in words for its transcript line. */
export const STATUS_WORDS = {
  done: "done", needs_permission: "waiting for your answer", denied: "denied: not run", error: "failed",
  expired: "expired: not run",
};

/**
 * @typedef {{call: string, weblet: string, weblet_name: string, title: string, tool: string, command: string,
 *            args: Record<string, any>, status: string, result?: any, error?: string, readOnly: boolean,
 *            description: string, asked_by: string, expires_in?: number | Float64}} AgentCall
 * @typedef {{seq: number, time: number, call: string, weblet: string, weblet_name: string, command: string,
 *            args: string, asked_by: string, decision: string, outcome: string, detail: string}} AuditEntry
 */

/** Cut untrusted text to a length the page shows. */
export function cut(text, max = MAX_TEXT) {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** A call's arguments on one line: `{"by": 5}`, or "" when there are none. */
export function argsLine(args) {
  if (!args || typeof args !== "object" || Object.keys(args).length === 0) return "";
  return cut(formatValue(args));
}

/**
 * How a call ended, from its audit row: the state its line shows.
 * @param {AuditEntry} row
 * @returns {{status: string, result?: string, error?: string}}
 */
export function stateFromAudit(row) {
  if (row.decision === "expired") return { status: "expired", error: row.detail || "nobody answered in time" };
  if (row.decision === "denied") return { status: "denied" };
  if (row.outcome === "done") return { status: "done", result: row.detail };
  return { status: "error", error: row.detail || "not run" };
}

/**
 * A model's reply as the page shows it. The server sends the model's words
 * followed by one line for each call that waits for the user's Allow (so the
 * words cannot hide one, or claim it done); whatever the model wrote, those
 * last lines are shown whole, and the words are cut only where the server
 * would have cut them.
 * @param {string} reply
 * @param {number} waiting  how many of the answer's calls wait for the user
 */
export function modelReply(reply, waiting) {
  const lines = reply.split("\n");
  const notes = waiting > 0 ? lines.splice(-waiting) : [];
  return [cut(lines.join("\n"), MAX_MODEL_WORDS), ...notes.map((note) => cut(note, MAX_NOTE))].filter(Boolean).join("\n");
}

/**
 * Seconds from the daemon as a number, or undefined: a whole float (`120.0`)
 * crosses CapTP boxed as a Float64, so that it stays a float.
 * @param {unknown} value
 */
export function seconds(value) {
  const n = value instanceof Float64 ? value.value : value;
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
}

/** The weblet's name for a call: its title, else the name it was installed as. */
function titleOf(call) {
  return String(call.title || call.weblet_name || call.weblet || "a weblet");
}

/**
 * One call's line in the transcript, kept up to date as the call moves on.
 */
class CallLine {
  /**
   * @param {HTMLElement} el
   * @param {AgentCall} call
   * @param {(call: AgentCall) => void} answer  reopen the Allow dialog for this call
   */
  constructor(el, call, answer) {
    this.el = el;
    this.call = call;
    this.answer = answer;
    this.render();
  }

  /** @param {Partial<AgentCall> & {status: string}} state */
  update(state) {
    this.call = { ...this.call, ...state };
    this.render();
  }

  render() {
    const call = this.call;
    this.el.dataset.call = call.call;
    this.el.dataset.status = call.status;
    const args = argsLine(call.args);
    /** @type {HTMLElement | null} */
    let outcome = null;
    if (call.status === "done") {
      outcome = h("output", { class: "agent-result" }, cut(formatValue(call.result)));
    } else if (call.error) {
      outcome = h("span", { class: "agent-error" }, cut(String(call.error)));
    }
    replaceChildren(this.el,
      h("span", { class: "agent-from", title: `${call.weblet_name} (${call.tool})` }, titleOf(call)),
      h("code", { class: "agent-tool" }, call.command),
      args ? h("code", { class: "agent-args" }, args) : null,
      h("span", { class: `agent-status status-${call.status}` }, STATUS_WORDS[call.status] ?? call.status),
      outcome,
      call.status === "needs_permission" ? h("button", {
        class: "button secondary small", type: "button", dataset: { action: "answer" },
        onclick: () => this.answer(this.call),
      }, "Answer…") : null);
  }
}

/**
 * The Allow dialog: one waiting call at a time, the rest queued.
 */
export class AllowDialog {
  /**
   * @param {{decide: (call: AgentCall, decision: "once"|"always"|"deny") => Promise<boolean>,
   *          onClose: (call: AgentCall | null) => void,
   *          setAside: (calls: AgentCall[]) => void,
   *          deadline: (id: string) => number | undefined}} hooks  onClose: the call it showed; setAside: calls
   *          taken off the queue unanswered; deadline: when a call expires (Date.now() ms), once known
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {HTMLDialogElement} */
    this.dialog = byId("agent-dialog");
    this.whoEl = byId("agent-who");
    this.commandEl = byId("agent-command");
    this.descriptionEl = byId("agent-description");
    this.argsEl = byId("agent-args");
    this.askedEl = byId("agent-asked");
    this.queueEl = byId("agent-queue");
    this.errorEl = byId("agent-error");
    this.expiresEl = byId("agent-expires");
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.clock = undefined;
    /** @type {HTMLButtonElement} */
    this.onceButton = byId("agent-once");
    /** @type {HTMLButtonElement} */
    this.alwaysButton = byId("agent-always");
    /** @type {HTMLButtonElement} */
    this.denyButton = byId("agent-deny");
    /** @type {AgentCall[]} */
    this.queue = [];
    /** @type {AgentCall | null} */
    this.current = null;
    this.armed = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.armTimer = undefined;
    this.onceButton.addEventListener("click", () => this.decide("once"));
    this.alwaysButton.addEventListener("click", () => this.decide("always"));
    this.denyButton.addEventListener("click", () => this.decide("deny"));
    byId("agent-later").addEventListener("click", () => this.dialog.close());
    byId("agent-later-weblet").addEventListener("click", () => this.laterForWeblet());
    this.dialog.addEventListener("close", () => this.closed());
  }

  /** Ask about `call` (after those already queued; `first`: next). */
  ask(call, first = false) {
    if (this.current?.call === call.call || this.queue.some((q) => q.call === call.call)) return;
    if (first) this.queue.unshift(call);
    else this.queue.push(call);
    this.showNext();
    this.showQueue();
  }

  /** Under the current call: how many more wait, and how many of them from its weblet. */
  showQueue() {
    const weblet = this.current?.weblet;
    const fromSame = this.queue.filter((q) => q.weblet === weblet).length;
    this.queueEl.hidden = this.queue.length === 0;
    this.queueEl.textContent = this.queue.length ? `${this.queue.length} more waiting (${fromSame} from this weblet).` : "";
  }

  /**
   * Close the current call and set aside every queued one of the same weblet,
   * unanswered (a model or script asking again and again cannot keep the
   * dialog up); they keep waiting, each with its line's "Answer…".
   */
  laterForWeblet() {
    const current = this.current;
    if (!current) return;
    const aside = this.queue.filter((q) => q.weblet === current.weblet);
    this.queue = this.queue.filter((q) => q.weblet !== current.weblet);
    this.hooks.setAside(aside);
    this.dialog.close();
  }

  /** Call `id` was settled (here or elsewhere): it is not asked about any more. */
  settled(id) {
    this.queue = this.queue.filter((q) => q.call !== id);
    if (this.current?.call === id && this.dialog.open) this.dialog.close();
    else this.showQueue();
  }

  /** A new session: what waits is asked for again. */
  reset() {
    this.queue = [];
    this.current = null; // closed by the reset, not set aside: asked again when the new session lists it
    if (this.dialog.open) this.dialog.close();
  }

  showNext() {
    if (this.current || this.queue.length === 0) return;
    const call = this.queue.shift();
    if (!call) return;
    this.current = call;
    this.showQueue();
    this.whoEl.textContent = titleOf(call);
    this.commandEl.textContent = call.command;
    this.descriptionEl.textContent = cut(String(call.description ?? ""), 500);
    this.descriptionEl.hidden = !call.description;
    const args = Object.entries(call.args ?? {});
    replaceChildren(this.argsEl, args.length
      ? args.map(([name, value]) => [h("dt", null, name), h("dd", null, cut(formatValue(value)))])
      : h("dd", { class: "muted" }, "no arguments"));
    replaceChildren(this.askedEl,
      "weblet ", h("code", null, call.weblet_name || call.weblet), " · ", h("code", null, call.tool),
      ` · ${ASKED_BY[call.asked_by] ?? call.asked_by}`);
    this.errorEl.hidden = true;
    this.dialog.dataset.call = call.call;
    this.tick();
    clearInterval(this.clock);
    this.clock = setInterval(() => this.tick(), 1000);
    this.armed = false;
    this.arm();
    clearTimeout(this.armTimer);
    this.armTimer = setTimeout(() => {
      this.armed = true;
      this.arm();
    }, ARM_DELAY_MS);
    this.dialog.showModal();
    this.denyButton.focus();
  }

  /** How long the current call still waits (known once the server said so: `expires_in`). */
  tick() {
    const deadline = this.current ? this.hooks.deadline(this.current.call) : undefined;
    this.expiresEl.hidden = deadline === undefined;
    if (deadline === undefined) return;
    const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    this.expiresEl.textContent = left > 0
      ? `Unanswered, it expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}.`
      : "It has expired: it can no longer be allowed.";
  }

  arm() {
    this.onceButton.disabled = !this.armed;
    this.alwaysButton.disabled = !this.armed;
  }

  /** @param {"once"|"always"|"deny"} decision */
  async decide(decision) {
    const call = this.current;
    if (!call || (decision !== "deny" && !this.armed)) return;
    this.onceButton.disabled = this.alwaysButton.disabled = this.denyButton.disabled = true;
    try {
      if (await this.hooks.decide(call, decision)) {
        if (this.current === call) this.dialog.close();
      } else {
        this.errorEl.textContent = "That did not work (see the transcript).";
        this.errorEl.hidden = false;
      }
    } finally {
      this.denyButton.disabled = false;
      this.arm();
    }
  }

  closed() {
    clearTimeout(this.armTimer);
    clearInterval(this.clock);
    const call = this.current;
    this.current = null;
    delete this.dialog.dataset.call;
    this.hooks.onClose(call);
    setTimeout(() => this.showNext(), 0); // one dialog visibly closes before the next opens
  }
}

/**
 * The agent's side of the chat: sends messages, keeps each call's line, asks
 * through the Allow dialog, and follows calls waiting elsewhere.
 */
export class AgentChat {
  /**
   * @param {{agent: () => Promise<any>, callOn: (ref: any, method: string, ...args: any[]) => Promise<any>,
   *          visible: () => string[], transcript: any, onClose: () => void, changed: () => void}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {Map<string, CallLine>} every call this page shows, by id */
    this.lines = new Map();
    /** Calls being answered from this page (their end comes with the answer, not from the audit). */
    this.answering = new Set();
    /** Calls closed with "Later": not asked again when the waiting list comes again (their line's "Answer…" asks). */
    this.deferred = new Set();
    /** @type {Map<string, number>} when each waiting call expires (Date.now() ms), from the server's `expires_in` */
    this.deadlines = new Map();
    /** Messages of this page still on their way: calls they made are shown under their own lines, not at the end. */
    this.sending = 0;
    /** @type {Map<string, AgentCall>} calls that started to wait while a message was on its way (shown after it) */
    this.held = new Map();
    /** @type {Map<string, AgentCall>} calls without a line yet that ended while a message was on its way, as they ended */
    this.early = new Map();
    this.dialog = new AllowDialog({
      decide: (call, decision) => this.decide(call, decision),
      onClose: (call) => {
        // Closed unanswered (Later, Esc): it keeps waiting, and is not asked again unless its line's Answer… is used.
        if (call && this.lines.get(call.call)?.call.status === "needs_permission") this.deferred.add(call.call);
        hooks.onClose();
      },
      setAside: (calls) => {
        for (const call of calls) this.deferred.add(call.call);
      },
      deadline: (id) => this.deadlines.get(id),
    });
  }

  /**
   * A new session: follow the waiting calls again (they are asked about anew).
   * @param {() => boolean} live  whether that session is still the page's current one
   */
  beginSession(live) {
    this.dialog.reset();
    this.deferred.clear();
    this.held.clear();
    this.early.clear();
    this.follow(live);
  }

  /**
   * Follow the host's waiting calls until the session ends: the server's
   * `follow_pending()` stream, pulled with `next()`. A stream the server ends
   * (a follower that fell far behind is closed) is followed again, and its
   * fresh list settles whatever changed meanwhile.
   * @param {() => boolean} live
   */
  async follow(live) {
    try {
      const agent = await this.hooks.agent();
      while (live()) {
        const stream = await this.hooks.callOn(agent, "follow_pending");
        for (;;) {
          const { done, value } = await this.hooks.callOn(stream, "next");
          if (!live()) return;
          if (done) break;
          await this.apply(value);
        }
      }
    } catch {
      // No agent here (a guest's chat), or the session went (the next one follows again).
    }
  }

  /**
   * One event of `follow_pending()`: `{waiting}` (the list now), `{add}` (one more waits) or `{settled}` (one ended).
   * @param {{waiting?: AgentCall[], add?: AgentCall, settled?: AgentCall}} event
   */
  async apply(event) {
    if (Array.isArray(event.waiting)) await this.resync(event.waiting);
    else if (event.add) this.added(event.add);
    else if (event.settled) this.ended(event.settled);
  }

  /** A call that waits from now on: a line (at the end) and a dialog — after this page's own messages are shown. */
  added(call) {
    const left = seconds(call.expires_in);
    if (left !== undefined) this.deadlines.set(call.call, Date.now() + left * 1000);
    if (this.sending > 0 && !this.lines.has(call.call)) {
      this.held.set(call.call, call); // most likely the call of the message on its way: shown under it, by message()
      return;
    }
    this.waiting(call);
  }

  /** Show a waiting call that came from elsewhere, and ask about it unless it was set aside or is being answered. */
  waiting(call) {
    if (this.answering.has(call.call)) return;
    if (!this.lines.has(call.call)) this.addLine(call, this.hooks.transcript);
    if (!this.deferred.has(call.call)) this.dialog.ask(call);
  }

  /** A call that waited has ended (answered here or elsewhere, expired, withdrawn): its line says how. */
  ended(call) {
    this.held.delete(call.call);
    this.deadlines.delete(call.call);
    this.deferred.delete(call.call);
    const line = this.lines.get(call.call);
    if (!line) {
      if (this.sending > 0) this.early.set(call.call, call); // the message on its way may be about to show it
      return;
    }
    line.update(call);
    this.dialog.settled(call.call);
    this.hooks.changed();
  }

  /** The list of waiting calls at the start of a stream: new ones are shown; lines still waiting that are not in it ended meanwhile. */
  async resync(pending) {
    const waiting = new Set(pending.map((c) => c.call));
    for (const call of pending) this.added(call);
    for (const id of this.deadlines.keys()) if (!waiting.has(id)) this.deadlines.delete(id);
    this.dialog.tick();
    const gone = [...this.lines.values()]
      .filter((l) => l.call.status === "needs_permission" && !waiting.has(l.call.call) && !this.answering.has(l.call.call))
      .map((l) => l.call.call);
    if (gone.length) await this.settleFromAudit(gone).catch(() => false);
  }

  /**
   * Send typed text to the agent; the reply and the calls are written under `out` (the line's writer).
   * @param {string} text
   * @param {any} out
   */
  async message(text, out) {
    this.sending += 1;
    try {
      await this.send(text, out);
    } finally {
      this.sending -= 1;
      if (this.sending === 0) {
        // Calls that started to wait meanwhile and are not this page's (a model or MCP asking at the same time).
        const held = [...this.held.values()];
        this.held.clear();
        this.early.clear();
        for (const call of held) this.waiting(call);
      }
    }
  }

  /** @param {string} text @param {any} out */
  async send(text, out) {
    const agent = await this.hooks.agent();
    const answer = await this.hooks.callOn(agent, "message", text, this.hooks.visible());
    const calls = Array.isArray(answer?.calls) ? answer.calls : [];
    let reply = typeof answer?.reply === "string" ? answer.reply : "";
    if (typeof answer?.model_error === "string") {
      // A configured model failed: one line says so (the reply's first), then the router's answer.
      out.warn(cut(reply.split("\n")[0] || `Model error: ${answer.model_error}`, 500));
      reply = reply.split("\n").slice(1).join("\n");
    }
    for (const call of calls) this.show(call, out);
    // The router's reply repeats its one call (the call's line says it all); a model's words are its own.
    if (reply && answer?.routed_by === "model") {
      out.add("agent-reply", modelReply(reply, calls.filter((c) => c.status === "needs_permission").length));
    } else if (reply && calls.length === 0) {
      out.add("agent-reply", cut(reply));
    }
    this.hooks.changed();
  }

  /** Show `call` (once) under `out`, and ask about it if it waits (and has not ended meanwhile). */
  show(call, out) {
    call = this.early.get(call.call) ?? call;
    const line = this.lines.get(call.call);
    if (line) line.update(call);
    else this.addLine(call, out);
    if (call.status === "needs_permission") this.dialog.ask(call);
    else this.dialog.settled(call.call);
  }

  /** A new line for `call` under the writer `out`. */
  addLine(call, out) {
    for (const [id, line] of this.lines) {
      // Lines the transcript dropped (its cap, /clear) are forgotten once their call has ended.
      if (!line.el.isConnected && line.call.status !== "needs_permission") this.lines.delete(id);
    }
    this.lines.set(call.call, new CallLine(out.add("agent-call"), call, (c) => this.reopen(c)));
  }

  /** The line's "Answer…": ask about a call closed with Later. */
  reopen(call) {
    this.deferred.delete(call.call);
    this.dialog.ask(call, true);
  }

  /** Answer a waiting call; true when the answer was taken. */
  async decide(call, decision) {
    const line = this.lines.get(call.call);
    this.answering.add(call.call);
    try {
      const agent = await this.hooks.agent();
      const settled = await this.hooks.callOn(agent, "permission", call.call, decision);
      line?.update(settled);
      this.dialog.settled(call.call);
      this.hooks.changed();
      return true;
    } catch (error) {
      // Expired or answered elsewhere meanwhile: the audit says how it ended.
      if (!(await this.settleFromAudit([call.call]))) this.hooks.transcript.error(error);
      return this.lines.get(call.call)?.call.status !== "needs_permission";
    } finally {
      this.answering.delete(call.call);
    }
  }

  /** Settle the lines of `ids` from their audit rows; true if all were found. */
  async settleFromAudit(ids) {
    const agent = await this.hooks.agent();
    /** @type {AuditEntry[]} */
    const rows = await this.hooks.callOn(agent, "audit", -1, AUDIT_LOOKBACK);
    let found = 0;
    for (const id of ids) {
      const row = rows.find((r) => r.call === id);
      if (!row) continue;
      found += 1;
      this.lines.get(id)?.update(stateFromAudit(row));
      this.deferred.delete(id);
      this.dialog.settled(id);
    }
    return found === ids.length;
  }
}
