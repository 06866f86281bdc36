// @ts-check
// captp/transports.js — a session driven over a transport: a WebSocket (one
// binary message per frame, or several under the subprotocol
// "ocapd-captp.batch", docs/protocol.md §2) or, for tests, an in-memory pair.
//
// `Connection` is the only place where frames meet I/O: it feeds received
// frames to the session and sends what the session queued, once per turn.

import { Reasons as R, Session } from "./session.js";

/** @typedef {import("./session.js").Limits} Limits */
/** @typedef {import("./session.js").SessionAborted} SessionAborted */
/**
 * Where a connection's frames go: `send` one frame, `close` the channel;
 * `sendFrames`, if present, sends all the frames of one flush together.
 * @typedef {{send(frame: Uint8Array): void, sendFrames?: (frames: Uint8Array[]) => void, close(): void}} Transport
 */

/** The WebSocket subprotocol under which one message holds one or more length-prefixed frames. */
export const BATCH_SUBPROTOCOL = "ocapd-captp.batch";
/** A batch message is filled up to this many bytes; a larger frame goes alone. */
export const BATCH_MESSAGE_BYTES = 64 * 1024;

/**
 * Frames as batch messages: each frame preceded by its 4-byte big-endian
 * length, joined up to BATCH_MESSAGE_BYTES a message.
 * @param {Uint8Array[]} frames
 * @returns {Uint8Array[]}
 */
export function packBatch(frames) {
  /** @type {Uint8Array[]} */
  const messages = [];
  /** @type {Uint8Array[]} */
  let group = [];
  let size = 0;
  const flush = () => {
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    let pos = 0;
    for (const f of group) {
      view.setUint32(pos, f.length);
      out.set(f, pos + 4);
      pos += 4 + f.length;
    }
    messages.push(out);
    group = [];
    size = 0;
  };
  for (const frame of frames) {
    if (group.length && size + 4 + frame.length > BATCH_MESSAGE_BYTES) flush();
    group.push(frame);
    size += 4 + frame.length;
  }
  if (group.length) flush();
  return messages;
}

/**
 * The frames of one batch message. Throws `{code, detail}` (a reason of §8):
 * `malformed-frame` for an empty message or one that ends inside a length or
 * a frame, `frame-too-large` for a length over `maxFrameSize`.
 * @param {Uint8Array} message
 * @param {number} maxFrameSize
 * @returns {Uint8Array[]}
 */
export function splitBatch(message, maxFrameSize) {
  if (!message.length) throw { code: R.MALFORMED, detail: "empty batch message" };
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const frames = [];
  let pos = 0;
  while (pos < message.length) {
    if (message.length - pos < 4) throw { code: R.MALFORMED, detail: "batch message ends inside a frame length" };
    const length = view.getUint32(pos);
    if (length > maxFrameSize) throw { code: R.FRAME_TOO_LARGE, detail: `${length} bytes announced` };
    pos += 4;
    if (message.length - pos < length) throw { code: R.MALFORMED, detail: "batch message ends inside a frame" };
    frames.push(message.subarray(pos, pos + length));
    pos += length;
  }
  return frames;
}

/**
 * A running session over a transport. `closed` resolves with the
 * `SessionAborted` that ended it (`code`, `detail`, `byPeer`).
 * `onFrame(direction, frame)`, if given, sees every frame ("in" or "out").
 */
