// @ts-check
// The inventory: the agent's names, grouped by what they name, with a live
// indicator per entry and per-entry actions.
//
// Which names exist comes from the agent's follow_name_changes stream (it is
// ordered and replays existing names first); special names, the type of each
// formula and whether it is live come from list_entries, refreshed after every
// change and now and then (liveness changes without a name changing).
//
// Clicking a name puts @name into the chat input, except a weblet's: that
// opens the weblet in the weblet panel. A stored blob can be installed as a
// weblet from its row.

import { byId, h, replaceChildren } from "./dom.js";

/** Groups in display order; a type not listed falls in the last group. */
const GROUPS = [
  { key: "handles", title: "Handles", types: ["handle"] },
  { key: "agents", title: "Hosts & guests", types: ["host", "guest"] },
  { key: "workers", title: "Workers", types: ["worker"] },
  { key: "weblets", title: "Weblets", types: ["weblet"] },
  { key: "values", title: "Values & other", types: null },
];

/** Readable words for formula types. */
const TYPE_LABELS = {
  handle: "handle",
  host: "host",
  guest: "guest",
  worker: "worker",
  weblet: "weblet",
  marshal: "value",
  eval: "result",
  "readable-blob": "blob",
  directory: "directory",
  "least-authority": "no powers",
  endo: "network",
  promise: "promise",
  lookup: "lookup",
  "make-unconfined": "service",
  "make-bundle": "service",
};

const isSpecial = (name) => /^[A-Z]/.test(name);

