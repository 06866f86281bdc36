// captp.js sessions end to end over the in-memory pair.

import assert from "node:assert/strict";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

import {
  E,
  Far,
  Float64,
  RemoteError,
  RemotePromise,
  RemoteRef,
  SessionAborted,
  Tagged,
  drop,
  makeMemoryPair,
  makePromiseKit,
  unpack,
} from "../../chat_host/static/captp.js";

const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

/** A pair whose frames are logged as [sender, op, method?] in the order they were sent. */
function pair(bootstrapB, bootstrapA = null, options = {}) {
  const log = [];
  const [a, b] = makeMemoryPair({
    bootstrapA,
    bootstrapB,
    ...options,
    onFrame: (from, frame) => {
      const msg = unpack(frame);
      log.push([from, msg[0], ...(msg[0].startsWith("deliver") ? [msg[2]] : [])]);
    },
  });
  return { a, b, log };
}

function makeService() {
  const car = (color) =>
    Far("Car", {
      color: () => color,
      drive: () => `${color} car drives`,
    });
  let held = null;
  const service = Far("Service", {
    add: (x, y) => x + y,
    echo: (value) => value,
    fail(message) {
      const e = new RangeError(message);
      throw e;
    },
    make: (color) => car(color),
    never: () => new Promise(() => {}),
    async later(value) {
      await turn();
      return value;
    },
    keep(ref) {
      held = ref;
      return null;
    },
    held: () => held,
    awaitIt: async (promise) => `got ${await promise}`,
    callBack: (ref, name) => E(ref).hello(name),
    promiseLater() {
      const kit = makePromiseKit();
      setTimeout(() => kit.resolve("resolved later"), 5);
      return { p: kit.promise };
    },
  });
  return service;
}

test("a call returns the remote method's result", async () => {
  const { a } = pair(makeService());
  const boot = a.bootstrap();
  assert.ok(boot instanceof RemoteRef);
  assert.equal(await E(boot).add(2, 3), 5);
  assert.equal(await E(boot).later("async"), "async");
  a.close();
});

test("every passable value survives a round trip", async () => {
  const { a } = pair(makeService());
  const values = [
    null,
    true,
    0,
    -1,
    2 ** 53 - 1,
    2n ** 64n,
    -(2n ** 70n),
    1.5,
    new Float64(2),
    -0,
    NaN,
    "héllo 🦊",
    new Uint8Array([0, 255, 16]),
    [1, [2, [3]]],
    { name: "ada", tags: ["x"], nested: { n: null } },
    new Tagged("point", { x: 1, y: -2 }),
  ];
  const got = await E(a.bootstrap()).echo(values);
  assert.deepEqual(got, values);
  assert.ok(got[8] instanceof Float64, "an integral float stays a float");
  assert.equal(typeof got[5], "bigint");
  const err = await E(a.bootstrap()).echo(new TypeError("as data"));
  assert.ok(err instanceof RemoteError);
  assert.deepEqual([err.name, err.message], ["TypeError", "as data"]);
  a.close();
});

test("a failing call rejects with a RemoteError carrying the name and message", async () => {
  const { a } = pair(makeService());
  await assert.rejects(E(a.bootstrap()).fail("boom"), (e) => e instanceof RemoteError && e.name === "RangeError" && e.message === "boom");
  await assert.rejects(E(a.bootstrap()).nosuch(), (e) => e instanceof RemoteError && e.name === "TypeError" && /no method 'nosuch'/.test(e.message));
  await assert.rejects(E(a.bootstrap())._private(), (e) => e.name === "TypeError");
  // inherited properties are not methods
  await assert.rejects(E(a.bootstrap()).toString(), (e) => e.name === "TypeError");
  assert.equal(a.aborted, null, "a failed call is not a protocol error");
  a.close();
});

test("a non-passable argument rejects the call and sends nothing", async () => {
  const { a, log } = pair(makeService());
  await turn();
  const before = log.length;
  await assert.rejects(E(a.bootstrap()).echo(() => 1), TypeError);
  await assert.rejects(E(a.bootstrap()).echo(new Date()), TypeError);
  await turn();
  assert.equal(log.length, before);
  assert.equal(a.stats().exports, 1);
  a.close();
});

test("pipelining: E(E(f).make('red')).drive() is one round trip", async () => {
  const { a, log } = pair(makeService());
  await turn(); // the start-session frames
  log.length = 0;
  const result = await E(E(a.bootstrap()).make("red")).drive();
  assert.equal(result, "red car drives");
  const calls = log.filter(([, op]) => op !== "gc-answers" && op !== "gc-exports");
  assert.deepEqual(calls, [
    ["a", "deliver", "make"],
    ["a", "deliver", "drive"],
    ["b", "deliver-only", "fulfill"],
    ["b", "deliver-only", "fulfill"],
  ]);
  a.close();
});

test("a call on a settled answer goes straight to the value", async () => {
  const { a } = pair(makeService());
  const car = E(a.bootstrap()).make("blue");
  assert.ok(car instanceof RemotePromise);
  const ref = await car;
  assert.ok(ref instanceof RemoteRef);
  assert.equal(await E(car).color(), "blue");
  a.close();
});

test("a promise passed to the peer is resolved later", async () => {
  const { a } = pair(makeService());
  const kit = makePromiseKit();
  const reply = E(a.bootstrap()).awaitIt(kit.promise);
  await turn();
  kit.resolve("the value");
  assert.equal(await reply, "got the value");
  a.close();
});

test("a promise rejected later breaks the peer's wait with the error", async () => {
  const { a } = pair(makeService());
  const kit = makePromiseKit();
  const reply = E(a.bootstrap()).awaitIt(kit.promise);
  await turn();
  kit.reject(new SyntaxError("nope"));
  await assert.rejects(reply, (e) => e instanceof RemoteError && e.name === "SyntaxError" && e.message === "nope");
  a.close();
});

