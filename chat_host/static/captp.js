// captp.js — the browser (and node) peer of ocapd's CapTP, protocol `ocapd-captp/1`.
//
// docs/protocol.md is the normative description; captp/ (Python) is the other
// implementation, and tests/vectors/ holds the bytes both are tested against.
// This one ES module holds, in order: passable values, the codec (msgpack via
// @msgpack/msgpack, never hand-written), the session (the four tables and
// every message of §5–§8), eventual send `E`, and the transports (WebSocket,
// an in-memory pair for tests).
//
// How values map between Python and JavaScript:
//
//   Python            JavaScript
//   None              null (undefined is sent as null too)
//   bool              boolean
//   int               number when |n| <= 2**53-1, else bigint (either is sent as an int)
//   float             number; an integral float (2.0) arrives as a Float64 box, so
//                     it goes back as a float: `float64(2)` sends one, `+x` unboxes.
//                     -0, NaN, ±Infinity and non-integral numbers are plain floats.
//   str               string (strict UTF-8 both ways; lone surrogates are refused)
//   bytes             Uint8Array
//   list / tuple      Array
//   dict (str keys)   plain object; a Map with string keys is also sent as a record,
//                     in its own order (JS objects list integer-like keys first)
//   Tagged            Tagged
//   exception         Error (sent as its name and message); arrives as RemoteError
//   @far object       Far(iface, methods) here; proxies arrive as RemoteRef
//   Promise           Promise; proxies arrive as RemotePromise
//
// A record key "__proto__" cannot be received (the msgpack library refuses it,
// which aborts the session with malformed-frame).

import { Decoder, Encoder, ExtData, ExtensionCodec } from "./vendor/msgpack.mjs";

// ---------------------------------------------------------------------------
// constants (§3, §7, §8)

export const PROTOCOL_VERSION = "ocapd-captp/1";

const EXT_BIGINT = 1;
const EXT_TAGGED = 2;
const EXT_ERROR = 3;
const EXT_IMPORT_OBJECT = 10;
const EXT_IMPORT_PROMISE = 11;
const EXT_EXPORT = 12;
const EXT_ANSWER = 13;
const DESC_NAMES = {
  [EXT_IMPORT_OBJECT]: "import-object",
  [EXT_IMPORT_PROMISE]: "import-promise",
  [EXT_EXPORT]: "export",
  [EXT_ANSWER]: "answer",
};

/** Deepest nesting of containers in one value (§3.4). */
export const MAX_DEPTH = 128;
/** Largest table position: the largest integer a JS number holds exactly. */
export const MAX_POSITION = Number.MAX_SAFE_INTEGER;
/** Largest bigint payload in bytes (§3.2). */
export const MAX_BIGINT_BYTES = 4096;

const INT_MIN = -(2n ** 63n);
const INT_MAX = 2n ** 64n - 1n;

/** Abort reason codes (§8): the part of a reason that tests compare. */
export const Reasons = Object.freeze({
  FRAME_TOO_LARGE: "frame-too-large",
  MALFORMED: "malformed-frame",
  UNKNOWN_OP: "unknown-op",
  BAD_ARITY: "bad-arity",
  BAD_FIELD: "bad-field",
  UNKNOWN_POSITION: "unknown-position",
  POSITION_IN_USE: "position-in-use",
  LIMIT: "limit-exceeded",
  VERSION: "version-mismatch",
  NOT_STARTED: "not-started",
  CLOSED: "closed",
  DISCONNECTED: "disconnected",
  PEER_ABORTED: "peer-aborted",
});
const R = Reasons;

/** Protocol limits (§7), the same defaults as Python's `Limits`. */
export const DEFAULT_LIMITS = Object.freeze({
  maxFrameSize: 16 * 1024 * 1024,
  maxAnswers: 65_536,
  maxExports: 1_000_000,
  maxImports: 1_000_000,
  maxMethodLength: 128,
  maxReasonLength: 1024,
});

const OP_START = "start-session";
const OP_DELIVER = "deliver";
const OP_DELIVER_ONLY = "deliver-only";
const OP_LISTEN = "listen";
const OP_GC_EXPORTS = "gc-exports";
const OP_GC_ANSWERS = "gc-answers";
const OP_ABORT = "abort";
const ARITY = {
  [OP_START]: 2,
  [OP_DELIVER]: 6,
  [OP_DELIVER_ONLY]: 4,
  [OP_LISTEN]: 4,
  [OP_GC_EXPORTS]: 3,
  [OP_GC_ANSWERS]: 2,
  [OP_ABORT]: 2,
};

// ---------------------------------------------------------------------------
// passable values

/** A tagged copy value: `new Tagged("point", {x: 1})`. */
export class Tagged {
  constructor(tag, payload) {
    if (typeof tag !== "string") throw new TypeError("Tagged tag must be a string");
    this.tag = tag;
    this.payload = payload;
    Object.freeze(this);
  }
}

