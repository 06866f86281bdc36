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

import { connectWebSocket, E, Far } from "./captp.js";

export { E, Far };

/** @type {Promise<{powers: any, app: any, instance: any}> | null} */
let connecting = null;
/** Command handlers by name; a Map, so no name reaches Object.prototype. */
const handlers = new Map();
let registered = false;
let instanceRef = null;

/** The page's handlers as the host sees them: one remotable dispatching by name. */
const commandTarget = Far("WebletCommands", {
  /** Run the handler registered for `name` with `args` (a record); its result is the answer. */
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
 */
export function connect() {
  if (connecting === null) {
    connecting = open();
    connecting.catch(() => {
      connecting = null;
    });
  }
  return connecting;
}

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

export const events = Object.freeze({
  /** Tell the host that `name` happened, with plain data `payload` (connects if needed). */
  async emit(name, payload = null) {
    const { instance } = await connect();
    return E(instance).emit(name, payload);
  },
});
