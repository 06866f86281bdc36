// captp.js speaking what the Python session speaks (docs/protocol.md §5.2 calls
// without a method, §6.3 break values that are not errors, §3.2 selectors),
// end to end over the in-memory pair.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  E,
  Far,
  RemoteError,
  RemoteRef,
  Selector,
  Tagged,
  interfaceOf,
  isSelector,
  makeMemoryPair,
  makePromiseKit,
  sameSelector,
  unpack,
} from "../../chat_host/static/captp.js";

/** A pair whose frames are logged as [sender, op, method?] in the order they were sent. */
function pair(bootstrapB, bootstrapA = null) {
  const log = [];
  const [a, b] = makeMemoryPair({
    bootstrapA,
    bootstrapB,
    onFrame: (from, frame) => {
      const msg = unpack(frame);
      log.push([from, msg[0], ...(msg[0].startsWith("deliver") ? [msg[2]] : [])]);
    },
  });
  return { a, b, log };
}

/** How a promise settled: ["ok", value] or ["err", reason]. */
const settled = (p) =>
  p.then(
    (v) => ["ok", v],
    (e) => ["err", e],
  );

// -- calls without a method (§5.2) -------------------------------------------

test("Far(iface, fn) makes a far function: a remotable that is called itself", () => {
  const add = Far("Add", (x, y) => x + y);
  assert.equal(typeof add, "function");
  assert.equal(interfaceOf(add), "Add");
  assert.equal(add(1, 2), 3);
  assert.ok(Object.isFrozen(add));
});

test("E(fn)(...args) on a local far function calls it in a later turn", async () => {
  let ran = false;
  const add = Far("Add", (x, y) => {
    ran = true;
    return x + y;
  });
  const p = E(add)(2, 3);
  assert.equal(ran, false);
  assert.equal(await p, 5);
});

test("E(x)(...) on a local object that is not a far function rejects with TypeError", async () => {
  const [kind, e] = await settled(E(Far("Greeter", { hello: () => "hi" }))());
  assert.equal(kind, "err");
  assert.ok(e instanceof RemoteError);
  assert.equal(e.name, "TypeError");
  assert.equal(e.message, "Greeter is not a function");
  const [, plain] = await settled(E((x) => x)(1));
  assert.equal(plain.name, "TypeError", "only Far functions may be called this way");
});

test("E(remoteFn)(...args) sends a deliver without a method and gets the result", async () => {
  const add = Far("Add", (x, y) => x + y);
  const { a, log } = pair(Far("Service", { adder: () => add }));
  const fn = await E(a.bootstrap()).adder();
  assert.ok(fn instanceof RemoteRef);
  log.length = 0;
  assert.equal(await E(fn)(20, 22), 42);
  assert.deepEqual(log[0], ["a", "deliver", null]);
});

test("E.sendOnly(remoteFn)(...args) sends a deliver-only without a method", async () => {
  const kit = makePromiseKit();
  const record = Far("Record", (value) => kit.resolve(value));
  const { a, log } = pair(Far("Service", { recorder: () => record }));
  const fn = await E(a.bootstrap()).recorder();
  log.length = 0;
  assert.equal(E.sendOnly(fn)("seen"), undefined);
  assert.equal(await kit.promise, "seen");
  assert.deepEqual(log[0], ["a", "deliver-only", null]);
});

test("a remote object that is not a far function rejects a call without a method, and the session lives on", async () => {
  const { a } = pair(Far("Service", { ping: () => "pong" }));
  const [kind, e] = await settled(E(a.bootstrap())("x"));
  assert.equal(kind, "err");
  assert.equal(e.name, "TypeError");
  assert.equal(e.message, "Service is not a function");
  assert.equal(await E(a.bootstrap()).ping(), "pong");
  assert.equal(a.session.aborted, null);
});

