// End-to-end tests of the demo chat app (www/) in headless Chromium driven by playwright-core,
// against the real sync server started by the demo's own launcher (www/serve.mjs): once with
// WebGPU (SwiftShader) and once with WebGPU switched off (the CPU path), on MiniLM embeddings
// when their files are installed (`cargo xtask test` installs them; see xtask/src/demo_files.rs)
// and on the hashing featurizer otherwise. Screenshots of the main states go to artifacts/e2e/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { launch, newPage } from "./lib/browser.mjs";
import { SERVER_BIN } from "./lib/sync-server.mjs";
import { startDemo, MODELS_DIR } from "../../www/serve.mjs";

const ARTIFACTS = fileURLToPath(new URL("../../artifacts/e2e/", import.meta.url));
let demo;
let dbDir;
// The page's encoder: MiniLM where its files are installed, the featurizer otherwise.
const MINILM = existsSync(join(MODELS_DIR, "all-MiniLM-L6-v2/onnx/model_quantized.onnx"));
const EMBEDDER = MINILM ? "minilm" : "featurizer";
// How much training must raise the simulated user's agreement (24 eval turns: a step is 4.2
// points). Measured here: the featurizer 21% -> 67-75% (terse coder) and 33% -> 88% (friendly
// explainer); MiniLM 54% -> 71-75% and 29% -> 67%. Its untrained head starts the terse coder
// higher, so its bound is lower: three steps, one below the least rise measured (the end-to-end
// flow's extra observations are random, so its figure can move by a step).
const RISE = { minilm: 0.125, featurizer: 0.2 };
const LABELS = { minilm: "MiniLM-L6 int8 (transformers.js)", featurizer: "hashing featurizer" };

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  dbDir = mkdtempSync(join(tmpdir(), "tacit-demo-"));
  demo = await startDemo({ server: SERVER_BIN, db: `sqlite://${join(dbDir, "demo.db")}` });
});

after(async () => {
  await demo?.close();
  rmSync(dbDir, { recursive: true, force: true });
});

async function meta() {
  const r = await fetch(`${demo.syncUrl}/v1/models/demo/meta`, {
    headers: { authorization: `Bearer ${demo.clientToken}` },
  });
  return r.json();
}

async function ready(page) {
  // On MiniLM the first load embeds the corpus's 576 answers (≈ 1–2 minutes on one busy core;
  // a reload reads them from IndexedDB).
  await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 300_000 });
  assert.equal(await page.textContent("[data-testid=error]"), "");
}

/** Waits for the page's buttons to come back (an action finished). */
async function settled(page) {
  await page.waitForFunction(() => !document.querySelector("[data-testid=train]").disabled, null, { timeout: 300_000 });
}

