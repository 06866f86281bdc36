// @ts-check
// captp/codec.js — passable values <-> wire tree <-> bytes (docs/protocol.md §3, §4).
//
// msgpack itself is @msgpack/msgpack's (vendored by chat_host/build_vendor.mjs,
// never hand-written); this module decides what each passable value becomes
// on the wire and refuses, as CodecError, every byte string that is not a
// well-formed encoding. It knows nothing of sessions: references are turned
// into descriptors by the `onRef` / `onDesc` functions its caller supplies.

import { Decoder, Encoder, ExtData, ExtensionCodec } from "../vendor/msgpack.mjs";
import { Float64, RemoteError, Selector, Tagged, describeType, isSelector, remotableInterface } from "./passable.js";
import { isProxy } from "./refs.js";

// ---------------------------------------------------------------------------
// constants (§3, §4)

export const EXT_BIGINT = 1;
export const EXT_TAGGED = 2;
export const EXT_ERROR = 3;
/** Not 4 or 5: earlier vectors use those as examples of unassigned codes. */
export const EXT_SELECTOR = 6;
export const EXT_IMPORT_OBJECT = 10;
export const EXT_IMPORT_PROMISE = 11;
export const EXT_EXPORT = 12;
export const EXT_ANSWER = 13;
/** @type {Readonly<Record<number, string>>} */
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
/** Longest selector name in UTF-8 bytes (§3.2; Python's `MAX_SYMBOL_BYTES`). */
export const MAX_SELECTOR_BYTES = 1024;

const INT_MIN = -(2n ** 63n);
const INT_MAX = 2n ** 64n - 1n;

/** Bytes that are not a well-formed encoding (Python: `CodecError`). */
export class CodecError extends Error {
  get name() {
    return "CodecError";
  }
}

/** A descriptor as it appears on the wire (§4): ext code and position. */
export class Desc {
  /**
   * @param {number} kind one of the EXT_IMPORT_OBJECT ... EXT_ANSWER codes
   * @param {number} position
   */
  constructor(kind, position) {
    /** @readonly */
    this.kind = kind;
    /** @readonly */
    this.position = position;
    Object.freeze(this);
  }
  get kindName() {
    return DESC_NAMES[this.kind] ?? String(this.kind);
  }
  /**
   * @param {string} name "import-object", "import-promise", "export" or "answer"
   * @param {number} position
   */
  static fromName(name, position) {
    const kind = Number(Object.keys(DESC_NAMES).find((k) => DESC_NAMES[Number(k)] === name));
    if (!kind) throw new TypeError(`unknown descriptor kind ${name}`);
    return new Desc(kind, position);
  }
}

/**
 * Called for each remotable or promise met while encoding; returns its descriptor.
 * @typedef {(obj: object) => Desc} OnRef
 */
/**
 * Called for each descriptor met while reviving; returns the value that stands for it.
 * @typedef {(desc: Desc) => unknown} OnDesc
 */

// ---------------------------------------------------------------------------
// encoding
//
// Encoding first turns a value into a "wire tree" that @msgpack/msgpack can
// write (descriptors, bigints, tagged and errors become ExtData), then lets
// the library write it. Two things the library cannot be told through its
// options are done by overriding one method each: writing an integral float
// as float 64, and writing a bigint in the 64-bit range as the shortest int
// (its `useBigInt64` option would also turn numbers >= 2**32 into floats).
//
// The methods overridden and called are private in the library's type
// declarations, so the base classes are seen here through the shape this
// file relies on (the node tests and the shared vectors check it against the
// version package-lock.json pins).

/**
 * @typedef {{
 *   encode(object: unknown): Uint8Array,
 *   encodeObject(object: unknown, depth: number): void,
 *   encodeNumberAsFloat(value: number): void,
 *   encodeBigInt64(value: bigint): void,
 * }} EncoderInternals
 */
