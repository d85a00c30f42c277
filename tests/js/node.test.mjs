// The npm package in node 20 (no WebGPU, no IndexedDB): the probe picks the CPU, scores
// match an independent JS reference, training learns a simulated user's taste, and bad
// input is refused with its code while the model stays usable.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import init, {
  initSync,
  isTacitError,
  RewardModel,
  TacitError,
  featurize,
  wasmFileName,
} from "../../pkg/index.js";
import { randomFloats, referenceScores, maxRelDiff } from "./lib/reference.mjs";

// The flavour the entry module picks here (SIMD in node 20), or the one TACIT_WASM names:
// `cargo xtask test` runs this file once per flavour.
const flavour = process.env.TACIT_WASM ?? wasmFileName();
const loaded = initSync({ module: readFileSync(new URL(`../../pkg/${flavour}`, import.meta.url)) });

const DIM = 32;

async function rejectsWith(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.name, "TacitError");
    assert.equal(e.code, code, e.message);
    // Made in Rust as a plain Error: the class recognises it by its shape.
    assert.ok(e instanceof TacitError && isTacitError(e), "a TacitError");
    return true;
  });
}

test("the entry module picks the SIMD flavour where WebAssembly SIMD exists", () => {
  assert.equal(wasmFileName(), "tacit_rm_simd_bg.wasm");
});

test("initSync reports a caller-chosen module, and init() afterwards finds it loaded", async () => {
  assert.deepEqual({ ...loaded }, { flavour: "custom" });
  assert.equal(await init(), loaded);
});

test("isTacitError and instanceof TacitError accept the package's errors only", () => {
  const own = new TacitError("busy", "a train call is already running");
  assert.ok(own instanceof Error && own instanceof TacitError && isTacitError(own));
  assert.equal(own.name, "TacitError");
  assert.equal(own.code, "busy");
  for (const other of [new Error("x"), new TypeError("x"), { name: "TacitError", code: "busy" }, null, "busy"]) {
    assert.ok(!(other instanceof TacitError) && !isTacitError(other), String(other));
  }
});

test("the probe falls back to the CPU in node and persistence is off", async () => {
  const rm = await RewardModel.open({ dim: DIM, hidden: [16] });
  assert.equal(rm.backend, "cpu");
  assert.equal(rm.persistent, false);
  await rejectsWith(RewardModel.open({ dim: DIM, backend: "webgpu" }), "no_webgpu");
  await rejectsWith(RewardModel.open({ dim: DIM, persist: true }), "storage");
  // Nothing is stored in node, so nothing is listed, and deleting finds nothing to delete.
  assert.deepEqual(await RewardModel.list(), []);
  await RewardModel.delete("default");
  await RewardModel.deleteAll();
  assert.equal(rm.backend, "cpu", "a model in memory is not closed by deleteAll");
});

test("scores equal an independent reference of the exported weights", async () => {
  for (const [hidden, activation] of [[[], "relu"], [[16], "relu"], [[16, 8], "tanh"]]) {
    const rm = await RewardModel.open({ dim: DIM, hidden, activation, seed: 3 });
    const x = randomFloats(50 * DIM, 7);
    const got = await rm.score(x);
    const want = referenceScores(rm.exportWeights(), x, DIM);
    assert.equal(got.length, 50);
    assert.ok(maxRelDiff(got, want) < 1e-5, `${hidden}: ${maxRelDiff(got, want)}`);
    const order = await rm.rank(x);
    for (let i = 1; i < order.length; i++) assert.ok(got[order[i - 1]] >= got[order[i]]);
  }
});

