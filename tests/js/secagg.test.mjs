// Secure aggregation from the package (node, the CPU path) through the real server on loopback
// (`--secure-aggregation`, SQLite): ten RewardModels, each with its own token, call `sync` at
// once. The call asks the server how the model is aggregated and takes part in its round; no
// request body holds a plain delta. The released global is the plain mean of the ten clipped
// updates within the quantisation bound stated in advance (`src/sync/secagg/quantize.rs`);
// three members whose page closes right after sending their masked input are still counted,
// and once: when they come back they learn the round's outcome instead of offering the update
// again. In a round where too few members stay to unmask, nothing is released and every update
// stays queued; the next round counts each once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { initSync, RewardModel, wasmFileName } from "../../pkg/index.js";
import { maxRelDiff, parseSafetensors, randomFloats } from "./lib/reference.mjs";
import { startServer } from "./lib/sync-server.mjs";

initSync({ module: readFileSync(new URL(`../../pkg/${wasmFileName()}`, import.meta.url)) });

const DIM = 16;
const N = 10;
const THRESHOLD = 7;
const CLIP = 1;
const MODEL = "secure";

// Every request the package hands to fetch, by token; a token in `closed` is a page that has
// gone: its requests fail as fetch fails offline. A token in `closeAfter` closes its page as
// soon as its request to a path ending so has been answered.
const sent = new Map();
const closed = new Set();
const closeAfter = new Map();
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const token = String(init.headers?.Authorization ?? init.headers?.authorization ?? "").replace("Bearer ", "");
  if (closed.has(token)) throw new TypeError("fetch failed");
  const body = init.body == null ? new Uint8Array(0) : new Uint8Array(init.body);
  if (!sent.has(token)) sent.set(token, []);
  sent.get(token).push({ method: init.method ?? "GET", path: new URL(url).pathname, body });
  const answer = await realFetch(url, init);
  if (closeAfter.has(token) && init.method === "POST" && new URL(url).pathname.endsWith(closeAfter.get(token))) {
    closed.add(token);
  }
  return answer;
};

let server;
before(async () => {
  server = await startServer([
    "--secure-aggregation", MODEL,
    "--round-updates", String(N),
    "--secagg-threshold", String(THRESHOLD),
    "--round-seconds", "60",
    "--secagg-phase-seconds", "3",
    "--clip-norm", String(CLIP),
  ]);
});
after(async () => server?.close());

const open = () => RewardModel.open({ persist: false, dim: DIM, hidden: [8], seed: 0, objective: "naive" });

async function trainOn(rm, seed, n = 30) {
  const x = randomFloats(n * DIM, seed);
  for (let i = 0; i < n; i++) {
    await rm.observe({
      id: `a${seed}-${i}`,
      embedding: x.subarray(i * DIM, (i + 1) * DIM),
      shown: { position: i % 2, candidates: 2 },
      events: x[i * DIM + 1] > 0 ? ["copy"] : [],
    });
  }
  await rm.train({ epochs: 3, validationFraction: 0 });
}

/** The shared head's tensors, flattened in name order. */
function flat(bytes) {
  const { tensors } = parseSafetensors(bytes);
  return Object.keys(tensors)
    .filter((k) => k.startsWith("layers."))
    .sort()
    .flatMap((k) => Array.from(tensors[k].data));
}

/** `local − base`, clipped to L2 norm `CLIP` as the client clips it (in f64 here). */
function clippedDelta(local, base) {
  const d = local.map((v, i) => v - base[i]);
  const norm = Math.sqrt(d.reduce((s, v) => s + v * v, 0));
  return norm > CLIP ? d.map((v) => (v * CLIP) / norm) : d;
}

/** The global the server releases, read as the admin. */
async function global() {
  const r = await realFetch(`${server.url}/v1/models/${MODEL}`, { headers: { authorization: `Bearer ${server.adminToken}` } });
  assert.equal(r.status, 200);
  return flat(new Uint8Array(await r.arrayBuffer()));
}

/**
 * The quantisation error of the mean, stated in advance (quantize.rs): each coordinate is
 * rounded to a multiple of 1/s with s = (2³¹ − 1 − n) / (n·C), so the mean moves by at most
 * 1/(2s); on top, the f32 rounding of the stored weights.
 */
function assertMean(got, want) {
  const s = (2 ** 31 - 1 - N) / (N * CLIP);
  for (let i = 0; i < want.length; i++) {
    const bound = 1 / (2 * s) + 2 * 2 ** -23 * (Math.abs(want[i]) + 1);
    assert.ok(Math.abs(got[i] - want[i]) <= bound, `coordinate ${i}: ${got[i]} vs the mean ${want[i]} (bound ${bound})`);
  }
}

/** No body a client sent holds its update in plain: no safetensors delta, not 8 bytes of its f32 values. */
function assertNothingPlain(token, delta) {
  const requests = sent.get(token) ?? [];
  assert.ok(requests.every((r) => !r.path.endsWith("/updates")), `${token} pushed a plain delta`);
  const f32 = new Uint8Array(new Float32Array(delta).buffer);
  // Eight bytes of the largest coordinates (the clipped values the client would push).
  const at = delta.reduce((best, v, i) => (Math.abs(v) > Math.abs(delta[best]) && i + 2 <= delta.length ? i : best), 0);
  const needle = f32.subarray(at * 4, at * 4 + 8);
  for (const r of requests) {
    assert.ok(!(r.body[0] !== undefined && looksLikeSafetensors(r.body)), `${token} sent safetensors to ${r.path}`);
    for (let i = 0; i + needle.length <= r.body.length; i++) {
      let same = true;
      for (let j = 0; j < needle.length && same; j++) same = r.body[i + j] === needle[j];
      assert.ok(!same, `${token}: a body to ${r.path} holds bytes of its delta`);
    }
  }
}

