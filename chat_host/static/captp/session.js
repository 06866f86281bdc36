// @ts-check
// captp/session.js — one side of one CapTP connection (docs/protocol.md §5–§8):
// a state machine with no I/O, like captp/session.py.
//
// Frames go in through `receiveFrame`, frames to send come out of
// `dataToSend()`; transports.js pumps them over a WebSocket or an in-memory
// pair. The four tables (exports, imports, questions, answers) live here, and
// every message the peer can send is either processed or ends the session
// with an abort whose reason code is one of `Reasons`.

import { CodecError, Desc, EXT_ANSWER, EXT_EXPORT, EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE, MAX_POSITION, encode, revive, unpack } from "./codec.js";
import { callTarget } from "./eventual.js";
import { Far, RemoteError } from "./passable.js";
import { RemotePromise, RemoteRef, infoOf, makeRemotePromise, makeRemoteRef, makeResolver, registry, resolverRejects } from "./refs.js";

// ---------------------------------------------------------------------------
// constants (§5, §7, §8)

export const PROTOCOL_VERSION = "ocapd-captp/1";

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

/**
 * Protocol limits (§7), the same defaults as Python's `Limits`.
 * @typedef {{maxFrameSize: number, maxAnswers: number, maxExports: number, maxImports: number, maxMethodLength: number, maxReasonLength: number}} Limits
 */
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
/** @type {Readonly<Record<string, number>>} */
const ARITY = {
  [OP_START]: 2,
  [OP_DELIVER]: 6,
  [OP_DELIVER_ONLY]: 4,
  [OP_LISTEN]: 4,
  [OP_GC_EXPORTS]: 3,
  [OP_GC_ANSWERS]: 2,
  [OP_ABORT]: 2,
};

/** The peer broke the protocol; `code` is one of `Reasons`. Internal to a session. */
class ProtocolError extends Error {
  /**
   * @param {string} code
   * @param {string} [detail]
   */
  constructor(code, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.code = code;
    this.detail = detail;
  }
}