test("training on a simulated user's copies makes the ranking agree with their taste", async () => {
  const rm = await RewardModel.open({ dim: DIM, hidden: [16], seed: 1 });
  // The user's taste: a fixed direction; they copy the better of two answers (mostly).
  const taste = randomFloats(DIM, 99);
  const utility = (e) => e.reduce((s, v, i) => s + v * taste[i], 0);
  const pairs = 300;
  const emb = randomFloats(pairs * 2 * DIM, 5);
  const agree = async () => {
    const s = await rm.score(emb);
    let ok = 0;
    for (let p = 0; p < pairs; p++) {
      const a = emb.subarray(2 * p * DIM, (2 * p + 1) * DIM);
      const b = emb.subarray((2 * p + 1) * DIM, (2 * p + 2) * DIM);
      ok += (s[2 * p] > s[2 * p + 1]) === (utility(a) > utility(b)) ? 1 : 0;
    }
    return ok / pairs;
  };
  const before = await agree();
  await observePairs(rm, taste, emb, "p");
  assert.equal(rm.stats().pending, 2 * pairs);
  const progress = [];
  const result = await rm.train({ objective: "pairwise", epochs: 8, onProgress: (p) => { progress.push(p); } });
  assert.equal(result.examples, 2 * pairs);
  // The personal part's runs report first, then the shared run, whose epochs the result lists.
  const shared = progress.filter((p) => p.part === "shared");
  const firstShared = progress.findIndex((p) => p.part === "shared");
  assert.ok(progress.slice(0, firstShared).every((p) => p.part === "personal"), JSON.stringify(progress.map((p) => p.part)));
  assert.equal(shared.length, result.epochs.length);
  assert.deepEqual(shared.map((p) => p.trainLoss), result.epochs.map((e) => e.trainLoss));
  assert.ok(shared.at(-1).trainLoss < shared[0].trainLoss, JSON.stringify(shared.map((p) => p.trainLoss)));
  const after = await agree();
  assert.ok(after > before + 0.15 && after > 0.8, `agreement ${before} -> ${after}`);
  assert.equal(rm.stats().pending, 0);
});

test("bad input is refused with its code and the model stays usable", async () => {
  const rm = await RewardModel.open({ dim: DIM, hidden: [8] });
  const x = randomFloats(3 * DIM, 2);
  const before = await rm.score(x);
  const weights = rm.exportWeights();
  const nan = x.slice();
  nan[5] = NaN;
  await rejectsWith(rm.score(x.subarray(0, DIM + 1)), "dim_mismatch");
  await rejectsWith(rm.score(nan), "non_finite_input");
  await rejectsWith(rm.score(new Float32Array(0)), "empty_input");
  await rejectsWith(rm.score("hello"), "invalid_data");
  await rejectsWith(rm.importWeights(new Uint8Array([9, 9, 9])), "corrupt_weights");
  await rejectsWith(rm.importWeights(weights.subarray(0, weights.length - 4)), "corrupt_weights");
  const other = await RewardModel.open({ dim: DIM + 1, hidden: [8] });
  await rejectsWith(rm.importWeights(other.exportWeights()), "incompatible_weights");
  await rejectsWith(RewardModel.open({ dim: DIM, hiden: [8] }), "unknown_option");
  await rejectsWith(rm.train({ epochs: 2, learningRate: 0.1, colour: "red" }), "unknown_option");
  await rejectsWith(rm.train({ epochs: 0 }), "invalid_config");
  await rejectsWith(rm.train({ objective: "hinge" }), "invalid_config");
  await rejectsWith(rm.train({}), "empty_input");
  await rejectsWith(rm.observe({ id: "a", embedding: nan.subarray(0, DIM), shown: { position: 0, candidates: 1 } }), "non_finite_input");
  await rejectsWith(rm.observe({ id: "a", embedding: x.subarray(0, DIM), shown: { position: 2, candidates: 1 } }), "invalid_data");
  await rejectsWith(rm.observe({ id: "a", embedding: x.subarray(0, DIM), shown: { position: 0, candidates: 1 }, events: ["liked"] }), "invalid_config");
  assert.throws(() => featurize("not an array", DIM), (e) => e.code === "invalid_data");
  // Dims that a `usize` parameter would wrap or trap on, and a batch too large to allocate.
  for (const dim of [-1, 0, 2 ** 31, 2 ** 22, 1.5, NaN, "384"]) {
    assert.throws(() => featurize(["a"], dim), (e) => e.code === "invalid_config", `dim ${dim}`);
  }
  assert.throws(() => featurize(new Array(64).fill("a"), 2 ** 22), (e) => e.code === "invalid_config");
  assert.throws(() => featurize(new Array(2 ** 11).fill("a"), 2 ** 16), (e) => e.code === "invalid_data");
  assert.deepEqual(await rm.score(x), before);
  assert.deepEqual(rm.exportWeights(), weights);
  assert.equal(rm.stats().pending, 0);
  await rm.close();
  await rejectsWith(rm.score(x), "closed");
});

