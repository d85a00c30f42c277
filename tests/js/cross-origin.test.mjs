// `rm.sync` from a page on one loopback origin to a `tacit-server` on another (a different port
// is a different origin), in headless Chromium driven by playwright-core: with the page's origin
// allowed (`--allow-origin`) a sync pushes and pulls; a bad token, or a token scoped to another
// model, is `sync_unauthorized` (the page reads the 401/403 answer, so it is not `offline`);
// a server that does not allow the page's origin is, as the browser shows it to the page, a
// request that could not be made: `offline`, the update kept queued and pushed later, once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { parseSafetensors } from "./lib/reference.mjs";

import { launch, newPage } from "./lib/browser.mjs";
import { serve } from "./lib/server.mjs";
import { SERVER_BIN, startServer } from "./lib/sync-server.mjs";

let pages;
let browser;
/** Allows the page's origin. */
let allowing;
/** No --allow-origin: no CORS headers at all (a preflight is a 405). */
let plain;
/** Allows another origin only (a preflight from the page's is a 403 `origin_not_allowed`). */
let other;
/** Allows the page's origin and aggregates the model `secure` securely, a round of two. */
let secure;

before(async () => {
  pages = await serve();
  // Every push closes a round, so that the sync that pushed also pulls the merged version.
  const round = ["--round-updates", "1", "--round-seconds", "3600"];
  allowing = await startServer([...round, "--allow-origin", pages.url]);
  plain = await startServer(round);
  other = await startServer([...round, "--allow-origin", "http://127.0.0.1:1"]);
  secure = await startServer([
    "--secure-aggregation", "secure",
    "--round-updates", "2",
    "--secagg-threshold", "2",
    "--allow-origin", pages.url,
  ]);
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  for (const s of [allowing, plain, other, secure]) await s?.close();
  await pages?.close();
});

test("the page and the sync servers are on different origins", () => {
  const origin = (u) => new URL(u).origin;
  assert.equal(origin(pages.url), pages.url);
  for (const s of [allowing, plain, other]) assert.notEqual(origin(s.url), origin(pages.url));
});

/** The harness page with a model `window.rm` of the same start on every page. */
async function page() {
  const p = await newPage(browser);
  await p.goto(`${pages.url}/tests/js/pages/harness.html`);
  await p.waitForFunction(() => window.ready === true);
  await p.evaluate(async () => {
    window.rm = await tacit.RewardModel.open({ persist: false, dim: 16, hidden: [8], seed: 0, objective: "naive" });
    window.rounds = 0;
  });
  return p;
}

const weights = async (p) => new Uint8Array(await p.evaluate(() => Array.from(rm.exportWeights())));

/** Observations and a training call in the page: something for the next sync to push. */
async function train(p) {
  await p.evaluate(async () => {
    const r = window.rounds++;
    const e = (i) => Float32Array.from({ length: 16 }, (_, j) => Math.sin(i * 7 + j + r * 3));
    for (let i = 0; i < 24; i++) {
      await rm.observe({ id: `r${r}-a${i}`, embedding: e(i), shown: { position: i % 2, candidates: 2 }, events: i % 3 === 0 ? ["copy"] : [] });
    }
    await rm.train({ epochs: 2, validationFraction: 0 });
  });
}

/** `rm.sync(options)` in the page: { result } or { error: { name, code, message } }. */
const sync = (p, options) =>
  p.evaluate(async (options) => {
    try {
      return { result: await rm.sync({ retryBudgetMs: 0, ...options }) };
    } catch (e) {
      return { error: { name: e.name, code: e.code, message: e.message, tacit: tacit.isTacitError(e) } };
    }
  }, options);

/** A client token limited to `models` (`token create --model`). */
function scopedToken(server, client, models) {
  const args = ["token", "create", "--db", server.db, "--client", client, ...models.flatMap((m) => ["--model", m])];
  const out = execFileSync(SERVER_BIN, args, { stdio: ["ignore", "pipe", "ignore"] });
  return out.toString().trim().split("\n").at(-1);
}

