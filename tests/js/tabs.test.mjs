// One model per origin, many tabs: pages of ONE browser context share one IndexedDB, as the
// tabs of one origin do. Training in either tab ends with one stored model both score with;
// a delete in one tab closes the model in the others and leaves nothing of it stored;
// `RewardModel.list()` names exactly the stored models. Storage is read here without the
// package (pages/idb.mjs), weights with an independent safetensors parser (lib/reference.mjs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { launch } from "./lib/browser.mjs";
import { serve } from "./lib/server.mjs";
import { parseSafetensors, randomFloats, referenceScores, maxRelDiff } from "./lib/reference.mjs";
import { assertSameKeys, interfaceKeys } from "./lib/declarations.mjs";

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

/** A tab of `context` with the package loaded, recording console errors. */
async function tab(context) {
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") page.errors.push(m.text());
  });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  await page.goto(`${server.url}/tests/js/pages/harness.html`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

const DIM = 8;

/**
 * Opens `name` as `window.models[name]` in `page`: a residual personal part unless `options`
 * say otherwise, the one `storedScores` computes scores of.
 */
function open(page, name, options = {}) {
  return page.evaluate(async ({ name, options }) => {
    window.models ??= {};
    window.models[name] = await tacit.RewardModel.open({ name, backend: "cpu", dim: 8, hidden: [4], personalization: "residual", ...options });
  }, { name, options });
}

/** `n` observations tagged `tag` (turns of two, the first of each copied); their numbers. */
function observe(page, name, tag, n) {
  return page.evaluate(async ({ name, tag, n }) => {
    const seqs = [];
    for (let i = 0; i < n; i++) {
      seqs.push(await window.models[name].observe({
        id: `${tag}${i}`, turn: `${tag}${i >> 1}`,
        embedding: Float32Array.from({ length: 8 }, (_, j) => Math.sin(i * 5 + j + tag.length * 3)),
        shown: { position: i % 2, candidates: 2 }, events: i % 2 ? [] : ["copy"],
      }));
    }
    return seqs;
  }, { name, tag, n });
}

/** `{ ok: value }` or `{ code, message }`: what a call of the model did, across the page boundary. */
function call(page, name, method, ...args) {
  return page.evaluate(async ({ name, method, args }) => {
    // Typed arrays travel as { floats }: as an argument, or as an observation's embedding.
    const floats = (a) => (a && a.floats ? new Float32Array(a.floats) : a);
    const revive = (a) => (a && a.embedding ? { ...a, embedding: floats(a.embedding) } : floats(a));
    try {
      const value = await window.models[name][method](...args.map(revive));
      return { ok: value instanceof Float32Array ? Array.from(value) : value ?? null };
    } catch (e) {
      return { code: e.code ?? null, name: e.name, message: e.message };
    }
  }, { name, method, args });
}

/** Full and shared-only scores of `x` in `page`. */
async function scores(page, name, x) {
  const full = await call(page, name, "score", { floats: Array.from(x) });
  const shared = await call(page, name, "score", { floats: Array.from(x) }, { sharedOnly: true });
  assert.ok(full.ok && shared.ok, JSON.stringify([full, shared]));
  return { full: full.ok, shared: shared.ok };
}

function stats(page, name) {
  return page.evaluate((name) => window.models[name].stats(), name);
}

/** Every record of `name` IndexedDB holds, read in `page` without the package. */
function dump(page, name) {
  return page.evaluate(async (name) => {
    const idb = await import("/tests/js/pages/idb.mjs");
    const all = await idb.dump(name);
    if (all === null) return null;
    // Bytes do not cross the page boundary as such: weights as plain arrays.
    for (const records of Object.values(all)) {
      for (const r of records) {
        if (r.value && r.value.weights instanceof Uint8Array) r.value.weights = Array.from(r.value.weights);
      }
    }
    return all;
  }, name);
}

function databaseExists(page) {
  return page.evaluate(async () => (await import("/tests/js/pages/idb.mjs")).exists());
}

/** The stored model's weights, parsed here: its scores of `x` as this test computes them. */
function storedScores(records, x) {
  assert.equal(records.models.length, 1, "one stored model record");
  const bytes = new Uint8Array(records.models[0].value.weights);
  const { metadata } = parseSafetensors(bytes);
  const shared = referenceScores(bytes, x, DIM);
  const personal = referenceScores(bytes, x, DIM, "personal.");
  const blend = Number(metadata.personal_blend);
  assert.ok(Number.isFinite(blend), `a residual personal part with a blend: ${metadata.personal_blend}`);
  return { shared: Array.from(shared), full: Array.from(shared, (s, i) => blend * s + personal[i]) };
}

function assertScoresMatch(got, want, what) {
  assert.ok(maxRelDiff(got.shared, want.shared) < 1e-5, `${what}: shared ${got.shared} vs ${want.shared}`);
  assert.ok(maxRelDiff(got.full, want.full) < 1e-5, `${what}: full ${got.full} vs ${want.full}`);
}

test("two tabs training one model keep every observation and end with one stored model both score with", async () => {
  const context = await browser.newContext();
  const [a, b] = [await tab(context), await tab(context)];
  const name = "shared";
  // Both open the model before either observes: each starts from the same (empty) log.
  await open(a, name);
  await open(b, name);
  const seqs = [...await observe(a, name, "a", 6), ...await observe(b, name, "b", 4)];
  assert.equal(new Set(seqs).size, 10, `every acknowledged observation has its own number: ${seqs}`);

  // A training call trains the model on its log, whichever tab logged each observation.
  const toB = await listen(b, name);
  const first = await call(a, name, "train", { epochs: 2, validationFraction: 0 });
  assert.equal(first.ok?.examples, 10, JSON.stringify(first));
  const x = randomFloats(5 * DIM, 3);
  // b did not train: told of a's commit, it reloads what a stored before it scores.
  assert.equal((await toB())?.kind, "commit");
  const afterA = { a: await scores(a, name, x), b: await scores(b, name, x) };
  assert.deepEqual(afterA.b, afterA.a, "b scores with the weights a trained");
  assertScoresMatch(afterA.a, storedScores(await dump(a, name), x), "after a's training");
  assert.equal((await stats(b, name)).pending, 0, "b's view of the log: a trained on all of it");

  // Now b trains (on top of a's weights) on what it logs next.
  await observe(b, name, "bb", 4);
  const toA = await listen(a, name);
  const second = await call(b, name, "train", { epochs: 2, validationFraction: 0 });
  assert.equal(second.ok?.examples, 4, JSON.stringify(second));
  assert.equal((await toA())?.kind, "commit");
  const afterB = { a: await scores(a, name, x), b: await scores(b, name, x) };
  assert.deepEqual(afterB.a, afterB.b, "a scores with the weights b trained");
  assert.notDeepEqual(afterB.a.full, afterA.a.full, "b's training changed the model");
  assertScoresMatch(afterB.b, storedScores(await dump(b, name), x), "after b's training");
  for (const p of [a, b]) {
    const s = await stats(p, name);
    assert.equal(s.trainedExamples, 14, "both trainings are in the one model's history");
    assert.equal(s.pending, 0);
  }

  // Both train at once: one tab writes at a time. The first trains on every stored
  // observation; the second finds none left (it waited, then reloaded).
  await observe(a, name, "c", 4);
  await observe(b, name, "dd", 4);
  const both = await Promise.all([
    call(a, name, "train", { epochs: 2, validationFraction: 0 }),
    call(b, name, "train", { epochs: 2, validationFraction: 0 }),
  ]);
  const trained = both.filter((r) => r.ok);
  assert.equal(trained.length, 1, JSON.stringify(both));
  assert.equal(trained[0].ok.examples, 8);
  assert.deepEqual(both.filter((r) => !r.ok).map((r) => r.code), ["empty_input"]);
  const stored = await dump(a, name);
  assert.equal(stored.observations.length, 0, "nothing left pending");
  const end = { a: await scores(a, name, x), b: await scores(b, name, x) };
  assert.deepEqual(end.a, end.b);
  assertScoresMatch(end.a, storedScores(stored, x), "after training at once");
  assert.equal((await stats(a, name)).trainedExamples, 22);
  assert.equal((await stats(b, name)).trainedExamples, 22);

  // A third tab opening the model finds that same model.
  const c = await tab(context);
  await open(c, name);
  assert.deepEqual(await scores(c, name, x), end.a);
  assert.deepEqual([...a.errors, ...b.errors, ...c.errors], []);
  await context.close();
});

test("a model deleted in one tab is closed in the others, and their next call leaves nothing of it", async () => {
  const context = await browser.newContext();
  const [a, b] = [await tab(context), await tab(context)];
  for (const p of [a, b]) {
    await open(p, "doomed");
    await open(p, "kept");
  }
  await observe(b, "doomed", "b", 3);
  await observe(b, "kept", "k", 2);
  assert.equal((await dump(a, "doomed")).observations.length, 3);

  const deleted = await a.evaluate(() => tacit.RewardModel.delete("doomed").then(() => "ok", (e) => e.code));
  assert.equal(deleted, "ok");
  // Every kind of call of the deleted model, in the tab that deleted it and in the other:
  // none stores anything (an observation, a trained model, a re-created record).
  const x = { floats: Array.from(randomFloats(2 * DIM, 5)) };
  const obs = { id: "late", embedding: { floats: Array(DIM).fill(0.5) }, shown: { position: 0, candidates: 1 }, events: ["copy"] };
  for (const [page, method, args] of [
    [b, "observe", [obs]],
    [b, "train", [{ epochs: 1 }]],
    [b, "score", [x]],
    [b, "reset", []],
    [a, "score", [x]],
    [a, "importWeights", [new Uint8Array(4)]],
  ]) {
    const got = await call(page, "doomed", method, ...args);
    assert.equal(got.code, "closed", `${method} of a deleted model: ${JSON.stringify(got)}`);
  }
  // The synchronous calls say so too.
  assert.equal(await b.evaluate(() => { try { window.models.doomed.stats(); return "ok"; } catch (e) { return e.code; } }), "closed");
  const left = await dump(b, "doomed");
  for (const [store, records] of Object.entries(left)) assert.deepEqual(records, [], `${store} holds nothing of it`);
  // The other model is untouched and still usable in both tabs.
  const kept = await dump(b, "kept");
  assert.equal(kept.models.length, 1);
  assert.equal(kept.observations.length, 2);
  assert.ok((await call(a, "kept", "score", x)).ok);

  // Everything: the whole database, while both tabs hold open models (their connections
  // close on `versionchange`, so the deletion is not blocked).
  const all = await a.evaluate(() => Promise.race([
    tacit.RewardModel.deleteAll().then(() => "ok", (e) => e.code ?? String(e)),
    new Promise((ok) => setTimeout(() => ok("blocked"), 10_000)),
  ]));
  assert.equal(all, "ok");
  assert.equal(await databaseExists(b), false, "the database is gone");
  for (const page of [a, b]) {
    assert.equal((await call(page, "kept", "observe", obs)).code, "closed");
    assert.equal((await call(page, "kept", "train", { epochs: 1 })).code, "closed");
  }
  assert.equal(await databaseExists(b), false, "no later call re-created it");
  // Opening again starts afresh.
  await open(b, "kept");
  assert.equal((await stats(b, "kept")).pending, 0);
  assert.deepEqual([...a.errors, ...b.errors], []);
  await context.close();
});

test("RewardModel.list() names exactly the stored models of the origin", async () => {
  const context = await browser.newContext();
  const [a, b] = [await tab(context), await tab(context)];
  const list = (page) => page.evaluate(() => tacit.RewardModel.list());
  assert.deepEqual(await list(a), []);
  assert.equal(await databaseExists(a), false, "listing an origin with no models creates nothing");
  await open(a, "alpha");
  await open(a, "beta", { dim: 16, hidden: [], objective: "pairwise", personalization: "none" });
  await open(a, "memory-only", { persist: false });
  await observe(a, "alpha", "x", 3);

  const listed = await list(b);
  assert.deepEqual(listed.map((m) => m.name), ["alpha", "beta"]);
  for (const m of listed) assertSameKeys(interfaceKeys("ModelInfo"), new Set(Object.keys(m)), "ModelInfo");
  const [alpha, beta] = listed;
  assert.deepEqual(
    { dim: alpha.dim, hidden: alpha.hidden, objective: alpha.objective, personalization: alpha.personalization, pending: alpha.pending },
    { dim: 8, hidden: [4], objective: "auto", personalization: "residual", pending: 3 },
  );
  assert.deepEqual(
    { dim: beta.dim, hidden: beta.hidden, objective: beta.objective, personalization: beta.personalization, pending: beta.pending },
    { dim: 16, hidden: [], objective: "pairwise", personalization: "none", pending: 0 },
  );
  assert.ok(alpha.updatedAt > Date.now() - 600_000 && alpha.updatedAt <= Date.now(), `${alpha.updatedAt}`);

  // The worker entry's statics run the same calls in a worker of their own.
  const worker = (op) => b.evaluate(async (op) => (await import("/pkg/worker-client.js")).WorkerRewardModel[op](), op);
  assert.deepEqual(await worker("list"), listed);

  await b.evaluate(() => tacit.RewardModel.delete("alpha"));
  assert.deepEqual((await list(a)).map((m) => m.name), ["beta"]);
  assert.equal(await worker("deleteAll"), undefined);
  assert.deepEqual(await list(a), []);
  assert.equal(await databaseExists(a), false);
  assert.deepEqual([...a.errors, ...b.errors], []);
  await context.close();
});

test("without Web Locks, a training call computed from weights another tab replaced is not stored", async () => {
  // Browsers before 2022 have no navigator.locks: the two tabs' writes are not queued, and
  // the stored generation is what keeps the slower one from overwriting the faster one.
  const context = await browser.newContext();
  await context.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined, configurable: true });
  });
  const [a, b] = [await tab(context), await tab(context)];
  assert.equal(await a.evaluate(() => navigator.locks), undefined);
  const name = "unlocked";
  await open(a, name);
  await open(b, name);
  await observe(a, name, "a", 150);
  await observe(b, name, "b", 150);
  const both = await Promise.all([
    call(a, name, "train", { epochs: 4, validationFraction: 0 }),
    call(b, name, "train", { epochs: 4, validationFraction: 0 }),
  ]);
  // One stores its result. The other either trained at the same time on the same weights
  // and is refused (`busy`: the stored generation moved), or started after the first had
  // stored and found nothing left (`empty_input`); it never stores over the first.
  const trained = both.filter((r) => r.ok);
  assert.equal(trained.length, 1, JSON.stringify(both.map((r) => r.code ?? r.ok.examples)));
  assert.equal(trained[0].ok.examples, 300);
  const refused = both.find((r) => !r.ok);
  assert.ok(["busy", "empty_input"].includes(refused.code), JSON.stringify(refused));
  console.log(`the second training call: ${refused.code}`);
  const x = randomFloats(3 * DIM, 9);
  const stored = await dump(a, name);
  const end = { a: await scores(a, name, x), b: await scores(b, name, x) };
  assert.deepEqual(end.a, end.b);
  assertScoresMatch(end.a, storedScores(stored, x), "the stored model");
  assert.equal((await stats(a, name)).trainedExamples, 300, "trained once");
  assert.equal((await stats(b, name)).trainedExamples, 300);
  assert.deepEqual([...a.errors, ...b.errors], []);
  await context.close();
});