/** Turns of two answers (consecutive rows of `emb`); the user copies the one closer to its `taste`. */
async function observePairs(rm, taste, emb, tag) {
  const utility = (e) => e.reduce((s, v, i) => s + v * taste[i], 0);
  for (let p = 0; p < emb.length / (2 * DIM); p++) {
    const a = emb.subarray(2 * p * DIM, (2 * p + 1) * DIM);
    const b = emb.subarray((2 * p + 1) * DIM, (2 * p + 2) * DIM);
    const winner = utility(a) > utility(b) ? 0 : 1;
    for (const k of [0, 1]) {
      await rm.observe({
        id: `${tag}${p}-${k}`,
        turn: `${tag}${p}`,
        embedding: k === 0 ? a : b,
        shown: { position: k, candidates: 2 },
        events: k === winner ? ["copy"] : [],
        dwellMs: k === winner ? 8000 : 1500,
      });
    }
  }
}

test("a new model's objective is chosen per call from the signals the app logs", async () => {
  const emb = randomFloats(16 * DIM, 41);
  // Turns of two answers, one copied: pairwise.
  const choices = await RewardModel.open({ dim: DIM, hidden: [4] });
  await observePairs(choices, Array.from({ length: DIM }, (_, i) => (i % 2 ? 1 : -1)), emb, "c");
  assert.equal((await choices.train({ epochs: 1 })).objective, "pairwise");
  // Single answers with signed reactions: noise-ips.
  const signed = await RewardModel.open({ dim: DIM, hidden: [4] });
  for (let i = 0; i < 16; i++) {
    await signed.observe({
      id: `s${i}`, embedding: emb.subarray(i * DIM, (i + 1) * DIM), shown: { position: 0, candidates: 1 },
      events: i % 3 === 0 ? ["thumbs_down"] : i % 3 === 1 ? ["copy"] : [],
    });
  }
  assert.equal((await signed.train({ epochs: 1 })).objective, "noise-ips");
  // Positives only: implicit; a named objective wins; a fixed model keeps its own.
  const positives = await RewardModel.open({ dim: DIM, hidden: [4] });
  const fixed = await RewardModel.open({ dim: DIM, hidden: [4], objective: "naive" });
  for (const rm of [positives, fixed]) {
    for (let i = 0; i < 16; i++) {
      await rm.observe({
        id: `p${i}`, embedding: emb.subarray(i * DIM, (i + 1) * DIM), shown: { position: i % 4, candidates: 4 },
        events: i % 4 === 0 ? ["copy"] : [],
      });
    }
  }
  assert.equal((await positives.train({ epochs: 1 })).objective, "implicit");
  assert.equal((await fixed.train({ epochs: 1 })).objective, "naive");
  await rejectsWith(RewardModel.open({ dim: DIM, objective: "autoo" }), "invalid_config");
  for (const rm of [choices, signed, positives, fixed]) await rm.close();
});

test("the personal part: scored with the shared one, exported, imported, forgotten", async () => {
  const rm = await RewardModel.open({ dim: DIM, hidden: [16], seed: 2, personalization: "residual" });
  assert.deepEqual(rm.stats().personal, { kind: "residual", blend: 1, share: 0, trainedExamples: 0 });
  await observePairs(rm, randomFloats(DIM, 41), randomFloats(120 * 2 * DIM, 3), "s3-");
  await rm.train({ objective: "pairwise", epochs: 6 });
  const stats = rm.stats().personal;
  assert.equal(stats.kind, "residual");
  assert.equal(stats.trainedExamples, 240);
  assert.ok([0, 0.5, 1].includes(stats.blend), `blend ${stats.blend}`);
  assert.ok(stats.share > 0 && stats.share <= 1, `share ${stats.share}`);

  // score = blend·shared + personal, both read from the exported bytes by the JS reference.
  const x = randomFloats(20 * DIM, 8);
  const bytes = rm.exportWeights();
  const shared = referenceScores(bytes, x, DIM);
  const personal = referenceScores(bytes, x, DIM, "personal.");
  assert.ok(personal.some((v) => Math.abs(v) > 1e-3), "the personal part is trained");
  const want = shared.map((s, i) => stats.blend * s + personal[i]);
  const both = await rm.score(x);
  assert.ok(maxRelDiff(both, want) < 1e-5, `combined: ${maxRelDiff(both, want)}`);
  const sharedScores = await rm.score(x, { sharedOnly: true });
  assert.ok(maxRelDiff(sharedScores, shared) < 1e-5);
  const order = await rm.rank(x, { sharedOnly: true });
  for (let i = 1; i < order.length; i++) assert.ok(sharedScores[order[i - 1]] >= sharedScores[order[i]]);

  // Export and import carry the personal part bit for bit.
  const copy = await RewardModel.open({ dim: DIM, hidden: [16], seed: 9, personalization: "residual" });
  await copy.importWeights(bytes);
  assert.deepEqual(copy.exportWeights(), bytes);
  assert.deepEqual(await copy.score(x), both);
  // A file without a personal part (a global from the server) keeps the user's.
  const global = await RewardModel.open({ dim: DIM, hidden: [16], seed: 5, personalization: "none" });
  assert.equal(global.stats().personal, null);
  await copy.importWeights(global.exportWeights());
  const kept = referenceScores(copy.exportWeights(), x, DIM, "personal.");
  assert.deepEqual(Array.from(kept), Array.from(personal));
  assert.ok(maxRelDiff(await copy.score(x, { sharedOnly: true }), await global.score(x)) < 1e-6);
  // A personal part of another kind is not this model's.
  await rejectsWith(global.importWeights(bytes), "incompatible_weights");

  // Forget: a zero personal part, no pending observations; scores are the shared model's.
  await observePairs(rm, randomFloats(DIM, 42), randomFloats(5 * 2 * DIM, 4), "s4-");
  assert.equal(rm.stats().pending, 10);
  await rm.forget();
  assert.equal(rm.stats().pending, 0);
  assert.deepEqual(rm.stats().personal, { kind: "residual", blend: 1, share: 0, trainedExamples: 0 });
  const forgotten = referenceScores(rm.exportWeights(), x, DIM, "personal.");
  assert.ok(forgotten.every((v) => v === 0));
  assert.deepEqual(await rm.score(x), await rm.score(x, { sharedOnly: true }));
});

