// tacit-rm against its two peers, TensorFlow.js and jax-js, in one headless Chromium run
// (playwright-core driving the system Chromium, WebGPU on its software adapter). Every
// library × backend runs in a fresh browser context on the same weights and data; the outputs
// are checked to be the same work before any time is reported. Writes bench/results.json and
// bench/results.md.
//
// The peers (bench/page.mjs) write the same head (384→128 relu→1) from tacit-rm's initial
// weights and train it the same way (100 Adam steps of batch 256, the `ips` loss with its
// non-negative correction and logits clipped at ±15, tacit-rm's own batch order):
// - TensorFlow.js 4.22.0 (`tf.fused.matMul`, `tf.train.adam`) on webgpu, wasm and cpu;
// - jax-js 0.1.25 (`@jax-js/jax`: `jit` of the forward pass and of a whole training step,
//   `valueAndGrad`, Adam written with its array ops: its core package has no optimizer) on
//   webgpu and wasm. Its ES modules are imported from bench/node_modules as published.
// Matched backends (PAIRS): tacit-rm/webgpu against tfjs/webgpu and jax-js/webgpu,
// tacit-rm/cpu against tfjs/wasm and jax-js/wasm; each ratio (tacit-rm / peer) is kept in
// results.json under `table[].ratios["<tacit-rm id> / <peer id>"]`. A backend a peer reports
// unavailable in this browser is recorded under `unavailable` (JSON) and noted in the
// markdown, never timed; a config that throws is recorded under `errors` and fails the run,
// as a failed same-work check does.
//
//   node run.mjs [--repeats 7] [--train-repeats 3] [--cold-repeats 5] [--latency-calls 1000] [--quick]
//                [--only tacit-rm/cpu,tfjs/wasm,jax-js/wasm] [--out results] [--markdown-only]
//
// The training checks compare against tacit-rm/cpu: keep it in `--only`.
import { existsSync, writeFileSync, readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import * as data from "./lib/data.mjs";
import { serve } from "../tests/js/lib/server.mjs";
import { chromiumFlags, isSoftwareAdapter } from "../tests/js/lib/flags.mjs";

const HERE = fileURLToPath(new URL("./", import.meta.url));
const ROOT = fileURLToPath(new URL("../", import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** The package's entry module: `index.js` (which picks the SIMD or baseline wasm) if built, else the glue. */
const TACIT_ENTRY = existsSync(`${ROOT}pkg/index.js`) ? "/pkg/index.js" : "/pkg/tacit_rm.js";

/**
 * The flags of DESIGN §9, shared with the tests: WebGPU on SwiftShader, no network; with
 * TACIT_BENCH_GPU=hardware (`cargo xtask bench-real-gpu`), WebGPU on the machine's own GPU,
 * and a run whose adapter is a software one is refused (TACIT_BENCH_ALLOW_SOFTWARE=1 lets a
 * machine without a GPU rehearse the command).
 */
const HARDWARE_GPU = process.env.TACIT_BENCH_GPU === "hardware";
const FLAGS = chromiumFlags({ webgpu: true, hardwareGpu: HARDWARE_GPU });

const CONFIGS = [
  { id: "tacit-rm/webgpu", lib: "tacit-rm", backend: "webgpu", run: "tacitRun", cold: "tacitCold" },
  { id: "tacit-rm/cpu", lib: "tacit-rm", backend: "cpu", run: "tacitRun", cold: "tacitCold" },
  { id: "tfjs/webgpu", lib: "tfjs", backend: "webgpu", run: "tfRun", cold: "tfCold" },
  { id: "tfjs/wasm", lib: "tfjs", backend: "wasm", run: "tfRun", cold: "tfCold" },
  { id: "jax-js/webgpu", lib: "jax-js", backend: "webgpu", run: "jaxRun", cold: "jaxCold" },
  { id: "jax-js/wasm", lib: "jax-js", backend: "wasm", run: "jaxRun", cold: "jaxCold" },
  { id: "tfjs/cpu", lib: "tfjs", backend: "cpu", run: "tfRun", cold: "tfCold" },
];
/** Matched backends: [tacit-rm, peer]. */
const PAIRS = [
  ["tacit-rm/webgpu", "tfjs/webgpu"],
  ["tacit-rm/webgpu", "jax-js/webgpu"],
  ["tacit-rm/cpu", "tfjs/wasm"],
  ["tacit-rm/cpu", "jax-js/wasm"],
];
/** The peers' names in the markdown. */
const PEER = { tfjs: "TF.js", "jax-js": "jax-js" };
const libOf = (id) => id.split("/")[0];
/** Tolerances of the same-work checks. */
const TOL = { scores: 1e-4, loss: 1e-3, shortWeights: 1e-2 };

function args() {
  const a = process.argv.slice(2);
  const opt = { repeats: 7, trainRepeats: 3, coldRepeats: 5, latencyCalls: 1000, warmup: 1, trainWarmup: 1, only: null, out: "results" };
  for (let i = 0; i < a.length; i++) {
    const next = () => a[++i];
    switch (a[i]) {
      case "--repeats": opt.repeats = Number(next()); break;
      case "--train-repeats": opt.trainRepeats = Number(next()); break;
      case "--cold-repeats": opt.coldRepeats = Number(next()); break;
      case "--latency-calls": opt.latencyCalls = Number(next()); break;
      case "--only": opt.only = next().split(","); break;
      case "--markdown-only": opt.markdownOnly = true; break;
      case "--out": opt.out = next(); break;
      case "--quick": Object.assign(opt, { repeats: 1, trainRepeats: 1, coldRepeats: 1, latencyCalls: 50 }); break;
      default: throw new Error(`unknown argument ${a[i]}`);
    }
  }
  return opt;
}

function l2Diff(a, b) {
  if (a.length !== b.length) return Infinity;
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return Math.sqrt(s);
}

const log = (...m) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...m);

/** A fresh context (no cache, no storage shared with other runs) on the bench page. */
async function withPage(browser, url, fn) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.setDefaultTimeout(0);
  try {
    await page.goto(`${url}/bench/index.html`);
    await page.waitForFunction(() => window.benchReady === true);
    const out = await fn(page);
    if (errors.length) throw new Error(`page errors: ${errors.join(" | ")}`);
    return out;
  } finally {
    await context.close();
  }
}

/**
 * The jax-js modules a page on `backend` loads (index.js statically imports the runtime and
 * backend chunks; init("webgpu") imports the webgpu chunk): the fallback where a run did not
 * record them (its wasm kernels are generated in the page, no .wasm file is fetched).
 */
function jaxModules(backend) {
  const dir = "bench/node_modules/@jax-js/jax/dist";
  const names = readdirSync(ROOT + dir).filter((f) => f.endsWith(".js"));
  const pick = (prefix) => names.filter((f) => f.startsWith(prefix)).map((f) => `${dir}/${f}`);
  return [...pick("index.js"), ...pick("rolldown-runtime-"), ...pick("backend-"), ...(backend === "webgpu" ? pick("webgpu-") : [])];
}

function sizes(jaxLoaded = {}) {
  const file = (rel) => {
    const bytes = readFileSync(ROOT + rel);
    return { file: rel, bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  };
  const tf = "bench/node_modules/@tensorflow";
  // What the bench pages load: the @tensorflow/tfjs bundle (it carries the gradients that
  // training needs; tfjs-core's own bundle has none) plus the backend's bundle and wasm.
  const union = `${tf}/tfjs/dist/tf.es2017.min.js`;
  const core = `${tf}/tfjs-core/dist/tf-core.es2017.min.js`;
  const webgpu = `${tf}/tfjs-backend-webgpu/dist/tf-backend-webgpu.es2017.min.js`;
  const wasmJs = `${tf}/tfjs-backend-wasm/dist/tf-backend-wasm.es2017.min.js`;
  const wasmBin = `${tf}/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm`;
  const bundles = {
    // What a page loads: with a two-flavour package, the entry, the glue and the SIMD wasm.
    "tacit-rm (webgpu + cpu, training included)": existsSync(`${ROOT}pkg/tacit_rm_simd_bg.wasm`)
      ? [file("pkg/index.js"), file("pkg/tacit_rm.js"), file("pkg/tacit_rm_simd_bg.wasm")]
      : [file("pkg/tacit_rm_bg.wasm"), file("pkg/tacit_rm.js")],
    "tfjs/webgpu as loaded here (trains)": [file(union), file(webgpu)],
    "tfjs/wasm as loaded here (trains)": [file(union), file(wasmJs), file(wasmBin)],
    "tfjs/webgpu + wasm as loaded here (trains)": [file(union), file(webgpu), file(wasmJs), file(wasmBin)],
    "tfjs-core + webgpu (inference only: no gradients)": [file(core), file(webgpu)],
    "tfjs-core + wasm (inference only: no gradients)": [file(core), file(wasmJs), file(wasmBin)],
    // jax-js as the page imports it: the published ES modules (not minified), one package for
    // inference and training; the files the cold-start page fetched where the run recorded them.
    "jax-js/webgpu as loaded here (trains)": (jaxLoaded["jax-js/webgpu"] ?? jaxModules("webgpu")).map(file),
    "jax-js/wasm as loaded here (trains)": (jaxLoaded["jax-js/wasm"] ?? jaxModules("wasm")).map(file),
  };
  const out = {};
  for (const [k, files] of Object.entries(bundles)) {
    out[k] = {
      files,
      bytes: files.reduce((s, f) => s + f.bytes, 0),
      gzip: files.reduce((s, f) => s + f.gzip, 0),
    };
  }
  return out;
}

async function main() {
  const opt = args();
  // `--out NAME` writes bench/NAME.{json,md}; a path with a slash is taken as it is.
  const out = opt.out.includes("/") ? opt.out : `${HERE}${opt.out}`;
  if (opt.markdownOnly) {
    // Re-renders results.md from results.json (e.g. after editing the table's layout).
    const r = JSON.parse(readFileSync(`${out}.json`, "utf8"));
    const listed = (c) => c.id in r.finalLoss || c.id in (r.unavailable ?? {}) || c.id in (r.errors ?? {});
    writeFileSync(`${out}.md`, markdown(r, CONFIGS.filter(listed)));
    return;
  }
  const configs = CONFIGS.filter((c) => !opt.only || opt.only.includes(c.id));
  const pkgVersion = JSON.parse(readFileSync(ROOT + "pkg/package.json", "utf8")).version;
  const tfVersion = JSON.parse(readFileSync(HERE + "node_modules/@tensorflow/tfjs/package.json", "utf8")).version;
  const jaxVersion = JSON.parse(readFileSync(HERE + "node_modules/@jax-js/jax/package.json", "utf8")).version;
  const server = await serve(ROOT);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const started = new Date();
  try {
    log(`Chromium ${browser.version()}; server ${server.url}`);
    const init = await withPage(browser, server.url, (p) => p.evaluate((entry) => window.bench.initialWeights({ entry }), TACIT_ENTRY));
    const weights = Uint8Array.from(init.weights);
    const initial = data.denseLayers(weights).flatMap((l) => [...l.kernel, ...l.bias]);
    log(`adapter: ${JSON.stringify(init.adapter)}`);
    if (HARDWARE_GPU && isSoftwareAdapter(init.adapter) && process.env.TACIT_BENCH_ALLOW_SOFTWARE !== "1") {
      throw new Error(`TACIT_BENCH_GPU=hardware, but Chromium's WebGPU adapter is a software one (${JSON.stringify(init.adapter)}): no real-GPU figures from this machine`);
    }
    const runs = {};
    // A backend the library reports unavailable here (the page returns { unavailable }): noted,
    // never timed. A config that throws: recorded, the run goes on, and fails at the end.
    const unavailable = {};
    const errors = {};
    for (const c of configs) {
      log(`${c.id}: scoring ${data.SCORE_SIZES.join(", ")} (${opt.warmup} warm-up + ${opt.repeats} runs), training (${opt.trainWarmup} + ${opt.trainRepeats})`);
      let r;
      try {
        r = await withPage(browser, server.url, (p) =>
          p.evaluate(([fn, a]) => window.bench[fn](a), [c.run, {
            backend: c.backend, weights: init.weights, warmup: opt.warmup, repeats: opt.repeats,
            trainWarmup: opt.trainWarmup, trainRepeats: opt.trainRepeats, entry: TACIT_ENTRY,
          }]));
      } catch (e) {
        errors[c.id] = String(e?.message ?? e).split("\n")[0];
        log(`  ${c.id}: ERROR ${errors[c.id]}`);
        continue;
      }
      if (r.unavailable) {
        unavailable[c.id] = r.unavailable;
        log(`  ${c.id}: unavailable (${r.unavailable})`);
        continue;
      }
      runs[c.id] = r;
      log(`  ${c.id}: ${data.SCORE_SIZES.map((n) => `score ${n} ${r.score[n].medianMs.toFixed(1)} ms`).join(", ")}, train ${r.train.medianMs.toFixed(0)} ms (loss ${r.train.finalLoss})`);
    }
    if (!Object.keys(runs).length) throw new Error(`no configuration ran: ${JSON.stringify({ errors, unavailable })}`);
    // Cold start: round-robin over the configurations, one fresh context each; the first
    // round is the warm-up (disk cache of the server's files, Chromium's processes).
    const cold = Object.fromEntries(configs.map((c) => [c.id, []]));
    const coldScores = {};
    const loadedFiles = {};
    for (let round = 0; round < 1 + opt.coldRepeats; round++) {
      for (const c of configs) {
        if (!runs[c.id]) continue;
        const r = await withPage(browser, server.url, (p) =>
          p.evaluate(([fn, a]) => window.bench[fn](a), [c.cold, { backend: c.backend, weights: init.weights, entry: TACIT_ENTRY }]));
        if (round > 0) cold[c.id].push(r.ms);
        coldScores[c.id] = r.scores;
        if (r.files) loadedFiles[c.id] = r.files;
      }
      log(`cold start round ${round}: ${configs.filter((c) => runs[c.id]).map((c) => `${c.id} ${cold[c.id].at(-1)?.toFixed(0) ?? "(warm-up)"}`).join(", ")}`);
    }
    for (const [id, files] of Object.entries(loadedFiles)) log(`${id} loaded ${files.join(", ")}`);
    // From here on: the configurations that ran.
    const ran = configs.filter((c) => runs[c.id]);

    // Latency of the call every chat turn makes (4 candidates) on `auto`, `cpu` and `webgpu`.
    const latency = {};
    if (!opt.only || opt.only.some((id) => id.startsWith("tacit-rm/"))) {
      for (const backend of ["auto", "cpu", "webgpu"]) {
        latency[backend] = await withPage(browser, server.url, (p) =>
          p.evaluate((a) => window.bench.tacitLatency(a), {
            backend, weights: init.weights, calls: opt.latencyCalls, warmup: 20, entry: TACIT_ENTRY,
          }));
        const l = latency[backend];
        log(`latency ${backend} (opened on ${l.opened}, served ${JSON.stringify(l.servedBy)}): p50 ${l.p50Ms.toFixed(2)} ms, p99 ${l.p99Ms.toFixed(2)} ms, mean ${l.meanMs.toFixed(3)} ms over ${l.calls} calls`);
      }
    }

    // ---- Same work? Scores against an independent float64 reference of the same weights;
    // training against tacit-rm's CPU reference path.
    const checks = [];
    const check = (what, value, tol) => checks.push({ what, value, tol, ok: value <= tol });
    for (const n of data.SCORE_SIZES) {
      const ref = data.referenceScores(weights, data.embeddings(n, 1000 + n));
      for (const c of ran) check(`scores n=${n}: ${c.id} vs float64 reference`, data.maxRelDiff(runs[c.id].score[n].scores, ref), TOL.scores);
    }
    const latencyRef = data.referenceScores(weights, data.embeddings(4, 1004));
    for (const [b, l] of Object.entries(latency)) check(`latency scores n=4: tacit-rm/${b} vs float64 reference`, data.maxRelDiff(l.scores, latencyRef), TOL.scores);
    const probeRef = data.referenceScores(weights, data.embeddings(64, 1064));
    for (const c of ran) check(`cold-start scores n=64: ${c.id} vs float64 reference`, data.maxRelDiff(coldScores[c.id], probeRef), TOL.scores);
    // The training reference: tacit-rm/cpu, or (when `--only` leaves it out) the first config that ran.
    const baseId = runs["tacit-rm/cpu"] ? "tacit-rm/cpu" : ran[0].id;
    const base = runs[baseId];
    for (const c of ran) {
      const t = runs[c.id].train;
      check(`final training loss: ${c.id} vs ${baseId} (relative)`, Math.abs(t.finalLoss - base.train.finalLoss) / Math.abs(base.train.finalLoss), TOL.loss);
      check(`weight updates of a ${data.CHECK_STEPS}-step run: ${c.id} vs ${baseId} (‖Δ − Δ_ref‖₂ / ‖Δ_ref‖₂)`, l2Diff(runs[c.id].short.weights, base.short.weights) / l2Diff(base.short.weights, initial), TOL.shortWeights);
      if (c.lib === "tacit-rm") {
        check(`${c.id}: steps taken − 100`, Math.abs(t.steps - data.STEPS), 0);
        check(`${c.id}: stayed on ${c.backend} (no fallback)`, t.fellBackToCpu || runs[c.id].backendAfter !== c.backend ? 1 : 0, 0);
      } else {
        // TF.js: tf.memory().numTensors; jax-js: its backend's live buffers (reference-counted slots).
        check(`${c.id}: ${c.lib === "jax-js" ? "device buffers" : "tensors"} leaked by the training calls`, t.leaked, 0);
        if (c.lib === "jax-js") check(`${c.id}: the buffer counter saw the training calls' buffers (1 = it saw none)`, t.buffersAllocated > 0 ? 0 : 1, 0);
        // min over the 100 batches of min(R⁺, R⁻) ≤ 0 would mean the correction engaged.
        if (t.minRisk) check(`${c.id}: non-negative correction engaged (0 = on no batch)`, Math.min(...t.minRisk) > 0 ? 0 : 1, 0);
      }
    }
    // Information, not a check: after 100 Adam steps the heads' scores drift apart (Adam
    // divides by √v, so f32 rounding in near-zero gradients grows; the 20-step check above is
    // the algorithm's agreement, the loss check the trajectory's).
    const trainedScoreDrift = Object.fromEntries(ran.map((c) => [c.id, data.maxRelDiff(runs[c.id].train.trainedScores, base.train.trainedScores)]));
    const minRisk = Object.fromEntries(ran.filter((c) => runs[c.id].train.minRisk).map((c) => [c.id, runs[c.id].train.minRisk]));
    const failed = checks.filter((c) => !c.ok);
    for (const c of checks) log(`${c.ok ? "ok  " : "FAIL"} ${c.what}: ${c.value.toExponential(2)} (≤ ${c.tol})`);

    const figure = (id, task) => {
      const r = runs[id];
      if (!r) return null;
      if (task === "train") return { medianMs: r.train.medianMs, timesMs: r.train.timesMs };
      if (task === "cold") return { medianMs: data.median(cold[id]), timesMs: cold[id] };
      return { medianMs: r.score[task].medianMs, timesMs: r.score[task].timesMs };
    };
    const tasks = [
      ...data.SCORE_SIZES.map((n) => ({ key: n, name: `score n=${n}`, runs: opt.repeats })),
      { key: "train", name: `train ${data.STEPS} steps × batch ${data.BATCH} (ips) + loss readback`, runs: opt.trainRepeats },
      { key: "cold", name: "cold start (import → first score of 64)", runs: opt.coldRepeats },
    ];
    const table = tasks.map((t) => {
      const row = { task: t.name, runs: t.runs, figures: {}, ratios: {} };
      for (const c of ran) row.figures[c.id] = figure(c.id, t.key);
      for (const [a, b] of PAIRS) {
        if (row.figures[a] && row.figures[b]) row.ratios[`${a} / ${b}`] = row.figures[a].medianMs / row.figures[b].medianMs;
      }
      return row;
    });
    const result = {
      date: started.toISOString(),
      machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), platform: `${os.platform()} ${os.arch()}` },
      browser: { chromium: browser.version(), flags: FLAGS, userAgent: init.userAgent, adapter: init.adapter },
      tacitEntry: TACIT_ENTRY, tacitWasm: init.tacitWasm,
      versions: { "tacit-rm": pkgVersion, tfjs: tfVersion, tfjsCore: runs["tfjs/webgpu"]?.version, "jax-js": jaxVersion },
      tfjs: {
        wasmFeatures: runs["tfjs/wasm"]?.wasmFeatures ?? null,
        webgpuFlags: runs["tfjs/webgpu"]?.flags ?? null,
        crossOriginIsolated: false,
      },
      workload: {
        head: `${data.DIM}→${data.HIDDEN}→1, relu`, scoreSizes: data.SCORE_SIZES, steps: data.STEPS, batch: data.BATCH,
        trainRows: data.N_TRAIN, objective: "ips (t = o/max(π, 0.1), non-negative correction, logits clipped at ±15)",
        optimizer: `Adam(W) lr ${data.LEARNING_RATE}, β ${data.BETA1}/${data.BETA2}, ε ${data.EPSILON}, weight decay 0`,
        warmup: opt.warmup, repeats: opt.repeats, trainWarmup: opt.trainWarmup, trainRepeats: opt.trainRepeats, coldRepeats: opt.coldRepeats,
      },
      unavailable, errors,
      checks, sameWork: failed.length === 0, trainedScoreDrift, minPartialRisks: minRisk,
      gpuCalls: Object.fromEntries(ran.filter((c) => c.backend === "webgpu").map((c) => [c.id, {
        ...Object.fromEntries(data.SCORE_SIZES.map((n) => [`score n=${n}`, runs[c.id].score[n].gpuCalls])),
        train: runs[c.id].train.gpuCalls,
      }])),
      finalLoss: Object.fromEntries(ran.map((c) => [c.id, runs[c.id].train.finalLoss])),
      table,
      latency: Object.fromEntries(Object.entries(latency).map(([b, l]) => [b, { ...l, scores: undefined }])),
      latencyRatios: latency.auto && latency.cpu && latency.webgpu ? {
        "auto / cpu p50 ratio": latency.auto.p50Ms / Math.max(latency.cpu.p50Ms, 1e-9),
        "auto / cpu mean ratio": latency.auto.meanMs / latency.cpu.meanMs,
        "auto / webgpu mean ratio": latency.auto.meanMs / latency.webgpu.meanMs,
      } : null,
      jaxFiles: loadedFiles,
      sizes: sizes(loadedFiles),
    };
    writeFileSync(`${out}.json`, JSON.stringify(result, null, 2) + "\n");
    writeFileSync(`${out}.md`, markdown(result, configs));
    log(`wrote ${opt.out}.json and ${opt.out}.md`);
    if (failed.length) {
      throw new Error(`${failed.length} same-work check(s) failed; the times are not comparable (see results.json)`);
    }
    if (Object.keys(errors).length) throw new Error(`configuration(s) failed: ${JSON.stringify(errors)}`);
  } finally {
    await browser.close();
    await server.close();
  }
}

