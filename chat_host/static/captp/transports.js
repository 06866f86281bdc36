// @ts-check
// captp/transports.js — a session driven over a transport: a WebSocket (one
// binary message per frame) or, for tests, an in-memory pair.
//
// `Connection` is the only place where frames meet I/O: it feeds received
// frames to the session and sends what the session queued, once per turn.

import { Reasons as R, Session } from "./session.js";

/** @typedef {import("./session.js").Limits} Limits */
/** @typedef {import("./session.js").SessionAborted} SessionAborted */
/**
 * Where a connection's frames go: `send` one frame, `close` the channel.
 * @typedef {{send(frame: Uint8Array): void, close(): void}} Transport
 */

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
    this._onFrame?.("in", frame);
    this.session.receiveFrame(frame);
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
 * Open a CapTP connection over a WebSocket (one binary message per frame).
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
      const opened = new Connection(
        new Session({ bootstrap, limits, debug, name }),
        // The session's frames are fresh encoder output, never on a SharedArrayBuffer.
        { send: (frame) => ws.send(/** @type {Uint8Array<ArrayBuffer>} */ (frame)), close: () => ws.close(1000) },
        { onFrame },
      );
      conn = opened;
      ws.onmessage = (event) => {
        if (typeof event.data === "string") opened._protocolError(R.MALFORMED, "text WebSocket message; CapTP frames are binary");
        else opened._receive(new Uint8Array(event.data));
      };
      resolve(opened);
    };
    ws.onclose = (event) => {
      if (conn) conn._lost(`WebSocket closed (${event.code})`);
      else reject(new Error(`WebSocket to ${url} closed before opening (${event.code})`));
    };
  });
}

