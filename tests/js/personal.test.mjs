// Personalization through the real sync server (node, CPU path): eight simulated users, half
// terse coders and half friendly explainers (`www/users.js`), each with its own RewardModel,
// train on their own feedback and sync through `tacit-server` for several rounds. The shared
// part becomes the crowd's; each user's personal part keeps that user's taste. Every request
// body the package sends is inspected: none holds a personal tensor.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { initSync, RewardModel, featurize } from "../../pkg/index.js";
import { CORPUS, TRAIN_TOPICS } from "../../www/corpus.js";
import { agreement as agreementOf, rng, simulateTurns } from "../../www/users.js";
import { parseSafetensors } from "./lib/reference.mjs";
import { startServer } from "./lib/sync-server.mjs";

initSync({ module: readFileSync(new URL("../../pkg/tacit_rm_bg.wasm", import.meta.url)) });

const DIM = 384;
const SHOWN = 4;
const USERS = 8;
const LOCAL_TURNS = 96;
const ROUND_TURNS = 48;
const ROUNDS = 3;
const MODEL = "crowd";

// Every body the package hands to fetch once the users start, kept for inspection (the test's
// own admin upload of the starting weights comes before).
const bodies = [];
let recording = false;
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => {
  if (recording && init?.body != null) bodies.push(new Uint8Array(init.body));
  return realFetch(url, init);
};

let server;
before(async () => {
  // A round closes when every user's update is in.
  server = await startServer(["--round-updates", String(USERS), "--round-seconds", "3600"]);
});
after(async () => server?.close());

const embed = (answers) => featurize(answers.map((a) => a.text), DIM);
// The package's defaults for the personal part: on a head with a hidden layer, the basis
// design (a shared taste basis, per-user coefficients) and a replay window of 40 turns. With
// these two opposite tastes the crowd has little common taste to share, only the directions in
// which users differ, which is what the basis learns. (A linear head with the residual design
// keeps every user's taste through the syncs as well, but gives a new user no head start: the
// README has both runs' figures.)
// The objective is named: the README's figures of this run were taken with `implicit`.
const open = async () => recordObservations(await RewardModel.open({ persist: false, dim: DIM, hidden: [16], seed: 0, objective: "implicit" }));

// Every embedding a user reacted to, by answer id: what the replay windows hold.
const observed = new Map();
function recordObservations(rm) {
  const observe = rm.observe.bind(rm);
  rm.observe = (o) => {
    observed.set(o.id, Float32Array.from(o.embedding));
    return observe(o);
  };
  return rm;
}
const taste = (u) => (u % 2 === 0 ? "terse-coder" : "friendly-explainer");

/** `turns` turns of `user`'s reactions to answers shown in the model's order, then a train call. */
async function live(rm, user, turns, seed, tag) {
  await simulateTurns(rm, user, { turns, topics: TRAIN_TOPICS, embed, draw: rng(seed), tag, shown: SHOWN });
  return rm.train({ epochs: 5 });
}

/**
 * How often the model's top answer is one `user` likes best, over fresh draws of four answers
 * to every prompt of the corpus (192 turns, the same for every model). All sixteen prompts,
 * not only the demo's four unseen ones: with four prompts, one more training call moves a
 * user's figure by up to ±8 points, which would drown the effect of a sync.
 */
const agreement = (rm, user, options) => agreementOf(rm, user, { topics: CORPUS, draws: 12, embed, shown: SHOWN, options });

/** Eight consecutive non-zero floats of each personal tensor of exported weights, as bytes. */
function personalSamples(bytes) {
  const { tensors } = parseSafetensors(bytes);
  return Object.entries(tensors)
    .filter(([k]) => k.startsWith("personal."))
    .map(([k, t]) => {
      const start = t.data.findIndex((v, i) => t.data.slice(i, i + 8).every((w) => w !== 0) && i + 8 <= t.data.length);
      return [k, start < 0 ? null : new Uint8Array(t.data.slice(start, start + 8).buffer)];
    });
}

/** Eight consecutive floats of an embedding, four of them non-zero at least, as bytes. */
function embeddingSample(e) {
  for (let i = 0; i + 8 <= e.length; i++) {
    const slice = e.slice(i, i + 8);
    if (slice[0] !== 0 && slice.filter((v) => v !== 0).length >= 4) return new Uint8Array(slice.buffer);
  }
  return null;
}

/**
 * `contains(needle)` for one haystack, found through an index of the haystack's 4-byte words
 * at every offset (thousands of needles against a body of tens of kilobytes).
 */
function searcher(haystack) {
  const view = new DataView(haystack.buffer, haystack.byteOffset, haystack.byteLength);
  const at = new Map();
  for (let i = 0; i + 4 <= haystack.length; i++) {
    const w = view.getUint32(i, true);
    const list = at.get(w);
    if (list) list.push(i);
    else at.set(w, [i]);
  }
  return (needle) => {
    const first = new DataView(needle.buffer, needle.byteOffset, 4).getUint32(0, true);
    return (at.get(first) ?? []).some((i) => i + needle.length <= haystack.length && needle.every((b, j) => haystack[i + j] === b));
  };
}