/**
 * Starts listening in `page` to the channel on which the instances of `name` announce their
 * commits and deletes (call it before the call that announces); the function it resolves to
 * waits for the next message there (or `null` after 10 s). Messages are delivered to a
 * page's channels in the order they were made, so once this one heard a message, the model's
 * own channel (made when it was opened, before this one) has heard it too.
 */
async function listen(page, name) {
  await page.evaluate((name) => {
    const channel = new BroadcastChannel(`tacit-rm/model/${name}`);
    window.heard = new Promise((ok) => {
      channel.onmessage = (e) => {
        channel.close();
        ok(e.data);
      };
    });
  }, name);
  return () => page.evaluate(() => Promise.race([window.heard, new Promise((ok) => setTimeout(() => ok(null), 10_000))]));
}

/** Counts `IDBDatabase.transaction` calls in `page` from now on: `idbCalls(page)` reads the count. */
function countTransactions(page) {
  return page.evaluate(() => {
    const proto = IDBDatabase.prototype;
    window.transactions = 0;
    if (!window.unwrappedTransaction) {
      window.unwrappedTransaction = proto.transaction;
      proto.transaction = function (...args) {
        window.transactions++;
        return window.unwrappedTransaction.apply(this, args);
      };
    }
  });
}

const idbCalls = (page) => page.evaluate(() => window.transactions);

