// The npm package in headless Chromium, driven by playwright-core: a Web Worker on WebGPU,
// page reloads (after training, and in the middle of it) against IndexedDB, and the probe
// with WebGPU switched off. Every page must finish without console errors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { launch, newPage } from "./lib/browser.mjs";
import { serve } from "./lib/server.mjs";
import { parseSafetensors, randomFloats, referenceScores, maxRelDiff } from "./lib/reference.mjs";

let server;
let browser;

before(async () => {
  server = await serve();
  browser = await launch({ webgpu: true });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function harness(b = browser) {
  const page = await newPage(b);
  await page.goto(`${server.url}/tests/js/pages/harness.html`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

async function reload(page) {
  await page.reload();
  await page.waitForFunction(() => window.ready === true);
}

test("a Web Worker scores and trains on WebGPU, matching the main thread and a JS reference", async () => {
  const page = await harness();
  const dim = 24;
  const x = Array.from(randomFloats(8 * dim, 11));
  const fromWorker = await page.evaluate(({ dim, x }) => new Promise((resolve) => {
    const w = new Worker("/tests/js/pages/worker.mjs", { type: "module" });
    w.onmessage = (e) => resolve(e.data);
    w.onerror = (e) => resolve({ error: String(e.message) });
    w.postMessage({ dim, seed: 4, x });
  }), { dim, x });
  assert.equal(fromWorker.error, undefined, fromWorker.error);
  assert.equal(fromWorker.backend, "webgpu");
  // The personal runs report first, then the shared one's three epochs; the fraction of the
  // whole call grows to 1.
  const shared = fromWorker.progress.filter((p) => p.part === "shared");
  assert.deepEqual(shared.map((p) => p.epoch), [1, 2, 3]);
  assert.deepEqual(fromWorker.progress.slice(-3), shared);
  const fractions = fromWorker.progress.map((p) => p.fraction);
  assert.ok(fractions.every((f, i) => i === 0 || f > fractions[i - 1]), JSON.stringify(fractions));
  assert.equal(fractions.at(-1), 1);
  assert.equal(fromWorker.examples, 24);

  const main = await page.evaluate(async ({ dim, x }) => {
    const rm = await tacit.RewardModel.open({ persist: false, dim, hidden: [16], seed: 4 });
    const cpu = await tacit.RewardModel.open({ persist: false, backend: "cpu", dim, hidden: [16], seed: 4 });
    return {
      backend: rm.backend,
      scores: Array.from(await rm.score(new Float32Array(x))),
      cpu: Array.from(await cpu.score(new Float32Array(x))),
      weights: Array.from(rm.exportWeights()),
      flavour: tacit.wasmFileName(),
    };
  }, { dim, x });
  assert.equal(main.backend, "webgpu");
  assert.equal(main.flavour, "tacit_rm_simd_bg.wasm");
  const reference = referenceScores(new Uint8Array(main.weights), new Float32Array(x), dim);
  assert.ok(maxRelDiff(main.scores, reference) < 1e-5, "webgpu vs reference");
  assert.ok(maxRelDiff(main.cpu, reference) < 1e-5, "cpu vs reference");
  assert.ok(maxRelDiff(fromWorker.scores, main.scores) < 1e-5, "worker vs main thread");
  assert.deepEqual(page.errors, []);
  await page.close();
});

// The model record as stored, read without the package (run in the page): its replay window
// and its spec, JSON strings.
const storedRecord = (name) => new Promise((ok, fail) => {
  const r = indexedDB.open("tacit-rm");
  r.onerror = () => fail(r.error);
  r.onsuccess = () => {
    const get = r.result.transaction("models").objectStore("models").get(name);
    get.onsuccess = () => { r.result.close(); ok({ replay: get.result.replay, spec: get.result.spec }); };
    get.onerror = () => fail(get.error);
  };
});

test("after a reload, trained weights and the replay window are restored bit for bit and pending observations kept", async () => {
  const page = await harness();
  const name = `reload-${Date.now()}`;
  const before = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name, dim: 16, hidden: [8], replayTurns: 8 });
    const e = (i) => Float32Array.from({ length: 16 }, (_, j) => Math.sin(i * 7 + j));
    for (let i = 0; i < 20; i++) {
      await rm.observe({ id: `a${i}`, turn: `t${i >> 1}`, embedding: e(i), shown: { position: i % 2, candidates: 2 }, events: i % 4 === 0 ? ["thumbs_up"] : [] });
    }
    await rm.train({ epochs: 2 });
    for (let i = 20; i < 23; i++) {
      await rm.observe({ id: `a${i}`, embedding: e(i), shown: { position: 0, candidates: 1 }, events: ["copy"] });
    }
    return { backend: rm.backend, weights: Array.from(rm.exportWeights()), stats: rm.stats() };
  }, name);
  before.replay = (await page.evaluate(storedRecord, name)).replay;
  assert.equal(before.backend, "webgpu");
  // The window keeps the last 8 trained turns (two observations each), stored with the weights.
  assert.equal(before.stats.replay, 16);
  assert.equal(JSON.parse(before.replay).length, 16);
  assert.equal(before.stats.pending, 3);
  assert.equal(before.stats.persistent, true);

  // The personal part was trained and is in the stored weights.
  const personal = Object.entries(parseSafetensors(new Uint8Array(before.weights)).tensors)
    .filter(([k]) => k.startsWith("personal."));
  assert.ok(personal.length > 0 && personal.some(([, t]) => t.data.some((v) => v !== 0)), "a trained personal part");
  assert.equal(before.stats.personal.trainedExamples, 20);

  await reload(page);
  const afterReload = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name, replayTurns: 8 });
    return { weights: Array.from(rm.exportWeights()), stats: rm.stats(), dim: rm.dim };
  }, name);
  afterReload.replay = (await page.evaluate(storedRecord, name)).replay;
  assert.deepEqual(afterReload.weights, before.weights);
  assert.equal(afterReload.stats.replay, 16);
  assert.equal(afterReload.replay, before.replay, "the stored replay window, bit for bit");
  assert.equal(afterReload.stats.pending, 3);
  assert.equal(afterReload.dim, 16);
  assert.deepEqual(
    { kind: afterReload.stats.personal.kind, blend: afterReload.stats.personal.blend, share: afterReload.stats.personal.share },
    { kind: before.stats.personal.kind, blend: before.stats.personal.blend, share: before.stats.personal.share },
  );

  // Opening with another window size stores it at once, the window trimmed to its newest
  // turns: a reload before the next write opens with what this tab used.
  const trimmed = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name, replayTurns: 2 });
    const stats = rm.stats();
    await rm.close();
    return stats;
  }, name);
  const record = await page.evaluate(storedRecord, name);
  assert.equal(trimmed.replay, 4);
  assert.equal(JSON.parse(record.spec).replayTurns, 2, "the stored spec has the new window size");
  assert.deepEqual(JSON.parse(record.replay), JSON.parse(before.replay).slice(-4), "the newest two turns");
  await reload(page);
  const reopened = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name });
    const stats = rm.stats();
    await rm.close();
    return stats;
  }, name);
  assert.equal(reopened.replay, 4);
  assert.equal(reopened.pending, 3, "nothing pending was lost");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("forget leaves nothing of the user in IndexedDB, in one call", async () => {
  const page = await harness();
  const name = `forget-${Date.now()}`;
  const got = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name, dim: 16, hidden: [8], replayTurns: 8 });
    const start = Array.from(rm.exportWeights());
    const e = (i) => Float32Array.from({ length: 16 }, (_, j) => Math.sin(i * 5 + j));
    for (let i = 0; i < 20; i++) {
      await rm.observe({ id: `a${i}`, turn: `t${i >> 1}`, embedding: e(i), shown: { position: i % 2, candidates: 2 }, events: i % 4 === 0 ? ["copy"] : [] });
    }
    await rm.train({ epochs: 2 });
    const replayBefore = rm.stats().replay;
    // Port 9 refuses: the update is queued in IndexedDB.
    const offline = await rm.sync({ url: "http://127.0.0.1:9", token: "t", retryBudgetMs: 0, timeoutMs: 500 });
    for (let i = 20; i < 24; i++) {
      await rm.observe({ id: `a${i}`, embedding: e(i), shown: { position: 0, candidates: 1 }, events: ["copy"] });
    }
    await rm.forget();
    await rm.close();
    // What the database holds for this name, read without the package.
    const db = await new Promise((ok, fail) => {
      const r = indexedDB.open("tacit-rm");
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const read = (store, query, all = false) => new Promise((ok, fail) => {
      const r = db.transaction(store).objectStore(store)[all ? "getAll" : "get"](query);
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const model = await read("models", name);
    const sync = await read("sync", name);
    const observations = await read("observations", IDBKeyRange.bound([name, 0], [name, Infinity]), true);
    db.close();
    const reopened = await tacit.RewardModel.open({ name });
    return {
      replayBefore,
      replayStored: JSON.parse(model.replay),
      queuedBefore: offline.queued,
      start,
      weights: Array.from(model.weights),
      syncState: JSON.parse(sync.state),
      bodies: sync.bodies.length,
      observations: observations.length,
      stats: reopened.stats(),
    };
  }, name);
  assert.equal(got.queuedBefore, 1, "an update was queued before forget");
  assert.ok(got.replayBefore > 0, "the replay window held trained observations before forget");
  assert.deepEqual(got.replayStored, [], "forget empties the stored replay window");
  assert.equal(got.stats.replay, 0);
  assert.equal(got.observations, 0);
  assert.equal(got.bodies, 0);
  assert.deepEqual(got.syncState.queue, []);
  assert.equal(got.syncState.unsyncedExamples, 0);
  const stored = parseSafetensors(new Uint8Array(got.weights));
  const start = parseSafetensors(new Uint8Array(got.start));
  // The personal part is zero, the shared head is back where it started (no pull happened),
  // and no exposure head trained on the user's feedback remains.
  for (const [k, t] of Object.entries(stored.tensors)) {
    if (k.startsWith("personal.")) assert.ok(t.data.every((v) => v === 0), k);
    else assert.ok(maxRelDiff(t.data, start.tensors[k].data) < 1e-6, k);
  }
  assert.deepEqual(Object.keys(stored.tensors).sort(), Object.keys(start.tensors).sort());
  assert.equal(got.stats.pending, 0);
  assert.deepEqual(got.stats.personal, { kind: "basis", blend: 1, share: 0, trainedExamples: 0 });
  // Port 9 is refused by the browser itself: that offline sync's one console error.
  assert.deepEqual(page.errors.filter((e) => !e.includes("ERR_UNSAFE_PORT")), []);
  await page.close();
});

