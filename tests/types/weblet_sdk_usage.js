// @ts-check
// A weblet page as its author writes it, type-checked (never run) by
// `npm run typecheck` against chat_host/static/weblet.d.ts: the SDK's
// declarations must type real uses and refuse wrong ones.

import { E, Far, commands, connect, events } from "/_ocapd/weblet.js";

/** @typedef {{incr(by: number): number, get(): number}} Counter */

const { powers, app, instance } = await /** @type {typeof connect<Counter>} */ (connect)();
const count = await E(app).incr(1);
count.toFixed();
// @ts-expect-error: incr takes a number
await E(app).incr("one");
// @ts-expect-error: a Counter has no reset
await E(app).reset();

const { app: untyped } = await connect();
await E(untyped).anything(1, "two"); // no type given: any method, any arguments

(await E(instance).label()).toUpperCase();
await E(instance).emit("saved", { chars: 120 });
E.sendOnly(instance).close();
await E(powers).request("HOST", "a place to keep notes", "notes");
const names = await E(powers).list();
names.map((name) => name.length);

const listener = Far("Listener", { notify(/** @type {string} */ what) { return what; } });
await E(instance).register_commands(listener);
await commands.handle("clear", async (args) => Object.keys(args).length);
await events.emit("cleared");

// A far function: the other side calls it with E(fn)(...), and so may we.
const double = Far("Double", (/** @type {number} */ x) => x * 2);
/** @type {import("/_ocapd/weblet.js").Remote<(x: number) => number>} */
const remoteDouble = /** @type {any} */ (null);
(await E(remoteDouble)(21)).toFixed();
// @ts-expect-error: the function takes a number
await E(remoteDouble)("21");
E.sendOnly(remoteDouble)(21);
await E(untyped)("any", "arguments"); // no type given: callable too
await E(double)(4);
// @ts-expect-error: a Counter is not a function
await E(app)();