test("personalization options and calls refuse bad input with their codes, changing nothing", async () => {
  await rejectsWith(RewardModel.open({ dim: DIM, personalization: "lora" }), "invalid_config");
  await rejectsWith(RewardModel.open({ dim: DIM, personalization: 1 }), "invalid_config");
  // The basis is the shared head's last hidden layer: a linear head has none.
  await rejectsWith(RewardModel.open({ dim: DIM, hidden: [], personalization: "basis" }), "invalid_config");
  const basis = await RewardModel.open({ dim: DIM, hidden: [8], personalization: "basis" });
  assert.equal(basis.stats().personal.kind, "basis");
  const none = await RewardModel.open({ dim: DIM, hidden: [8], personalization: "none" });
  await observePairs(none, randomFloats(DIM, 43), randomFloats(4 * 2 * DIM, 5), "s5-");
  await rejectsWith(none.train({ parts: "personal" }), "invalid_config");

  const rm = await RewardModel.open({ dim: DIM, hidden: [8], personalization: "mix" });
  await observePairs(rm, randomFloats(DIM, 44), randomFloats(4 * 2 * DIM, 6), "s6-");
  const x = randomFloats(3 * DIM, 7);
  const before = await rm.score(x);
  const weights = rm.exportWeights();
  for (const pull of [-0.1, 1.5, NaN, "1"]) {
    await rejectsWith(rm.train({ personalPull: pull }), "invalid_config");
  }
  await rejectsWith(rm.train({ parts: "all" }), "invalid_config");
  await rejectsWith(rm.score(x, { sharedOnly: "yes" }), "invalid_config");
  await rejectsWith(rm.score(x, { shared: true }), "unknown_option");
  await rejectsWith(rm.rank(x, { sharedonly: true }), "unknown_option");
  await rejectsWith(rm.score(x, 3), "invalid_config");
  assert.deepEqual(await rm.score(x), before);
  assert.deepEqual(rm.exportWeights(), weights);
  assert.equal(rm.stats().pending, 8);
  const result = await rm.train({ parts: "personal", personalPull: 0.5, epochs: 2 });
  assert.equal(result.examples, 8);
  assert.equal(rm.stats().personal.trainedExamples, 8);
  // parts "personal" leaves the shared head as it was.
  assert.deepEqual(await rm.score(x, { sharedOnly: true }), await (async () => {
    const ref = await RewardModel.open({ dim: DIM, hidden: [8], personalization: "mix" });
    return ref.score(x, { sharedOnly: true });
  })());
});

test("featurize gives unit vectors, equal for equal texts", () => {
  const f = featurize(["a helpful answer", "a helpful answer", "something else"], DIM);
  assert.equal(f.length, 3 * DIM);
  const norm = (r) => Math.hypot(...f.subarray(r * DIM, (r + 1) * DIM));
  for (const r of [0, 1, 2]) assert.ok(Math.abs(norm(r) - 1) < 1e-5);
  assert.deepEqual(f.subarray(0, DIM), f.subarray(DIM, 2 * DIM));
  assert.notDeepEqual(f.subarray(0, DIM), f.subarray(2 * DIM));
});
