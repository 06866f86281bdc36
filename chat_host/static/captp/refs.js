// @ts-check
// captp/refs.js — the proxies of what the peer gave us: RemoteRef, RemotePromise.
//
// What the session knows about each proxy (its session, table, position,
// settlement) is kept in a WeakMap here, not on the proxy, so nothing the
// user or the peer does can make a value look like a proxy. The session
// (session.js) makes and releases proxies; `E` (eventual.js) reads their
// state to decide where a call goes.

import { Far } from "./passable.js";

/** @typedef {import("./session.js").Session} Session */

/**
 * An imported object.
 * @typedef {object} ObjectInfo
 * @property {Session} session
 * @property {"object"} kind
 * @property {number} position in the session's imports
 * @property {number} token which proxy of the position this is (a newer one may take over)
 * @property {boolean} dropped
 */
/**
 * An imported promise, or the answer to one of our calls.
 * @typedef {object} PromiseInfo
 * @property {Session} session
 * @property {"promise" | "answer"} kind
 * @property {number} position in the imports or the questions; -1 for an answer never sent
 * @property {number} token
 * @property {(value: unknown) => void} resolve
 * @property {(reason: unknown) => void} reject
 * @property {typeof PENDING | typeof FULFILLED | typeof REJECTED} state
 * @property {unknown} value the fulfilment or the rejection, once settled
 * @property {boolean} listening whether the peer was asked to report the settlement
 * @property {boolean} dropped
 */
/** @typedef {ObjectInfo | PromiseInfo} ProxyInfo */
/**
 * What a collected or dropped proxy tells its session: an answer, or an import.
 * @typedef {{session: Session, kind: "answer" | "import" | "object" | "promise", position: number, token: number}} Released
 */

/** @type {WeakMap<object, ProxyInfo>} */
const refInfo = new WeakMap();

/**
 * The session's record of a proxy, or undefined if `obj` is not one. Internal.
 * @param {unknown} obj
 * @returns {ProxyInfo | undefined}
 */
export const infoOf = (obj) => refInfo.get(/** @type {object} */ (obj));

/**
 * Whether `obj` is a proxy made by a session (RemoteRef or RemotePromise). Internal.
 * @param {unknown} obj
 */
export const isProxy = (obj) => refInfo.has(/** @type {object} */ (obj));

/** A reference to an object the peer exported. Call it with `E(ref).method()`. */
export class RemoteRef {
  toString() {
    const info = refInfo.get(this);
    return `[RemoteRef ${info?.session.name}#${info?.position}]`;
  }
}

export const PENDING = 0;
export const FULFILLED = 1;
export const REJECTED = 2;
/** `then` of plain promises: calling it on a RemotePromise does not start listening. */
export const baseThen = Promise.prototype.then;
export const noop = () => {};

/**
 * A promise settled by the peer: the answer to one of our calls (it can be
 * pipelined on before it settles) or a promise the peer passed us (we ask the
 * peer to tell us its settlement — `listen` — when someone first waits on it).
 * Rejections of remote promises nobody waits on are not reported as unhandled:
 * the session's end is reported once, through `Connection.closed`.
 *
 * @template [T=any]
 * @extends {Promise<T>}
 */
export class RemotePromise extends Promise {
  static get [Symbol.species]() {
    return Promise;
  }
  /**
   * @template [TResult1=T]
   * @template [TResult2=never]
   * @param {((value: T) => TResult1 | PromiseLike<TResult1>) | null} [onFulfilled]
   * @param {((reason: any) => TResult2 | PromiseLike<TResult2>) | null} [onRejected]
   * @returns {Promise<TResult1 | TResult2>}
   */
  then(onFulfilled, onRejected) {
    const info = refInfo.get(this);
    if (info && info.kind !== "object" && info.state === PENDING && !info.listening) {
      info.listening = true;
      info.session._startListening(info);
    }
    return super.then(onFulfilled, onRejected);
  }
}

let nextToken = 1;

// Proxies dropped by the garbage collector tell their session, which batches
// gc-exports / gc-answers (§6.7). Best effort: engines run these callbacks
// late or never; `drop(ref)` releases at once.
/** @type {FinalizationRegistry<Released>} */
export const registry = new FinalizationRegistry((held) => held.session._released(held));

/**
 * @param {Session} session
 * @param {"promise" | "answer"} kind
 * @param {number} position
 */
export function makeRemotePromise(session, kind, position) {
  /** @type {(value: unknown) => void} */
  let resolve = noop;
  /** @type {(reason: unknown) => void} */
  let reject = noop;
  /** @type {RemotePromise<unknown>} */
  const promise = new RemotePromise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  /** @type {PromiseInfo} */
  const info = { session, kind, position, token: nextToken++, resolve, reject, state: PENDING, value: undefined, listening: kind === "answer", dropped: false };
  refInfo.set(promise, info);
  // Track the state, so E() sends straight to a settled value; this also marks the promise handled.
  baseThen.call(
    promise,
    (v) => {
      info.state = FULFILLED;
      info.value = v;
    },
    (e) => {
      info.state = REJECTED;
      info.value = e;
    },
  );
  return { promise, info };
}

/**
 * @param {Session} session
 * @param {number} position
 */
export function makeRemoteRef(session, position) {
  const ref = Object.freeze(new RemoteRef());
  /** @type {ObjectInfo} */
  const info = { session, kind: "object", position, token: nextToken++, dropped: false };
  refInfo.set(ref, info);
  return { ref, info };
}

/**
 * Release a proxy now instead of waiting for the garbage collector: an
 * imported object or promise (gc-exports) or the answer of a call
 * (gc-answers). The proxy may not be used afterwards (calls on it and
 * passing it reject with TypeError).
 *
 * @param {unknown} ref a RemoteRef or RemotePromise (anything else is ignored)
 */
export function drop(ref) {
  const info = infoOf(ref);
  if (!info || info.dropped) return;
  info.dropped = true;
  registry.unregister(info);
  info.session._released(info);
}

// Resolvers we export so the peer can settle one of our promises (§6.3).
/** @type {WeakMap<object, (reason: unknown) => void>} */
export const resolverRejects = new WeakMap();
/** @param {PromiseInfo} info */
export function makeResolver(info) {
  const resolver = Far("Resolver", {
    fulfill(value = null) {
      info.resolve(value);
    },
    /** @param {unknown} [reason] any passable value: an error arrives as a RemoteError, anything else as itself (§6.3) */
    break(reason = null) {
      info.reject(reason);
    },
  });
  resolverRejects.set(resolver, info.reject);
  return resolver;
}