/** A float that must stay a float on the wire even when integral (§3.1). */
export class Float64 {
  constructor(value) {
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
/** `float64(2)` is sent as float 64 `2.0`, not as the int 2. */
export const float64 = (value) => new Float64(value);

/** An error that crossed the wire: the remote type name and message. */
export class RemoteError extends Error {
  constructor(name, message, remoteTraceback = null) {
    super(message);
    this.name = name;
    this.remoteTraceback = remoteTraceback;
  }
}

/** Bytes that are not a well-formed encoding (Python: `CodecError`). */
export class CodecError extends Error {
  get name() {
    return "CodecError";
  }
}

/** The peer broke the protocol; `code` is one of `Reasons`. Internal to a session. */
class ProtocolError extends Error {
  constructor(code, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.code = code;
    this.detail = detail;
  }
}

/** Why a session ended; every pending promise of the session rejects with it. */
export class SessionAborted extends Error {
  constructor(code, detail = "", byPeer = false) {
    const reason = detail ? `${code}: ${detail}` : code;
    super((byPeer ? "peer aborted: " : "session aborted: ") + reason);
    this.code = code;
    this.detail = detail;
    this.byPeer = byPeer;
    this.reason = reason;
  }
  get name() {
    return "SessionAborted";
  }
}

/** A descriptor as it appears on the wire (§4): ext code and position. */
export class Desc {
  constructor(kind, position) {
    this.kind = kind;
    this.position = position;
    Object.freeze(this);
  }
  get kindName() {
    return DESC_NAMES[this.kind] ?? String(this.kind);
  }
  static fromName(name, position) {
    const kind = Number(Object.keys(DESC_NAMES).find((k) => DESC_NAMES[k] === name));
    if (!kind) throw new TypeError(`unknown descriptor kind ${name}`);
    return new Desc(kind, position);
  }
}

// Remotables: objects passed by reference. Marked in a WeakMap rather than
// with a property so a peer's data can never make a record look remotable.
const farInterfaces = new WeakMap();
/** Method names a peer may call: an identifier not starting with "_" (as in Python). */
const METHOD_NAME = /^[A-Za-z][A-Za-z0-9_]{0,127}$/;

/**
 * Make `methods` a remotable with interface name `iface`: passed by
 * reference, and the peer may call its own function properties whose names
 * are identifiers not starting with "_". Returns the same object, frozen.
 */
export function Far(iface, methods = {}) {
  if (typeof iface !== "string" || !iface) throw new TypeError("Far() needs a non-empty interface name");
  for (const [name, fn] of Object.entries(methods)) {
    if (typeof fn !== "function") continue; // data properties are allowed but not callable
    if (!METHOD_NAME.test(name)) throw new TypeError(`Far(): ${JSON.stringify(name)} is not a valid remote method name`);
  }
  Object.freeze(methods);
  farInterfaces.set(methods, iface);
  return methods;
}
/** The interface name of a remotable made by `Far`, or undefined. */
export const interfaceOf = (obj) => (obj !== null && typeof obj === "object" ? farInterfaces.get(obj) : undefined);

/** `{promise, resolve, reject}`: a pending promise and the functions that settle it. */
export function makePromiseKit() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

// ---------------------------------------------------------------------------
// codec (§3): passable values <-> wire tree <-> bytes.
//
// Encoding first turns a value into a "wire tree" that @msgpack/msgpack can
// write (descriptors, bigints, tagged and errors become ExtData), then lets
// the library write it. Two things the library cannot be told through its
// options are done by overriding one method each: writing an integral float
// as float 64, and writing a bigint in the 64-bit range as the shortest int
// (its `useBigInt64` option would also turn numbers >= 2**32 into floats).

class WireEncoder extends Encoder {
  encodeObject(object, depth) {
    if (object instanceof Float64) this.encodeNumberAsFloat(object.value);
    else if (typeof object === "bigint") this.encodeBigInt64(object); // only unsafe 64-bit ints get here
    else super.encodeObject(object, depth);
  }
}

// The library's default codec would write Dates as timestamps (ext -1); ours writes no ext by itself.
const encodeCodec = new ExtensionCodec();
encodeCodec.register({ type: -1, encode: undefined, decode: undefined });
const encoder = new WireEncoder({ extensionCodec: encodeCodec, maxDepth: 2 * MAX_DEPTH + 8, initialBufferSize: 512 });

// Strings must be Unicode: a lone UTF-16 surrogate has no UTF-8 form. The
// fallbacks (for engines before String.prototype.isWellFormed) match a pair
// or, in group 1, a lone surrogate.
const SURROGATES = /[\ud800-\udbff][\udc00-\udfff]|([\ud800-\udfff])/g;
const isWellFormed =
  typeof String.prototype.isWellFormed === "function"
    ? (s) => s.isWellFormed()
    : (s) => ![...s.matchAll(SURROGATES)].some((m) => m[1] !== undefined);
const toWellFormed =
  typeof String.prototype.toWellFormed === "function"
    ? (s) => s.toWellFormed()
    : (s) => s.replace(SURROGATES, (pair, lone) => (lone ? "\ufffd" : pair));

function checkString(s) {
  if (!isWellFormed(s)) throw new TypeError("string is not valid Unicode (lone surrogate)");
  return s;
}

function bigintBytes(n) {
  // Minimal two's complement: one more byte than the magnitude's bits need, as in Python.
  const magnitude = n < 0n ? -n - 1n : n;
  const bits = magnitude === 0n ? 0 : magnitude.toString(2).length;
  const length = Math.floor(bits / 8) + 1;
  const hex = BigInt.asUintN(length * 8, n).toString(16).padStart(length * 2, "0");
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function positionBytes(pos) {
  if (!Number.isSafeInteger(pos) || pos < 0) throw new TypeError(`bad position ${pos}`);
  const out = [];
  do {
    out.unshift(pos % 256);
    pos = Math.floor(pos / 256);
  } while (pos > 0);
  return Uint8Array.from(out);
}

function wireInt(n) {
  if (n >= -MAX_POSITION && n <= MAX_POSITION) return Number(n);
  if (n >= INT_MIN && n <= INT_MAX) return n; // written by WireEncoder as uint 64 / int 64
  const data = bigintBytes(n);
  if (data.length > MAX_BIGINT_BYTES) throw new TypeError(`int too large to pass (${data.length} bytes > ${MAX_BIGINT_BYTES})`);
  return new ExtData(EXT_BIGINT, data);
}

function wireRecord(keys, values) {
  const out = Object.create(null); // so an own "__proto__" key stays a key
  keys.forEach((k, i) => {
    out[k] = values[i];
  });
  // A JS object lists integer-like keys ("1") first, whatever the order they
  // were added in; a Proxy reporting the keys in the given order makes the
  // library write them that way (§3.1: insertion order, no sorting).
  const natural = Object.keys(out);
  if (natural.some((k, i) => k !== keys[i])) return new Proxy(out, { ownKeys: () => keys });
  return out;
}

const noRefs = (obj) => {
  throw new TypeError(`cannot encode ${describeType(obj)}: no session to pass references through`);
};

function describeType(v) {
  if (v === null) return "null";
  if (typeof v !== "object" && typeof v !== "function") return typeof v;
  return v.constructor?.name ?? "object";
}

function toWire(value, onRef, depth) {
  switch (typeof value) {
    case "undefined":
      return null;
    case "boolean":
      return value;
    case "string":
      return checkString(value);
    case "number":
      // The library writes every safe integer as an int; -0 is a float.
      return Object.is(value, -0) ? new Float64(-0) : value;
    case "bigint":
      return wireInt(value);
    case "function":
      throw new TypeError("cannot pass a function: make a remotable with Far()");
    case "symbol":
      throw new TypeError("cannot pass a symbol");
  }
  if (value === null) return null;
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (value instanceof Float64) return value;
  if (depth >= MAX_DEPTH) throw new TypeError(`value nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(value)) {
    const out = new Array(value.length);
    for (let i = 0; i < value.length; i++) out[i] = toWire(value[i], onRef, depth + 1);
    return out;
  }
  if (value instanceof Desc) return new ExtData(value.kind, positionBytes(value.position));
  if (value instanceof Tagged) {
    const inner = [checkString(value.tag), toWire(value.payload, onRef, depth + 1)];
    return new ExtData(EXT_TAGGED, encoder.encode(inner));
  }
  if (value instanceof Error) {
    const fields = [toWellFormed(String(value.name)), toWellFormed(String(value.message))];
    if (value instanceof RemoteError && typeof value.remoteTraceback === "string") {
      fields.push(toWellFormed(value.remoteTraceback));
    }
    return new ExtData(EXT_ERROR, encoder.encode(fields));
  }
  if (value instanceof Map) {
    const keys = [];
    const values = [];
    for (const [k, v] of value) {
      if (typeof k !== "string") throw new TypeError(`record keys must be strings, not ${describeType(k)}`);
      keys.push(checkString(k));
      values.push(toWire(v, onRef, depth + 1));
    }
    return wireRecord(keys, values);
  }
  if (farInterfaces.has(value) || refInfo.has(value) || value instanceof Promise) {
    const desc = onRef(value);
    return new ExtData(desc.kind, positionBytes(desc.position));
  }
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) {
    const keys = Object.keys(value);
    const values = keys.map((k) => toWire(value[checkString(k)], onRef, depth + 1));
    return wireRecord(keys, values);
  }
  throw new TypeError(`cannot pass a ${describeType(value)}: not passable (use Far() to pass an object by reference)`);
}

/**
 * Encode one passable value to msgpack bytes. `onRef(obj)` returns the
 * `Desc` for each remotable or promise met (the session supplies it).
 * Throws TypeError for anything not passable.
 */
export function encode(value, onRef = noRefs) {
  return encoder.encode(toWire(value, onRef, 0));
}

// -- decoding ---------------------------------------------------------------
//
// The library decodes; three overrides make it strict where the protocol
// needs it: strings are decoded with a fatal UTF-8 decoder (its own decoder
// replaces bad bytes), integral floats come out boxed as Float64 (else 2.0
// and 2 would be the same number), and 64-bit ints it reads as bigints come
// out as numbers when they fit exactly.

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const normInt = (n) => (n >= -MAX_POSITION && n <= MAX_POSITION ? Number(n) : n);
const boxFloat = (x) => (Number.isInteger(x) && !Object.is(x, -0) ? new Float64(x) : x);

class WireDecoder extends Decoder {
  decodeUtf8String(byteLength, headerOffset) {
    const start = this.pos + headerOffset;
    if (this.bytes.byteLength < start + byteLength) throw new RangeError("Insufficient data");
    const s = strictUtf8.decode(this.bytes.subarray(start, start + byteLength));
    this.pos += headerOffset + byteLength;
    return s;
  }
  readF32() {
    return boxFloat(super.readF32());
  }
  readF64() {
    return boxFloat(super.readF64());
  }
  readU64AsBigInt() {
    return normInt(super.readU64AsBigInt());
  }
  readI64AsBigInt() {
    return normInt(super.readI64AsBigInt());
  }
}

/** A tagged value whose payload has not been revived yet. */
class RawTagged {
  constructor(tag, payload) {
    this.tag = tag;
    this.payload = payload;
  }
}

function stringKeysOnly(key) {
  if (typeof key !== "string") throw new CodecError("record keys must be strings");
  return key;
}

function decodeBigint(data) {
  if (data.length === 0 || data.length > MAX_BIGINT_BYTES) throw new CodecError("bigint payload has a bad length");
  let hex = "";
  for (const b of data) hex += b.toString(16).padStart(2, "0");
  const n = BigInt.asIntN(data.length * 8, BigInt("0x" + hex));
  if ((n >= INT_MIN && n <= INT_MAX) || bigintBytes(n).length !== data.length) {
    throw new CodecError("bigint is not in canonical form");
  }
  return n;
}

function decodePosition(kind, data) {
  const n = data.length;
  if (n === 0 || n > 7 || (data[0] === 0 && n > 1)) throw new CodecError("malformed position");
  let pos = 0;
  for (const b of data) pos = pos * 256 + b; // above 2**53 this rounds, but stays above MAX_POSITION
  if (pos > MAX_POSITION) throw new CodecError("position out of range");
  return new Desc(kind, pos);
}

// Tagged and error payloads are nested msgpack, decoded by the decoder one
// level down: a decoder may not be re-entered, and the level bounds the
// recursion as Python's per-depth ext hooks do.
const decoders = [];
function decoderAt(level) {
  return (decoders[level] ??= new WireDecoder({
    extensionCodec: decodeCodec,
    context: { level },
    useBigInt64: true,
    keyDecoder: null,
    mapKeyConverter: stringKeysOnly,
  }));
}

function decodeExt(data, type, context) {
  if (context.level >= MAX_DEPTH) throw new CodecError(`value nested deeper than ${MAX_DEPTH} levels`);
  switch (type) {
    case EXT_IMPORT_OBJECT:
    case EXT_IMPORT_PROMISE:
    case EXT_EXPORT:
    case EXT_ANSWER:
      return decodePosition(type, data);
    case EXT_BIGINT:
      return decodeBigint(data);
    case EXT_TAGGED: {
      const inner = decoderAt(context.level + 1).decode(data);
      if (!Array.isArray(inner) || inner.length !== 2 || typeof inner[0] !== "string") {
        throw new CodecError("tagged value must be [tag: str, payload]");
      }
      return new RawTagged(inner[0], inner[1]);
    }
    case EXT_ERROR: {
      const inner = decoderAt(context.level + 1).decode(data);
      if (!Array.isArray(inner) || inner.length < 2 || inner.length > 3 || !inner.every((x) => typeof x === "string")) {
        throw new CodecError("error must be [name: str, message: str, traceback?: str]");
      }
      return new RemoteError(inner[0], inner[1], inner[2] ?? null);
    }
    default:
      throw new CodecError(`unknown ext type ${type}`);
  }
}

// Every ext code, including msgpack's own negative ones (the timestamp), goes
// through decodeExt, so an unassigned code is refused wherever it appears.
const decodeCodec = new ExtensionCodec();
for (let type = -128; type <= 127; type++) decodeCodec.register({ type, encode: undefined, decode: decodeExt });

/** First decoding step: bytes to plain data with descriptor/tagged markers. Throws CodecError. */
export function unpack(bytes) {
  try {
    return decoderAt(0).decode(bytes);
  } catch (e) {
    if (e instanceof CodecError) throw e;
    throw new CodecError(`not valid msgpack: ${e.message}`);
  }
}

/** Second decoding step: check the data is passable, turn markers into values. */
export function revive(value, onDesc = null, depth = 0) {
  switch (typeof value) {
    case "string":
    case "number":
    case "boolean":
    case "bigint":
      return value;
  }
  if (value === null || value instanceof Float64) return value;
  if (value instanceof Uint8Array) return value.slice(); // detach from the frame's buffer
  if (depth >= MAX_DEPTH) throw new CodecError(`value nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = revive(value[i], onDesc, depth + 1);
    return value;
  }
  if (value instanceof Desc) return onDesc ? onDesc(value) : value;
  if (value instanceof RawTagged) return new Tagged(value.tag, revive(value.payload, onDesc, depth + 1));
  if (value instanceof RemoteError) return value;
  if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const k of Object.keys(value)) value[k] = revive(value[k], onDesc, depth + 1);
    return value;
  }
  throw new CodecError(`not a passable value: ${describeType(value)}`);
}

/** Decode one encoded value; descriptors go to `onDesc` (or stay `Desc`). Throws CodecError. */
export function decode(bytes, onDesc = null) {
  return revive(unpack(bytes), onDesc);
}

// ---------------------------------------------------------------------------
// proxies for what the peer gave us

// Per proxy: {session, kind: "object" | "promise" | "answer", position, token, ...}.
// Kept here, not on the proxy, so nothing the user or the peer does can forge one.
const refInfo = new WeakMap();

/** A reference to an object the peer exported. Call it with `E(ref).method()`. */
export class RemoteRef {
  toString() {
    const info = refInfo.get(this);
    return `[RemoteRef ${info?.session.name}#${info?.position}]`;
  }
}

const PENDING = 0;
const FULFILLED = 1;
const REJECTED = 2;
const baseThen = Promise.prototype.then;
const noop = () => {};

/**
 * A promise settled by the peer: the answer to one of our calls (it can be
 * pipelined on before it settles) or a promise the peer passed us (we ask the
 * peer to tell us its settlement — `listen` — when someone first waits on it).
 * Rejections of remote promises nobody waits on are not reported as unhandled:
 * the session's end is reported once, through `Connection.closed`.
 */
export class RemotePromise extends Promise {
  static get [Symbol.species]() {
    return Promise;
  }
  then(onFulfilled, onRejected) {
    const info = refInfo.get(this);
    if (info && info.state === PENDING && !info.listening) {
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
const registry = new FinalizationRegistry((held) => held.session._released(held));

function makeRemotePromise(session, kind, position) {
  let resolve, reject;
  const promise = new RemotePromise((res, rej) => {
    resolve = res;
    reject = rej;
  });
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

function makeRemoteRef(session, position) {
  const ref = Object.freeze(new RemoteRef());
  const info = { session, kind: "object", position, token: nextToken++, dropped: false };
  refInfo.set(ref, info);
  return { ref, info };
}

/**
 * Release a proxy now instead of waiting for the garbage collector: an
 * imported object or promise (gc-exports) or the answer of a call
 * (gc-answers). The proxy may not be used afterwards (calls on it and
 * passing it reject with TypeError).
 */
export function drop(ref) {
  const info = refInfo.get(ref);
  if (!info || info.dropped) return;
  info.dropped = true;
  registry.unregister(info);
  info.session._released(info);
}

// Resolvers we export so the peer can settle one of our promises (§6.3).
const resolverRejects = new WeakMap();
function makeResolver(info) {
  const resolver = Far("Resolver", {
    fulfill(value = null) {
      info.resolve(value);
    },
    break(reason = null) {
      info.reject(reason instanceof Error ? reason : new RemoteError("Error", String(reason)));
    },
  });
  resolverRejects.set(resolver, info.reject);
  return resolver;
}

// ---------------------------------------------------------------------------
// the session (§5–§8): a state machine with no I/O, like captp/session.py.

const NO_BOOTSTRAP = Far("NoBootstrap", {});

class ExportLimit extends Error {}

function splitReason(reason) {
  const i = reason.indexOf(": ");
  return i < 0 ? [reason, ""] : [reason.slice(0, i), reason.slice(i + 2)];
}

function truncate(s, max) {
  if (s.length <= max) return s;
  return Array.from(s).slice(0, max).join(""); // code points, as Python counts
}

const isInt = (x) => (typeof x === "number" && Number.isInteger(x)) || typeof x === "bigint";

/**
 * One side of one CapTP connection. Frames go in through `receiveFrame`,
 * frames to send come out of `dataToSend()`; `onWakeup` is called when new
 * frames wait, `onEnd(reason)` once when the session ends.
 */
export class Session {
  constructor({ bootstrap = null, limits = {}, name = "captp", debug = false } = {}) {
    this.name = name;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.debug = debug;
    this.onWakeup = null;
    this.onEnd = null;
    this.aborted = null;
    this.framesIn = 0;
    this.framesOut = 0;
    this._outbox = [];
    this._peerStarted = false;
    this._exports = new Map(); // position -> {obj, wireCount, isPromise}
    this._exportPosOf = new Map(); // object -> position
    this._nextExport = 1;
    this._imports = new Map(); // position -> {ref: WeakRef, token, wireCount}
    this._questions = new Set();
    this._nextQuestion = 0;
    this._answers = new Map(); // position -> Promise
    this._gcExports = new Map();
    this._gcAnswers = [];
    this._journal = null;
    bootstrap ??= NO_BOOTSTRAP;
    if (bootstrap instanceof Promise) throw new TypeError("the bootstrap must be an object, not a promise");
    this._exports.set(0, { obj: bootstrap, wireCount: 0, isPromise: false });
    this._exportPosOf.set(bootstrap, 0);
    this._queue([OP_START, PROTOCOL_VERSION]);
  }

  // -- public surface ------------------------------------------------------
  /** The peer's bootstrap object (its export 0). */
  bootstrap() {
    return this._importProxy(0, EXT_IMPORT_OBJECT, false);
  }

  /** Process one incoming frame (Uint8Array). Never throws for anything the peer sends. */
  receiveFrame(frame) {
    if (this.aborted) return;
    this.framesIn += 1;
    if (frame instanceof ArrayBuffer) frame = new Uint8Array(frame);
    try {
      if (frame.byteLength > this.limits.maxFrameSize) throw new ProtocolError(R.FRAME_TOO_LARGE, `${frame.byteLength} bytes`);
      let msg;
      try {
        msg = unpack(frame);
      } catch (e) {
        throw new ProtocolError(R.MALFORMED, e.message);
      }
      this._dispatch(msg);
    } catch (e) {
      if (e instanceof ProtocolError) this._fail(e.code, e.detail);
      else if (e instanceof CodecError) this._fail(R.MALFORMED, e.message);
      else throw e;
    }
  }

  /** Frames waiting to go out, oldest first. */
  dataToSend() {
    if (!this.aborted && (this._gcExports.size || this._gcAnswers.length)) this._flushGc();
    const out = this._outbox;
    this._outbox = [];
    this.framesOut += out.length;
    return out;
  }

  /** End the session from our side: tell the peer and break everything pending. */
  abort(reason = R.CLOSED) {
    if (this.aborted) return;
    reason = truncate(String(reason), this.limits.maxReasonLength);
    this._outbox.push(encode([OP_ABORT, reason]));
    const [code, detail] = splitReason(reason);
    this._terminate(new SessionAborted(code, detail));
  }

  /** The transport saw the peer break the protocol (e.g. a text WebSocket message). */
  protocolError(code, detail = "") {
    this._fail(code, detail);
  }

  /** The transport ended without an abort: break everything pending, send nothing. */
  connectionLost(detail = "") {
    if (!this.aborted) this._terminate(new SessionAborted(R.DISCONNECTED, detail));
  }

  /** Table sizes and frame counts. */
  stats() {
    return {
      exports: this._exports.size,
      imports: this._imports.size,
      questions: this._questions.size,
      answers: this._answers.size,
      framesIn: this.framesIn,
      framesOut: this.framesOut,
    };
  }

  // -- sending -------------------------------------------------------------
  /**
   * Encode one frame. Exports are all-or-nothing per frame: if part of the
   * value cannot be encoded, the export entries made for the rest are rolled
   * back, or they would pin objects the peer can never release.
   */
  _encode(message) {
    const journal = [];
    this._journal = journal;
    try {
      return encode(message, (obj) => this._describe(obj));
    } catch (e) {
      for (const [pos, created] of journal.reverse()) {
        const entry = this._exports.get(pos);
        if (!entry) continue;
        entry.wireCount -= 1;
        if (created) {
          this._exports.delete(pos);
          this._exportPosOf.delete(entry.obj);
        }
      }
      throw e;
    } finally {
      this._journal = null;
    }
  }

  _push(frame) {
    this._outbox.push(frame);
    if (this._outbox.length === 1) this.onWakeup?.();
  }

  _queue(message) {
    let frame;
    try {
      frame = this._encode(message);
    } catch (e) {
      if (!(e instanceof ExportLimit)) throw e;
      this._fail(R.LIMIT, e.message);
      return;
    }
    this._push(frame);
  }

  _targetDesc(info) {
    if (info.dropped) throw new TypeError("this reference was dropped");
    if (info.position < 0) throw new TypeError("this answer was never sent");
    return new Desc(info.kind === "answer" ? EXT_ANSWER : EXT_EXPORT, info.position);
  }

  /** Queue a call; return its answer, a RemotePromise that can be pipelined on. */
  send(target, method, args) {
    const targetInfo = refInfo.get(target);
    if (this.aborted) return rejectedAnswer(this, this.aborted);
    const pos = this._nextQuestion++;
    const { promise, info } = makeRemotePromise(this, "answer", pos);
    let frame;
    try {
      frame = this._encode([OP_DELIVER, this._targetDesc(targetInfo), method, args, pos, makeResolver(info)]);
    } catch (e) {
      info.position = -1; // nothing was sent; nothing to release
      if (e instanceof ExportLimit) {
        this._fail(R.LIMIT, e.message);
        info.reject(this.aborted);
      } else info.reject(e);
      return promise;
    }
    this._questions.add(pos);
    registry.register(promise, { session: this, kind: "answer", position: pos, token: info.token }, info);
    this._push(frame);
    return promise;
  }

  /** Queue a call whose result nobody wants (deliver-only). Throws TypeError for bad args. */
  sendOnly(target, method, args) {
    if (this.aborted) return;
    this._queue([OP_DELIVER_ONLY, this._targetDesc(refInfo.get(target)), method, args]);
  }

  /** The descriptor for `obj` as the peer will see it (the codec's onRef). */
  _describe(obj) {
    const info = refInfo.get(obj);
    if (info && info.session === this) return this._targetDesc(info);
    const isPromise = obj instanceof Promise;
    let pos = this._exportPosOf.get(obj);
    const created = pos === undefined;
    let entry;
    if (created) {
      if (this._exports.size >= this.limits.maxExports) throw new ExportLimit(`more than ${this.limits.maxExports} exports`);
      pos = this._nextExport++;
      entry = { obj, wireCount: 0, isPromise };
      this._exports.set(pos, entry);
      this._exportPosOf.set(obj, pos);
    } else entry = this._exports.get(pos);
    entry.wireCount += 1;
    this._journal?.push([pos, created]);
    return new Desc(entry.isPromise ? EXT_IMPORT_PROMISE : EXT_IMPORT_OBJECT, pos);
  }

  // -- receiving -----------------------------------------------------------
  _dispatch(msg) {
    if (!Array.isArray(msg) || msg.length === 0) throw new ProtocolError(R.MALFORMED, "a message must be a non-empty array");
    const op = msg[0];
    if (!this._peerStarted) {
      if (op === OP_ABORT) return this._onAbort(msg);
      if (op !== OP_START) throw new ProtocolError(R.NOT_STARTED, "expected start-session first");
    }
    const arity = typeof op === "string" && Object.hasOwn(ARITY, op) ? ARITY[op] : undefined;
    if (arity === undefined) throw new ProtocolError(R.UNKNOWN_OP, JSON.stringify(String(op)).slice(0, 64));
    if (msg.length !== arity) throw new ProtocolError(R.BAD_ARITY, `${op} takes ${arity - 1} fields, got ${msg.length - 1}`);
    switch (op) {
      case OP_START:
        return this._onStart(msg);
      case OP_DELIVER:
        return this._onDeliver(msg);
      case OP_DELIVER_ONLY:
        return this._onDeliverOnly(msg);
      case OP_LISTEN:
        return this._onListen(msg);
      case OP_GC_EXPORTS:
        return this._onGcExports(msg);
      case OP_GC_ANSWERS:
        return this._onGcAnswers(msg);
      case OP_ABORT:
        return this._onAbort(msg);
    }
  }

  _onStart(msg) {
    if (this._peerStarted) throw new ProtocolError(R.BAD_FIELD, "duplicate start-session");
    if (msg[1] !== PROTOCOL_VERSION) throw new ProtocolError(R.VERSION, `peer speaks ${JSON.stringify(String(msg[1]).slice(0, 64))}`);
    this._peerStarted = true;
  }

  /** The local thing a deliver/listen target names: our export or our answer. */
  _localTarget(desc) {
    if (!(desc instanceof Desc)) throw new ProtocolError(R.BAD_FIELD, "target must be a descriptor");
    if (desc.kind === EXT_EXPORT) {
      const entry = this._exports.get(desc.position);
      if (!entry) throw new ProtocolError(R.UNKNOWN_POSITION, `export ${desc.position}`);
      return entry.obj;
    }
    if (desc.kind === EXT_ANSWER) {
      const answer = this._answers.get(desc.position);
      if (!answer) throw new ProtocolError(R.UNKNOWN_POSITION, `answer ${desc.position}`);
      return answer;
    }
    throw new ProtocolError(R.BAD_FIELD, `cannot target ${desc.kindName}`);
  }

  _importProxy(pos, kind, counted) {
    let entry = this._imports.get(pos);
    let proxy = entry?.ref.deref();
    if (proxy === undefined) {
      if (!entry && this._imports.size >= this.limits.maxImports) throw new ProtocolError(R.LIMIT, `more than ${this.limits.maxImports} imports`);
      const made = kind === EXT_IMPORT_OBJECT ? makeRemoteRef(this, pos) : makeRemotePromise(this, "promise", pos);
      proxy = made.ref ?? made.promise;
      // A proxy the collector took but whose finalizer has not run yet leaves
      // its entry (and count) behind; the new proxy takes it over.
      if (!entry) {
        entry = { ref: null, token: 0, wireCount: 0 };
        this._imports.set(pos, entry);
      }
      entry.ref = new WeakRef(proxy);
      entry.token = made.info.token;
      registry.register(proxy, { session: this, kind: "import", position: pos, token: made.info.token }, made.info);
    } else if (proxy instanceof RemoteRef !== (kind === EXT_IMPORT_OBJECT)) {
      throw new ProtocolError(R.BAD_FIELD, `position ${pos} changed between object and promise`);
    }
    if (counted) entry.wireCount += 1;
    return proxy;
  }

  _reviveDesc(desc) {
    if (desc.kind === EXT_IMPORT_OBJECT || desc.kind === EXT_IMPORT_PROMISE) return this._importProxy(desc.position, desc.kind, true);
    return this._localTarget(desc);
  }

  _reviveArgs(args) {
    if (!Array.isArray(args)) throw new ProtocolError(R.BAD_FIELD, "args must be an array");
    try {
      return revive(args, (d) => this._reviveDesc(d));
    } catch (e) {
      if (e instanceof CodecError) throw new ProtocolError(R.MALFORMED, e.message);
      throw e;
    }
  }

  _checkMethod(method) {
    const max = this.limits.maxMethodLength;
    if (typeof method !== "string" || (method.length > max && Array.from(method).length > max)) {
      throw new ProtocolError(R.BAD_FIELD, "method must be a short string");
    }
  }

  _onDeliver(msg) {
    const [, targetDesc, method, args, answerPos, resolveMe] = msg;
    this._checkMethod(method);
    if (answerPos !== null) {
      if (!Number.isSafeInteger(answerPos) || answerPos < 0) throw new ProtocolError(R.BAD_FIELD, "answer position must be null or 0..2**53-1");
      if (this._answers.has(answerPos)) throw new ProtocolError(R.POSITION_IN_USE, `answer ${answerPos}`);
      if (this._answers.size >= this.limits.maxAnswers) throw new ProtocolError(R.LIMIT, `more than ${this.limits.maxAnswers} pending answers`);
    }
    if (resolveMe !== null && !(resolveMe instanceof Desc && resolveMe.kind === EXT_IMPORT_OBJECT)) {
      throw new ProtocolError(R.BAD_FIELD, "resolve_me must be null or an import-object");
    }
    const target = this._localTarget(targetDesc);
    const values = this._reviveArgs(args);
    const resolver = resolveMe !== null ? this._reviveDesc(resolveMe) : null;
    const result = callTarget(target, method, values);
    if (answerPos !== null) this._answers.set(answerPos, result);
    if (resolver) this._report(result, resolver);
  }

  _onDeliverOnly(msg) {
    const [, targetDesc, method, args] = msg;
    this._checkMethod(method);
    const target = this._localTarget(targetDesc);
    callTarget(target, method, this._reviveArgs(args));
  }

  _onListen(msg) {
    const [, targetDesc, resolverDesc, wantsPartial] = msg;
    if (!(resolverDesc instanceof Desc && resolverDesc.kind === EXT_IMPORT_OBJECT)) throw new ProtocolError(R.BAD_FIELD, "listen resolver must be an import-object");
    if (typeof wantsPartial !== "boolean") throw new ProtocolError(R.BAD_FIELD, "wants_partial must be a boolean");
    const target = this._localTarget(targetDesc);
    const resolver = this._reviveDesc(resolverDesc);
    // A plain object is "settled" already: the resolver hears of it at once.
    this._report(target instanceof Promise ? target : Promise.resolve(target), resolver);
  }

  _onGcExports(msg) {
    const [, positions, deltas] = msg;
    if (!Array.isArray(positions) || !Array.isArray(deltas) || positions.length !== deltas.length) {
      throw new ProtocolError(R.BAD_FIELD, "gc-exports needs two arrays of equal length");
    }
    positions.forEach((pos, i) => {
      const delta = deltas[i];
      if (!isInt(pos) || pos < 0 || pos > MAX_POSITION || !isInt(delta) || delta <= 0) {
        throw new ProtocolError(R.BAD_FIELD, "gc-exports needs positions 0..2**53-1 and positive deltas");
      }
      const entry = this._exports.get(pos);
      if (!entry) throw new ProtocolError(R.UNKNOWN_POSITION, `gc of export ${pos}`);
      if (delta > entry.wireCount) throw new ProtocolError(R.BAD_FIELD, `gc of export ${pos} by more than was sent`);
      entry.wireCount -= Number(delta);
      if (entry.wireCount === 0 && pos !== 0) {
        this._exports.delete(pos);
        this._exportPosOf.delete(entry.obj);
      }
    });
  }

  _onGcAnswers(msg) {
    const positions = msg[1];
    if (!Array.isArray(positions)) throw new ProtocolError(R.BAD_FIELD, "gc-answers needs an array");
    for (const pos of positions) {
      if (!isInt(pos) || pos < 0 || pos > MAX_POSITION) throw new ProtocolError(R.BAD_FIELD, "gc-answers needs positions 0..2**53-1");
      if (!this._answers.has(pos)) throw new ProtocolError(R.UNKNOWN_POSITION, `gc of answer ${String(pos).slice(0, 40)}`);
      this._answers.delete(pos);
    }
  }

  _onAbort(msg) {
    let reason = msg.length === 2 && typeof msg[1] === "string" ? msg[1] : "abort";
    reason = truncate(reason, this.limits.maxReasonLength);
    const [code, detail] = splitReason(reason);
    this._terminate(new SessionAborted(code, detail, true));
  }

  /** Tell the peer's resolver how `promise` settled (§6.3). */
  _report(promise, resolver) {
    const send = (verb, value) => this._queue([OP_DELIVER_ONLY, new Desc(EXT_EXPORT, refInfo.get(resolver).position), verb, [value]]);
    // Plain `then`: on a promise imported from another session it starts the listening.
    promise.then(
      (value) => {
        if (this.aborted) return;
        try {
          send("fulfill", value);
        } catch (e) {
          send("break", new RemoteError("TypeError", `result is not passable: ${e.message}`));
        }
      },
      (error) => {
        if (this.aborted) return;
        send("break", this._wireError(error));
      },
    );
  }

  _wireError(e) {
    if (e instanceof RemoteError) return e;
    if (e instanceof Error) return new RemoteError(e.name, e.message, this.debug && e.stack ? String(e.stack) : null);
    return new RemoteError("Error", String(e));
  }

  _startListening(info) {
    if (this.aborted) return info.reject(this.aborted);
    if (info.position < 0 || info.dropped) return;
    this._queue([OP_LISTEN, new Desc(EXT_EXPORT, info.position), makeResolver(info), false]);
  }

  // -- garbage collection (§6.7) ------------------------------------------
  /** A proxy was collected or dropped: release its import or answer. */
  _released({ kind, position, token }) {
    if (kind === "answer") {
      if (!this._questions.delete(position) || this.aborted) return;
      this._gcAnswers.push(position);
    } else {
      const entry = this._imports.get(position);
      if (!entry || entry.token !== token) return; // a newer proxy took over this position
      this._imports.delete(position);
      if (!entry.wireCount || this.aborted) return;
      this._gcExports.set(position, (this._gcExports.get(position) ?? 0) + entry.wireCount);
    }
    if (this._outbox.length === 0) this.onWakeup?.();
  }

  _flushGc() {
    if (this._gcExports.size) {
      this._outbox.push(encode([OP_GC_EXPORTS, [...this._gcExports.keys()], [...this._gcExports.values()]]));
      this._gcExports.clear();
    }
    if (this._gcAnswers.length) {
      this._outbox.push(encode([OP_GC_ANSWERS, this._gcAnswers]));
      this._gcAnswers = [];
    }
  }

  // -- ending (§8) ----------------------------------------------------------
  _fail(code, detail) {
    if (this.aborted) return;
    const reason = detail ? truncate(`${code}: ${detail}`, this.limits.maxReasonLength) : code;
    this._outbox.push(encode([OP_ABORT, reason]));
    this._terminate(new SessionAborted(code, detail));
    this.onWakeup?.();
  }

  _terminate(reason) {
    this.aborted = reason;
    const exports = this._exports;
    this._exports = new Map();
    this._exportPosOf = new Map();
    this._answers = new Map();
    this._gcExports.clear();
    this._gcAnswers = [];
    // Break every promise the peer was going to settle for us.
    for (const entry of exports.values()) resolverRejects.get(entry.obj)?.(reason);
    for (const entry of this._imports.values()) {
      const proxy = entry.ref.deref();
      if (proxy instanceof RemotePromise) refInfo.get(proxy).reject(reason);
    }
    this.onEnd?.(reason);
  }
}

function rejectedAnswer(session, reason) {
  const { promise, info } = makeRemotePromise(session, "answer", -1);
  info.reject(reason);
  return promise;
}

// ---------------------------------------------------------------------------
// eventual send

/** Call a public method of a local object now; a promise for its result. */
function localCall(target, method, args) {
  if (typeof method !== "string" || !METHOD_NAME.test(method)) {
    return Promise.reject(new RemoteError("TypeError", `${JSON.stringify(String(method))} is not a remote method name`));
  }
  const iface = farInterfaces.get(target);
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

/** What the session does with a deliver: run it, forward it, or queue it behind a promise. */
function callTarget(target, method, args) {
  const result = eventualSend(target, method, args, true);
  baseThen.call(result, undefined, noop); // a failure nobody asked about is not an unhandled rejection
  return result;
}

function eventualSend(target, method, args, now = false) {
  const info = refInfo.get(target);
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

function sendOnly(target, method, args) {
  const info = refInfo.get(target);
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

function sender(target, only) {
  return new Proxy(Object.create(null), {
    get(_, method) {
      // Not thenable, so `await E(x)` is not mistaken for a promise.
      if (typeof method !== "string" || method === "then") return undefined;
      return only ? (...args) => void sendOnly(target, method, args) : (...args) => eventualSend(target, method, args);
    },
  });
}

/**
 * `E(target).method(...args)` calls `method` on a remote reference, a
 * (remote) promise or a local object, and returns a promise for the result.
 * On a remote answer the call is pipelined: `E(E(f).make("red")).drive()`
 * sends both calls at once, one round trip.
 */
export function E(target) {
  return sender(target, false);
}
/** `E.sendOnly(target).method(...args)`: deliver-only; the result and any failure are dropped. */
E.sendOnly = (target) => sender(target, true);

// ---------------------------------------------------------------------------
// connections: a session driven over a transport

/**
 * A running session over a transport. `closed` resolves with the
 * `SessionAborted` that ended it (`code`, `detail`, `byPeer`).
 * `onFrame(direction, frame)`, if given, sees every frame ("in" or "out").
 */
export class Connection {
  constructor(session, transport, { onFrame = null } = {}) {
    this.session = session;
    this._transport = transport;
    this._onFrame = onFrame;
    this._scheduled = false;
    this._done = false;
    this.closed = new Promise((resolve) => {
      this._resolveClosed = resolve;
    });
    // Frames queued in one turn leave together, after it (a pipelined
    // E(E(f).make()).drive() is two frames in one flush).
    session.onWakeup = () => this._schedule();
    session.onEnd = () => this._schedule();
    this._schedule(); // start-session
  }

  /** The peer's bootstrap object. */
  bootstrap() {
    return this.session.bootstrap();
  }
  /** End the session: the peer receives `["abort", reason]`. */
  close(reason = R.CLOSED) {
    this.session.abort(reason);
  }
  get aborted() {
    return this.session.aborted;
  }
  /** Table sizes and frame counts. */
  stats() {
    return this.session.stats();
  }

  // Called by the transport.
  _receive(frame) {
    this._onFrame?.("in", frame);
    this.session.receiveFrame(frame);
    this._flush();
  }
  _protocolError(code, detail) {
    this.session.protocolError(code, detail);
    this._flush();
  }
  _lost(detail) {
    this.session.connectionLost(detail);
    this._flush();
  }

  _schedule() {
    if (this._scheduled) return;
    this._scheduled = true;
    queueMicrotask(() => {
      this._scheduled = false;
      this._flush();
    });
  }
  _flush() {
    if (this._done) return;
    for (const frame of this.session.dataToSend()) {
      this._onFrame?.("out", frame);
      this._transport.send(frame);
    }
    if (this.session.aborted) {
      this._done = true;
      this._transport.close();
      this._resolveClosed(this.session.aborted);
    }
  }
}

/**
 * Two connected sessions in memory, for tests: `[a, b]`, where a reaches
 * `bootstrapB` and b reaches `bootstrapA`. `onFrame(from, frame)` sees every
 * frame ("a" or "b" sent it) in order.
 */
export function makeMemoryPair({ bootstrapA = null, bootstrapB = null, limits, onFrame, debug } = {}) {
  const ends = {};
  const transport = (from, to) => ({
    send(frame) {
      onFrame?.(from, frame);
      queueMicrotask(() => ends[to]._receive(frame.slice()));
    },
    close() {
      queueMicrotask(() => ends[to]._lost("memory transport closed"));
    },
  });
  ends.a = new Connection(new Session({ bootstrap: bootstrapA, limits, debug, name: "a" }), transport("a", "b"));
  ends.b = new Connection(new Session({ bootstrap: bootstrapB, limits, debug, name: "b" }), transport("b", "a"));
  return [ends.a, ends.b];
}

/**
 * Open a CapTP connection over a WebSocket (one binary message per frame).
 * Options: `bootstrap` (what the peer reaches at position 0), `limits`,
 * `debug`, `protocols`, `onFrame` (as for Connection), and `WebSocket` — the
 * constructor to use where there is no global one (node 20: the `ws` package).
 */
export function connectWebSocket(url, { bootstrap = null, limits, debug, protocols, onFrame, WebSocket: WS = globalThis.WebSocket, name = "websocket" } = {}) {
  if (typeof WS !== "function") return Promise.reject(new TypeError("no WebSocket constructor: pass one as the WebSocket option"));
  return new Promise((resolve, reject) => {
    const ws = protocols === undefined ? new WS(url) : new WS(url, protocols);
    ws.binaryType = "arraybuffer";
    let conn = null;
    ws.onerror = () => {
      if (!conn) reject(new Error(`WebSocket connection to ${url} failed`));
    };
    ws.onopen = () => {
      conn = new Connection(
        new Session({ bootstrap, limits, debug, name }),
        { send: (frame) => ws.send(frame), close: () => ws.close(1000) },
        { onFrame },
      );
      ws.onmessage = (event) => {
        if (typeof event.data === "string") conn._protocolError(R.MALFORMED, "text WebSocket message; CapTP frames are binary");
        else conn._receive(new Uint8Array(event.data));
      };
      resolve(conn);
    };
    ws.onclose = (event) => {
      if (conn) conn._lost(`WebSocket closed (${event.code})`);
      else reject(new Error(`WebSocket to ${url} closed before opening (${event.code})`));
    };
  });
}