const EncoderBase = /** @type {new (options: import("../vendor/msgpack.mjs").EncoderOptions) => EncoderInternals} */ (
  /** @type {unknown} */ (Encoder)
);

class WireEncoder extends EncoderBase {
  /**
   * @param {unknown} object
   * @param {number} depth
   */
  encodeObject(object, depth) {
    if (object instanceof Float64) this.encodeNumberAsFloat(object.value);
    else if (typeof object === "bigint") this.encodeBigInt64(object); // only unsafe 64-bit ints get here
    else super.encodeObject(object, depth);
  }
}

// The library's default codec would write Dates as timestamps (ext -1); ours writes no ext by itself.
/** @type {ExtensionCodec} */
const encodeCodec = new ExtensionCodec();
// An encoder of `undefined` is how the library is told to write nothing for a type.
encodeCodec.register({ type: -1, encode: /** @type {any} */ (undefined), decode: /** @type {any} */ (undefined) });
const encoder = new WireEncoder({ extensionCodec: encodeCodec, maxDepth: 2 * MAX_DEPTH + 8, initialBufferSize: 512 });

// Strings must be Unicode: a lone UTF-16 surrogate has no UTF-8 form. The
// fallbacks (for engines before String.prototype.isWellFormed) match a pair
// or, in group 1, a lone surrogate.
const SURROGATES = /[\ud800-\udbff][\udc00-\udfff]|([\ud800-\udfff])/g;
/** @type {(s: string) => boolean} */
const isWellFormed =
  typeof String.prototype.isWellFormed === "function"
    ? (s) => s.isWellFormed()
    : (s) => ![...s.matchAll(SURROGATES)].some((m) => m[1] !== undefined);
/** @type {(s: string) => string} */
const toWellFormed =
  typeof String.prototype.toWellFormed === "function"
    ? (s) => s.toWellFormed()
    : (s) => s.replace(SURROGATES, (pair, lone) => (lone ? "\ufffd" : pair));

const utf8 = new TextEncoder();

/** @param {string} s */
function checkString(s) {
  if (!isWellFormed(s)) throw new TypeError("string is not valid Unicode (lone surrogate)");
  return s;
}

/** @param {bigint} n */
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

/** @param {number} pos */
function positionBytes(pos) {
  if (!Number.isSafeInteger(pos) || pos < 0) throw new TypeError(`bad position ${pos}`);
  const out = [];
  do {
    out.unshift(pos % 256);
    pos = Math.floor(pos / 256);
  } while (pos > 0);
  return Uint8Array.from(out);
}

/** @param {bigint} n */
function wireInt(n) {
  if (n >= -MAX_POSITION && n <= MAX_POSITION) return Number(n);
  if (n >= INT_MIN && n <= INT_MAX) return n; // written by WireEncoder as uint 64 / int 64
  const data = bigintBytes(n);
  if (data.length > MAX_BIGINT_BYTES) throw new TypeError(`int too large to pass (${data.length} bytes > ${MAX_BIGINT_BYTES})`);
  return new ExtData(EXT_BIGINT, data);
}

/**
 * @param {string[]} keys
 * @param {unknown[]} values
 */
