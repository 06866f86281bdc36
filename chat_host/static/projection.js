// @ts-check
// A projection-only weblet's panel: no frame, no page of its own. Its backend
// returns a small declarative projection (`projection()` on the object its
// `make()` returned; checked and capped by the daemon, daemon/weblet/projection.py)
// and this page draws it:
//
//   {"title"?: "…", "nodes": [
//     {"type": "text", "text": "…", "style"?: "heading" | "body" | "muted"},
//     {"type": "list", "items": ["…"], "ordered"?: false},
//     {"type": "table", "columns": ["…"], "rows": [["…"]]},
//     {"type": "kv", "items": [["key", "value"]]},
//     {"type": "image", "src": "sun.png", "alt": "…", "digest": "…"}]}
//
// Every string becomes a text node (dom.js `h`); an image is a file of the
// weblet's bundle, fetched as bytes over CapTP (`projection_image(src)`) and
// shown from a blob: URL, never a URL the weblet names. The panel asks again
// every REFRESH_MS while it is in front and the page is visible, and redraws
// only when the projection changed.

import { h, replaceChildren } from "./dom.js";
import { formatError } from "./format.js";

/** How often an open, visible projection is asked again. */
export const REFRESH_MS = 2000;

/** Draw one node of a projection (already checked by the daemon; anything odd is skipped). */
export function renderNode(node, imageUrl) {
  if (!node || typeof node !== "object") return null;
  switch (node.type) {
    case "text": {
      const style = ["heading", "muted"].includes(node.style) ? node.style : "body";
      return h(style === "heading" ? "h4" : "p", { class: `pj-text pj-${style}` }, String(node.text ?? ""));
    }
    case "list": {
      const items = Array.isArray(node.items) ? node.items : [];
      return h(node.ordered ? "ol" : "ul", { class: "pj-list" }, items.map((item) => h("li", null, String(item))));
    }
    case "table": {
      const columns = Array.isArray(node.columns) ? node.columns : [];
      const rows = Array.isArray(node.rows) ? node.rows : [];
      return h("div", { class: "pj-table-wrap" }, h("table", { class: "pj-table" },
        columns.length ? h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, String(c))))) : null,
        h("tbody", null, rows.map((row) => h("tr", null, (Array.isArray(row) ? row : []).map((cell) => h("td", null, String(cell))))))));
    }
    case "kv": {
      const items = Array.isArray(node.items) ? node.items : [];
      return h("dl", { class: "pj-kv" }, items.map((pair) => Array.isArray(pair)
        ? [h("dt", null, String(pair[0])), h("dd", null, String(pair[1]))]
        : null));
    }
    case "image": {
      const img = h("img", { class: "pj-image", alt: String(node.alt ?? ""), dataset: { src: String(node.src ?? "") } });
      if (Number.isInteger(node.width)) img.width = node.width;
      imageUrl(node).then((url) => {
        if (url) img.src = url;
      }, () => img.classList.add("pj-broken"));
      return img;
    }
    default:
      return null;
  }
}

export class ProjectionView {
  /**
   * @param {{fetch: () => Promise<any>, image: (src: string) => Promise<{mime: string, bytes: Uint8Array}>}} source
   * @param {{title: string, name: string}} who
   */
  constructor(source, who) {
    this.source = source;
    this.who = who;
    this.root = h("section", { class: "weblet-projection", "aria-label": `${who.title} — weblet ${who.name}`, dataset: { state: "loading" } },
      h("p", { class: "muted" }, "Asking for its projection…"));
    /** The last projection drawn, as JSON: the same again is not redrawn. */
    this.shown = "";
    /** src + digest → blob: URL (revoked when the panel closes). */
    this.images = new Map();
    this.visible = true;
    this.stopped = false;
    this.asking = false;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = setInterval(() => this.tick(), REFRESH_MS);
    this.refresh();
  }

  setVisible(visible) {
    const was = this.visible;
    this.visible = visible;
    if (visible && !was) this.refresh();
  }

  tick() {
    if (this.visible && document.visibilityState === "visible") this.refresh();
  }

  async refresh() {
    if (this.stopped || this.asking) return;
    this.asking = true;
    try {
      const projection = await this.source.fetch();
      if (this.stopped) return;
      const json = JSON.stringify(projection);
      if (json === this.shown && this.root.dataset.state === "ready") return;
      this.shown = json;
      this.draw(projection);
    } catch (error) {
      if (this.stopped) return;
      this.shown = "";
      this.root.dataset.state = "error";
      replaceChildren(this.root, h("p", { class: "form-error pj-error" }, `Cannot show ${this.who.title}: ${formatError(error)}`));
    } finally {
      this.asking = false;
    }
  }

  draw(projection) {
    const nodes = Array.isArray(projection?.nodes) ? projection.nodes : [];
    this.root.dataset.state = "ready";
    replaceChildren(this.root,
      projection?.title ? h("h3", { class: "pj-title" }, String(projection.title)) : null,
      nodes.map((node) => renderNode(node, (n) => this.imageUrl(n))),
      nodes.length ? null : h("p", { class: "muted" }, "(nothing to show)"));
  }

  async imageUrl(node) {
    const key = `${node.src}\u0000${node.digest ?? ""}`;
    let url = this.images.get(key);
    if (url === undefined) {
      const { mime, bytes } = await this.source.image(String(node.src));
      if (this.stopped) return null;
      url = URL.createObjectURL(new Blob([new Uint8Array(bytes)], { type: String(mime) }));
      this.images.set(key, url);
    }
    return url;
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    for (const url of this.images.values()) URL.revokeObjectURL(url);
    this.images.clear();
  }
}
