// @ts-check
// DOM helpers for the Chat page.
//
// Every string the daemon hands us (names, message text, error messages) is
// untrusted: it reaches the page only as a text node. `h` therefore has no way
// to set HTML — children that are strings become text nodes, and attributes
// are set one by one with setAttribute / properties. Nothing in this app uses
// innerHTML, insertAdjacentHTML or document.write.

/**
 * Make an element.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>|null} [attrs] class, dataset, on<event>, hidden,
 *   disabled, value, title, type, … (never HTML)
 * @param {...(Node|string|number|null|undefined|false|Array<any>)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key in PROPERTIES) el[PROPERTIES[key]] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

// Attributes better set as properties (they reflect live state).
const PROPERTIES = { value: "value", checked: "checked", disabled: "disabled", hidden: "hidden" };

/** Append children: strings and numbers become text nodes. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace all children of `parent`. */
export function replaceChildren(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/**
 * Shorthand for document.getElementById that fails loudly on a typo.
 * The element's type is the one the result is assigned to (a field or
 * variable declared as HTMLInputElement, say): index.html must match it.
 *
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @returns {T}
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing element #${id}`);
  return /** @type {T} */ (el);
}