/** `n` scores of `x` in a row in `page`, every one checked: the scores of the last. */
function scoreLoop(page, name, x, n) {
  return page.evaluate(async ({ name, x, n }) => {
    const floats = new Float32Array(x);
    let last;
    for (let i = 0; i < n; i++) last = Array.from(await window.models[name].score(floats));
    return last;
  }, { name, x: Array.from(x), n });
}

test("a tab hears another tab's commit and delete: its next call already sees them", async () => {
  const context = await browser.newContext();
  const [a, b] = [await tab(context), await tab(context)];
  const name = "announced";
  await open(a, name);
  await open(b, name);
  const x = randomFloats(4 * DIM, 11);
  const before = await scores(b, name, x);
  await observe(a, name, "a", 6);

  const heard = await listen(b, name);
  const trained = await call(a, name, "train", { epochs: 2, validationFraction: 0 });
  assert.equal(trained.ok?.examples, 6, JSON.stringify(trained));
  const message = await heard();
  const stored = await dump(a, name);
  assert.deepEqual(message, { kind: "commit", id: stored.meta[0].value.id, generation: stored.meta[0].value.generation });
  // b's very next score is the stored model's (it reads the meta record once, and reloads).
  const next = await scores(b, name, x);
  assert.notDeepEqual(next.full, before.full, "a's training changed the model");
  assertScoresMatch(next, storedScores(stored, x), "b's next score");
  assert.equal((await stats(b, name)).trainedExamples, 6);

  // A delete closes b's model at its next call, a synchronous one too, without any read.
  const deleted = await listen(b, name);
  await a.evaluate((name) => tacit.RewardModel.delete(name), name);
  assert.deepEqual(await deleted(), { kind: "delete", id: stored.meta[0].value.id });
  for (const method of ["stats", "exportWeights"]) {
    const got = await b.evaluate(({ name, method }) => {
      try { window.models[name][method](); return "ok"; } catch (e) { return e.code; }
    }, { name, method });
    assert.equal(got, "closed", `${method} after another tab's delete`);
  }
  assert.equal((await call(b, name, "score", { floats: Array.from(x) })).code, "closed");
  // Opened again, it is another model: the old instance's channel does not close the new one.
  await open(b, name);
  assert.ok((await call(b, name, "score", { floats: Array.from(x) })).ok);
  assert.deepEqual([...a.errors, ...b.errors], []);
  await context.close();
});