// WebGPU with the page's own choice of embeddings (MiniLM where installed), the CPU path with
// the hashing featurizer forced: each encoder goes through the whole flow once.
for (const [webgpu, embed] of [[true, EMBEDDER], [false, "featurizer"]]) {
  const label = webgpu ? "webgpu" : "cpu";

  test(`the demo end to end on the ${label} path (${embed} embeddings)`, async () => {
    const browser = await launch({ webgpu });
    try {
      const page = await newPage(browser);
      // Everything the page loads (transformers.js, onnxruntime's wasm, the model) is the demo's
      // (blob: URLs, which onnxruntime makes for its worker code, carry the page's origin).
      const elsewhere = [];
      page.on("request", (r) => {
        if (!r.url().startsWith("data:") && new URL(r.url()).origin !== new URL(demo.url).origin) elsewhere.push(r.url());
      });
      const model = `e2e-${label}-${Date.now()}`;
      await page.goto(`${demo.url}?model=${model}${embed === EMBEDDER ? "" : `&embed=${embed}`}#token=${demo.clientToken}`);
      await ready(page);
      assert.equal(await page.textContent("[data-testid=backend]"), label);
      assert.equal(await page.evaluate(() => document.body.dataset.embedder), embed);
      assert.equal(await page.textContent("[data-testid=embedder]"), LABELS[embed]);

      // Scores render, best first.
      const scores = (await page.locator("[data-testid=score]").allTextContents()).map((t) => Number(t.split(" ")[1]));
      assert.equal(scores.length, 4);
      assert.ok(scores.every(Number.isFinite));
      assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
      await page.screenshot({ path: join(ARTIFACTS, `${label}-1-turn.png`), fullPage: true });

      // Copy, thumbs and regenerate, then the next prompt: every shown answer is observed.
      const answers = page.locator("[data-testid=answer]");
      await answers.nth(1).locator("[data-testid=copy]").click();
      await settled(page);
      await answers.nth(2).locator("[data-testid=thumbs_down]").click();
      await settled(page);
      await answers.nth(3).locator("[data-testid=regenerate]").click();
      await settled(page);
      assert.equal(await page.textContent("[data-testid=pending]"), "1", "the regenerated answer is logged at once");
      await page.click("[data-testid=next]");
      await settled(page);
      assert.equal(await page.textContent("[data-testid=pending]"), "5");

      // The simulated user: agreement with its taste must rise with training.
      await page.selectOption("[data-testid=sim-user]", "terse-coder");
      const t0 = performance.now();
      await page.click("[data-testid=simulate]");
      await settled(page);
      assert.equal(await page.textContent("[data-testid=error]"), "");
      const [before, after] = await page.evaluate(() => [Number(document.body.dataset.agreeBefore), Number(document.body.dataset.agreeAfter)]);
      console.log(`${label}, ${embed}: terse coder's top-1 agreement ${before} -> ${after} (simulate and train: ${Math.round(performance.now() - t0)} ms)`);
      assert.ok(after >= before + RISE[embed], `top-1 agreement ${before} -> ${after}`);
      assert.equal(await page.getAttribute("[data-testid=progress]", "value"), "1");
      assert.ok(Number(await page.getAttribute("[data-testid=plot]", "data-points")) >= 2, "the plot has points");
      assert.match(await page.textContent("[data-testid=train-status]"), /trained pairwise on \d+ observations/);
      assert.equal(await page.textContent("[data-testid=pending]"), "0");
      await page.screenshot({ path: join(ARTIFACTS, `${label}-2-trained.png`), fullPage: true });

      // Sync: the update reaches the server and the version moves.
      const versionBefore = (await meta()).version;
      await page.click("[data-testid=sync]");
      await settled(page);
      assert.equal(await page.textContent("[data-testid=error]"), "");
      const after_ = await meta();
      assert.ok(after_.version > versionBefore, `server version ${versionBefore} -> ${after_.version}`);
      assert.equal(await page.textContent("[data-testid=version]"), String(after_.version));
      await page.screenshot({ path: join(ARTIFACTS, `${label}-3-synced.png`), fullPage: true });

      // One more observation, then a reload: the weights and the pending log are restored.
      await answers.nth(0).locator("[data-testid=thumbs_up]").click();
      await settled(page);
      await page.click("[data-testid=next]");
      await settled(page);
      const stored = await page.evaluate(async () => {
        const rm = await (await import("/pkg/index.js")).RewardModel.open({ name: new URLSearchParams(location.search).get("model") });
        const out = { weights: Array.from(rm.exportWeights()), pending: rm.stats().pending };
        await rm.close();
        return out;
      });
      assert.equal(stored.pending, 4);
      await page.reload();
      await ready(page);
      assert.equal(await page.textContent("[data-testid=pending]"), "4");
      assert.equal(await page.textContent("[data-testid=version]"), String(after_.version));
      const restored = await page.evaluate(async () => {
        const rm = await (await import("/pkg/index.js")).RewardModel.open({ name: new URLSearchParams(location.search).get("model") });
        return Array.from(rm.exportWeights());
      });
      assert.deepEqual(restored, stored.weights, "weights restored bit for bit");
      await page.screenshot({ path: join(ARTIFACTS, `${label}-4-reloaded.png`), fullPage: true });
      assert.deepEqual(page.errors, [], "no console errors");
      assert.deepEqual(elsewhere, [], "no request leaves the demo's origin");
    } finally {
      await browser.close();
    }
  });
}

test("an update made offline is kept in IndexedDB across a reload and pushed once", async () => {
  const browser = await launch({ webgpu: true });
  try {
    const page = await newPage(browser);
    // These two tests are about sync: the featurizer spares them embedding the corpus again.
    await page.goto(`${demo.url}?model=offline-${Date.now()}&embed=featurizer#token=${demo.clientToken}`);
    await ready(page);
    await page.selectOption("[data-testid=sim-user]", "friendly-explainer");
    await page.click("[data-testid=simulate]");
    await settled(page);
    const before = (await meta()).accepted_updates;
    // The network drops every sync request: the update is queued, not lost.
    await page.route("**/v1/**", (route) => route.abort("internetdisconnected"));
    await page.click("[data-testid=sync]");
    await settled(page);
    assert.match(await page.textContent("[data-testid=sync-status]"), /1 queued/);
    assert.equal((await meta()).accepted_updates, before);
    await page.reload();
    await ready(page);
    await page.unroute("**/v1/**");
    await page.click("[data-testid=sync]");
    await settled(page);
    assert.match(await page.textContent("[data-testid=sync-status]"), /pushed an update/);
    await page.click("[data-testid=sync]");
    await settled(page);
    assert.match(await page.textContent("[data-testid=sync-status]"), /nothing to push/);
    assert.equal((await meta()).accepted_updates, before + 1, "pushed exactly once");
    // The aborted requests are the only console errors allowed here.
    assert.deepEqual(page.errors.filter((e) => !e.includes("ERR_INTERNET_DISCONNECTED")), []);
  } finally {
    await browser.close();
  }
});

