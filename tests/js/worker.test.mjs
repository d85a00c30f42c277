// The worker entry ("tacit-rm/worker": pkg/worker-client.js and the pkg/worker.js it starts)
// in headless Chromium on the CPU path: the same scores as a main-thread RewardModel, training
// that leaves the main thread free (long tasks measured during a 5 000-observation training),
// progress events and their cancel, TacitErrors across the boundary, and close().
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { launch, newPage } from "./lib/browser.mjs";
import { serve } from "./lib/server.mjs";

let server;
let browser;

before(async () => {
  server = await serve();
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** A blank page with the package's two entries loaded as `window.tacit` and `window.worker`. */
async function page() {
  const p = await newPage(browser);
  await p.goto(`${server.url}/tests/js/pages/blank.html`);
  await p.evaluate(async () => {
    const tacit = await import("/pkg/index.js");
    await tacit.default();
    window.tacit = tacit;
    window.worker = await import("/pkg/worker-client.js");
    // Deterministic embeddings: `n` rows of `dim` floats in [-1, 1).
    window.rows = (n, dim, seed) => {
      let s = seed >>> 0 || 1;
      const out = new Float32Array(n * dim);
      for (let i = 0; i < out.length; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        out[i] = s / 2 ** 31 - 1;
      }
      return out;
    };
    // `n` observations over `x`: turns of two answers, the first of every third turn copied.
    window.observations = (x, n, dim) =>
      Array.from({ length: n }, (_, i) => ({
        id: `a${i}`,
        turn: `t${i >> 1}`,
        embedding: x.subarray(i * dim, (i + 1) * dim),
        shown: { position: i % 2, candidates: 2 },
        events: i % 6 === 0 ? ["copy"] : [],
        length: 100 + (i % 7) * 50,
      }));
  });
  return p;
}

test("a worker model scores bit for bit like a main-thread RewardModel with the same options", async () => {
  const p = await page();
  const got = await p.evaluate(async () => {
    const options = { persist: false, backend: "cpu", dim: 48, hidden: [32], seed: 7 };
    const x = rows(9, 48, 3);
    const rm = await worker.WorkerRewardModel.open(options);
    const main = await tacit.RewardModel.open(options);
    const sent = x.slice();
    const scores = await rm.score(sent);
    const shared = await rm.score(x, { sharedOnly: true });
    const order = await rm.rank(x);
    const out = {
      info: { name: rm.name, dim: rm.dim, persistent: rm.persistent, backend: rm.backend },
      types: [scores.constructor.name, order.constructor.name],
      // Arguments are copied: the caller's array is still whole.
      argumentKept: sent.length === x.length && sent.every((v, i) => v === x[i]),
      worker: Array.from(scores),
      main: Array.from(await main.score(x)),
      workerShared: Array.from(shared),
      mainShared: Array.from(await main.score(x, { sharedOnly: true })),
      workerOrder: Array.from(order),
      mainOrder: Array.from(await main.rank(x)),
      workerWeights: Array.from(await rm.exportWeights()),
      mainWeights: Array.from(main.exportWeights()),
      stats: await rm.stats(),
      mainStats: main.stats(),
    };
    // And after the same training on each side (the personal part too).
    for (const o of observations(rows(60, 48, 9), 60, 48)) {
      await rm.observe(o);
      await main.observe(o);
    }
    const trainOptions = { epochs: 2, seed: 3 };
    out.trained = [await rm.train(trainOptions), await main.train(trainOptions)];
    out.trainedWorker = Array.from(await rm.score(x));
    out.trainedMain = Array.from(await main.score(x));
    out.trainedStats = [await rm.stats(), main.stats()];
    await rm.close();
    await main.close();
    return out;
  });
  assert.deepEqual(got.info, { name: "default", dim: 48, persistent: false, backend: "cpu" });
  assert.deepEqual(got.types, ["Float32Array", "Uint32Array"]);
  assert.ok(got.argumentKept);
  assert.equal(got.worker.length, 9);
  // Float32 values compared exactly (each is exactly representable as the JS number).
  assert.deepEqual(got.worker, got.main);
  assert.deepEqual(got.workerShared, got.mainShared);
  assert.deepEqual(got.workerOrder, got.mainOrder);
  assert.deepEqual(got.workerWeights, got.mainWeights);
  assert.deepEqual(got.stats, got.mainStats);
  assert.ok(got.worker.some((v) => v !== 0), "non-trivial scores");
  assert.deepEqual(got.trained[0], got.trained[1]);
  assert.equal(got.trained[0].examples, 60);
  assert.deepEqual(got.trainedWorker, got.trainedMain);
  assert.notDeepEqual(got.trainedWorker, got.worker, "training changed the scores");
  assert.deepEqual(got.trainedStats[0], got.trainedStats[1]);
  assert.ok(got.trainedStats[0].personal.trainedExamples > 0, "the personal part trained");
  assert.deepEqual(p.errors, []);
  await p.close();
});

// Longest main-thread task and heartbeat gaps (setTimeout and requestAnimationFrame) while
// `train()` runs; run in the page.
async function measuredTraining(p, where) {
  return p.evaluate(async (where) => {
    const dim = 384;
    const n = 5000;
    const options = { persist: false, backend: "cpu", dim, hidden: [128], seed: 1 };
    const x = rows(n, dim, 17);
    const rm =
      where === "worker" ? await worker.WorkerRewardModel.open(options) : await tacit.RewardModel.open(options);
    const all = observations(x, n, dim);
    for (let i = 0; i < n; i += 500) await Promise.all(all.slice(i, i + 500).map((o) => rm.observe(o)));
    const pending = (await rm.stats()).pending;

    const tasks = [];
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) tasks.push({ start: e.startTime, duration: e.duration });
    });
    observer.observe({ type: "longtask", buffered: true });
    // Let what observing left behind settle, then measure only the training call.
    await new Promise((r) => setTimeout(r, 200));
    let running = true;
    let timeoutGap = 0;
    let frameGap = 0;
    let frames = 0;
    let last = performance.now();
    const beat = () => {
      const now = performance.now();
      timeoutGap = Math.max(timeoutGap, now - last);
      last = now;
      if (running) setTimeout(beat, 1);
    };
    let lastFrame = null;
    const frame = (now) => {
      if (lastFrame !== null) frameGap = Math.max(frameGap, now - lastFrame);
      lastFrame = now;
      frames++;
      if (running) requestAnimationFrame(frame);
    };
    const progress = [];
    const t0 = performance.now();
    setTimeout(beat, 1);
    requestAnimationFrame(frame);
    const result = await rm.train({
      epochs: 3,
      onProgress: (e) => {
        progress.push({ part: e.part, fraction: e.fraction, epoch: e.epoch });
      },
    });
    const t1 = performance.now();
    running = false;
    // Long-task entries are delivered after the task: give them a moment.
    await new Promise((r) => setTimeout(r, 300));
    for (const e of observer.takeRecords()) tasks.push({ start: e.startTime, duration: e.duration });
    observer.disconnect();
    const during = tasks.filter((t) => t.start + t.duration >= t0 && t.start <= t1);
    const out = {
      supported: PerformanceObserver.supportedEntryTypes.includes("longtask"),
      pending,
      examples: result.examples,
      cancelled: result.cancelled,
      trainMs: t1 - t0,
      longTasks: during.length,
      longestTaskMs: during.reduce((m, t) => Math.max(m, t.duration), 0),
      timeoutGapMs: timeoutGap,
      frameGapMs: frameGap,
      frames,
      progress,
    };
    await rm.close();
    return out;
  }, where);
}