test("with its origin allowed, a page syncs with a server on another origin: push, then pull", async () => {
  const p = await page();
  await allowing.putModel("shared", await weights(p));
  const token = allowing.token("page");
  await train(p);
  const first = await sync(p, { url: allowing.url, token, model: "shared" });
  assert.equal(first.error, undefined, JSON.stringify(first.error));
  const { sentBytes: pushedBytes, ...firstRest } = first.result;
  assert.deepEqual(firstRest, {
    version: 2,
    pushed: 1,
    pulled: true,
    queued: 0,
    offline: false,
    reason: null,
    masked: false,
    secureRound: null,
    privacy: { dp: false },
  });
  assert.ok(pushedBytes > 0, `sentBytes ${pushedBytes}`);
  // The server stored the page's update and merged it; the page holds the merged version.
  const meta = await allowing.meta("shared", token);
  assert.deepEqual([meta.version, meta.accepted_updates], [2, 1]);
  assert.equal(await p.evaluate(() => rm.stats().version), 2);
  // Nothing new: a conditional pull (the version from the ETag the server exposes) and no push.
  const again = await sync(p, { url: allowing.url, token, model: "shared" });
  // A pull sends no body: nothing left the device but the request line and headers.
  assert.deepEqual(again.result, {
    version: 2,
    pushed: 0,
    pulled: false,
    queued: 0,
    offline: false,
    reason: null,
    sentBytes: 0,
    masked: false,
    secureRound: null,
    privacy: { dp: false },
  });
  assert.deepEqual(p.errors, []);
  await p.close();
});

test("a bad token is sync_unauthorized, not offline, and the update is kept for a good one", async () => {
  const p = await page();
  await allowing.putModel("guarded", await weights(p));
  await train(p);
  const bad = await sync(p, { url: allowing.url, token: "not-a-token", model: "guarded" });
  assert.equal(bad.result, undefined, `resolved instead of failing: ${JSON.stringify(bad.result)}`);
  assert.deepEqual([bad.error.tacit, bad.error.name, bad.error.code], [true, "TacitError", "sync_unauthorized"]);
  // The server's own message: the page read the body of the 401 (it carries the CORS headers).
  assert.match(bad.error.message, /unknown or revoked token/);
  // A token scoped to another model: the server's 403, read by the page just the same.
  const scoped = scopedToken(allowing, "kiosk", ["elsewhere"]);
  const forbidden = await sync(p, { url: allowing.url, token: scoped, model: "guarded" });
  assert.equal(forbidden.result, undefined, `resolved instead of failing: ${JSON.stringify(forbidden.result)}`);
  assert.equal(forbidden.error.code, "sync_unauthorized");
  assert.equal((await allowing.meta("guarded", allowing.adminToken)).accepted_updates, 0);

  const good = await sync(p, { url: allowing.url, token: allowing.token("page2"), model: "guarded" });
  assert.equal(good.error, undefined, JSON.stringify(good.error));
  assert.deepEqual([good.result.offline, good.result.pushed, good.result.queued], [false, 1, 0]);
  assert.equal((await allowing.meta("guarded", allowing.adminToken)).accepted_updates, 1);
  await p.close();
});

