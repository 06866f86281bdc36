// @ts-check
// captp/eventual.js — eventual send: `E(target).method(...args)`.
//
// The same call for a local object, a remote reference or a (remote)
// promise, and always eventual: the method never runs inside the caller's
// current turn. Calls on a remote answer are pipelined through its session.
// `E(fn)(...args)` calls the target itself (method null): a far function
// made by `Far(iface, fn)` when local, a deliver without a method when remote.

import { METHOD_NAME, RemoteError, describeType, isFarFunction, remotableInterface } from "./passable.js";
import { FULFILLED, PENDING, REJECTED, baseThen, infoOf, noop } from "./refs.js";

/**
 * Call a public method of a local object (null: the far function itself) now; a promise for its result.
 * @param {any} target
 * @param {unknown} method
 * @param {unknown[]} args
 * @returns {Promise<unknown>}
 */
function localCall(target, method, args) {
  if (method === null) {
    // As Python: only a far function is called itself; the message is the same.
    if (!isFarFunction(target)) {
      return Promise.reject(new RemoteError("TypeError", `${remotableInterface(target) ?? describeType(target)} is not a function`));
    }
    try {
      return Promise.resolve(target(...args));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  if (typeof method !== "string" || !METHOD_NAME.test(method)) {
    return Promise.reject(new RemoteError("TypeError", `${JSON.stringify(String(method))} is not a remote method name`));
  }
  const iface = remotableInterface(target);
  // A remotable answers only its own methods: nothing inherited is reachable.
  const fn = iface !== undefined ? (Object.hasOwn(target, method) ? target[method] : undefined) : target?.[method];
  if (typeof fn !== "function") {
    return Promise.reject(new RemoteError("TypeError", `${iface ?? describeType(target)} has no method '${method}'`));
  }
  try {
    return Promise.resolve(fn.apply(target, args));
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * What the session does with a deliver: run it, forward it, or queue it behind a promise.
 * @param {unknown} target
 * @param {string | null} method null: call the target itself
 * @param {unknown[]} args
 * @returns {Promise<unknown>}
 */
export function callTarget(target, method, args) {
  const result = eventualSend(target, method, args, true);
  baseThen.call(result, undefined, noop); // a failure nobody asked about is not an unhandled rejection
  return result;
}

/**
 * @param {unknown} target
 * @param {string | null} method
 * @param {unknown[]} args
 * @param {boolean} [now] a local target's method may run in this turn (the session's delivers)
 * @returns {Promise<unknown>}
 */
function eventualSend(target, method, args, now = false) {
  const info = infoOf(target);
  if (info) {
    if (info.kind !== "object") {
      if (info.state === FULFILLED) return eventualSend(info.value, method, args, now);
      if (info.state === REJECTED) return Promise.reject(info.value);
    }
    return info.session.send(target, method, args); // pipelined when the target is pending
  }
  if (target instanceof Promise) return baseThen.call(target, (v) => eventualSend(v, method, args, true));
  if (now) return localCall(target, method, args);
  return baseThen.call(Promise.resolve(), () => localCall(target, method, args));
}

/**
 * @param {unknown} target
 * @param {string | null} method
 * @param {unknown[]} args
 */
function sendOnly(target, method, args) {
  const info = infoOf(target);
  if (info) {
    if (info.kind !== "object" && info.state !== PENDING) {
      if (info.state === FULFILLED) sendOnly(info.value, method, args);
      return;
    }
    info.session.sendOnly(target, method, args);
  } else {
    baseThen.call(eventualSend(target, method, args), undefined, noop);
  }
}

/**
 * @param {unknown} target
 * @param {boolean} only deliver-only: the methods return nothing
 */
function sender(target, only) {
  // A Proxy can be called only if its target is a function. An arrow function
  // has no non-configurable own properties (no `prototype`), so `get` may
  // answer every name without breaking a Proxy invariant.
  const callable = /** @type {(...args: unknown[]) => unknown} */ (() => {});
  return new Proxy(callable, {
    get(_, method) {
      // Not thenable, so `await E(x)` is not mistaken for a promise.
      if (typeof method !== "string" || method === "then") return undefined;
      return only
        ? (/** @type {unknown[]} */ ...args) => void sendOnly(target, method, args)
        : (/** @type {unknown[]} */ ...args) => eventualSend(target, method, args);
    },
    apply(_, _this, args) {
      return only ? void sendOnly(target, null, args) : eventualSend(target, null, args);
    },
  });
}

/**
 * What `E(x)` returns: a method per name, and itself callable (`E(fn)(...args)`).
 * @template R
 * @typedef {((...args: any[]) => R) & Record<string, (...args: any[]) => R>} Sender
 */

/**
 * `E(target).method(...args)` calls `method` on a remote reference, a
 * (remote) promise or a local object, and returns a promise for the result.
 * On a remote answer the call is pipelined: `E(E(f).make("red")).drive()`
 * sends both calls at once, one round trip. `E(fn)(...args)` calls a far
 * function (`Far(iface, fn)`) itself; anything else rejects with TypeError.
 *
 * @param {unknown} target
 * @returns {Sender<Promise<any>>}
 */
export function E(target) {
  return /** @type {Sender<Promise<any>>} */ (sender(target, false));
}
/**
 * `E.sendOnly(target).method(...args)`: deliver-only; the result and any failure are dropped.
 * @param {unknown} target
 * @returns {Sender<void>}
 */
E.sendOnly = (target) => /** @type {Sender<void>} */ (sender(target, true));