const fmt = (m) =>
  `train ${m.trainMs.toFixed(0)} ms, ${m.longTasks} long tasks (longest ${m.longestTaskMs.toFixed(0)} ms), ` +
  `setTimeout gap ${m.timeoutGapMs.toFixed(1)} ms, frame gap ${m.frameGapMs.toFixed(1)} ms (${m.frames} frames)`;

test("training 5 000 observations in the worker leaves the main thread free (longest task < 50 ms)", async () => {
  const p = await page();
  const inWorker = await measuredTraining(p, "worker");
  const onMain = await measuredTraining(p, "main");
  console.log(`worker entry:      ${fmt(inWorker)}`);
  console.log(`main-thread model: ${fmt(onMain)}`);

  assert.ok(inWorker.supported, "this Chromium reports long tasks");
  assert.equal(inWorker.pending, 5000);
  assert.equal(inWorker.examples, 5000);
  assert.equal(inWorker.cancelled, false);
  // A long task is one of 50 ms or more: none may fall in the training call.
  assert.equal(inWorker.longTasks, 0, `main-thread long tasks during worker training: ${fmt(inWorker)}`);
  assert.ok(inWorker.longestTaskMs < 50);

  // Progress events crossed over, each with its part, the fraction increasing to 1.
  const events = inWorker.progress;
  assert.ok(events.length >= 3, `progress events: ${events.length}`);
  assert.ok(events.every((e) => e.part === "personal" || e.part === "shared"), JSON.stringify(events));
  assert.equal(events.at(-1).part, "shared");
  for (let i = 1; i < events.length; i++) {
    assert.ok(events[i].fraction > events[i - 1].fraction, `fraction not increasing: ${JSON.stringify(events)}`);
  }
  assert.ok(events.at(-1).fraction <= 1 && events.at(-1).fraction > 0.99);
  // The same training on the main thread reports the same events.
  assert.deepEqual(
    onMain.progress.map((e) => e.part),
    events.map((e) => e.part),
  );
  assert.deepEqual(p.errors, []);
  await p.close();
});

