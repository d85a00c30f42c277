// Secure aggregation from the package (node, the CPU path) through the real server on loopback
// (`--secure-aggregation`, on SQLite and on Postgres): ten RewardModels, each with its own token, call `sync` at
// once. The call asks the server how the model is aggregated and takes part in its round; no
// request body holds a plain delta. The released global is the plain mean of the ten clipped
// updates within the quantisation bound stated in advance (`src/sync/secagg/quantize.rs`);
// three members whose page closes right after sending their masked input are still counted,
// and once: when they come back they learn the round's outcome instead of offering the update
// again. In a round where too few members stay to unmask, nothing is released and every update
// stays queued; the next round counts each once. Every value of every row of the server's
// database, read while the masked inputs are stored and after each round, holds no client's
// update, neither as f32 nor quantised.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { initSync, RewardModel, wasmFileName } from "../../pkg/index.js";
import { maxRelDiff, parseSafetensors, randomFloats } from "./lib/reference.mjs";
import { databases, startServer } from "./lib/sync-server.mjs";
import { storedValues as readStored } from "./lib/stored-rows.mjs";

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
  // The first unmask answer of a round: every masked input of the round is stored now.
  const unmask = /\/secagg\/(\d+)\/unmask$/.exec(new URL(url).pathname);
  if (unmask && init.method === "POST" && !snapshots.has(unmask[1])) snapshots.set(unmask[1], storedValues());
  if (closeAfter.has(token) && init.method === "POST" && new URL(url).pathname.endsWith(closeAfter.get(token))) {
    closed.add(token);
  }
  return answer;
};

// The database's values, by round, taken as the round's first member unmasks.
const snapshots = new Map();
const storedValues = () => readStored(server.db);

// The server of the running test, over a fresh database.
let server;
const SERVER_ARGS = [
  "--secure-aggregation", MODEL,
  "--round-updates", String(N),
  "--secagg-threshold", String(THRESHOLD),
  "--round-seconds", "60",
  "--secagg-phase-seconds", "3",
  "--clip-norm", String(CLIP),
];

/** Runs `body` against a fresh server on `database`, with the request log emptied. */
async function withServer(database, body) {
  server = await startServer(SERVER_ARGS, { database });
  for (const m of [sent, closed, closeAfter, snapshots]) m.clear();
  try {
    await body();
  } finally {
    await server.close();
    server = undefined;
  }
}

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

/**
 * The update of a client as the server must never see it: two neighbouring coordinates of its
 * first weight matrix (where it is largest), as f32 and as the quantised words of the round
 * (round(x·s) mod 2³², s = (2³¹ − 1 − n) / (n·C)). Searched for loosely — within 10⁻⁵
 * relative, or 64 quantisation steps — since the client rounds in f32 where this test uses f64;
 * two neighbours that close by chance are about one in 10¹⁵ per position.
 */
function fingerprint(delta, start, end) {
  let at = start;
  for (let i = start; i + 1 < end; i++) if (Math.abs(delta[i]) > Math.abs(delta[at])) at = i;
  const s = (2 ** 31 - 1 - N) / (N * CLIP);
  return { f: [delta[at], delta[at + 1]], q: [Math.round(delta[at] * s) | 0, Math.round(delta[at + 1] * s) | 0] };
}

/** Whether `bytes` (or, if it is hex text, what it spells) holds the fingerprint anywhere. */
function holds(bytes, { f, q }) {
  const views = [bytes];
  const text = new TextDecoder().decode(bytes);
  if (text.length >= 16 && text.length % 2 === 0 && /^[0-9a-f]+$/i.test(text)) views.push(Uint8Array.from(Buffer.from(text, "hex")));
  for (const b of views) {
    for (let align = 0; align < 4; align++) {
      const n = Math.floor((b.length - align) / 4);
      if (n < 2) continue;
      const view = new DataView(b.buffer, b.byteOffset + align, n * 4);
      for (let p = 0; p + 1 < n; p++) {
        const [w1, w2] = [view.getInt32(p * 4, true), view.getInt32(p * 4 + 4, true)];
        if (Math.abs(w1 - q[0]) <= 64 && Math.abs(w2 - q[1]) <= 64) return true;
        const [x1, x2] = [view.getFloat32(p * 4, true), view.getFloat32(p * 4 + 4, true)];
        if (Math.abs(x1 - f[0]) <= 1e-5 * Math.abs(f[0]) && Math.abs(x2 - f[1]) <= 1e-5 * Math.abs(f[1])) return true;
      }
    }
  }
  return false;
}

