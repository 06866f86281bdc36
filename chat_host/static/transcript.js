// @ts-check
// The transcript: what the user typed and what came back, as text.

import { byId, h, replaceChildren } from "./dom.js";
import { formatError, formatValue, isReference } from "./format.js";

/** Oldest entries are dropped beyond this many, so a long session stays light. */
const MAX_ENTRIES = 500;
/**
 * What one command's printed output may add to the page: code that prints
 * in a loop must not grow the page without end. Past it, one line says so
 * (the worker's log has everything).
 */
const MAX_OUTPUT_CHARS = 64 * 1024;

/**
 * Writes lines into the transcript. The transcript itself writes at the end;
 * `command(text)` starts a block for one command and returns a writer for it,
 * so a command's output stays under it even when a later command answers
 * first.
 */
class Writer {
  constructor(scroller, container) {
    this.scroller = scroller;
    this.container = container;
    /** @type {HTMLElement | null} the "still at work" line, kept last */
    this.pendingLine = null;
    /** @type {HTMLElement | null} the last line of printed output, and its text so far */
    this.lastOutput = null;
    this.lastOutputText = "";
    this.outputChars = 0;
    /** @type {HTMLElement | null} */
    this.outputCut = null;
  }

  add(kind, ...children) {
    const s = this.scroller;
    const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 40;
    const entry = h("div", { class: `line ${kind}`, dataset: { kind } }, children);
    // A pending line stays last: what comes meanwhile (printed output) goes above it.
    const pending = this.pendingLine?.isConnected ? this.pendingLine : null;
    if (pending && kind !== "pending") this.container.insertBefore(entry, pending);
    else this.container.append(entry);
    while (s.childElementCount > MAX_ENTRIES) s.firstElementChild.remove();
    if (atBottom || kind === "command") s.scrollTop = s.scrollHeight;
    return entry;
  }

  info(text) {
    return this.add("info", text);
  }

  ok(text) {
    return this.add("ok", text);
  }

  warn(text) {
    return this.add("warn", text);
  }

  error(error) {
    return this.add("error", h("span", { class: "badge" }, "error"),
      typeof error === "string" ? error : formatError(error));
  }

  /**
   * A line saying the command is still at work, with a Cancel button that
   * calls `cancel` (once). It stays last in the command's block until
   * `done()` removes it; anything written meanwhile goes above it.
   * @param {string} text
   * @param {() => void} cancel
   */
  pending(text, cancel) {
    const button = h("button", {
      class: "button secondary small", type: "button", title: "Stop this: its worker is stopped too",
      onclick: () => {
        button.disabled = true;
        button.textContent = "Cancelling…";
        cancel();
      },
    }, "Cancel");
    const line = this.add("pending", h("span", { class: "spinner", "aria-hidden": "true" }), h("span", null, text), button);
    line.setAttribute("role", "status");
    this.pendingLine = line;
    return { done: () => line.remove() };
  }

  /**
   * Text the command's code printed, on its stream ("stdout" or "stderr").
   * Consecutive writes to one stream without a newline between them join
   * one line, as a terminal shows them.
   * @param {string} stream
   * @param {string} text
   */
  output(stream, text) {
    const kind = stream === "stderr" ? "stderr" : "stdout";
    this.outputChars += text.length;
    if (this.outputChars > MAX_OUTPUT_CHARS) {
      if (!this.outputCut) this.outputCut = this.add("info", "(more output not shown here: see the worker's log)");
      return;
    }
    let line = this.lastOutput;
    if (line?.isConnected && line.dataset.kind === kind && !this.lastOutputText.endsWith("\n")) {
      this.lastOutputText += text;
    } else {
      line = this.lastOutput = this.add(`${kind} output`);
      line.dataset.kind = kind;
      this.lastOutputText = text;
    }
    line.textContent = this.lastOutputText.replace(/\n$/, "");
  }

  /** An evaluation result or an answer. */
  value(value, label) {
    const text = isReference(value)
      ? label ? "a reference" : "a reference (name it with -n to keep it)"
      : formatValue(value);
    return this.add("value", h("output", { class: "value-text" }, text),
      label ? h("span", { class: "value-label" }, label) : null);
  }

  table(rows) {
    return this.add("table", h("dl", { class: "rows" },
      rows.map(([key, value]) => [h("dt", null, key), h("dd", null, value)])));
  }
}

export class Transcript extends Writer {
  constructor() {
    const root = byId("transcript");
    super(root, root);
    this.root = root;
  }

  /** Echo a command and return the writer for its output. */
  command(text) {
    const block = h("div", { class: "block" });
    this.root.append(block);
    const writer = new Writer(this.root, block);
    writer.add("command", h("span", { class: "prompt", "aria-hidden": "true" }, "›"), text);
    return writer;
  }

  clear() {
    replaceChildren(this.root);
  }
}