const ms = (v) => (v == null ? "—" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const kib = (b) => `${(b / 1024).toFixed(1)} KiB`;
const ratio = (r) => (r == null ? "—" : `**${r.toFixed(2)}×**`);

function markdown(r, configs) {
  const ids = configs.map((c) => c.id);
  const has = (id) => ids.includes(id);
  const unavailable = r.unavailable ?? {};
  const errors = r.errors ?? {};
  // A config that did not run says why in its cells.
  const time = (id) => (row) => (id in unavailable ? "unavailable" : id in errors ? "error" : ms(row.figures[id]?.medianMs));
  const cols = [];
  const shown = new Set();
  const column = (id) => {
    if (has(id) && !shown.has(id)) cols.push({ head: `${id} ms`, cell: time(id) });
    shown.add(id);
  };
  // Per tacit-rm backend: its time, then each matched peer's time and the ratio.
  for (const [a, b] of PAIRS) {
    column(a);
    column(b);
    if (has(a) && has(b)) cols.push({ head: `tacit / ${PEER[libOf(b)]}`, cell: (row) => ratio(row.ratios[`${a} / ${b}`]) });
  }
  column("tfjs/cpu");
  let md = `# tacit-rm against TensorFlow.js and jax-js, same browser, same run\n\n`;
  md += `Generated by \`cargo xtask bench-web\` (bench/run.mjs) on ${r.date.slice(0, 10)}. `;
  md += `Chromium ${r.browser.chromium} headless; WebGPU adapter: ${adapterName(r.browser.adapter)}; `;
  md += `${r.machine.cpus} cores (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB, no GPU. `;
  md += `tacit-rm ${r.versions["tacit-rm"]}, TensorFlow.js ${r.versions.tfjs}`;
  if (r.tfjs.wasmFeatures) md += ` (wasm backend: SIMD ${r.tfjs.wasmFeatures.simd ? "on" : "off"}, threads ${r.tfjs.wasmFeatures.threads ? "on" : "off"}: the page is not cross-origin isolated)`;
  if (r.versions["jax-js"]) md += `, jax-js ${r.versions["jax-js"]} (wasm: single-threaded, no SharedArrayBuffer in a page that is not cross-origin isolated)`;
  md += `.\n\n`;
  md += `Median wall time in ms (the run count is per row: after ${r.workload.warmup} warm-up call; cold start after one warm-up round). `;
  md += `Ratio = tacit-rm time / the peer's time (TF.js or jax-js) on the matched backend: below 1 means tacit-rm is faster.\n\n`;
  md += `| task | runs | ${cols.map((c) => c.head).join(" | ")} |\n|---|---:|${cols.map(() => "---:").join("|")}|\n`;
  for (const row of r.table) md += `| ${row.task} | ${row.runs} | ${cols.map((c) => c.cell(row)).join(" | ")} |\n`;
  for (const [id, why] of Object.entries(unavailable)) md += `\n**${id} is unavailable in this browser** (${why}): not timed, no ratio, no checks.\n`;
  for (const [id, why] of Object.entries(errors)) md += `\n**${id} failed** (${why}): not timed; the run failed.\n`;
  if (r.latency && Object.keys(r.latency).length) {
    md += `\nLatency of the call every chat turn makes, scoring 4 candidates, over ${Object.values(r.latency)[0].calls} calls after 20 warm-up calls `;
    md += `(p50/p99 of single calls at performance.now()'s 0.1 ms resolution in a page that is not cross-origin isolated; the mean is exact):\n\n`;
    md += `| backend | opened on | served by | p50 ms | p99 ms | mean ms |\n|---|---|---|---:|---:|---:|\n`;
    for (const [b, l] of Object.entries(r.latency)) {
      const by = l.servedBy ? `${l.servedBy.device} (${l.servedBy.reason})` : "—";
      md += `| ${b} | ${l.opened} | ${by} | ${l.p50Ms.toFixed(2)} | ${l.p99Ms.toFixed(2)} | ${l.meanMs.toFixed(3)} |\n`;
    }
    if (r.latencyRatios) md += `\n${Object.entries(r.latencyRatios).map(([k, v]) => `${k}: **${v.toFixed(2)}×**`).join("; ")}.\n`;
  }
  md += `\nSame work (checked before the times are reported): ${r.sameWork ? "**all checks pass**" : "**CHECKS FAILED**"}.\n\n`;
  md += `| check | value | tolerance | |\n|---|---:|---:|---|\n`;
  for (const c of r.checks) md += `| ${c.what} | ${c.value.toExponential(2)} | ${c.tol} | ${c.ok ? "ok" : "FAIL"} |\n`;
  if (r.gpuCalls && Object.keys(r.gpuCalls).length) {
    md += `\nWebGPU calls per call of the API, counted on a warm-up call by wrapping the browser's WebGPU methods (both libraries go through them):\n\n`;
    md += `| call | library | compute dispatches | queue submits | buffer writes | readbacks (mapAsync) | pipelines created |\n|---|---|---:|---:|---:|---:|---:|\n`;
    const tasks = Object.keys(Object.values(r.gpuCalls)[0]);
    for (const task of tasks) {
      for (const [id, byTask] of Object.entries(r.gpuCalls)) {
        const c = byTask[task];
        if (c) md += `| ${task === "train" ? "train (100 steps)" : task} | ${id} | ${c.dispatches} | ${c.submits} | ${c.writeBuffer} | ${c.mapAsync} | ${c.pipelines} |\n`;
      }
    }
  }
  if (r.jaxFiles && Object.keys(r.jaxFiles).length) md += `\njax-js modules the cold-start pages fetched: ${Object.entries(r.jaxFiles).map(([id, f]) => `${id} ${f.map((x) => `\`${x.split("/").pop()}\``).join(" + ")}`).join("; ")}.\n`;
  md += `\nFinal training loss (mean of the 100 batch losses): ${Object.entries(r.finalLoss).map(([k, v]) => `${k} ${v.toFixed(6)}`).join(", ")}.\n\n`;
  md += `Bundle sizes (minified ES2017 UMD builds of TF.js, the wasm binary its wasm backend fetches here (SIMD, single-threaded); jax-js's ES modules as published (not minified; its wasm kernels are generated in the page); gzip: zlib level 9):\n\n`;
  md += `| bundle | files | bytes | gzip |\n|---|---|---:|---:|\n`;
  for (const [k, s] of Object.entries(r.sizes)) {
    md += `| ${k} | ${s.files.map((f) => `\`${f.file.split("/").pop()}\``).join(" + ")} | ${kib(s.bytes)} | ${kib(s.gzip)} |\n`;
  }
  return md;
}

function adapterName(a) {
  if (!a) return "none";
  return [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(" / ") || "unnamed";
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
