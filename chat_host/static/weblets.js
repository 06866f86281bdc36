// @ts-check
// The weblet panel: each open weblet instance in a sandboxed iframe on its own
// origin (http://<label>.localhost:PORT/), with tabs when several are open and
// a header per weblet: title, power level, live state, Close / Cancel / Remove.
//
// The page never talks to a weblet: no postMessage, no script into the frame.
// A weblet's page talks to the daemon over its own WebSocket; what it may
// reach is its guest's powers. The frame's attributes are the whole of what
// this page grants it, and they are fixed here, not taken from the weblet:
//
//   sandbox         scripts, its own origin (for its WebSocket and storage),
//                   forms — never top navigation, popups, downloads or modals
//   allow           only permissions from the allowlist that its manifest asks for
//   referrerpolicy  no-referrer (the chat URL is not its business)
//
// Kinds (the manifest's `kind`): an `iframe` weblet's page is its bundle; an
// `iframe-external` one's frame holds the gateway's wrapper page, on the
// instance's own origin, which frames the external https entry — both with
// the stricter EXTERNAL_SANDBOX (no allow-same-origin: the external page runs
// at an opaque origin and reaches nothing of ocapd's); a `projection-only`
// weblet has no frame at all: this page draws its backend's projection
// (projection.js), from text nodes only.

import { byId, h, replaceChildren } from "./dom.js";
import { ProjectionView } from "./projection.js";

export const SANDBOX = "allow-scripts allow-same-origin allow-forms";
/** An iframe-external weblet's frame (and the wrapper's frame inside it): never its own origin. */
export const EXTERNAL_SANDBOX = "allow-scripts allow-forms";

/** The iframe `allow=` names a manifest may ask for (daemon/weblet_bundle.py PERMISSIONS). */
const PERMISSIONS = ["clipboard-write", "fullscreen", "autoplay", "picture-in-picture", "screen-wake-lock", "web-share"];

/** A frame's size when the manifest gives none, and the bounds any size is kept within. */
const DEFAULT_SIZE = { width: 480, height: 360 };
const MIN_SIDE = 120;
const MAX_SIDE = 4000;

/** Open at once: each frame is a renderer process; more is a runaway, not a workflow. */
export const MAX_OPEN = 8;

/** Power levels in words (the install dialog explains them at length). */
export const LEVEL_WORDS = {
  NONE: "no powers",
  ENDO: "network",
  HOST: "full control",
  CUSTOM: "chosen names",
};

/** The iframe `allow=` value for a manifest's permissions: allowlisted names only, in allowlist order. */
export function allowAttribute(permissions) {
  const asked = new Set(Array.isArray(permissions) ? permissions : []);
  return PERMISSIONS.filter((p) => asked.has(p)).join("; ");
}

/**
 * The instance URL `open()` returned, if it is what the gateway serves a
 * weblet instance at: http(s)://<32 hex>.localhost on this page's port.
 * Anything else is refused rather than framed.
 */
export function checkedInstanceUrl(url, here = location) {
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new Error("the daemon returned an unusable weblet address");
  }
  const ok = u.protocol === here.protocol && u.port === here.port && /^[0-9a-f]{32}\.localhost$/.test(u.hostname) &&
    !u.username && !u.password;
  if (!ok) throw new Error(`the daemon returned an unexpected weblet address (${u.origin})`);
  return u.href;
}

function side(value, fallback) {
  const n = Number(value);
  return Number.isInteger(n) ? Math.min(MAX_SIDE, Math.max(MIN_SIDE, n)) : fallback;
}

/**
 * @typedef {{id: string, title: string, level: string, guest_handle: string,
 *            size: {width: number, height: number}|null, permissions: string[], webrtc?: boolean,
 *            live: boolean}} WebletInfo
 * @typedef {{name: string, info: WebletInfo, label: string, url: string, frame: HTMLElement, live: boolean,
 *            release: (() => Promise<unknown>) | null, panel: string|null, kind: string,
 *            projection: ProjectionView|null}} Tab
 * @typedef {{panel?: string|null, kind?: string,
 *            projection?: {fetch: () => Promise<any>, image: (src: string) => Promise<{mime: string, bytes: Uint8Array}>}}} AddOptions
 */