function wireRecord(keys, values) {
  /** @type {Record<string, unknown>} */
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

/** @type {OnRef} */
const noRefs = (obj) => {
  throw new TypeError(`cannot encode ${describeType(obj)}: no session to pass references through`);
};

/** @param {Desc} desc */
const descExt = (desc) => new ExtData(desc.kind, positionBytes(desc.position));

/**
 * @param {unknown} value
 * @param {OnRef} onRef
 * @param {number} depth
 * @returns {unknown} the wire tree
 */
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
      // A far function (Far(iface, fn)) passes by reference like any remotable.
      if (remotableInterface(value) !== undefined) return descExt(onRef(value));
      throw new TypeError("cannot pass a function: make a remotable with Far()");
    case "symbol":
      throw new TypeError("cannot pass a symbol");
  }
  if (value === null) return null;
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (value instanceof Float64) return value;
  if (isSelector(value)) {
    // A leaf, like a string: ext 6 holding the name's UTF-8 bytes, not counted in the nesting.
    const data = utf8.encode(checkString(value.name));
    if (data.length > MAX_SELECTOR_BYTES) throw new TypeError(`selector name too long to pass (${data.length} bytes > ${MAX_SELECTOR_BYTES})`);
    return new ExtData(EXT_SELECTOR, data);
  }
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
  if (remotableInterface(value) !== undefined || isProxy(value) || value instanceof Promise) {
    return descExt(onRef(/** @type {object} */ (value)));
  }
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) {
    const record = /** @type {Record<string, unknown>} */ (value);
    const keys = Object.keys(record);
    const values = keys.map((k) => toWire(record[checkString(k)], onRef, depth + 1));
    return wireRecord(keys, values);
  }
  throw new TypeError(`cannot pass a ${describeType(value)}: not passable (use Far() to pass an object by reference)`);
}

/**
 * Encode one passable value to msgpack bytes. `onRef(obj)` returns the
 * `Desc` for each remotable or promise met (the session supplies it).
 * Throws TypeError for anything not passable.
 *
 * @param {unknown} value
 * @param {OnRef} [onRef]
 * @returns {Uint8Array}
 */
export function encode(value, onRef = noRefs) {
  return encoder.encode(toWire(value, onRef, 0));
}

// ---------------------------------------------------------------------------
// decoding
//
// The library decodes; three overrides make it strict where the protocol
// needs it: strings are decoded with a fatal UTF-8 decoder (its own decoder
// replaces bad bytes), integral floats come out boxed as Float64 (else 2.0
// and 2 would be the same number), and 64-bit ints it reads as bigints come
// out as numbers when they fit exactly.

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** @param {bigint} n */
const normInt = (n) => (n >= -MAX_POSITION && n <= MAX_POSITION ? Number(n) : n);
/** @param {number} x */
const boxFloat = (x) => (Number.isInteger(x) && !Object.is(x, -0) ? new Float64(x) : x);

/**
 * The decoder's state and methods this file relies on (private in the
 * library's declarations, as for the encoder). The read methods are typed
 * with what the overrides below return: the library only puts their
 * results into the decoded tree.
 *
 * @typedef {{
 *   decode(buffer: ArrayLike<number> | ArrayBufferView | ArrayBufferLike): unknown,
 *   pos: number,
 *   bytes: Uint8Array,
 *   decodeUtf8String(byteLength: number, headerOffset: number): string,
 *   readF32(): number | Float64,
 *   readF64(): number | Float64,
 *   readU64AsBigInt(): bigint | number,
 *   readI64AsBigInt(): bigint | number,
 * }} DecoderInternals
 */
/** @typedef {{level: number}} DecodeContext */
const DecoderBase = /** @type {new (options: import("../vendor/msgpack.mjs").DecoderOptions<DecodeContext>) => DecoderInternals} */ (
  /** @type {unknown} */ (Decoder)
);

class WireDecoder extends DecoderBase {
  /**
   * @param {number} byteLength
   * @param {number} headerOffset
   */
  decodeUtf8String(byteLength, headerOffset) {
    const start = this.pos + headerOffset;
    if (this.bytes.byteLength < start + byteLength) throw new RangeError("Insufficient data");
    const s = strictUtf8.decode(this.bytes.subarray(start, start + byteLength));
    this.pos += headerOffset + byteLength;
    return s;
  }
  readF32() {
    return boxFloat(/** @type {number} */ (super.readF32()));
  }
  readF64() {
    return boxFloat(/** @type {number} */ (super.readF64()));
  }
  readU64AsBigInt() {
    return normInt(/** @type {bigint} */ (super.readU64AsBigInt()));
  }
  readI64AsBigInt() {
    return normInt(/** @type {bigint} */ (super.readI64AsBigInt()));
  }
}