test("a promise from the peer is resolved later, and is listened to only when awaited", async () => {
  const { a, log } = pair(makeService());
  const { p } = await E(a.bootstrap()).promiseLater();
  assert.ok(p instanceof RemotePromise);
  assert.equal(log.filter(([, op]) => op === "listen").length, 0);
  assert.equal(await p, "resolved later");
  assert.equal(log.filter(([, op]) => op === "listen").length, 1);
  a.close();
});

test("a reference passed out and back is the same object; a reference received twice is one proxy", async () => {
  const { a } = pair(makeService());
  const mine = Far("Mine", { hello: (name) => `hello ${name}` });
  assert.equal(await E(a.bootstrap()).echo(mine), mine);
  await E(a.bootstrap()).keep(mine);
  assert.equal(await E(a.bootstrap()).held(), mine);
  const car = await E(a.bootstrap()).make("green");
  assert.equal(await E(a.bootstrap()).echo(car), car);
  assert.equal(E(a.bootstrap()).then, undefined, "E() proxies are not thenable");
  a.close();
});

test("the peer calls back into a local Far object", async () => {
  const { a } = pair(makeService());
  const mine = Far("Mine", { hello: (name) => `hello ${name}` });
  assert.equal(await E(a.bootstrap()).callBack(mine, "ada"), "hello ada");
  a.close();
});

test("E.sendOnly delivers without an answer", async () => {
  const seen = [];
  const { a, log } = pair(Far("Log", { log: (x) => void seen.push(x) }));
  assert.equal(E.sendOnly(a.bootstrap()).log("hi"), undefined);
  await turn();
  assert.deepEqual(seen, ["hi"]);
  assert.deepEqual(log.filter(([, op]) => op.startsWith("deliver")), [["a", "deliver-only", "log"]]);
  assert.equal(a.stats().questions, 0);
  a.close();
});

test("closing breaks every pending promise on both sides with the reason", async () => {
  const service = makeService();
  const aSide = Far("A", { never: () => new Promise(() => {}) });
  const { a, b } = pair(service, aSide);
  const pendingOnA = E(a.bootstrap()).never();
  const pendingOnB = E(b.bootstrap()).never();
  await turn();
  a.close("closed: bye");
  await assert.rejects(pendingOnA, (e) => e instanceof SessionAborted && e.code === "closed" && e.detail === "bye" && !e.byPeer);
  await assert.rejects(pendingOnB, (e) => e instanceof SessionAborted && e.code === "closed" && e.detail === "bye" && e.byPeer);
  const [ra, rb] = await Promise.all([a.closed, b.closed]);
  assert.equal(ra.reason, "closed: bye");
  assert.equal(rb.byPeer, true);
  // after the end, calls reject at once with the same reason
  await assert.rejects(E(a.bootstrap()).add(1, 2), (e) => e === ra);
});

test("a protocol error aborts both sides with the code", async () => {
  const { a, b } = pair(makeService(), null, { limits: { maxMethodLength: 8 } });
  const reply = E(a.bootstrap()).aVeryLongMethodName();
  await assert.rejects(reply, (e) => e instanceof SessionAborted && e.code === "bad-field" && e.byPeer);
  assert.equal((await b.closed).code, "bad-field");
});

test("drop() releases an import (gc-exports) and an answer (gc-answers)", async () => {
  const { a, b } = pair(makeService());
  const car = E(a.bootstrap()).make("red");
  const ref = await car;
  await turn();
  // b exports the bootstrap and the car; the resolver b imported is released by b's collector later
  assert.equal(b.stats().exports, 2);
  assert.equal(b.stats().answers, 1);
  assert.equal(a.stats().questions, 1);
  drop(ref);
  drop(car);
  await turn();
  assert.equal(b.stats().exports, 1);
  assert.equal(b.stats().answers, 0);
  assert.equal(a.stats().questions, 0);
  assert.equal(a.stats().imports, 1); // the bootstrap proxy
  await assert.rejects(E(ref).drive(), /dropped/);
  // the same object sent again arrives as a new import
  const again = await E(a.bootstrap()).echo(await E(a.bootstrap()).make("red"));
  assert.ok(again instanceof RemoteRef);
  assert.equal(a.aborted, null);
  assert.equal(b.aborted, null);
  a.close();
});

test("proxies the garbage collector takes are released by gc-exports and gc-answers", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc");
  const { a, b, log } = pair(makeService());
  await (async () => {
    for (let i = 0; i < 5; i++) await E(E(a.bootstrap()).make(`car ${i}`)).color();
  })();
  await turn();
  assert.equal(b.stats().answers, 10);
  for (let i = 0; i < 20 && (b.stats().answers > 0 || b.stats().exports > 1); i++) {
    gc();
    await turn();
  }
  assert.ok(log.some(([, op]) => op === "gc-exports"));
  assert.ok(log.some(([, op]) => op === "gc-answers"));
  assert.equal(b.stats().answers, 0);
  assert.equal(b.stats().exports, 1);
  assert.equal(a.aborted, null);
  assert.equal(b.aborted, null);
  a.close();
});

test("stats count frames and tables", async () => {
  const { a, b } = pair(makeService());
  await E(a.bootstrap()).add(1, 1);
  const s = a.stats();
  assert.equal(s.framesOut, 2); // start-session, deliver
  assert.equal(s.framesIn, 2); // start-session, fulfill
  assert.deepEqual(Object.keys(s), ["exports", "imports", "questions", "answers", "framesIn", "framesOut"]);
  assert.equal(b.stats().answers, 1);
  a.close();
});
