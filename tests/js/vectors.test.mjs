// captp.js against the shared wire vectors (tests/vectors/README.md says what each kind asks).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  CodecError,
  Desc,
  Far,
  Float64,
  RemoteError,
  Selector,
  Session,
  Tagged,
  decode,
  encode,
  isSelector,
  packBatch,
  splitBatch,
  unpack,
} from "../../chat_host/static/captp.js";

const load = (name) => JSON.parse(readFileSync(new URL(`../vectors/${name}`, import.meta.url), "utf8"));
const values = load("values.json");
const messages = load("messages.json");

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

// -- the notation (README "Value notation") as JavaScript values -------------

/** Build the value to encode. Records become Maps so their wire order is kept exactly. */
function build(n) {
  if (n === null || typeof n === "boolean") return n;
  const [[kind, v]] = Object.entries(n);
  switch (kind) {
    case "int": {
      const big = BigInt(v);
      return big >= -BigInt(Number.MAX_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    }
    case "float":
      return new Float64(Number(v));
    case "str":
      return v;
    case "bytes":
      return fromHex(v);
    case "list":
      return v.map(build);
    case "record":
      return new Map(v.map(([k, x]) => [k, build(x)]));
    case "tagged":
      return new Tagged(v[0], build(v[1]));
    case "error":
      return new RemoteError(v[0], v[1], v[2] ?? null);
    case "desc":
      return Desc.fromName(v[0], v[1]);
    case "symbol":
      return new Selector(v);
  }
  throw new Error(`unknown notation ${kind}`);
}

/** A decoded float, or undefined if `x` is not one (plain integral numbers are ints). */
function asFloat(x) {
  if (x instanceof Float64) return x.value;
  if (typeof x === "number" && !(Number.isSafeInteger(x) && !Object.is(x, -0))) return x;
  return undefined;
}

/** Check a decoded value against the notation: types must match (README "Equality"). */
function assertSame(got, n, path = "value") {
  if (n === null || typeof n === "boolean") return assert.equal(got, n, path);
  const [[kind, v]] = Object.entries(n);
  switch (kind) {
    case "int":
      assert.ok(typeof got === "bigint" || (typeof got === "number" && Number.isSafeInteger(got) && !Object.is(got, -0)), `${path}: int expected, got ${typeof got}`);
      // Safe integers are numbers, others bigints: one representation per value.
      assert.equal(typeof got === "bigint", !Number.isSafeInteger(Number(BigInt(v))) || BigInt(Number(BigInt(v))) !== BigInt(v), `${path}: representation`);
      return assert.equal(BigInt(got), BigInt(v), path);
    case "float": {
      const f = asFloat(got);
      assert.ok(f !== undefined, `${path}: float expected, got ${typeof got} ${got}`);
      return assert.ok(Object.is(f, Number(v)), `${path}: ${f} != ${v}`);
    }
    case "str":
      return assert.equal(got, v, path);
    case "bytes":
      assert.ok(got instanceof Uint8Array, `${path}: bytes expected`);
      return assert.equal(toHex(got), v, path);
    case "list":
      assert.ok(Array.isArray(got), `${path}: list expected`);
      assert.equal(got.length, v.length, `${path}: length`);
      return v.forEach((x, i) => assertSame(got[i], x, `${path}[${i}]`));
    case "record": {
      assert.equal(Object.getPrototypeOf(got), Object.prototype, `${path}: record expected`);
      // Entries in wire order, as far as a JS object can hold it: JS lists
      // integer-like keys ("1") first whatever their order on the wire.
      const jsOrder = Object.keys(Object.fromEntries(v.map(([k]) => [k, 0])));
      assert.deepEqual(Object.keys(got), jsOrder, `${path}: keys`);
      return v.forEach(([k, x]) => assertSame(got[k], x, `${path}.${k}`));
    }
    case "tagged":
      assert.ok(got instanceof Tagged, `${path}: tagged expected`);
      assert.equal(got.tag, v[0], `${path}: tag`);
      return assertSame(got.payload, v[1], `${path}.payload`);
    case "error":
      assert.ok(got instanceof RemoteError, `${path}: error expected`);
      assert.deepEqual([got.name, got.message, got.remoteTraceback], [v[0], v[1], v[2] ?? null], path);
      return;
    case "desc":
      assert.ok(got instanceof Desc, `${path}: descriptor expected`);
      return assert.deepEqual([got.kindName, got.position], v, path);
    case "symbol":
      assert.ok(isSelector(got), `${path}: selector expected`);
      return assert.equal(got.name, v, path);
  }
  throw new Error(`unknown notation ${kind}`);
}

// -- values.json ---------------------------------------------------------------

for (const v of values.values) {
  test(`value encodes exactly: ${v.name}`, () => {
    assert.equal(toHex(encode(build(v.value))), v.hex);
  });
  test(`value decodes: ${v.name}`, () => {
    assertSame(decode(fromHex(v.hex)), v.value);
  });
}

for (const v of values.decode_only) {
  test(`non-shortest form decodes: ${v.name}`, () => {
    assertSame(decode(fromHex(v.hex)), v.value);
  });
}

for (const v of values.rejects) {
  test(`decoder refuses: ${v.name}`, () => {
    assert.throws(() => decode(fromHex(v.hex)), CodecError);
  });
}

for (const v of values.encode_rejects) {
  test(`encoder refuses: ${v.name}`, () => {
    assert.throws(() => encode(build(v.value)), TypeError);
  });
}

test("plain JavaScript values encode as the notation says", () => {
  // Integral numbers are ints, others floats; -0 stays a float; undefined is nil.
  assert.equal(toHex(encode([1, 1.5, -0, 2 ** 53, undefined, 5n])), "9601cb3ff8000000000000cb8000000000000000cb4340000000000000c005");
  assert.equal(toHex(encode({ b: 1, a: 2 })), "82a16201a16102");
  assert.throws(() => encode("\ud800"), TypeError); // lone surrogate: not Unicode
  assert.throws(() => encode(() => 1), TypeError);
  assert.throws(() => encode(new Date()), TypeError);
  assert.throws(() => encode(new Map([[1, 2]])), TypeError);
});

test("a string with a BOM keeps it", () => {
  assert.equal(decode(fromHex("a3efbbbf")), "\ufeff");
});

// -- messages.json ---------------------------------------------------------------

for (const f of [...messages.frames]) {
  test(`frame encodes exactly: ${f.name}`, () => {
    assert.equal(toHex(encode(build(f.message))), f.hex);
    assertSame(decode(fromHex(f.hex)), f.message);
  });
}

for (const v of messages.websocket_batches) {
  test(`websocket batch message: ${v.name}`, () => {
    const frames = v.messages.map((m) => encode(build(m)));
    assert.deepEqual(packBatch(frames).map(toHex), [v.hex]);
    assert.deepEqual(splitBatch(fromHex(v.hex), 1 << 24).map(toHex), frames.map(toHex));
  });
}

test("a bad batch message is refused whole with its reason", () => {
  for (const [hex, code] of [
    ["", "malformed-frame"],
    ["000000", "malformed-frame"],
    ["00000005616263", "malformed-frame"],
    ["000000016100000401", "frame-too-large"],
  ]) {
    assert.throws(() => splitBatch(fromHex(hex), 1024), (e) => e.code === code);
  }
});

/** The vector bootstrap (README): echo, self, fail, adder, reject. */
function vectorBootstrap() {
  const boot = Far("VectorBootstrap", {
    echo: (value) => value,
    self: () => boot,
    fail(message) {
      throw new Error(message);
    },
    adder: () => Far("Add", (a, b) => a + b),
    reject: (value) => Promise.reject(value),
  });
  return boot;
}

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const START = fromHex(messages.frames[0].hex);

for (const r of messages.rejects) {
  test(`session aborts with ${r.abort_code}: ${r.name}`, () => {
    const limits = Object.fromEntries(Object.entries(r.limits).map(([k, n]) => [camel(k), n]));
    const session = new Session({ bootstrap: vectorBootstrap(), limits });
    session.dataToSend(); // our start-session
    if (r.started) session.receiveFrame(START);
    for (const hex of r.prelude) session.receiveFrame(fromHex(hex));
    assert.equal(session.aborted, null, "the prelude must not abort");
    session.receiveFrame(fromHex(r.hex));
    assert.ok(session.aborted, "the session must be aborted");
    assert.equal(session.aborted.code, r.abort_code);
    assert.equal(session.aborted.byPeer, false);
    const out = session.dataToSend();
    assert.equal(out.length, 1, "exactly one frame: the abort");
    const [op, reason] = unpack(out[0]);
    assert.equal(op, "abort");
    assert.ok(reason === r.abort_code || reason.startsWith(r.abort_code + ": "), reason);
  });
}

const turn = () => new Promise((resolve) => setTimeout(resolve, 0));
const isGc = (frame) => ["gc-exports", "gc-answers"].includes(unpack(frame)[0]);

for (const x of messages.exchanges) {
  test(`exchange: ${x.name}`, async () => {
    const session = new Session({ bootstrap: vectorBootstrap() });
    for (const step of x.steps) {
      if ("in" in step) {
        session.receiveFrame(fromHex(step.in));
        continue;
      }
      await turn(); // local calls settle in later microtasks
      const out = session.dataToSend().filter((f) => !isGc(f)).map(toHex);
      assert.deepEqual(out, step.out === null ? [] : [step.out]);
    }
    if (x.aborted === null) assert.equal(session.aborted, null);
    else {
      const { code, detail, byPeer } = session.aborted;
      assert.deepEqual({ code, detail, by_peer: byPeer }, x.aborted);
    }
  });
}