function looksLikeSafetensors(body) {
  try {
    parseSafetensors(body);
    return true;
  } catch {
    return false;
  }
}

const bytesSent = (token, from = 0) => (sent.get(token) ?? []).slice(from).reduce((n, r) => n + r.body.byteLength, 0);

test("ten package clients aggregate securely: the plain mean, dropouts counted once, a failed round releases nothing", { timeout: 300_000 }, async () => {
  const clients = [];
  for (let i = 0; i < N; i++) clients.push({ rm: await open(), token: server.token(`client${i}`) });
  await server.putModel(MODEL, clients[0].rm.exportWeights());
  const base = await global();
  const sync = (c, roundWaitMs = 30_000) =>
    c.rm.sync({ url: server.url, token: c.token, model: MODEL, clipNorm: CLIP, roundWaitMs });

  // Round 1: everyone trained; members 7, 8 and 9 close their page once their masked input is in.
  for (const [i, c] of clients.entries()) {
    await trainOn(c.rm, 10 + i);
    c.delta = clippedDelta(flat(c.rm.exportWeights()), base);
  }
  const leavers = clients.slice(N - 3);
  for (const c of leavers) closeAfter.set(c.token, "/input");
  const results = await Promise.all(clients.map((c, i) => sync(c, i >= N - 3 ? 6_000 : 30_000)));
  for (const [i, r] of results.slice(0, N - 3).entries()) {
    assert.deepEqual(r.secureRound, { round: 1, outcome: "counted", reason: null }, `client ${i}`);
    assert.deepEqual([r.pushed, r.queued, r.pulled, r.version, r.offline, r.masked], [1, 0, true, 2, false, true], `client ${i}`);
    assert.deepEqual(r.privacy, { dp: false });
    assert.equal(r.sentBytes, bytesSent(clients[i].token), `client ${i}: sentBytes against what fetch was handed`);
  }
  for (const r of results.slice(N - 3)) {
    // Gone after its input: it learns nothing more in this call, and keeps its update queued.
    assert.equal(r.secureRound.outcome, "left");
    assert.deepEqual([r.pushed, r.queued, r.offline, r.masked], [0, 1, true, true]);
  }
  const v2 = await global();
  const mean1 = base.map((b, j) => b + clients.reduce((s, c) => s + c.delta[j], 0) / N);
  assertMean(v2, mean1);
  for (const c of clients) assertNothingPlain(c.token, c.delta);

  // The three come back (a reload): the round counted them, so the update leaves the queue
  // unsent, and they pull the released global.
  for (const c of leavers) {
    closed.delete(c.token);
    closeAfter.delete(c.token);
    const before = (sent.get(c.token) ?? []).length;
    const r = await sync(c);
    assert.deepEqual(r.secureRound, { round: 1, outcome: "counted", reason: null });
    assert.deepEqual([r.pushed, r.queued, r.pulled, r.version, r.masked], [1, 0, true, 2, false]);
    assert.ok(sent.get(c.token).slice(before).every((q) => !q.path.endsWith("/input")), "nothing offered twice");
    // The released global, up to the f32 rounding of the rebase (local + global − reference).
    assert.ok(maxRelDiff(flat(c.rm.exportWeights()), v2) < 1e-6);
  }

  // Round 2: everyone trains more; four leave after their input, so six of ten unmask, below
  // the threshold of seven: the round fails, nothing is released, every update stays queued.
  for (const [i, c] of clients.entries()) {
    await trainOn(c.rm, 100 + i);
    c.delta = clippedDelta(flat(c.rm.exportWeights()), v2);
  }
  const short = clients.slice(N - 4);
  for (const c of short) closeAfter.set(c.token, "/input");
  const failed = await Promise.all(clients.map((c, i) => sync(c, i >= N - 4 ? 6_000 : 30_000)));
  for (const r of failed.slice(0, N - 4)) {
    assert.equal(r.secureRound.outcome, "not_counted");
    assert.match(r.secureRound.reason, /6 unmask answers, below the threshold 7/);
    assert.deepEqual([r.pushed, r.queued, r.version, r.masked], [0, 1, 2, true]);
  }
  assert.deepEqual(await global(), v2, "a failed round releases nothing");
  for (const c of short) {
    closed.delete(c.token);
    closeAfter.delete(c.token);
    const r = await sync(c);
    assert.equal(r.secureRound.outcome, "not_counted");
    assert.deepEqual([r.pushed, r.queued, r.version], [0, 1, 2]);
  }

  // Round 3: the queued updates join it and each is counted once.
  const last = await Promise.all(clients.map((c) => sync(c)));
  for (const r of last) {
    assert.deepEqual(r.secureRound, { round: 3, outcome: "counted", reason: null });
    assert.deepEqual([r.pushed, r.queued, r.version, r.masked], [1, 0, 3, true]);
  }
  const v3 = await global();
  assertMean(v3, v2.map((b, j) => b + clients.reduce((s, c) => s + c.delta[j], 0) / N));
  for (const c of clients) assertNothingPlain(c.token, c.delta);
});

test("bad secure-round options are typed errors, and the model is unchanged", async () => {
  const rm = await open();
  const before = rm.exportWeights();
  const token = server.token("options");
  for (const roundWaitMs of [-1, 1.5, "10", 3_600_001, Number.NaN]) {
    await assert.rejects(rm.sync({ url: server.url, token, model: MODEL, roundWaitMs }), (e) => {
      assert.ok(["invalid_config", "unknown_option"].includes(e.code), `${roundWaitMs}: ${e.code} ${e.message}`);
      return true;
    });
  }
  assert.deepEqual(rm.exportWeights(), before);
});
