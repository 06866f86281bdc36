// The node side of tests/test_captp_js_interop.py: connects captp.js to a
// Python CapTP server over a WebSocket and prints one JSON line per step, for
// the pytest test to check. Usage: node tests/js/interop_client.mjs ws://127.0.0.1:PORT/

import { isDeepStrictEqual } from "node:util";
import WebSocket from "ws"; // node 20 has no global WebSocket; browsers use their own

import {
  E,
  Far,
  RemoteError,
  RemoteRef,
  Selector,
  Tagged,
  connectWebSocket,
  float64,
  isSelector,
  makePromiseKit,
  unpack,
} from "../../chat_host/static/captp.js";

const report = (step, fields) => console.log(JSON.stringify({ step, ...fields }, (_, v) => (typeof v === "bigint" ? v.toString() : v)));

// Every frame's op (and method), in order; gc frames left out (Python sends them as soon as it drops a proxy).
const frames = [];
const onFrame = (direction, frame) => {
  const [op, , method] = unpack(frame);
  if (!op.startsWith("gc-")) frames.push(op.startsWith("deliver") ? `${direction} ${op} ${method}` : `${direction} ${op}`);
};
// argv[3], if given: the subprotocols to offer (comma-separated), e.g. the batch one.
const protocols = process.argv[3] ? process.argv[3].split(",") : undefined;
const conn = await connectWebSocket(process.argv[2], { WebSocket, onFrame, protocols });
const boot = conn.bootstrap();

// 1. every passable type, as Python sees it, and back again
const values = [
  null,
  true,
  7,
  -3,
  2 ** 53 - 1,
  2n ** 64n,
  -(2n ** 80n),
  1.5,
  float64(2),
  "héllo 🦊",
  new Uint8Array([0, 1, 255]),
  [1, [2, "x"]],
  { a: 1, b: [true] },
  new Tagged("point", { x: 1, y: -2 }),
];
report("types", { seen: await E(boot).describe(values) });
const back = await E(boot).echo(values);
report("echo", { same: isDeepStrictEqual(back, values) });

// 2. pipelining: both calls leave before the first answer arrives
frames.length = 0;
const drove = await E(E(boot).make("red")).drive();
report("pipeline", { result: drove, frames: [...frames] });

// 3. a Python exception arrives as a RemoteError
try {
  await E(boot).fail("boom");
  report("error", { rejected: false });
} catch (e) {
  report("error", { rejected: e instanceof RemoteError, name: e.name, message: e.message });
}

// 4. a JS promise passed to Python and resolved later
const kit = makePromiseKit();
const waited = E(boot).await_it(kit.promise);
setTimeout(() => kit.resolve(new Tagged("late", 42n)), 20);
report("js-promise", { result: await waited });

// 5. a Python promise passed to JS and resolved later
const { p } = await E(boot).give_promise();
E.sendOnly(boot).resolve_given("from python");
report("py-promise", { result: await p });

// 6. Python calls back a JS Far object
const greeter = Far("Greeter", { hello: (name) => `hello ${name} from js` });
report("callback", { result: await E(boot).call_back(greeter, "py"), identity: (await E(boot).echo(greeter)) === greeter });

/** How a promise settled, for the report. */
const outcome = (p) =>
  p.then(
    (value) => ({ ok: true, value }),
    (e) => ({ ok: false, isRemoteError: e instanceof RemoteError, name: e?.name, message: e?.message, reason: e instanceof Error ? null : e }),
  );

// 8. calls without a method, JS -> Python: a Python far function, and an object that is not one
frames.length = 0;
const add = await E(boot).adder();
report("py-far-function", { result: await E(add)(20, 22), frames: frames.filter((f) => f.startsWith("out")) });
report("py-not-a-function", await outcome(E(boot)("x")));
E.sendOnly(add)(1, 2); // deliver-only without a method: nothing comes back, nothing breaks

// 9. calls without a method, Python -> JS
report("js-far-function", { result: await E(boot).call_fn(Far("Double", (x) => x * 2), 21) });
report("js-not-a-function", { result: await E(boot).call_fn(greeter, 21) });
const heard = makePromiseKit();
E.sendOnly(boot).call_fn_only(
  Far("Ear", (what) => heard.resolve(what)),
  "told without a method",
);
report("js-far-function-only", { heard: await heard.promise });

// 10. break values that are not errors, Python -> JS: a string, a record, a Python reference
report("py-rejects-string", await outcome(E(boot).reject_with("not found")));
report("py-rejects-record", await outcome(E(boot).reject_with({ code: 404 })));
const refReason = await E(boot).reject_with_car("blue").then(
  () => null,
  (e) => e,
);
report("py-rejects-ref", { isRef: refReason instanceof RemoteRef, drives: await E(refReason).drive() });

// 11. break values that are not errors, JS -> Python
// (the rejections are handled here too: the peer listens only once its call runs)
const rejecting = makePromiseKit();
rejecting.promise.catch(() => {});
const seenString = E(boot).await_rejection(rejecting.promise);
rejecting.reject("why not");
report("js-rejects-string", { result: await seenString });
const rejectingRef = makePromiseKit();
rejectingRef.promise.catch(() => {});
const seenRef = E(boot).await_rejection(rejectingRef.promise);
rejectingRef.reject(greeter);
report("js-rejects-ref", { result: await seenRef });

// 12. selectors both ways
report("selectors-to-py", { seen: await E(boot).describe([new Selector("fetch"), "fetch", new Selector("héllo 🦊")]) });
const symbols = await E(boot).give_symbols();
report("selectors-from-py", {
  kinds: symbols.map((s) => (isSelector(s) ? `selector ${s.name}` : `${typeof s} ${s}`)),
});

// 7. Python aborts: the pending call breaks and `closed` tells why
const pending = E(boot).never();
E.sendOnly(boot).abort_me("closed: interop done");
const pendingReason = await pending.then(
  () => null,
  (e) => e.reason,
);
const reason = await conn.closed;
report("aborted", { code: reason.code, detail: reason.detail, byPeer: reason.byPeer, pending: pendingReason });