test("onProgress returning false cancels the worker's training; a throw rejects it", async () => {
  const p = await page();
  const got = await p.evaluate(async () => {
    const dim = 16;
    const rm = await worker.WorkerRewardModel.open({ persist: false, backend: "cpu", dim, hidden: [8] });
    const x = rows(400, dim, 5);
    for (const o of observations(x, 400, dim)) await rm.observe(o);
    const seen = [];
    const cancelled = await rm.train({
      parts: "shared",
      epochs: 500,
      validationFraction: 0,
      onProgress: (e) => {
        seen.push(e.epoch);
        return false;
      },
    });
    for (const o of observations(x, 400, dim)) await rm.observe({ ...o, id: `b${o.id}` });
    let thrown = null;
    try {
      await rm.train({
        parts: "shared",
        epochs: 500,
        validationFraction: 0,
        onProgress: () => {
          throw new Error("stop here");
        },
      });
    } catch (e) {
      thrown = { code: e.code, message: e.message, guard: tacit.isTacitError(e) };
    }
    // The model stays usable: a full (uncancelled) call trains the pending observations.
    const full = await rm.train({ parts: "shared", epochs: 2, onProgress: () => true });
    await rm.close();
    return {
      cancelled: cancelled.cancelled,
      epochsRun: cancelled.epochs.length,
      seen,
      thrown,
      full: { cancelled: full.cancelled, epochs: full.epochs.length, examples: full.examples },
    };
  });
  assert.equal(got.cancelled, true);
  // The callback saw one event (none after its false); the worker reads the cancel at its
  // next yield between epochs, an epoch or two later (more only on a starved main thread).
  assert.deepEqual(got.seen, [1]);
  console.log(`cancelled at epoch 1 of 500: the worker ran ${got.epochsRun}`);
  assert.ok(got.epochsRun >= 1 && got.epochsRun < 100, `epochs run after a cancel at epoch 1: ${got.epochsRun}`);
  assert.equal(got.thrown?.code, "invalid_config");
  assert.match(got.thrown.message, /onProgress threw: stop here/);
  assert.equal(got.thrown.guard, true);
  assert.deepEqual(got.full, { cancelled: false, epochs: 2, examples: 400 });
  assert.deepEqual(p.errors, []);
  await p.close();
});

