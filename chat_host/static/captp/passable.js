// @ts-check
// captp/passable.js — the values that cross a CapTP connection, as JavaScript sees them.
//
// Copy values (Tagged, Selector, Float64 for integral floats, RemoteError for errors)
// and remotables (objects made by `Far`, passed by reference). The proxies of
// the peer's references (RemoteRef, RemotePromise) live in refs.js; the
// table of how each maps to Python is in ../captp.js.

/** A tagged copy value: `new Tagged("point", {x: 1})`. */
export class Tagged {
  /**
   * @param {string} tag
   * @param {unknown} payload any passable value
   */
  constructor(tag, payload) {
    if (typeof tag !== "string") throw new TypeError("Tagged tag must be a string");
    /** @readonly */
    this.tag = tag;
    /** @readonly */
    this.payload = payload;
    Object.freeze(this);
  }
}

// Selectors: captp.js's form of Python's `ocapd.captp.Symbol` (OCapN calls a
// Syrup symbol a selector). Not a JavaScript symbol: a registered symbol
// (`Symbol.for`) made from each name a peer sends would stay in the realm's
// registry for good, and a plain `Symbol()` is never equal to another. Like
// Tagged, a small frozen class; like Far, marked in a WeakSet, so only the
// constructor makes one (an object built on its prototype is not a Selector).
/** @type {WeakSet<object>} */
const selectors = new WeakSet();

/**
 * A name that is not a string: `new Selector("fetch")`. Equal (`sameSelector`)
 * only to a Selector of the same name, never to the string; prints as its name.
 */
export class Selector {
  /** @param {string} name */
  constructor(name) {
    if (typeof name !== "string") throw new TypeError(`Selector name must be a string, not ${describeType(name)}`);
    /** @readonly */
    this.name = name;
    Object.freeze(this);
    selectors.add(this);
  }
  toString() {
    return this.name;
  }
}
/**
 * Whether `value` is a Selector made by its constructor.
 * @param {unknown} value
 * @returns {value is Selector}
 */
export const isSelector = (value) => value !== null && typeof value === "object" && selectors.has(value);
/**
 * Whether `a` and `b` are Selectors of the same name (as Python's `Symbol("a") == Symbol("a")`).
 * @param {unknown} a
 * @param {unknown} b
 */
export const sameSelector = (a, b) => isSelector(a) && isSelector(b) && a.name === b.name;

/** A float that must stay a float on the wire even when integral (§3.1). */
export class Float64 {
  /** @param {unknown} value converted with Number() */
  constructor(value) {
    /** @readonly */
    this.value = Number(value);
    Object.freeze(this);
  }
  valueOf() {
    return this.value;
  }
  toString() {
    return String(this.value);
  }
  toJSON() {
    return this.value;
  }
}
/**
 * `float64(2)` is sent as float 64 `2.0`, not as the int 2.
 * @param {unknown} value
 */
export const float64 = (value) => new Float64(value);

/** An error that crossed the wire: the remote type name and message. */
export class RemoteError extends Error {
  /**
   * @param {string} name the remote exception's type name
   * @param {string} message
   * @param {string | null} [remoteTraceback] only when the peer runs with debug on
   */
  constructor(name, message, remoteTraceback = null) {
    super(message);
    this.name = name;
    this.remoteTraceback = remoteTraceback;
  }
}

// Remotables: objects passed by reference. Marked in a WeakMap rather than
// with a property so a peer's data can never make a record look remotable.
/** @type {WeakMap<object, string>} */
const farInterfaces = new WeakMap();
/** Method names a peer may call: an identifier not starting with "_" (as in Python). */
export const METHOD_NAME = /^[A-Za-z][A-Za-z0-9_]{0,127}$/;

/**
 * Make `methods` a remotable with interface name `iface`: passed by
 * reference, and the peer may call its own function properties whose names
 * are identifiers not starting with "_". Returns the same object, frozen.
 *
 * Given a function, `Far("Add", (a, b) => a + b)` makes a *far function*:
 * `E(add)(1, 2)` calls the function itself (a deliver without a method name,
 * docs/protocol.md §5.2), as Python's `Far("Add", fn)`. Only a far function
 * may be called that way; its own function properties are methods as above.
 *
 * @template {object} T
 * @param {string} iface
 * @param {T} [methods]
 * @returns {T}
 */
export function Far(iface, methods = /** @type {T} */ ({})) {
  if (typeof iface !== "string" || !iface) throw new TypeError("Far() needs a non-empty interface name");
  if (methods === null || (typeof methods !== "object" && typeof methods !== "function")) {
    throw new TypeError(`Far() needs an object of methods or a function, not ${describeType(methods)}`);
  }
  for (const [name, fn] of Object.entries(methods)) {
    if (typeof fn !== "function") continue; // data properties are allowed but not callable
    if (!METHOD_NAME.test(name)) throw new TypeError(`Far(): ${JSON.stringify(name)} is not a valid remote method name`);
  }
  Object.freeze(methods);
  farInterfaces.set(methods, iface);
  return methods;
}
/**
 * The interface name of a remotable made by `Far`, or undefined.
 * @param {unknown} obj
 * @returns {string | undefined}
 */
export const interfaceOf = (obj) =>
  obj !== null && (typeof obj === "object" || typeof obj === "function") ? farInterfaces.get(obj) : undefined;

/**
 * Whether `obj` may be called itself, `E(obj)(...)`: a function made a remotable by `Far(iface, fn)`. Internal.
 * @param {unknown} obj
 * @returns {obj is (...args: unknown[]) => unknown}
 */
export const isFarFunction = (obj) => typeof obj === "function" && farInterfaces.has(obj);

/**
 * The interface name if `obj` was made by `Far` (any kind of value may be asked). Internal.
 * @param {any} obj
 * @returns {string | undefined}
 */
export const remotableInterface = (obj) => farInterfaces.get(obj);

/**
 * `{promise, resolve, reject}`: a pending promise and the functions that settle it.
 * @template [T=any]
 * @returns {{promise: Promise<T>, resolve: (value: T | PromiseLike<T>) => void, reject: (reason?: any) => void}}
 */
export function makePromiseKit() {
  /** @type {(value: T | PromiseLike<T>) => void} */
  let resolve = () => {};
  /** @type {(reason?: any) => void} */
  let reject = () => {};
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * A value's kind for error messages: "null", a typeof name, or the constructor's name. Internal.
 * @param {unknown} v
 */
export function describeType(v) {
  if (v === null) return "null";
  if (typeof v !== "object" && typeof v !== "function") return typeof v;
  return v.constructor?.name ?? "object";
}
