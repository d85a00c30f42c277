// `rm.sync` of the npm package (node, CPU path) against the real sync server on loopback:
// two clients' updates merge into the example-weighted mean, both end on the same global;
// an update made offline is queued and pushed later exactly once; a bad token is refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { initSync, RewardModel, wasmFileName } from "../../pkg/index.js";
import { parseSafetensors, randomFloats, maxRelDiff } from "./lib/reference.mjs";
import { startServer } from "./lib/sync-server.mjs";

initSync({ module: readFileSync(new URL(`../../pkg/${wasmFileName()}`, import.meta.url)) });

const DIM = 16;
let server;

before(async () => {
  server = await startServer(["--round-updates", "2", "--round-seconds", "3600"]);
});
after(async () => server?.close());

const open = () => RewardModel.open({ persist: false, dim: DIM, hidden: [8], seed: 0, objective: "naive" });

async function trainOn(rm, seed, n = 40) {
  const x = randomFloats(n * DIM, seed);
  for (let i = 0; i < n; i++) {
    await rm.observe({
      id: `a${i}`,
      embedding: x.subarray(i * DIM, (i + 1) * DIM),
      shown: { position: i % 2, candidates: 2 },
      events: x[i * DIM] > 0 ? ["copy"] : [],
    });
  }
  await rm.train({ epochs: 3, validationFraction: 0 });
  return n;
}

/** The head's tensors, flattened in name order. */
function flat(bytes) {
  const { tensors } = parseSafetensors(bytes);
  return Object.keys(tensors)
    .filter((k) => k.startsWith("layers."))
    .sort()
    .flatMap((k) => Array.from(tensors[k].data));
}

test("two clients' updates merge into the example-weighted mean, and both pull it", async () => {
  const [alice, bob] = [await open(), await open()];
  const start = flat(alice.exportWeights());
  await server.putModel("shared", alice.exportWeights());
  const [ta, tb] = [server.token("alice"), server.token("bob")];
  const na = await trainOn(alice, 1, 40);
  const nb = await trainOn(bob, 2, 24);
  const [wa, wb] = [flat(alice.exportWeights()), flat(bob.exportWeights())];
  // Independent expectation: start + Σ n·Δ / Σ n (the deltas are far below the clip bound).
  const expected = start.map((s, i) => s + (na * (wa[i] - s) + nb * (wb[i] - s)) / (na + nb));

  const ra = await alice.sync({ url: server.url, token: ta, model: "shared" });
  assert.equal(ra.pushed, 1);
  assert.equal(ra.offline, false);
  const rb = await bob.sync({ url: server.url, token: tb, model: "shared" });
  assert.equal(rb.pushed, 1);
  assert.equal(rb.version, 2, "the round closed at two updates");
  const ra2 = await alice.sync({ url: server.url, token: ta, model: "shared" });
  assert.deepEqual([ra2.pushed, ra2.pulled, ra2.version], [0, true, 2]);

  const [ga, gb] = [flat(alice.exportWeights()), flat(bob.exportWeights())];
  // Equal up to f32 rounding of the rebase (local + global − reference, in f32).
  assert.ok(maxRelDiff(ga, gb) < 1e-6, `both clients hold the same global: ${maxRelDiff(ga, gb)}`);
  assert.ok(maxRelDiff(ga, expected) < 1e-5, `global vs expected mean: ${maxRelDiff(ga, expected)}`);
  assert.equal(alice.stats().version, 2);
  const x = randomFloats(5 * DIM, 9);
  // The shared scores agree; each keeps its own personal part.
  assert.ok(maxRelDiff(await alice.score(x, { sharedOnly: true }), await bob.score(x, { sharedOnly: true })) < 1e-5);
});

test("an update made offline is queued, pushed later, and counted once", async () => {
  const carol = await open();
  const token = server.token("carol");
  await server.putModel("offline", carol.exportWeights());
  await trainOn(carol, 3);
  // Nothing listens on port 9 of loopback: the push fails and stays queued.
  const away = await carol.sync({ url: "http://127.0.0.1:9", token, model: "offline", retryBudgetMs: 0 });
  assert.deepEqual([away.offline, away.pushed, away.queued], [true, 0, 1]);
  const back = await carol.sync({ url: server.url, token, model: "offline" });
  assert.deepEqual([back.offline, back.pushed, back.queued], [false, 1, 0]);
  const again = await carol.sync({ url: server.url, token, model: "offline" });
  assert.equal(again.pushed, 0);
  const meta = await server.meta("offline", token);
  assert.equal(meta.accepted_updates, 1);
});

test("a bad token is refused with sync_unauthorized and nothing is lost", async () => {
  const dave = await open();
  await server.putModel("guarded", dave.exportWeights());
  await trainOn(dave, 4);
  await assert.rejects(
    dave.sync({ url: server.url, token: "not-a-token", model: "guarded" }),
    (e) => e.code === "sync_unauthorized",
  );
  const ok = await dave.sync({ url: server.url, token: server.token("dave"), model: "guarded" });
  assert.equal(ok.pushed, 1);
  await assert.rejects(dave.sync({ url: server.url, token: "x", model: "guarded", colour: 1 }), (e) => e.code === "unknown_option");
});
