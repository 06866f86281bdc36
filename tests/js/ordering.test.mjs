// captp.js against the shared ordering cases (tests/vectors/ordering.json),
// the same file tests/test_ordering.py runs against the Python implementation.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { E, Far, makePromiseKit } from "../../chat_host/static/captp.js";

const { cases } = JSON.parse(readFileSync(new URL("../vectors/ordering.json", import.meta.url), "utf8"));

/** Every job queued by the case, and the jobs those queue, have run. */
const drained = () => new Promise((resolve) => setTimeout(resolve, 0));

function scenario(spec) {
  const log = [];
  const vars = new Map();
  const promises = new Map();
  const objects = new Map();
  const target = (name, me) => (name === "self" ? me : promises.has(name) ? promises.get(name).promise : objects.get(name));
  const run = (steps, me = undefined) => {
    for (const [op, ...args] of steps) {
      switch (op) {
        case "log":
          log.push(args[0]);
          break;
        case "set":
          vars.set(args[0], args[1]);
          break;
        case "read":
          log.push(`${args[0]}=${vars.get(args[0]) ?? "None"}`);
          break;
        case "send":
          E(target(args[0], me))[args[1]]();
          break;
        case "send_then":
          E(target(args[0], me))[args[1]]().then(() => log.push(args[2]));
          break;
        case "promise":
          promises.set(args[0], makePromiseKit());
          break;
        case "resolve":
          promises.get(args[0]).resolve(null);
          break;
        case "resolve_to":
          promises.get(args[0]).resolve(objects.get(args[1]));
          break;
        case "then":
          promises.get(args[0]).promise.then(() => log.push(args[1]));
          break;
        default:
          throw new Error(`unknown step ${op}`);
      }
    }
  };
  for (const [name, methods] of Object.entries(spec.objects)) {
    const obj = Far(
      `Case-${name}`,
      Object.fromEntries(Object.entries(methods).map(([m, steps]) => [m, () => run(steps, obj)])),
    );
    objects.set(name, obj);
  }
  return { log, run };
}

for (const spec of cases) {
  test(spec.name, async () => {
    const world = scenario(spec);
    world.run(spec.main);
    await drained();
    assert.deepEqual(world.log, spec.log);
  });
}
