// @ts-check
// Keeping a CapTP session with the gateway: connect, fetch the agent for our
// token, and when the connection ends (the daemon restarted, the network
// blinked) try again with backoff. A token the daemon refuses ends the loop:
// retrying a wrong token cannot help.

import { connectWebSocket, E, RemoteError } from "/_ocapd/captp.js";

/** First retry delay; each failure doubles it up to the cap. */
const RETRY_FIRST_MS = 250;
/**
 * The cap while the tab is visible: a restarting daemon is back within
 * seconds, and a refused connection to localhost costs next to nothing.
 */
const RETRY_MAX_MS = 2000;
/** The cap while the tab is hidden; it retries at once when shown again. */
const RETRY_MAX_HIDDEN_MS = 30000;

/**
 * @typedef {{conn: any, agent: any, closed: Promise<any>, id: number}} Session
 * @typedef {{state: "connecting"|"connected"|"waiting"|"refused", retryInMs?: number, error?: any, attempt?: number}} ConnectionState
 */

export class Connection {
  /**
   * @param {{url: string, token: string | null,
   *          onState: (s: ConnectionState) => void,
   *          onSession: (s: Session) => void}} options
   */
  constructor({ url, token, onState, onSession }) {
    this.url = url;
    this.token = token;
    this.onState = onState;
    this.onSession = onSession;
    /** @type {Session|null} */
    this.session = null;
    /** @type {(() => void) | null} wakes a pause early */
    this.wake = null;
    this.sessions = 0;
    /** Sessions of openWorkSession() still open. @type {Set<any>} */
    this.workSessions = new Set();
  }

  /** Retry now instead of waiting out the backoff. */
  retryNow() {
    this.wake?.();
  }

  async run() {
    let failures = 0;
    for (;;) {
      this.onState({ state: "connecting", attempt: failures });
      let conn;
      try {
        conn = await connectWebSocket(this.url, { protocols: tokenProtocols(this.token) });
      } catch (error) {
        failures += 1;
        await this.pause(failures, error);
        continue;
      }
      let agent;
      try {
        agent = await E(conn.bootstrap()).fetch(this.token);
      } catch (error) {
        conn.close();
        if (error instanceof RemoteError) {
          this.onState({ state: "refused", error });
          return;
        }
        failures += 1;
        await this.pause(failures, error);
        continue;
      }
      failures = 0;
      this.sessions += 1;
      const session = { conn, agent, closed: conn.closed, id: this.sessions };
      this.session = session;
      this.onState({ state: "connected" });
      this.onSession(session);
      const reason = await conn.closed.catch((e) => e);
      this.session = null;
      failures += 1;
      await this.pause(failures, reason);
    }
  }

  async pause(failures, error) {
    const cap = document.visibilityState === "hidden" ? RETRY_MAX_HIDDEN_MS : RETRY_MAX_MS;
    const base = Math.min(RETRY_FIRST_MS * 2 ** (failures - 1), cap);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.onState({ state: "waiting", retryInMs: delay, error, attempt: failures });
    await new Promise((/** @type {(value?: unknown) => void} */ resolve) => {
      const timer = setTimeout(resolve, delay);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wake = null;
  }

  /**
   * A session of its own for one piece of work, beside the main one. Ending
   * it (`close`) cancels what was called on it: the daemon treats a session
   * that ends as its caller going away (a fresh worker is stopped). Every
   * such session also ends with the page (`closeAll`, on pagehide).
   *
   * Why not the `cancel` option of evaluate (a promise the page settles)?
   * captp.js's Session._report keeps only the position of the resolver a
   * listen names, so once the browser collects that proxy the peer drops the
   * export, and settling the promise later aborts the whole session
   * (unknown-position). Until that is fixed, closing a session is the
   * reliable way to stop one call.
   * @returns {Promise<{agent: any, close: () => void}>}
   */
  async openWorkSession() {
    const conn = await connectWebSocket(this.url, { protocols: tokenProtocols(this.token) });
    let agent;
    try {
      agent = await E(conn.bootstrap()).fetch(this.token);
    } catch (error) {
      conn.close();
      throw error;
    }
    this.workSessions.add(conn);
    conn.closed.catch(() => {}).finally(() => this.workSessions.delete(conn));
    return { agent, close: () => conn.close() };
  }

  /** End the main session and every work session (the page is going away). */
  closeAll() {
    this.session?.conn.close();
    for (const conn of this.workSessions) conn.close();
  }

  /** Call a method on the agent of the current session. */
  call(method, ...args) {
    if (!this.session) return notConnected();
    return E(this.session.agent)[method](...args);
  }

  /** Call a method on another remote object of the current session (a stream). */
  callOn(ref, method, ...args) {
    if (!this.session) return notConnected();
    return E(ref)[method](...args);
  }
}

/**
 * "ocapd-captp.batch" comes first: the gateway chooses it, and a burst of
 * frames then travels as one message (docs/protocol.md §2); a gateway that
 * does not know it chooses "ocapd-captp".
 * The token rides in the upgrade request as a subprotocol beside
 * "ocapd-captp" (the one the gateway selects): a session that carries a
 * valid token from its first byte is never counted among the sessions
 * without one, so idle anonymous sockets cannot keep the owner out. Only
 * tokens made of subprotocol-safe characters go there; `fetch` checks the
 * token again either way.
 * @param {string | null} token
 */
export function tokenProtocols(token) {
  const plain = ["ocapd-captp.batch", "ocapd-captp"];
  return token && /^[A-Za-z0-9_-]{1,128}$/.test(token) ? [...plain, `ocapd-token.${token}`] : plain;
}

function notConnected() {
  return Promise.reject(new Error("not connected to the daemon — waiting for it to come back"));
}