export class WebletPanel {
  /**
   * @param {{cancel: (name: string) => void, remove: (name: string) => void,
   *          reopen: (name: string) => void, onChange: (open: number) => void}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.root = byId("weblets");
    this.tabsEl = byId("weblet-tabs");
    this.barEl = byId("weblet-bar");
    this.framesEl = byId("weblet-frames");
    this.emptyEl = byId("weblet-empty");
    /** @type {Tab[]} */
    this.tabs = [];
    /** @type {string|null} */
    this.active = null;
    this.render();
  }

  has(name) {
    return this.tabs.some((t) => t.name === name);
  }

  openNames() {
    return this.tabs.map((t) => t.name);
  }

  /** Bring an open weblet's tab to the front. */
  activate(name) {
    if (!this.has(name)) return false;
    this.active = name;
    this.render();
    return true;
  }

  /**
   * Show a new instance of weblet `name` (named so in the host's inventory).
   * @param {string} name @param {WebletInfo} info @param {{label: string, url: string}} instance
   * @param {(() => Promise<unknown>) | null} release frees the instance (in the gateway, or the manager's panel row) when closed
   * @param {AddOptions} [options] the manager's panel id; the manifest's kind; how to read a projection
   */
  add(name, info, instance, release = null, options = {}) {
    if (this.tabs.length >= MAX_OPEN) {
      throw new Error(`${MAX_OPEN} weblets are open already: close one first`);
    }
    const kind = String(options.kind ?? "iframe");
    const title = String(info.title || name);
    const size = info.size && typeof info.size === "object" ? info.size : {};
    const width = side(size.width, DEFAULT_SIZE.width);
    const height = side(size.height, DEFAULT_SIZE.height);
    /** @type {HTMLElement} */
    let frame;
    /** @type {ProjectionView|null} */
    let projection = null;
    let url = "";
    if (kind === "projection-only") {
      if (!options.projection) throw new Error(`${name} is drawn from its projection, which this page cannot read`);
      const view = new ProjectionView(options.projection, { title, name });
      projection = view;
      frame = view.root;
      frame.classList.add("weblet-frame");
      Object.assign(frame.dataset, { name, label: String(instance.label ?? ""), kind });
      frame.style.width = `${width}px`;
      frame.style.minHeight = `${Math.min(height, 240)}px`;
    } else {
      url = checkedInstanceUrl(instance.url);
      const external = kind === "iframe-external";
      const allow = external ? "" : allowAttribute(info.permissions);
      frame = h("iframe", {
        class: "weblet-frame",
        sandbox: external ? EXTERNAL_SANDBOX : SANDBOX,
        allow: allow || null,
        referrerpolicy: "no-referrer",
        title: `${title} — weblet ${name}`,
        width: String(width),
        height: String(height),
        dataset: { name, label: String(instance.label), kind },
        src: url,
      });
    }
    this.tabs.push({
      name, info, label: String(instance.label ?? ""), url, frame, live: Boolean(info.live), release,
      panel: options.panel ?? null, kind, projection,
    });
    this.framesEl.append(frame);
    this.active = name;
    this.render();
  }

  /** The manager's panel id shown under `name`, or null. */
  panelOf(name) {
    return this.tabs.find((t) => t.name === name)?.panel ?? null;
  }

  /** The open tabs' names whose weblet (formula) id is `id`. */
  namesFor(id) {
    return this.tabs.filter((t) => t.info.id === id).map((t) => t.name);
  }

  /** Load an open weblet's page again (after an update: the same origin, the new code). */
  reload(name) {
    const tab = this.tabs.find((t) => t.name === name);
    if (!tab) return;
    if (tab.projection) tab.projection.refresh();
    else if (tab.frame instanceof HTMLIFrameElement) tab.frame.src = tab.url;
  }

  /**
   * Close the frame of `name` (default: the one in front). Returns the closed name or null.
   * `keep`: leave its instance be (a disabled weblet's panel comes back when it is enabled).
   */
  close(name = this.active, { keep = false } = {}) {
    const i = this.tabs.findIndex((t) => t.name === name);
    if (i < 0) return null;
    const [tab] = this.tabs.splice(i, 1);
    tab.frame.remove(); // ends its page, and with it the page's session
    tab.projection?.stop();
    // Free its origin in the gateway too (best effort: the weblet may be stopped already).
    if (tab.release && !keep) Promise.resolve().then(tab.release).catch(() => {});
    if (this.active === name) this.active = this.tabs[Math.min(i, this.tabs.length - 1)]?.name ?? null;
    this.render();
    return name;
  }

  /** The name was removed (anywhere: here, the CLI, another tab): its frame goes. */
  forget(name) {
    this.close(name);
  }

  /** The name was changed: the tab follows it. */
  rename(from, to) {
    const tab = this.tabs.find((t) => t.name === from);
    if (!tab || this.has(to)) return;
    tab.name = to;
    tab.frame.dataset.name = to;
    if (this.active === from) this.active = to;
    this.render();
  }

  /**
   * Follow the live state of open weblets.
   * @param {(name: string) => {id: string, live: boolean}|undefined} entryFor
   */
  sync(entryFor) {
    let changed = false;
    for (const tab of this.tabs) {
      const entry = entryFor(tab.name);
      if (entry && entry.id === tab.info.id && entry.live !== tab.live) {
        tab.live = entry.live;
        changed = true;
      }
    }
    if (changed) this.render();
  }

  render() {
    const open = this.tabs.length > 0;
    this.root.dataset.state = open ? "open" : "empty";
    this.hooks.onChange(this.tabs.length);
    this.emptyEl.hidden = open;
    this.tabsEl.hidden = this.tabs.length < 2;
    this.barEl.hidden = !open;
    for (const tab of this.tabs) {
      tab.frame.hidden = tab.name !== this.active;
      tab.projection?.setVisible(tab.name === this.active);
    }
    replaceChildren(this.tabsEl, this.tabs.map((tab) => this.renderTab(tab)));
    const current = this.tabs.find((t) => t.name === this.active);
    replaceChildren(this.barEl, current ? this.renderBar(current) : null);
  }

  renderTab(tab) {
    const selected = tab.name === this.active;
    return h("div", { class: "weblet-tab", dataset: { name: tab.name, live: String(tab.live) }, "aria-current": selected ? "true" : null },
      h("button", {
        class: "weblet-tab-name", type: "button", role: "tab", "aria-selected": String(selected),
        title: `${tab.info.title || tab.name} (${tab.name})`, onclick: () => this.activate(tab.name),
      }, h("span", { class: "live-dot", "aria-hidden": "true" }), String(tab.info.title || tab.name)),
      h("button", {
        class: "icon-button", type: "button", title: `Close ${tab.name}`, "aria-label": `Close ${tab.name}`,
        onclick: () => this.close(tab.name),
      }, "✕"));
  }

  renderBar(tab) {
    const level = String(tab.info.level ?? "");
    const stopped = !tab.live;
    return [
      h("div", { class: "weblet-heading", dataset: { live: String(tab.live) } },
        h("span", {
          class: "live-dot", role: "img",
          "aria-label": tab.live ? "live" : "stopped",
          title: tab.live ? "live: its worker is running" : "stopped: its worker is not running",
        }),
        h("h3", { class: "weblet-title" }, String(tab.info.title || tab.name)),
        h("span", { class: "weblet-name", title: "its name in your inventory" }, tab.name),
        h("span", {
          class: `level-badge level-${level.toLowerCase()}`, dataset: { level },
          title: `installed with ${level} powers: ${LEVEL_WORDS[level] ?? level}`,
        }, level),
        tab.info.webrtc === true
          ? h("span", {
            class: "level-badge level-host", dataset: { declares: "webrtc" },
            title: "declares WebRTC: its page may send data to any address, not only to the sites it lists",
          }, "WebRTC")
          : null),
      h("div", { class: "weblet-actions" },
        stopped
          ? h("button", {
            class: "button small primary", type: "button", dataset: { action: "reopen" },
            title: "Start it again and open a fresh page", onclick: () => this.hooks.reopen(tab.name),
          }, "Reopen")
          : null,
        h("button", {
          class: "button small secondary", type: "button", dataset: { action: "close" },
          title: "Close this page (the weblet keeps running)", onclick: () => this.close(tab.name),
        }, "Close"),
        h("button", {
          class: "button small secondary", type: "button", dataset: { action: "cancel" },
          title: "Stop its worker and close the page", onclick: () => this.hooks.cancel(tab.name),
        }, "Cancel"),
        h("button", {
          class: "button small danger", type: "button", dataset: { action: "remove" },
          title: "Stop it and forget its name", onclick: () => this.hooks.remove(tab.name),
        }, "Remove")),
    ];
  }
}