test("the demo's two users train, sync, and each keeps its own taste through the sync", async () => {
  const browser = await launch({ webgpu: false });
  try {
    const page = await newPage(browser);
    await page.goto(`${demo.url}?model=both-${Date.now()}&embed=featurizer#token=${demo.clientToken}`);
    await ready(page);
    await page.click("[data-testid=simulate-both]");
    await page.waitForFunction(() => document.body.dataset.both !== undefined || document.getElementById("error").textContent !== "", null, { timeout: 600_000 });
    assert.equal(await page.textContent("[data-testid=error]"), "");
    const rows = JSON.parse(await page.evaluate(() => document.body.dataset.both));
    console.log(JSON.stringify(rows));
    assert.deepEqual(rows.map((r) => r.user), ["terse-coder", "friendly-explainer"]);
    assert.equal(await page.locator("[data-testid=both-row]").count(), 2);
    for (const r of rows) {
      // The page measures on four prompts (24 turns): one more training call moves that by ±8
      // points; tests/js/personal.test.mjs holds the 5-point bound on a finer measure.
      assert.ok(r.synced >= r.local - 0.15, `${r.user}: ${r.synced} after the sync vs ${r.local} before`);
      assert.ok(r.share > 0 && r.share <= 1, `${r.user}: personal share ${r.share}`);
    }
    // Opposite tastes: the merged shared model leans to one user at most; with their personal
    // parts both are served.
    const mean = (k) => (rows[0][k] + rows[1][k]) / 2;
    assert.ok(mean("synced") > mean("shared"), `mean agreement ${mean("synced")} with the personal parts vs ${mean("shared")} shared only`);
    await page.screenshot({ path: join(ARTIFACTS, "both-users-synced.png"), fullPage: true });
    assert.deepEqual(page.errors, [], "no console errors");
  } finally {
    await browser.close();
  }
});

test("without the MiniLM files the page says so and runs on the hashing featurizer", async () => {
  const browser = await launch({ webgpu: false });
  try {
    const page = await newPage(browser);
    await page.route("**/models/**", (route) => route.fulfill({ status: 404, body: "not found" }));
    await page.goto(`${demo.url}?model=fallback-${Date.now()}#token=${demo.clientToken}`);
    await ready(page);
    assert.equal(await page.evaluate(() => document.body.dataset.embedder), "featurizer");
    assert.equal(await page.textContent("[data-testid=embedder]"), LABELS.featurizer);
    assert.match(await page.getAttribute("[data-testid=embedder]", "title"), /MiniLM files are not installed .*HTTP 404/);
    const scores = await page.locator("[data-testid=score]").allTextContents();
    assert.equal(scores.length, 4);
    // The probe's 404 is the one console error allowed here.
    assert.deepEqual(page.errors.filter((e) => !e.includes("404")), []);
  } finally {
    await browser.close();
  }
});

// What the README's demo section reports: each simulated user's top-1 agreement before and after
// training, on each encoder (one page per encoder; the model is reset between the users).
test("the simulated users' agreement on MiniLM and on the featurizer", async (t) => {
  const encoders = MINILM ? ["minilm", "featurizer"] : ["featurizer"];
  if (!MINILM) t.diagnostic("MiniLM files not installed: the featurizer only");
  const browser = await launch({ webgpu: false });
  const rows = [];
  try {
    for (const embed of encoders) {
      const page = await newPage(browser);
      await page.goto(`${demo.url}?model=agree-${embed}-${Date.now()}&embed=${embed}&backend=cpu#token=${demo.clientToken}`);
      await ready(page);
      assert.equal(await page.evaluate(() => document.body.dataset.embedder), embed);
      for (const user of ["terse-coder", "friendly-explainer"]) {
        await page.click("[data-testid=reset]");
        await settled(page);
        await page.selectOption("[data-testid=sim-user]", user);
        await page.click("[data-testid=simulate]");
        await settled(page);
        assert.equal(await page.textContent("[data-testid=error]"), "");
        const [before, after] = await page.evaluate(() => [Number(document.body.dataset.agreeBefore), Number(document.body.dataset.agreeAfter)]);
        rows.push({ embed, user, before, after });
        assert.ok(after >= before + RISE[embed], `${embed}, ${user}: top-1 agreement ${before} -> ${after}`);
      }
      assert.deepEqual(page.errors, [], "no console errors");
      await page.close();
    }
  } finally {
    await browser.close();
  }
  for (const r of rows) console.log(`agreement ${r.embed} ${r.user}: ${(100 * r.before).toFixed(0)}% -> ${(100 * r.after).toFixed(0)}%`);
});
