// @ts-check
// The transcript: what the user typed and what came back, as text.

import { byId, h, replaceChildren } from "./dom.js";
import { formatError, formatValue, isReference } from "./format.js";

/** Oldest entries are dropped beyond this many, so a long session stays light. */
const MAX_ENTRIES = 500;

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
  }

  add(kind, ...children) {
    const s = this.scroller;
    const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 40;
    const entry = h("div", { class: `line ${kind}`, dataset: { kind } }, children);
    this.container.append(entry);
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