/**
 * What the page knows about installed weblets: info() by weblet id, and so
 * which weblet a guest handle belongs to (mail from a weblet carries its
 * guest's handle). Only live weblets are asked (asking incarnates; a stopped
 * weblet is not started just to learn its name).
 */
export class WebletDirectory {
  /**
   * @param {{entries: () => Array<{name: string, id: string, type: string, live: boolean}>,
   *          info: (name: string) => Promise<WebletInfo>}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** weblet id → info */
    this.byId = new Map();
    /** weblet id → Promise (one question at a time per weblet) */
    this.asking = new Map();
  }

  remember(info) {
    if (info && typeof info.id === "string") this.byId.set(info.id, info);
  }

  /** The weblet whose guest has handle `handleId`: {name, info}, or null. */
  async forHandle(handleId) {
    const found = this.known(handleId);
    if (found) return found;
    const unknown = this.hooks.entries().filter((e) => e.type === "weblet" && e.live && !this.byId.has(e.id));
    await Promise.all(unknown.map((e) => this.ask(e)));
    return this.known(handleId);
  }

  known(handleId) {
    for (const info of this.byId.values()) {
      if (info.guest_handle !== handleId) continue;
      const entry = this.hooks.entries().find((e) => e.id === info.id);
      return { name: entry?.name ?? null, info };
    }
    return null;
  }

  ask(entry) {
    let pending = this.asking.get(entry.id);
    if (!pending) {
      pending = this.hooks.info(entry.name).then(
        (info) => this.remember(info),
        () => {}, // renamed or gone meanwhile: it is asked again next time
      ).finally(() => this.asking.delete(entry.id));
      this.asking.set(entry.id, pending);
    }
    return pending;
  }
}