test("a reload in the middle of training keeps the last stored weights and every observation", async () => {
  const page = await harness();
  const name = `midtrain-${Date.now()}`;
  const stored = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name, dim: 16, hidden: [32] });
    for (let i = 0; i < 200; i++) {
      const e = Float32Array.from({ length: 16 }, (_, j) => Math.cos(i * 3 + j));
      await rm.observe({ id: `a${i}`, embedding: e, shown: { position: i % 3, candidates: 3 }, events: i % 5 === 0 ? ["copy"] : [] });
    }
    window.epochs = 0;
    // Not awaited: the page is reloaded while this runs.
    rm.train({ epochs: 1000, batchSize: 8, validationFraction: 0, onProgress: () => { window.epochs++; } });
    return Array.from(rm.exportWeights());
  }, name);
  // The personal part trains first and reports no epochs (onProgress counts the shared
  // run's): two seconds in, the call is in the middle of one or the other.
  await page.waitForTimeout(2000);
  await reload(page);
  const back = await page.evaluate(async (name) => {
    const rm = await tacit.RewardModel.open({ name });
    return { weights: Array.from(rm.exportWeights()), pending: rm.stats().pending };
  }, name);
  assert.deepEqual(back.weights, stored);
  assert.equal(back.pending, 200);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("with WebGPU switched off the probe picks the CPU, and asking for WebGPU is refused", async () => {
  const noGpu = await launch({ webgpu: false });
  try {
    const page = await harness(noGpu);
    const got = await page.evaluate(async () => {
      const rm = await tacit.RewardModel.open({ persist: false, dim: 8, hidden: [4] });
      const scores = await rm.score(new Float32Array(16).fill(0.5));
      let code = null;
      try {
        await tacit.RewardModel.open({ persist: false, dim: 8, backend: "webgpu" });
      } catch (e) {
        code = e.code;
      }
      return { backend: rm.backend, n: scores.length, code };
    });
    assert.deepEqual(got, { backend: "cpu", n: 2, code: "no_webgpu" });
    assert.deepEqual(page.errors, []);
  } finally {
    await noGpu.close();
  }
});