export class Connection {
  /**
   * @param {Session} session
   * @param {Transport} transport
   * @param {{onFrame?: ((direction: "in" | "out", frame: Uint8Array) => void) | null}} [options]
   */
  constructor(session, transport, { onFrame = null } = {}) {
    this.session = session;
    this._transport = transport;
    this._onFrame = onFrame;
    this._scheduled = false;
    this._done = false;
    /** @type {(reason: SessionAborted) => void} */
    this._resolveClosed = () => {};
    /** @type {Promise<SessionAborted>} */
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
  /**
   * End the session: the peer receives `["abort", reason]`.
   * @param {string} [reason] "code" or "code: detail"
   */
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
  /** @param {Uint8Array} frame */
  _receive(frame) {
    this._receiveAll([frame]);
  }
  /**
   * Several frames that arrived together (a batch message): answered in one flush.
   * @param {Uint8Array[]} frames
   */
  _receiveAll(frames) {
    for (const frame of frames) {
      if (this.session.aborted) break;
      this._onFrame?.("in", frame);
      this.session.receiveFrame(frame);
    }
    this._flush();
  }
  /**
   * @param {string} code
   * @param {string} detail
   */
  _protocolError(code, detail) {
    this.session.protocolError(code, detail);
    this._flush();
  }
  /** @param {string} detail */
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
    const frames = this.session.dataToSend();
    for (const frame of frames) this._onFrame?.("out", frame);
    if (this._transport.sendFrames) {
      if (frames.length) this._transport.sendFrames(frames);
    } else {
      for (const frame of frames) this._transport.send(frame);
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
 *
 * @param {object} [options]
 * @param {object | null} [options.bootstrapA]
 * @param {object | null} [options.bootstrapB]
 * @param {Partial<Limits>} [options.limits]
 * @param {(from: "a" | "b", frame: Uint8Array) => void} [options.onFrame]
 * @param {boolean} [options.debug]
 * @returns {[Connection, Connection]}
 */
export function makeMemoryPair({ bootstrapA = null, bootstrapB = null, limits, onFrame, debug } = {}) {
  /** @type {Record<"a" | "b", Connection>} */
  const ends = /** @type {any} */ ({});
  /**
   * @param {"a" | "b"} from
   * @param {"a" | "b"} to
   * @returns {Transport}
   */
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
 * Open a CapTP connection over a WebSocket: one binary message per frame, or,
 * if the server chose BATCH_SUBPROTOCOL (offer it first in `protocols`), one
 * or more length-prefixed frames per message.
 * Options: `bootstrap` (what the peer reaches at position 0), `limits`,
 * `debug`, `protocols`, `onFrame` (as for Connection), and `WebSocket` — the
 * constructor to use where there is no global one (node 20: the `ws` package).
 *
 * @param {string | URL} url
 * @param {object} [options]
 * @param {object | null} [options.bootstrap]
 * @param {Partial<Limits>} [options.limits]
 * @param {boolean} [options.debug]
 * @param {string | string[]} [options.protocols]
 * @param {(direction: "in" | "out", frame: Uint8Array) => void} [options.onFrame]
 * @param {new (url: string | URL, protocols?: string | string[]) => WebSocket} [options.WebSocket]
 * @param {string} [options.name]
 * @returns {Promise<Connection>}
 */
export function connectWebSocket(url, { bootstrap = null, limits, debug, protocols, onFrame, WebSocket: WS = globalThis.WebSocket, name = "websocket" } = {}) {
  if (typeof WS !== "function") return Promise.reject(new TypeError("no WebSocket constructor: pass one as the WebSocket option"));
  return new Promise((resolve, reject) => {
    const ws = protocols === undefined ? new WS(url) : new WS(url, protocols);
    ws.binaryType = "arraybuffer";
    /** @type {Connection | null} */
    let conn = null;
    ws.onerror = () => {
      if (!conn) reject(new Error(`WebSocket connection to ${url} failed`));
    };
    ws.onopen = () => {
      const batching = ws.protocol === BATCH_SUBPROTOCOL;
      // The session's frames are fresh encoder output, never on a SharedArrayBuffer.
      const send = (/** @type {Uint8Array} */ frame) => ws.send(/** @type {Uint8Array<ArrayBuffer>} */ (frame));
      const session = new Session({ bootstrap, limits, debug, name });
      /** @type {Transport} */
      const transport = batching
        ? { send, sendFrames: (frames) => packBatch(frames).forEach(send), close: () => ws.close(1000) }
        : { send, close: () => ws.close(1000) };
      const opened = new Connection(session, transport, { onFrame });
      conn = opened;
      ws.onmessage = (event) => {
        if (typeof event.data === "string") {
          opened._protocolError(R.MALFORMED, "text WebSocket message; CapTP frames are binary");
          return;
        }
        const message = new Uint8Array(event.data);
        if (!batching) {
          opened._receive(message);
          return;
        }
        let frames;
        try {
          frames = splitBatch(message, session.limits.maxFrameSize);
        } catch (e) {
          opened._protocolError(e.code, e.detail);
          return;
        }
        opened._receiveAll(frames);
      };
      resolve(opened);
    };
    ws.onclose = (event) => {
      if (conn) conn._lost(`WebSocket closed (${event.code})`);
      else reject(new Error(`WebSocket to ${url} closed before opening (${event.code})`));
    };
  });
}