test("a server that does not allow the page's origin is a request that could not be made; the update is kept", async () => {
  const p = await page();
  const start = await weights(p);
  for (const s of [allowing, plain, other]) await s.putModel("kept", start);
  await train(p);
  const version = await p.evaluate(() => rm.stats().version);
  for (const [what, s] of [["no --allow-origin", plain], ["another origin allowed", other]]) {
    p.errors.length = 0;
    const away = await sync(p, { url: s.url, token: s.token("page"), model: "kept" });
    // CORS hides the answer from the page: it cannot tell this from a server that is down.
    assert.equal(away.error, undefined, `${what}: ${JSON.stringify(away.error)}`);
    const { offline, pushed, queued, pulled, version, reason } = away.result;
    assert.deepEqual({ offline, pushed, queued, pulled, version }, { offline: true, pushed: 0, queued: 1, pulled: false, version }, what);
    assert.match(reason, /could not be made/, what);
    assert.match(reason, /--allow-origin/, what);
    assert.ok(reason.includes(s.url), `${what}: the reason names the request: ${reason}`);
    // It was CORS (the browser tells its console, not the page), and the browser never sent
    // the push: its preflight was refused.
    const cors = () => p.errors.some((e) => e.includes("CORS policy"));
    // (The console message may arrive just after the call has resolved.)
    for (let i = 0; i < 40 && !cors(); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(cors(), `${what}: ${JSON.stringify(p.errors)}`);
    assert.equal((await s.meta("kept", s.adminToken)).accepted_updates, 0, what);
  }
  // The queued update, unchanged, goes to the server that allows the page, once: in a call
  // that may wait out the backoff of the two failed attempts (0.5 s, then 1 s).
  const token = allowing.token("page3");
  const back = await sync(p, { url: allowing.url, token, model: "kept", retryBudgetMs: 5_000 });
  assert.equal(back.error, undefined, JSON.stringify(back.error));
  assert.deepEqual([back.result.offline, back.result.pushed, back.result.queued, back.result.version], [false, 1, 0, 2]);
  const again = await sync(p, { url: allowing.url, token, model: "kept" });
  assert.equal(again.result.pushed, 0);
  assert.equal((await allowing.meta("kept", token)).accepted_updates, 1);
  await p.close();
});

const TACIT_BIN = process.env.TACIT_BIN ?? fileURLToPath(new URL("../../target/debug/tacit", import.meta.url));

test("a page and a native client (tacit sync) form one secure round across origins", { timeout: 120_000 }, async () => {
  const p = await page();
  const start = await weights(p);
  await secure.putModel("secure", start);
  const dir = mkdtempSync(join(tmpdir(), "tacit-secure-"));
  try {
    const cli = (nExamples) =>
      promisify(execFile)(TACIT_BIN, [
        "sync", "--url", secure.url, "--token", secure.token("native"), "--model", "secure",
        "--weights", join(dir, "local.safetensors"), "--state", join(dir, "state"),
        "--n-examples", String(nExamples), "--retry-seconds", "0", "--round-wait-seconds", "60",
      ]);
    // The native client's first run makes its local file from the global; then it "trains":
    // every weight of the file moves by +0.01 (the header, and so the layout, stays).
    await cli(0);
    const local = readFileSync(join(dir, "local.safetensors"));
    const { tensors } = parseSafetensors(new Uint8Array(local));
    const headerEnd = 8 + Number(local.readBigUInt64LE(0));
    const view = new DataView(local.buffer, local.byteOffset + headerEnd);
    for (let i = 0; i < Object.values(tensors).reduce((n, t) => n + t.data.length, 0); i++) {
      view.setFloat32(i * 4, view.getFloat32(i * 4, true) + 0.01, true);
    }
    writeFileSync(join(dir, "local.safetensors"), local);
    await train(p);
    const [fromPage, fromCli] = await Promise.all([sync(p, { url: secure.url, token: secure.token("page"), model: "secure" }), cli(3)]);
    assert.equal(fromPage.error, undefined, JSON.stringify(fromPage.error));
    const r = fromPage.result;
    assert.deepEqual(r.secureRound, { round: 1, outcome: "counted", reason: null });
    assert.deepEqual([r.pushed, r.queued, r.pulled, r.version, r.masked, r.offline], [1, 0, true, 2, true, false]);
    assert.ok(r.sentBytes > 0);
    assert.deepEqual(r.privacy, { dp: false });
    assert.match(fromCli.stdout, /^pushed 1, still queued 0, sent \d+ bytes \(masked\), secure round 1 counted it, pulled version 2, no differential privacy/);
    const meta = await secure.meta("secure", secure.adminToken);
    assert.deepEqual([meta.version, meta.accepted_updates, meta.secure_aggregation], [2, 0, true]);
    assert.deepEqual(p.errors, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await p.close();
  }
});