export class Inventory {
  /**
   * @param {{onPick: (name: string) => void, onOpen: (name: string) => void,
   *          onAction: (action: string, name: string) => void}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.root = byId("inventory");
    this.countEl = byId("inventory-count");
    /** @type {HTMLDataListElement} */
    this.petNamesList = byId("pet-names");
    /** @type {HTMLDataListElement} */
    this.workerNamesList = byId("worker-names");
    /** name → {name, id, type, live} */
    this.entries = new Map();
    this.loaded = false;
    this.stale = false;
    this.renderQueued = false;
    this.render();
  }

  /**
   * A new session starts: what is shown stays (marked stale) until the
   * session's first list_entries answer replaces it.
   */
  beginSession() {
    this.loaded = false;
  }

  /** Keep showing what we had, marked as possibly out of date. */
  markStale() {
    this.stale = true;
    this.queueRender();
  }

  /** A follow_name_changes event. */
  apply(event) {
    if (typeof event.add === "string") {
      const known = this.typeOfId(event.id);
      const old = this.entries.get(event.add);
      this.entries.set(event.add, {
        name: event.add,
        id: event.id,
        type: old && old.id === event.id ? old.type : known?.type ?? null,
        live: old && old.id === event.id ? old.live : known?.live ?? false,
      });
    } else if (typeof event.remove === "string") {
      this.entries.delete(event.remove);
    } else if (event.rename && typeof event.rename.from === "string") {
      const old = this.entries.get(event.rename.from);
      this.entries.delete(event.rename.from);
      if (old) this.entries.set(event.rename.to, { ...old, name: event.rename.to });
    }
    this.queueRender();
  }

  /**
   * list_entries' answer. Special names come only from here; pet names
   * only update type and liveness (the stream owns which pet names exist),
   * except on first load, before the stream has replayed.
   */
  update(list) {
    const seen = new Set();
    const firstLoad = !this.loaded;
    // A new session's first answer replaces whatever a previous session showed.
    if (firstLoad) this.entries.clear();
    for (const e of list) {
      if (typeof e?.name !== "string") continue;
      seen.add(e.name);
      const entry = { name: e.name, id: String(e.id), type: String(e.type), live: Boolean(e.live) };
      const current = this.entries.get(e.name);
      if (isSpecial(e.name) || firstLoad || current?.id === entry.id) this.entries.set(e.name, entry);
    }
    for (const name of [...this.entries.keys()]) {
      if (isSpecial(name) && !seen.has(name)) this.entries.delete(name);
    }
    this.loaded = true;
    this.stale = false;
    this.queueRender();
  }

  typeOfId(id) {
    for (const e of this.entries.values()) if (e.id === id && e.type) return e;
    return null;
  }

  /** Names (specials first) that refer to formula `id`. */
  namesForId(id) {
    return [...this.entries.values()].filter((e) => e.id === id).map((e) => e.name).sort(bySpecialThenName);
  }

  /** The entry for `name` ({name, id, type, live}), if any. */
  entryFor(name) {
    return this.entries.get(name);
  }

  /** Every entry (specials included). */
  list() {
    return [...this.entries.values()];
  }

  petNames() {
    return [...this.entries.keys()].filter((n) => !isSpecial(n)).sort();
  }

  allNames() {
    return [...this.entries.keys()].sort(bySpecialThenName);
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  render() {
    this.root.dataset.state = !this.loaded ? "loading" : this.stale ? "stale" : "ready";
    this.renderDatalists();
    if (!this.loaded && this.entries.size === 0) {
      this.countEl.textContent = "";
      replaceChildren(this.root, h("p", { class: "placeholder" }, "Loading names…"));
      return;
    }
    const pets = this.petNames().length;
    const builtIn = this.entries.size - pets;
    this.countEl.textContent = String(pets);
    // The lists below show the built-in names too; say what the header counts.
    const counted = `${pets} ${pets === 1 ? "name" : "names"} of yours`;
    this.countEl.title = builtIn ? `${counted}, and ${builtIn} built-in (SELF, HOST, …) not counted` : counted;
    this.countEl.setAttribute("aria-label", this.countEl.title);
    const sections = [];
    for (const group of GROUPS) {
      const members = [...this.entries.values()]
        .filter((e) => groupOf(e.type) === group)
        .sort((a, b) => bySpecialThenName(a.name, b.name));
      if (members.length === 0) continue;
      sections.push(
        h("section", { class: "group", dataset: { group: group.key } },
          h("h3", { class: "group-title" }, group.title, h("span", { class: "count" }, String(members.length))),
          h("ul", { class: "entries" }, members.map((e) => this.renderEntry(e)))),
      );
    }
    if (pets === 0) {
      sections.push(h("p", { class: "placeholder empty-hint" },
        "No pet names yet. Try ", h("code", null, "/eval 1+2 -n three"), "."));
    }
    replaceChildren(this.root, sections);
  }

  renderEntry(entry) {
    const special = isSpecial(entry.name);
    const liveText = entry.live ? "live" : "stopped";
    const actions = [];
    const weblet = entry.type === "weblet";
    if (entry.type === "readable-blob" && !special) {
      actions.push(h("button", {
        class: "icon-button", type: "button", title: `Install ${entry.name} as a weblet`,
        "aria-label": `Install ${entry.name} as a weblet`, dataset: { action: "install" },
        onclick: () => this.hooks.onAction("install", entry.name),
      }, "Install…"));
    }
    if (!special || entry.name === "MAIN") {
      actions.push(h("button", {
        class: "icon-button", type: "button", title: `Cancel ${entry.name} (it is remade on next use)`,
        "aria-label": `Cancel ${entry.name}`, dataset: { action: "cancel" },
        onclick: () => this.hooks.onAction("cancel", entry.name),
      }, "Cancel"));
    }
    if (!special) {
      actions.push(h("button", {
        class: "icon-button danger", type: "button",
        title: weblet ? `Stop ${entry.name} and forget its name` : `Forget the name ${entry.name}`,
        "aria-label": `Remove ${entry.name}`, dataset: { action: "remove" },
        onclick: () => this.hooks.onAction("remove", entry.name),
      }, "Remove"));
    }
    return h("li", {
      class: `entry${special ? " special" : ""}`,
      dataset: { name: entry.name, type: entry.type ?? "", live: String(entry.live) },
    },
    h("span", { class: "live-dot", title: entry.live ? "live: running now" : "stopped: remade on next use",
      role: "img", "aria-label": liveText }),
    weblet
      ? h("button", { class: "entry-name", type: "button", title: `Open ${entry.name} in the weblet panel`,
        onclick: () => this.hooks.onOpen(entry.name) }, entry.name)
      : h("button", { class: "entry-name", type: "button", title: `Insert @${entry.name} in the message`,
        onclick: () => this.hooks.onPick(entry.name) }, entry.name),
    h("span", { class: "entry-type" }, entry.type ? TYPE_LABELS[entry.type] ?? entry.type : "…"),
    h("span", { class: "entry-actions" }, actions));
  }

  renderDatalists() {
    replaceChildren(this.petNamesList, this.allNames().map((n) => h("option", { value: n })));
    const workers = [...this.entries.values()].filter((e) => e.type === "worker").map((e) => e.name).sort(bySpecialThenName);
    replaceChildren(this.workerNamesList, workers.map((n) => h("option", { value: n })));
  }
}

function groupOf(type) {
  return GROUPS.find((g) => g.types?.includes(type)) ?? GROUPS[GROUPS.length - 1];
}

function bySpecialThenName(a, b) {
  const sa = isSpecial(a);
  const sb = isSpecial(b);
  if (sa !== sb) return sa ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}