/** No body a client sent holds its update in plain: no push, no safetensors, no fingerprint. */
function assertNothingPlain(c) {
  const requests = sent.get(c.token) ?? [];
  assert.ok(requests.length > 0 && requests.every((r) => !r.path.endsWith("/updates")), `${c.token} pushed a plain delta`);
  for (const r of requests) {
    assert.ok(!(r.body.length > 0 && looksLikeSafetensors(r.body)), `${c.token} sent safetensors to ${r.path}`);
    assert.ok(!holds(r.body, { f: c.print.f, q: [NaN, NaN] }), `${c.token}: a body to ${r.path} holds its delta in f32`);
  }
}

/** No value stored by the server (in any table, at the given moments) holds any client's update. */
function assertNothingStored(values, clients, when) {
  assert.ok(values.some((v) => v.table === "secagg_members"), `${when}: the snapshot holds the round's rows`);
  for (const c of clients) {
    for (const v of values) assert.ok(!holds(v.bytes, c.print), `${when}: ${v.table} holds ${c.token}'s update`);
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

/** Where the first weight matrix lies in `flat`'s order. */
function firstMatrix(bytes) {
  const { tensors } = parseSafetensors(bytes);
  let start = 0;
  for (const k of Object.keys(tensors).filter((k) => k.startsWith("layers.")).sort()) {
    if (k === "layers.0.weight") return [start, start + tensors[k].data.length];
    start += tensors[k].data.length;
  }
  throw new Error("no layers.0.weight");
}

const bytesSent = (token, from = 0) => (sent.get(token) ?? []).slice(from).reduce((n, r) => n + r.body.byteLength, 0);

for (const database of databases()) {
  test(
    `ten package clients aggregate securely on ${database.name}: the plain mean, dropouts counted once, a failed round releases nothing`,
    { timeout: 300_000, skip: database.skip },
    () => withServer(database.name, tenClients),
  );
}

async function tenClients() {
  const clients = [];
  for (let i = 0; i < N; i++) clients.push({ rm: await open(), token: server.token(`client${i}`) });
  await server.putModel(MODEL, clients[0].rm.exportWeights());
  const base = await global();
  const sync = (c, roundWaitMs = 30_000) =>
    c.rm.sync({ url: server.url, token: c.token, model: MODEL, clipNorm: CLIP, roundWaitMs });

  // Round 1: everyone trained; members 7, 8 and 9 close their page once their masked input is in.
  const [start, end] = firstMatrix(clients[0].rm.exportWeights());
  for (const [i, c] of clients.entries()) {
    await trainOn(c.rm, 10 + i);
    c.delta = clippedDelta(flat(c.rm.exportWeights()), base);
    c.print = fingerprint(c.delta, start, end);
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
  for (const c of clients) assertNothingPlain(c);
  // The search finds an update where it is (so that it can fail): in the f32 values, in the
  // quantised words, and in their hex.
  {
    const s = (2 ** 31 - 1 - N) / (N * CLIP);
    const words = new Uint8Array(Int32Array.from(clients[0].delta, (v) => Math.round(v * s) + 3).buffer);
    assert.ok(holds(new Uint8Array(Float32Array.from(clients[0].delta).buffer), clients[0].print));
    assert.ok(holds(words, clients[0].print));
    assert.ok(holds(new TextEncoder().encode(Buffer.from(words).toString("hex")), clients[0].print));
    assert.ok(!holds(words, clients[1].print));
  }
  assertNothingStored(snapshots.get("1"), clients, "round 1, inputs stored");
  assertNothingStored(storedValues(), clients, "after round 1");
  // The reader sees what the server stores: the released global's weights are found in it.
  {
    const at = start + 1;
    const released = { f: [v2[at], v2[at + 1]], q: [NaN, NaN] };
    assert.ok(storedValues().some((v) => holds(v.bytes, released)), "the stored global is found by the search");
  }

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
    c.print = fingerprint(c.delta, start, end);
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
  assertNothingStored(snapshots.get("2"), clients, "round 2, inputs stored");
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
  for (const c of clients) assertNothingPlain(c);
  assertNothingStored(snapshots.get("3"), clients, "round 3, inputs stored");
  assertNothingStored(storedValues(), clients, "after round 3");
}

test("bad secure-round options are typed errors, and the model is unchanged", () => withServer("sqlite", badOptions));

async function badOptions() {
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
}