test("eight users of two opposite tastes sync for rounds and each keeps its own taste", { timeout: 900_000 }, async () => {
  const users = [];
  for (let u = 0; u < USERS; u++) users.push({ rm: await open(), taste: taste(u), token: server.token(`user${u}`) });
  await server.putModel(MODEL, users[0].rm.exportWeights());
  recording = true;
  const sync = (x) => x.rm.sync({ url: server.url, token: x.token, model: MODEL });

  for (const [u, x] of users.entries()) {
    await live(x.rm, x.taste, LOCAL_TURNS, 100 + u, `u${u}-local`);
    x.local = await agreement(x.rm, x.taste);
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const x of users) {
      const before = bodies.length;
      const r = await sync(x);
      assert.equal(r.offline, false, r.reason ?? "");
      assert.equal(r.pushed, 1, `round ${round}: each user pushes its update`);
      // The call's own account of what left the device, against what fetch was handed.
      const handed = bodies.slice(before).reduce((n, b) => n + b.byteLength, 0);
      assert.ok(handed > 0);
      assert.equal(r.sentBytes, handed, `round ${round}: sentBytes`);
      assert.equal(r.masked, false);
    }
    for (const x of users) {
      const r = await sync(x);
      assert.equal(r.version, round + 2, `round ${round}: every user pulls the merged model`);
    }
    if (round + 1 < ROUNDS) {
      for (const [u, x] of users.entries()) await live(x.rm, x.taste, ROUND_TURNS, 1000 * round + u, `u${u}-r${round}`);
    }
  }

  for (const x of users) assert.ok(x.rm.stats().replay > 0, "a replay window of trained turns is kept");
  const rows = [];
  for (const [u, x] of users.entries()) {
    const synced = await agreement(x.rm, x.taste);
    const global = await agreement(x.rm, x.taste, { sharedOnly: true });
    const personal = x.rm.stats().personal;
    rows.push({ user: u, taste: x.taste, local: x.local, synced, global, share: personal.share, blend: personal.blend });
  }
  console.log(JSON.stringify(rows));
  for (const r of rows) {
    assert.ok(r.synced >= r.local - 0.05, `user ${r.user} (${r.taste}): ${r.synced} after the syncs vs ${r.local} after local training`);
    assert.ok(r.synced > r.global, `user ${r.user} (${r.taste}): ${r.synced} with its personal part vs ${r.global} for the global model`);
  }

  // A new user of each taste, ten turns: on top of the synced shared part, and from scratch.
  const fresh = { synced: [], scratch: [] };
  for (const [k, t] of ["terse-coder", "friendly-explainer"].entries()) {
    const joined = await open();
    const r = await joined.sync({ url: server.url, token: server.token(`new${k}`), model: MODEL });
    assert.equal(r.pulled, true);
    const scratch = await open();
    await live(joined, t, 10, 5000 + k, `new${k}`);
    await live(scratch, t, 10, 5000 + k, `scratch${k}`);
    fresh.synced.push(await agreement(joined, t));
    fresh.scratch.push(await agreement(scratch, t));
  }
  console.log(JSON.stringify(fresh));
  const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(mean(fresh.synced) > mean(fresh.scratch), `new users: ${fresh.synced} on the shared part vs ${fresh.scratch} from scratch`);

  // No body sent held a personal tensor: no safetensors key or metadata of the personal part,
  // and none of the bytes of any user's (trained, non-zero) personal tensors; nor the user's
  // feedback: none of the embeddings the users reacted to, which their replay windows hold.
  assert.ok(bodies.length >= USERS * ROUNDS, `${bodies.length} bodies inspected`);
  const samples = users.flatMap((x) => personalSamples(x.rm.exportWeights()));
  const secrets = samples.filter(([, b]) => b !== null);
  assert.ok(secrets.length >= USERS, `trained personal weights to look for: ${secrets.length} of ${samples.length} tensors`);
  const feedback = [...observed].map(([id, e]) => [id, embeddingSample(e)]).filter(([, b]) => b !== null);
  assert.ok(feedback.length >= 0.9 * observed.size && observed.size >= 16, `embeddings to look for: ${feedback.length} of ${observed.size}`);
  // The search finds what is there: a body with an embedding appended.
  const planted = new Uint8Array([...bodies[0], ...new Uint8Array(observed.get(feedback[0][0]).buffer)]);
  assert.ok(searcher(planted)(feedback[0][1]), "the search finds a planted embedding");
  for (const body of bodies) {
    const { metadata, tensors } = parseSafetensors(body);
    assert.deepEqual(Object.keys(tensors).filter((k) => k.startsWith("personal")), []);
    assert.deepEqual(Object.keys(metadata ?? {}).filter((k) => k.startsWith("personal")), []);
    const contains = searcher(body);
    for (const [name, bytes] of secrets) {
      assert.ok(!contains(bytes), `a body holds bytes of ${name}`);
    }
    for (const [id, bytes] of feedback) {
      assert.ok(!contains(bytes), `a body holds the embedding of ${id}`);
    }
  }
});