test("the worker's errors are TacitErrors on the main thread, with the same code, message and hint", async () => {
  const p = await page();
  const got = await p.evaluate(async () => {
    const options = { persist: false, backend: "cpu", dim: 8, hidden: [4] };
    const rm = await worker.WorkerRewardModel.open(options);
    const main = await tacit.RewardModel.open(options);
    const caught = async (call) => {
      try {
        await call();
        return null;
      } catch (e) {
        return {
          instance: e instanceof tacit.TacitError,
          guard: tacit.isTacitError(e),
          ownClass: e instanceof worker.TacitError && Object.getPrototypeOf(e) === tacit.TacitError.prototype,
          name: e.name,
          code: e.code,
          message: e.message,
          hint: e.hint ?? null,
        };
      }
    };
    const wrongDim = new Float32Array(9);
    const out = {
      dim: await caught(() => rm.score(wrongDim)),
      mainDim: await caught(() => main.score(wrongDim)),
      option: await caught(() => rm.train({ epochz: 3 })),
      mainOption: await caught(() => main.train({ epochz: 3 })),
      empty: await caught(() => rm.train()),
      // Not structured-cloneable: refused before it reaches the worker.
      clone: await caught(() => rm.train({ onprogress: () => {} })),
      open: await caught(() => worker.WorkerRewardModel.open({ dim: 8, hidden: [4], dimm: 3 })),
      // A bundler's HTML fallback page where the .wasm should be: init()'s wasm_load and hint.
      load: await caught(() => worker.WorkerRewardModel.open(options, { module_or_path: "/tests/js/pages/blank.html" })),
      // Still usable after every failure.
      after: (await rm.score(new Float32Array(16))).length,
    };
    await rm.close();
    await main.close();
    return out;
  });
  assert.deepEqual(
    got.dim,
    { instance: true, guard: true, ownClass: true, name: "TacitError", code: "dim_mismatch", message: got.mainDim.message, hint: null },
  );
  assert.equal(got.mainDim.code, "dim_mismatch");
  assert.equal(got.option.code, "unknown_option");
  assert.equal(got.option.message, got.mainOption.message);
  assert.equal(got.empty.code, "empty_input");
  assert.equal(got.clone.code, "invalid_config");
  assert.equal(got.open.code, "unknown_option");
  // The worker's init() (the page's is loaded already): the hint of index.js.
  assert.equal(got.load.code, "wasm_load");
  assert.ok(got.load.hint && got.load.message.includes(got.load.hint), JSON.stringify(got.load));
  assert.match(got.load.hint, /optimizeDeps/);
  assert.equal(got.after, 2);
  assert.deepEqual(p.errors, []);
  await p.close();
});

test("close() ends the worker; later calls reject with closed", async () => {
  const p = await page();
  const workersBefore = p.workers().length;
  const started = p.waitForEvent("worker");
  await p.evaluate(async () => {
    window.rm = await worker.WorkerRewardModel.open({ persist: false, backend: "cpu", dim: 8, hidden: [4] });
  });
  const w = await started;
  assert.equal(p.workers().length, workersBefore + 1);
  const ended = new Promise((resolve) => w.on("close", resolve));
  const got = await p.evaluate(async () => {
    const codes = async (call) => {
      try {
        await call();
        return "resolved";
      } catch (e) {
        return `${tacit.isTacitError(e)}:${e.code}`;
      }
    };
    await rm.close();
    return {
      again: await codes(() => rm.close()),
      score: await codes(() => rm.score(new Float32Array(8))),
      stats: await codes(() => rm.stats()),
      train: await codes(() => rm.train({ onProgress: () => true })),
      exportWeights: await codes(() => rm.exportWeights()),
      backend: await codes(() => rm.backend),
      name: rm.name,
    };
  });
  await ended;
  assert.equal(p.workers().length, workersBefore);
  assert.deepEqual(got, {
    again: "resolved",
    score: "true:closed",
    stats: "true:closed",
    train: "true:closed",
    exportWeights: "true:closed",
    backend: "true:closed",
    name: "default",
  });
  assert.deepEqual(p.errors, []);
  await p.close();
});