test("init() failures are TacitErrors with a code and a hint; the library's own errors are TacitErrors", async () => {
  const page = await newPage(browser);
  await page.goto(`${server.url}/tests/js/pages/blank.html`);
  const got = await page.evaluate(async () => {
    const m = await import("/pkg/index.js");
    const caught = (e) => ({
      instance: e instanceof m.TacitError,
      guard: m.isTacitError(e),
      name: e.name,
      code: e.code,
      hint: e.hint ?? null,
      message: e.message,
    });
    const attempt = (options) => m.default(options).then(() => null, caught);
    return {
      // What a bundler's dev server answers for a file it does not have: its index page.
      html: await attempt({ module_or_path: "/tests/js/pages/blank.html" }),
      missing: await attempt({ module_or_path: "/pkg/no_such_file.wasm" }),
      garbage: await attempt({ module_or_path: new Uint8Array([0, 97, 115, 109, 9, 9, 9, 9]) }),
      // After the failures, the default load still works.
      loaded: { ...(await m.default()) },
      rust: await m.RewardModel.open({ persist: false, dim: 4, dimm: 3 }).then(() => null, caught),
      plain: m.isTacitError(new Error("x")) || new Error("x") instanceof m.TacitError,
    };
  });
  for (const key of ["html", "missing", "garbage"]) {
    const e = got[key];
    assert.ok(e && e.instance && e.guard, `${key}: ${JSON.stringify(e)}`);
    assert.equal(e.name, "TacitError");
    assert.equal(e.code, "wasm_load");
    assert.ok(e.hint && e.message.includes(e.hint), `${key}: the message carries the hint`);
  }
  assert.match(got.html.message, /is an HTML page, not WebAssembly/);
  assert.match(got.html.hint, /optimizeDeps: \{ exclude: \["tacit-rm"\] \}/);
  assert.match(got.missing.message, /answered HTTP 404/);
  assert.match(got.garbage.message, /did not compile/);
  assert.deepEqual(got.loaded, { flavour: "simd" });
  assert.deepEqual(
    { ...got.rust, message: undefined },
    { instance: true, guard: true, name: "TacitError", code: "unknown_option", hint: null, message: undefined },
  );
  assert.equal(got.plain, false);
  await page.close();
});