/** p50, p95 and mean (ms) of `calls` scores of 4 candidates after `warmup`, one at a time. */
function latency(page, name, { calls = 300, warmup = 20 } = {}) {
  return page.evaluate(async ({ name, calls, warmup }) => {
    const m = window.models[name];
    const x = Float32Array.from({ length: 4 * m.dim }, (_, i) => Math.sin(i * 0.37));
    for (let i = 0; i < warmup; i++) await m.score(x);
    const times = [];
    const start = performance.now();
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      await m.score(x);
      times.push(performance.now() - t0);
    }
    const mean = (performance.now() - start) / calls;
    times.sort((p, q) => p - q);
    const pick = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    return { p50: pick(0.5), p95: pick(0.95), mean };
  }, { name, calls, warmup });
}

test("in the steady state a persistent model's score touches no IndexedDB; after a commit elsewhere, one read", async () => {
  const context = await browser.newContext();
  const [a, b] = [await tab(context), await tab(context)];
  const name = "steady";
  await open(a, name);
  await open(b, name);
  const x = randomFloats(4 * DIM, 13);
  await scoreLoop(a, name, x, 1);
  await countTransactions(a);
  await scoreLoop(a, name, x, 100);
  assert.equal(await idbCalls(a), 0, "100 scores, no IndexedDB transaction");

  // Another tab commits: the next score reads (the meta record, then the stored model), the
  // ones after it do not.
  await observe(b, name, "b", 4);
  assert.equal(await idbCalls(a), 0, "another tab's observations are not announced");
  const heard = await listen(a, name);
  assert.ok((await call(b, name, "train", { epochs: 1, validationFraction: 0 })).ok);
  assert.equal((await heard())?.kind, "commit");
  const first = await scoreLoop(a, name, x, 1);
  assert.equal(await idbCalls(a), 2, "one meta read, one reload");
  await countTransactions(a);
  const rest = await scoreLoop(a, name, x, 100);
  assert.equal(await idbCalls(a), 0);
  assert.deepEqual(rest, first);
  assert.deepEqual(first, (await scores(b, name, x)).full, "a scores with b's weights");
  assert.deepEqual([...a.errors, ...b.errors], []);
  await context.close();
});

