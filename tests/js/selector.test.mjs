// Selector: captp.js's counterpart of Python's ocapd.captp.Symbol (OCapN's
// selector, a Syrup symbol). A name that is not a string: immutable, equal
// only to a Selector of the same name, never to the string; the msgpack
// profile does not carry it yet, and says so.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Selector, encode, isSelector, sameSelector, Tagged } from "../../chat_host/static/captp.js";

test("a Selector holds its name and prints as it", () => {
  const s = new Selector("op:deliver");
  assert.equal(s.name, "op:deliver");
  assert.equal(String(s), "op:deliver");
  assert.equal(`${s}`, "op:deliver");
});

test("a Selector is frozen", () => {
  const s = new Selector("fetch");
  assert.ok(Object.isFrozen(s));
  assert.throws(() => {
    "use strict";
    /** @type {any} */ (s).name = "other";
  }, TypeError);
  assert.equal(s.name, "fetch");
});

test("its name must be a string", () => {
  for (const bad of [undefined, null, 1, Symbol.for("fetch"), ["fetch"], { name: "fetch" }]) {
    assert.throws(() => new Selector(/** @type {any} */ (bad)), /Selector name must be a string/);
  }
});

test("selectors are the same only when their names are, and never the same as a string", () => {
  assert.ok(sameSelector(new Selector("a"), new Selector("a")));
  assert.ok(!sameSelector(new Selector("a"), new Selector("b")));
  assert.ok(!sameSelector(new Selector("a"), "a"));
  assert.ok(!sameSelector("a", "a"));
  assert.ok(!sameSelector(new Selector("a"), { name: "a" }));
});

test("isSelector tells a Selector from look-alikes a peer could send", () => {
  assert.ok(isSelector(new Selector("x")));
  assert.ok(!isSelector("x"));
  assert.ok(!isSelector({ name: "x" }));
  assert.ok(!isSelector(Object.create(Selector.prototype)));
  assert.ok(!isSelector(new Tagged("x", null)));
  assert.ok(!isSelector(Symbol.for("x")));
});

test("the msgpack profile writes a Selector as ext 6 holding its UTF-8 name", () => {
  assert.deepEqual([...encode(new Selector("fetch"))], [0xc7, 5, 6, ...new TextEncoder().encode("fetch")]);
  assert.deepEqual([...encode(new Selector(""))], [0xc7, 0, 6]);
});

test("the msgpack profile refuses a Selector it cannot carry, saying why", () => {
  assert.throws(() => encode([1, { k: new Selector("s".repeat(1025)) }]), /selector name too long/);
  assert.throws(() => encode(new Selector("é".repeat(513))), /selector name too long/); // bytes, not characters
  assert.throws(() => encode(new Selector("\ud800")), TypeError);
});