test("a call without a method pipelines on an answer: one round trip", async () => {
  const { a, log } = pair(Far("Service", { adder: () => Far("Add", (x, y) => x + y) }));
  assert.equal(await E(E(a.bootstrap()).adder())(1, 2), 3);
  const calls = log.filter(([, op]) => op !== "start-session");
  // Both calls leave before the first answer comes back.
  assert.deepEqual(calls.slice(0, 3), [
    ["a", "deliver", "adder"],
    ["a", "deliver", null],
    ["b", "deliver-only", "fulfill"],
  ]);
});

test("a far function's own methods are callable too, and only its own", async () => {
  const add = Far(
    "Add",
    Object.assign((x, y) => x + y, {
      describe: () => "adds two numbers",
    }),
  );
  const { a } = pair(Far("Service", { adder: () => add }));
  const fn = await E(a.bootstrap()).adder();
  assert.equal(await E(fn).describe(), "adds two numbers");
  for (const inherited of ["call", "apply", "bind", "toString"]) {
    const [kind, e] = await settled(E(fn)[inherited]());
    assert.equal(kind, "err", inherited);
    assert.equal(e.message, `Add has no method '${inherited}'`);
  }
});

test("a far function passes by reference and comes back as itself", async () => {
  const add = Far("Add", (x, y) => x + y);
  const { a } = pair(Far("Service", { echo: (v) => v }));
  assert.equal(await E(a.bootstrap()).echo(add), add);
});

test("the callable E proxy is not thenable and still names methods", async () => {
  const proxy = E(Far("Greeter", { hello: () => "hi" }));
  assert.equal(typeof proxy, "function");
  assert.equal(proxy.then, undefined);
  assert.equal(await proxy.hello(), "hi");
});

// -- break values that are not errors (§6.3) ---------------------------------

test("a promise rejected with a value that is not an Error reaches the peer as that value", async () => {
  const { a, log } = pair(
    Far("Service", {
      reject: (v) => Promise.reject(v),
    }),
  );
  for (const value of ["just a string", 7, null, { why: ["because"] }, new Tagged("nope", 1)]) {
    const [kind, reason] = await settled(E(a.bootstrap()).reject(value));
    assert.equal(kind, "err");
    assert.deepEqual(reason, value);
  }
  assert.ok(log.some(([, op, m]) => op === "deliver-only" && m === "break"));
});

test("a break value may be a reference", async () => {
  const thing = Far("Thing", { name: () => "thing" });
  const { a } = pair(Far("Service", { reject: (v) => Promise.reject(v) }));
  const [, reason] = await settled(E(a.bootstrap()).reject(thing));
  assert.equal(reason, thing);
});

test("an Error rejection still arrives as a RemoteError", async () => {
  const { a } = pair(Far("Service", { fail: () => Promise.reject(new RangeError("out")) }));
  const [, reason] = await settled(E(a.bootstrap()).fail());
  assert.ok(reason instanceof RemoteError);
  assert.equal(reason.name, "RangeError");
  assert.equal(reason.message, "out");
});

test("a break value that cannot be passed becomes a TypeError error", async () => {
  const { a } = pair(Far("Service", { reject: () => Promise.reject(new Map([[1, 2]])) }));
  const [, reason] = await settled(E(a.bootstrap()).reject());
  assert.ok(reason instanceof RemoteError);
  assert.equal(reason.name, "TypeError");
  assert.match(reason.message, /^rejection value is not passable: /);
  assert.equal(a.session.aborted, null);
});

// -- selectors over msgpack (§3.2) -------------------------------------------

test("a Selector crosses the msgpack profile and stays a Selector", async () => {
  const { a } = pair(Far("Service", { echo: (v) => v }));
  const back = await E(a.bootstrap()).echo([new Selector("fetch"), "fetch", new Selector("")]);
  assert.ok(isSelector(back[0]));
  assert.ok(sameSelector(back[0], new Selector("fetch")));
  assert.equal(back[1], "fetch");
  assert.ok(sameSelector(back[2], new Selector("")));
});
