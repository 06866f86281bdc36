// @ts-check
// captp.js — the browser (and node) peer of ocapd's CapTP, protocol `ocapd-captp/1`.
//
// docs/protocol.md is the normative description; captp/ (Python) is the other
// implementation, and tests/vectors/ holds the bytes both are tested against.
//
// This file is the public entry point: it only re-exports. The parts are ES
// modules in captp/ (no build step; a browser loads them by relative URL),
// each importing only those listed before it:
//
//   captp/passable.js    passable values: Tagged, Selector, Float64, RemoteError, Far
//   captp/refs.js        proxies of the peer's references: RemoteRef, RemotePromise, drop
//   captp/codec.js       values <-> msgpack bytes (via @msgpack/msgpack, never hand-written)
//   captp/eventual.js    eventual send `E`
//   captp/session.js     the sans-IO session: the four tables and every message of §5–§8
//   captp/transports.js  Connection over a WebSocket, and an in-memory pair for tests
//
// Import from this file: the modules' other exports are internal to captp.js.
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
//   Symbol            Selector (OCapN's name for a Syrup symbol; not a JS symbol):
//                     `new Selector("fetch")`, compared with `sameSelector`; ext 6
//                     on the wire (docs/protocol.md §3.2), names up to 1024 UTF-8 bytes.
//   exception         Error (sent as its name and message); arrives as RemoteError
//   Rejected(v)       a promise rejected with v that is not an Error: the peer's
//                     promise rejects with v itself (references included), both ways
//   @far object       Far(iface, methods) here; proxies arrive as RemoteRef
//   Far(iface, fn)    Far(iface, fn): a far function, called with `E(fn)(...args)`
//                     (a deliver without a method); only those may be called so
//   Promise           Promise; proxies arrive as RemotePromise
//
// A record key "__proto__" cannot be received (the msgpack library refuses it,
// which aborts the session with malformed-frame).

export {
  Far,
  Float64,
  RemoteError,
  Selector,
  Tagged,
  float64,
  interfaceOf,
  isSelector,
  makePromiseKit,
  sameSelector,
} from "./captp/passable.js";
export { RemotePromise, RemoteRef, drop } from "./captp/refs.js";
export { CodecError, Desc, MAX_BIGINT_BYTES, MAX_DEPTH, MAX_POSITION, decode, encode, revive, unpack } from "./captp/codec.js";
export { E } from "./captp/eventual.js";
export { DEFAULT_LIMITS, PROTOCOL_VERSION, Reasons, Session, SessionAborted } from "./captp/session.js";
export { BATCH_SUBPROTOCOL, Connection, connectWebSocket, makeMemoryPair, packBatch, splitBatch } from "./captp/transports.js";