test("without BroadcastChannel, a persistent model reads its meta record before every score", async () => {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    delete globalThis.BroadcastChannel;
  });
  const [a, b] = [await tab(context), await tab(context)];
  assert.equal(await a.evaluate(() => typeof BroadcastChannel), "undefined");
  const name = "unannounced";
  await open(a, name);
  await open(b, name);
  const x = randomFloats(4 * DIM, 17);
  await countTransactions(a);
  await scoreLoop(a, name, x, 10);
  assert.equal(await idbCalls(a), 10, "one meta read a score");
  await observe(b, name, "b", 4);
  assert.ok((await call(b, name, "train", { epochs: 1, validationFraction: 0 })).ok);
  // No message to wait for: the read before the next score finds b's commit.
  assertScoresMatch(await scores(a, name, x), storedScores(await dump(a, name), x), "a's next score");
  assert.deepEqual([...a.errors, ...b.errors], []);
  await context.close();
});

// A measurement, not a test: it asserts nothing about speed (speed lives in figures, not in
// pass/fail), so the suite skips it; `TACIT_TABS_LATENCY=1` runs it and prints the README's figures.
test("latency of scoring 4 candidates: persistent against persist: false (printed, not asserted)", {
  skip: process.env.TACIT_TABS_LATENCY ? false : "a measurement: TACIT_TABS_LATENCY=1 prints it",
}, async () => {
  // The README's figure: 384 → 128, CPU path, 300 calls after 20 warm-up calls, one page.
  const context = await browser.newContext();
  const [a, b] = [await tab(context), await tab(context)];
  const shape = { dim: 384, hidden: [128] };
  await open(a, "latency", shape);
  await open(b, "latency", shape);
  await open(a, "latency-memory", { ...shape, persist: false });
  const fmt = (r) => `p50 ${r.p50.toFixed(2)} ms, p95 ${r.p95.toFixed(2)} ms, mean ${r.mean.toFixed(3)} ms`;
  // Alternately, twice: a contended machine's tail falls on either.
  for (const round of [1, 2]) {
    const persistent = await latency(a, "latency");
    const memory = await latency(a, "latency-memory");
    console.log(`round ${round}: persistent: ${fmt(persistent)}; persist: false: ${fmt(memory)}`);
  }
  // Where there is no BroadcastChannel: the meta record read before every score.
  const unannounced = await browser.newContext();
  await unannounced.addInitScript(() => {
    delete globalThis.BroadcastChannel;
  });
  const c = await tab(unannounced);
  await open(c, "latency", shape);
  console.log(`without BroadcastChannel: persistent: ${fmt(await latency(c, "latency"))}`);
  assert.deepEqual([...a.errors, ...b.errors, ...c.errors], []);
  await unannounced.close();
  await context.close();
});