/** Why a session ended; every pending promise of the session rejects with it. */
export class SessionAborted extends Error {
  /**
   * @param {string} code one of `Reasons`, or the code of the peer's reason
   * @param {string} [detail]
   * @param {boolean} [byPeer] the peer sent the abort
   */
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

// ---------------------------------------------------------------------------
// the session

/** @typedef {import("./refs.js").ProxyInfo} ProxyInfo */
/** @typedef {import("./refs.js").PromiseInfo} PromiseInfo */
/** @typedef {import("./refs.js").Released} Released */
/** @typedef {{obj: object, wireCount: number, isPromise: boolean}} ExportEntry */
/** A decoded message: [op, ...fields], checked field by field. @typedef {any[]} Message */

const NO_BOOTSTRAP = Far("NoBootstrap", {});

class ExportLimit extends Error {}

/**
 * "code: detail" -> [code, detail].
 * @param {string} reason
 * @returns {[string, string]}
 */
function splitReason(reason) {
  const i = reason.indexOf(": ");
  return i < 0 ? [reason, ""] : [reason.slice(0, i), reason.slice(i + 2)];
}

/**
 * @param {string} s
 * @param {number} max in code points
 */
function truncate(s, max) {
  if (s.length <= max) return s;
  return Array.from(s).slice(0, max).join(""); // code points, as Python counts
}

/** @param {unknown} x */
const isInt = (x) => (typeof x === "number" && Number.isInteger(x)) || typeof x === "bigint";

/**
 * One side of one CapTP connection. Frames go in through `receiveFrame`,
 * frames to send come out of `dataToSend()`; `onWakeup` is called when new
 * frames wait, `onEnd(reason)` once when the session ends.
 */
export class Session {
  /**
   * @param {object} [options]
   * @param {object | null} [options.bootstrap] what the peer reaches at export 0 (not a promise)
   * @param {Partial<Limits>} [options.limits]
   * @param {string} [options.name] for messages and `toString` of its proxies
   * @param {boolean} [options.debug] send stack traces with errors
   */
  constructor({ bootstrap = null, limits = {}, name = "captp", debug = false } = {}) {
    this.name = name;
    /** @type {Limits} */
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.debug = debug;
    /** @type {(() => void) | null} */
    this.onWakeup = null;
    /** @type {((reason: SessionAborted) => void) | null} */
    this.onEnd = null;
    /** @type {SessionAborted | null} why the session ended; null while it runs */
    this.aborted = null;
    this.framesIn = 0;
    this.framesOut = 0;
    /** @type {Uint8Array[]} */
    this._outbox = [];
    this._peerStarted = false;
    /** @type {Map<number, ExportEntry>} */
    this._exports = new Map(); // position -> {obj, wireCount, isPromise}
    /** @type {Map<object, number>} */
    this._exportPosOf = new Map(); // object -> position
    this._nextExport = 1;
    /** @type {Map<number, {ref: WeakRef<RemoteRef | RemotePromise>, token: number, wireCount: number}>} */
    this._imports = new Map(); // position -> {ref: WeakRef, token, wireCount}
    /** @type {Set<number>} */
    this._questions = new Set();
    this._nextQuestion = 0;
    /** @type {Map<number, Promise<unknown>>} */
    this._answers = new Map(); // position -> Promise
    /** @type {Map<number, number>} */
    this._gcExports = new Map();
    /** @type {number[]} */
    this._gcAnswers = [];
    /** @type {Array<[number, boolean]> | null} */
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

  /**
   * Process one incoming frame (Uint8Array). Never throws for anything the peer sends.
   * @param {Uint8Array | ArrayBuffer} frame
   */
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

  /**
   * Frames waiting to go out, oldest first.
   * @returns {Uint8Array[]}
   */
  dataToSend() {
    if (!this.aborted && (this._gcExports.size || this._gcAnswers.length)) this._flushGc();
    const out = this._outbox;
    this._outbox = [];
    this.framesOut += out.length;
    return out;
  }

  /**
   * End the session from our side: tell the peer and break everything pending.
   * @param {unknown} [reason] "code" or "code: detail"
   */
  abort(reason = R.CLOSED) {
    if (this.aborted) return;
    const text = truncate(String(reason), this.limits.maxReasonLength);
    this._outbox.push(encode([OP_ABORT, text]));
    const [code, detail] = splitReason(text);
    this._terminate(new SessionAborted(code, detail));
  }

  /**
   * The transport saw the peer break the protocol (e.g. a text WebSocket message).
   * @param {string} code one of `Reasons`
   * @param {string} [detail]
   */
  protocolError(code, detail = "") {
    this._fail(code, detail);
  }

  /**
   * The transport ended without an abort: break everything pending, send nothing.
   * @param {string} [detail]
   */
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
   * @param {unknown[]} message
   */
  _encode(message) {
    /** @type {Array<[number, boolean]>} */
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

  /** @param {Uint8Array} frame */
  _push(frame) {
    this._outbox.push(frame);
    if (this._outbox.length === 1) this.onWakeup?.();
  }

  /** @param {unknown[]} message */
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

  /** @param {ProxyInfo} info */
  _targetDesc(info) {
    if (info.dropped) throw new TypeError("this reference was dropped");
    if (info.position < 0) throw new TypeError("this answer was never sent");
    return new Desc(info.kind === "answer" ? EXT_ANSWER : EXT_EXPORT, info.position);
  }

  /**
   * Queue a call; return its answer, a RemotePromise that can be pipelined on.
   * @param {unknown} target a proxy of this session
   * @param {string | null} method null calls the target itself (§5.2)
   * @param {unknown[]} args
   * @returns {RemotePromise}
   */
  send(target, method, args) {
    const targetInfo = /** @type {ProxyInfo} */ (infoOf(target));
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

  /**
   * Queue a call whose result nobody wants (deliver-only). Throws TypeError for bad args.
   * @param {unknown} target a proxy of this session
   * @param {string | null} method null calls the target itself (§5.2)
   * @param {unknown[]} args
   */
  sendOnly(target, method, args) {
    if (this.aborted) return;
    this._queue([OP_DELIVER_ONLY, this._targetDesc(/** @type {ProxyInfo} */ (infoOf(target))), method, args]);
  }

  /**
   * The descriptor for `obj` as the peer will see it (the codec's onRef).
   * @param {object} obj
   */
  _describe(obj) {
    const info = infoOf(obj);
    if (info && info.session === this) return this._targetDesc(info);
    const isPromise = obj instanceof Promise;
    let pos = this._exportPosOf.get(obj);
    const created = pos === undefined;
    let entry;
    if (pos === undefined) {
      if (this._exports.size >= this.limits.maxExports) throw new ExportLimit(`more than ${this.limits.maxExports} exports`);
      pos = this._nextExport++;
      entry = { obj, wireCount: 0, isPromise };
      this._exports.set(pos, entry);
      this._exportPosOf.set(obj, pos);
    } else entry = /** @type {ExportEntry} */ (this._exports.get(pos));
    entry.wireCount += 1;
    this._journal?.push([pos, created]);
    return new Desc(entry.isPromise ? EXT_IMPORT_PROMISE : EXT_IMPORT_OBJECT, pos);
  }

  // -- receiving -----------------------------------------------------------
  /** @param {unknown} msg */
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

  /** @param {Message} msg */
  _onStart(msg) {
    if (this._peerStarted) throw new ProtocolError(R.BAD_FIELD, "duplicate start-session");
    if (msg[1] !== PROTOCOL_VERSION) throw new ProtocolError(R.VERSION, `peer speaks ${JSON.stringify(String(msg[1]).slice(0, 64))}`);
    this._peerStarted = true;
  }

  /**
   * The local thing a deliver/listen target names: our export or our answer.
   * @param {unknown} desc
   * @returns {unknown}
   */
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

  /**
   * The proxy for import `pos`: the live one, or a new one.
   * @param {number} pos
   * @param {number} kind EXT_IMPORT_OBJECT or EXT_IMPORT_PROMISE
   * @param {boolean} counted the peer sent it (one more to release with gc-exports)
   * @returns {RemoteRef | RemotePromise}
   */
  _importProxy(pos, kind, counted) {
    let entry = this._imports.get(pos);
    let proxy = entry?.ref.deref();
    if (proxy === undefined) {
      if (!entry && this._imports.size >= this.limits.maxImports) throw new ProtocolError(R.LIMIT, `more than ${this.limits.maxImports} imports`);
      const made = kind === EXT_IMPORT_OBJECT ? makeRemoteRef(this, pos) : makeRemotePromise(this, "promise", pos);
      proxy = "ref" in made ? made.ref : made.promise;
      const ref = new WeakRef(proxy);
      // A proxy the collector took but whose finalizer has not run yet leaves
      // its entry (and count) behind; the new proxy takes it over.
      if (!entry) {
        entry = { ref, token: 0, wireCount: 0 };
        this._imports.set(pos, entry);
      }
      entry.ref = ref;
      entry.token = made.info.token;
      registry.register(proxy, { session: this, kind: "import", position: pos, token: made.info.token }, made.info);
    } else if (proxy instanceof RemoteRef !== (kind === EXT_IMPORT_OBJECT)) {
      throw new ProtocolError(R.BAD_FIELD, `position ${pos} changed between object and promise`);
    }
    if (counted && entry) entry.wireCount += 1; // entry is set on both paths
    return proxy;
  }

  /** @param {Desc} desc */
  _reviveDesc(desc) {
    if (desc.kind === EXT_IMPORT_OBJECT || desc.kind === EXT_IMPORT_PROMISE) return this._importProxy(desc.position, desc.kind, true);
    return this._localTarget(desc);
  }

  /**
   * @param {unknown} args
   * @returns {unknown[]}
   */
  _reviveArgs(args) {
    if (!Array.isArray(args)) throw new ProtocolError(R.BAD_FIELD, "args must be an array");
    try {
      return revive(args, (d) => this._reviveDesc(d));
    } catch (e) {
      if (e instanceof CodecError) throw new ProtocolError(R.MALFORMED, e.message);
      throw e;
    }
  }

  /**
   * A method name, or null: a call of the target itself (§5.2).
   * @param {unknown} method
   * @returns {asserts method is string | null}
   */
  _checkMethod(method) {
    if (method === null) return;
    const max = this.limits.maxMethodLength;
    if (typeof method !== "string" || (method.length > max && Array.from(method).length > max)) {
      throw new ProtocolError(R.BAD_FIELD, "method must be a short string");
    }
  }

  /** @param {Message} msg */
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

  /** @param {Message} msg */
  _onDeliverOnly(msg) {
    const [, targetDesc, method, args] = msg;
    this._checkMethod(method);
    const target = this._localTarget(targetDesc);
    callTarget(target, method, this._reviveArgs(args));
  }

  /** @param {Message} msg */
  _onListen(msg) {
    const [, targetDesc, resolverDesc, wantsPartial] = msg;
    if (!(resolverDesc instanceof Desc && resolverDesc.kind === EXT_IMPORT_OBJECT)) throw new ProtocolError(R.BAD_FIELD, "listen resolver must be an import-object");
    if (typeof wantsPartial !== "boolean") throw new ProtocolError(R.BAD_FIELD, "wants_partial must be a boolean");
    const target = this._localTarget(targetDesc);
    const resolver = this._reviveDesc(resolverDesc);
    // A plain object is "settled" already: the resolver hears of it at once.
    this._report(target instanceof Promise ? target : Promise.resolve(target), resolver);
  }

  /** @param {Message} msg */
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

  /** @param {Message} msg */
  _onGcAnswers(msg) {
    const positions = msg[1];
    if (!Array.isArray(positions)) throw new ProtocolError(R.BAD_FIELD, "gc-answers needs an array");
    for (const pos of positions) {
      if (!isInt(pos) || pos < 0 || pos > MAX_POSITION) throw new ProtocolError(R.BAD_FIELD, "gc-answers needs positions 0..2**53-1");
      if (!this._answers.has(pos)) throw new ProtocolError(R.UNKNOWN_POSITION, `gc of answer ${String(pos).slice(0, 40)}`);
      this._answers.delete(pos);
    }
  }

  /** @param {Message} msg */
  _onAbort(msg) {
    let reason = msg.length === 2 && typeof msg[1] === "string" ? msg[1] : "abort";
    reason = truncate(reason, this.limits.maxReasonLength);
    const [code, detail] = splitReason(reason);
    this._terminate(new SessionAborted(code, detail, true));
  }

  /**
   * Tell the peer's resolver how `promise` settled (§6.3).
   * @param {Promise<unknown>} promise
   * @param {unknown} resolver a proxy of this session (an import-object)
   */
  _report(promise, resolver) {
    const position = /** @type {ProxyInfo} */ (infoOf(resolver)).position;
    /**
     * @param {"fulfill" | "break"} verb
     * @param {unknown} value
     */
    const send = (verb, value) => {
      // The resolver stays referenced until it is used: were its proxy
      // collected first, the peer would drop the export and a late answer
      // would name an unknown position (and abort the session).
      void resolver;
      this._queue([OP_DELIVER_ONLY, new Desc(EXT_EXPORT, position), verb, [value]]);
    };
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
        if (error instanceof Error) return send("break", this._wireError(error));
        // Broken with a value that is not an error: the peer gets the value itself (§6.3).
        try {
          send("break", error);
        } catch (e) {
          send("break", new RemoteError("TypeError", `rejection value is not passable: ${e.message}`));
        }
      },
    );
  }

  /** @param {Error} e */
  _wireError(e) {
    if (e instanceof RemoteError) return e;
    return new RemoteError(e.name, e.message, this.debug && e.stack ? String(e.stack) : null);
  }

  /** @param {PromiseInfo} info */
  _startListening(info) {
    if (this.aborted) return info.reject(this.aborted);
    if (info.position < 0 || info.dropped) return;
    this._queue([OP_LISTEN, new Desc(EXT_EXPORT, info.position), makeResolver(info), false]);
  }

  // -- garbage collection (§6.7) ------------------------------------------
  /**
   * A proxy was collected or dropped: release its import or answer.
   * @param {Released | ProxyInfo} released
   */
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
  /**
   * @param {string} code
   * @param {string} detail
   */
  _fail(code, detail) {
    if (this.aborted) return;
    const reason = detail ? truncate(`${code}: ${detail}`, this.limits.maxReasonLength) : code;
    this._outbox.push(encode([OP_ABORT, reason]));
    this._terminate(new SessionAborted(code, detail));
    this.onWakeup?.();
  }

  /** @param {SessionAborted} reason */
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
      if (proxy instanceof RemotePromise) /** @type {PromiseInfo} */ (infoOf(proxy)).reject(reason);
    }
    this.onEnd?.(reason);
  }
}

/**
 * @param {Session} session
 * @param {SessionAborted} reason
 */
function rejectedAnswer(session, reason) {
  const { promise, info } = makeRemotePromise(session, "answer", -1);
  info.reject(reason);
  return promise;
}