/** A tagged value whose payload has not been revived yet. */
class RawTagged {
  /**
   * @param {string} tag
   * @param {unknown} payload
   */
  constructor(tag, payload) {
    this.tag = tag;
    this.payload = payload;
  }
}

/** @param {unknown} key */
function stringKeysOnly(key) {
  if (typeof key !== "string") throw new CodecError("record keys must be strings");
  return key;
}

/** @param {Uint8Array} data */
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

/**
 * @param {number} kind
 * @param {Uint8Array} data
 */
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
/** @type {WireDecoder[]} */
const decoders = [];
/** @param {number} level */
function decoderAt(level) {
  return (decoders[level] ??= new WireDecoder({
    extensionCodec: decodeCodec,
    context: { level },
    useBigInt64: true,
    keyDecoder: null,
    mapKeyConverter: stringKeysOnly,
  }));
}

/**
 * @param {Uint8Array} data
 * @param {number} type
 * @param {DecodeContext} context
 */
function decodeExt(data, type, context) {
  // At the limit only leaves (bigints, selectors; descriptors, which revive
  // counts) may still appear, as in Python: §3.4 does not count them.
  if (context.level >= MAX_DEPTH && (type === EXT_TAGGED || type === EXT_ERROR)) {
    throw new CodecError(`value nested deeper than ${MAX_DEPTH} levels`);
  }
  switch (type) {
    case EXT_IMPORT_OBJECT:
    case EXT_IMPORT_PROMISE:
    case EXT_EXPORT:
    case EXT_ANSWER:
      return decodePosition(type, data);
    case EXT_BIGINT:
      return decodeBigint(data);
    case EXT_SELECTOR: {
      if (data.length > MAX_SELECTOR_BYTES) throw new CodecError("selector name too long");
      let name;
      try {
        name = strictUtf8.decode(data);
      } catch {
        throw new CodecError("selector name is not valid UTF-8");
      }
      return new Selector(name);
    }
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
/** @type {ExtensionCodec<DecodeContext>} */
const decodeCodec = new ExtensionCodec();
for (let type = -128; type <= 127; type++) decodeCodec.register({ type, encode: /** @type {any} */ (undefined), decode: decodeExt });

/**
 * First decoding step: bytes to plain data with descriptor/tagged markers. Throws CodecError.
 * @param {ArrayLike<number> | ArrayBufferView | ArrayBufferLike} bytes
 * @returns {any} arrays, records and scalars, with Desc and unrevived tagged markers inside
 */
export function unpack(bytes) {
  try {
    return decoderAt(0).decode(bytes);
  } catch (e) {
    if (e instanceof CodecError) throw e;
    throw new CodecError(`not valid msgpack: ${e.message}`);
  }
}

/**
 * Second decoding step: check the data is passable, turn markers into values.
 * Arrays and records are revived in place.
 *
 * @param {unknown} value what `unpack` returned, or a part of it
 * @param {OnDesc | null} [onDesc] without it, descriptors stay `Desc`
 * @param {number} [depth]
 * @returns {any}
 */
export function revive(value, onDesc = null, depth = 0) {
  switch (typeof value) {
    case "string":
    case "number":
    case "boolean":
    case "bigint":
      return value;
  }
  if (value === null || value instanceof Float64 || isSelector(value)) return value;
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
    const record = /** @type {Record<string, unknown>} */ (value);
    for (const k of Object.keys(record)) record[k] = revive(record[k], onDesc, depth + 1);
    return value;
  }
  throw new CodecError(`not a passable value: ${describeType(value)}`);
}

/**
 * Decode one encoded value; descriptors go to `onDesc` (or stay `Desc`). Throws CodecError.
 * @param {ArrayLike<number> | ArrayBufferView | ArrayBufferLike} bytes
 * @param {OnDesc | null} [onDesc]
 * @returns {any}
 */
export function decode(bytes, onDesc = null) {
  return revive(unpack(bytes), onDesc);
}
