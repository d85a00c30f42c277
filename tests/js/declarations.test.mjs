// The TypeScript declarations cannot drift from the Rust types behind them: every option
// interface of the `.d.ts` lists exactly the keys the Rust side accepts (read from the
// `unknown_option` error, which names every field serde expects), and every result interface
// lists exactly the keys a real result object carries.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { initSync, RewardModel } from "../../pkg/index.js";
import { randomFloats } from "./lib/reference.mjs";
import { assertSameKeys, interfaceKeys } from "./lib/declarations.mjs";

initSync({ module: readFileSync(new URL("../../pkg/tacit_rm_bg.wasm", import.meta.url)) });

const DIM = 8;
/** The fields serde expected, from an `unknown_option` error's message. */
async function acceptedKeys(call) {
  try {
    await call();
  } catch (e) {
    assert.equal(e.code, "unknown_option", e.message);
    const list = e.message.match(/expected (?:one of )?(.*)$/);
    assert.ok(list, `no expected-field list in: ${e.message}`);
    return new Set([...list[1].matchAll(/`(\w+)`/g)].map((m) => m[1]));
  }
  assert.fail("a bogus option was accepted");
}

test("option interfaces list exactly the keys the Rust side accepts", async () => {
  const rm = await RewardModel.open({ dim: DIM, hidden: [4] });
  const bogus = { zzzBogusOption: 1 };
  // Keys that JS takes out before serde sees the rest (a function, a typed array).
  const takenInJs = { TrainOptions: ["onProgress"], Observation: ["embedding"] };
  // Keys serde names that are not an app's to pass: the log's `seq` (the model numbers its
  // log; refused, checked below) and `dwell_ms`, the spelling of logs stored by earlier
  // versions (an alias serde lists among the expected fields).
  const notForApps = { Observation: ["seq", "dwell_ms"] };
  const cases = {
    OpenOptions: () => RewardModel.open(bogus),
    TrainOptions: () => rm.train(bogus),
    SyncOptions: () => rm.sync({ url: "http://127.0.0.1:9", token: "t", ...bogus }),
    ScoreOptions: () => rm.score(new Float32Array(DIM), bogus),
    Observation: () =>
      rm.observe({ id: "a", embedding: new Float32Array(DIM), shown: { position: 0, candidates: 1 }, ...bogus }),
  };
  for (const [name, call] of Object.entries(cases)) {
    const accepted = await acceptedKeys(call);
    for (const k of takenInJs[name] ?? []) accepted.add(k);
    for (const k of notForApps[name] ?? []) accepted.delete(k);
    assertSameKeys(interfaceKeys(name), accepted, name);
  }
  await assert.rejects(
    rm.observe({ id: "a", embedding: new Float32Array(DIM), shown: { position: 0, candidates: 1 }, seq: 3 }),
    (e) => e.code === "unknown_option" && /seq/.test(e.message),
  );
  await rm.close();
});

test("result interfaces list exactly the keys of real results", async () => {
  const rm = await RewardModel.open({ dim: DIM, hidden: [4] });
  const x = randomFloats(2 * DIM, 3);
  for (let i = 0; i < 12; i++) {
    await rm.observe({
      id: `a${i}`,
      turn: `t${i >> 1}`,
      embedding: x.subarray((i % 2) * DIM, (i % 2 + 1) * DIM),
      shown: { position: i % 2, candidates: 2 },
      events: i % 2 ? [] : ["copy"],
    });
  }
  let progress;
  const result = await rm.train({ objective: "naive", epochs: 2, onProgress: (p) => { progress = p; } });
  assertSameKeys(interfaceKeys("TrainResult"), new Set(Object.keys(result)), "TrainResult");
  assertSameKeys(interfaceKeys("ProgressEvent"), new Set(Object.keys(progress)), "ProgressEvent");
  assertSameKeys(interfaceKeys("Stats"), new Set(Object.keys(rm.stats())), "Stats");
  assertSameKeys(interfaceKeys("PersonalStats"), new Set(Object.keys(rm.stats().personal)), "PersonalStats");
  assert.equal(rm.stats().lastScore, null, "no scoring call yet");
  await rm.score(x);
  assertSameKeys(interfaceKeys("ServedStats"), new Set(Object.keys(rm.stats().lastScore)), "ServedStats");
  // node has no WebGPU: the CPU is the only device, and says so.
  assert.deepEqual(rm.stats().lastScore, { device: "cpu", reason: "only-device", rows: 2 });
  // Port 9 (discard) refuses: an offline sync still resolves a full SyncResult.
  const sync = await rm.sync({ url: "http://127.0.0.1:9", token: "t", retryBudgetMs: 0, timeoutMs: 500 });
  assertSameKeys(interfaceKeys("SyncResult"), new Set(Object.keys(sync)), "SyncResult");
  await rm.close();
});
