// @ts-check
// weblet.js — the weblet SDK, served at /_ocapd/weblet.js on every weblet origin.
//
//   import { connect, E, Far, commands, events } from "/_ocapd/weblet.js";
//
//   const { powers, app, instance } = await connect();
//   await E(app).incr();                       // the backend's object (null without a backend)
//   await E(powers).request("HOST", "a place to keep notes", "notes");  // the weblet's guest
//   commands.handle("clear", async (args) => { ... return "done"; });  // the host may invoke it
//   events.emit("saved", { chars: 120 });      // recorded for the host
//
// connect() opens one CapTP session over ws(s)://<this page's host>/_ocapd/ws
// — the gateway accepts it only from this instance's own origin — and asks
// the bootstrap for `{powers, app, instance}`:
//   powers    the weblet's guest agent: its own names and mailbox (never the host's powers)
//   app       what the backend's make(powers, context) returned, or null
//   instance  this open instance: label(), manifest(), emit(event, payload),
//             register_commands(handlers), close()
// Calling connect() again returns the same session's answer. E and Far are
// captp.js's, re-exported so a weblet needs one import.
//
// weblet.d.ts declares this module's types for weblet authors. The JSDoc
// types below name it: for "./weblet.js", TypeScript reads weblet.d.ts, so
// `npm run typecheck` checks this implementation against the declarations.

import { connectWebSocket, E, Far } from "./captp.js";

export { E, Far };

/** @typedef {import("./weblet.js").Weblet} Weblet */
/** @typedef {import("./weblet.js").CommandHandler} CommandHandler */

/** @type {Promise<Weblet> | null} */
let connecting = null;
/**
 * Command handlers by name; a Map, so no name reaches Object.prototype.
 * @type {Map<string, CommandHandler>}
 */
const handlers = new Map();
let registered = false;
/** @type {Weblet["instance"] | null} */
let instanceRef = null;

/** The page's handlers as the host sees them: one remotable dispatching by name. */
const commandTarget = Far("WebletCommands", {
  /**
   * Run the handler registered for `name` with `args` (a record); its result is the answer.
   * @param {unknown} name
   * @param {import("./weblet.js").CommandArgs | null} [args]
   */
  invoke(name, args) {
    const fn = typeof name === "string" ? handlers.get(name) : undefined;
    if (fn === undefined) throw new Error(`this weblet has no handler for the command ${JSON.stringify(name)}`);
    return fn(args ?? {});
  },
  /** The names that have handlers. */
  names() {
    return [...handlers.keys()];
  },
});

function ownEndpoint() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/_ocapd/ws`;
}

async function register() {
  if (registered || instanceRef === null || handlers.size === 0) return;
  registered = true;
  await E(instanceRef).register_commands(commandTarget);
}

/** @returns {Promise<Weblet>} */
async function open() {
  const conn = await connectWebSocket(ownEndpoint(), { name: "weblet" });
  const { powers, app, instance } = await E(conn.bootstrap()).fetch();
  instanceRef = instance;
  await register();
  return { powers, app, instance };
}

/**
 * Connect to this weblet's host: resolves to `{powers, app, instance}`.
 * One session per page; later calls share it. A failed attempt may be retried.
 *
 * @type {typeof import("./weblet.js").connect}
 */
export function connect() {
  if (connecting === null) {
    connecting = open();
    connecting.catch(() => {
      connecting = null;
    });
  }
  // The author's type argument says what the backend's object offers; the SDK cannot know.
  return /** @type {Promise<any>} */ (connecting);
}

/** @type {typeof import("./weblet.js").commands} */
export const commands = Object.freeze({
  /**
   * Handle the command `name` (declared in weblet.json's interface.commands)
   * with `fn(args)`; what it returns (or its promise settles to) is the answer.
   * The handlers are handed to the host once the page is connected.
   */
  handle(name, fn) {
    if (typeof name !== "string" || !name) throw new TypeError("commands.handle: give the command's name");
    if (typeof fn !== "function") throw new TypeError("commands.handle: give a function");
    handlers.set(name, fn);
    return register();
  },
});

/** @type {typeof import("./weblet.js").events} */
export const events = Object.freeze({
  /** Tell the host that `name` happened, with plain data `payload` (connects if needed). */
  async emit(name, payload = null) {
    const { instance } = await connect();
    return E(instance).emit(name, payload);
  },
});
