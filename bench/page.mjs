// The benchmark page: the same work through tacit-rm (/pkg/tacit_rm.js) and through the same
// head written in TensorFlow.js (bench/node_modules, UMD builds, served locally) and in jax-js
// (bench/node_modules, its ES modules as published). The node driver (run.mjs) opens one fresh
// page per library × backend and calls the functions on `window.bench`; it checks the outputs
// they return before it reports any time.
import * as data from "./lib/data.mjs";

const TF = "/bench/node_modules/@tensorflow";
/**
 * What a page loads for each TF.js backend: the `@tensorflow/tfjs` bundle (tfjs-core with the
 * gradients training needs, its cpu and webgl backends, layers, converter) plus the backend's
 * own bundle; minified UMD builds. tfjs-core's own bundle has no gradients, so it cannot train.
 */
export const TF_SCRIPTS = {
  cpu: [`${TF}/tfjs/dist/tf.es2017.min.js`],
  webgpu: [`${TF}/tfjs/dist/tf.es2017.min.js`, `${TF}/tfjs-backend-webgpu/dist/tf-backend-webgpu.es2017.min.js`],
  wasm: [`${TF}/tfjs/dist/tf.es2017.min.js`, `${TF}/tfjs-backend-wasm/dist/tf-backend-wasm.es2017.min.js`],
};
const TF_WASM_DIR = `${TF}/tfjs-backend-wasm/dist/`;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(s);
  });
}

async function timed(fn, warmup, repeats) {
  let last;
  for (let i = 0; i < warmup; i++) last = await fn();
  const times = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    last = await fn();
    times.push(performance.now() - t0);
  }
  return { medianMs: data.median(times), timesMs: times, last };
}

/**
 * Counts the WebGPU calls `fn` makes (both libraries reach the GPU through the same browser
 * API): compute dispatches, queue submissions, buffer writes and readbacks (mapAsync). Used
 * on warm-up calls only, never on a timed one.
 */
async function countGpuCalls(fn) {
  if (!globalThis.GPUQueue) return { result: await fn(), calls: null };
  const calls = { dispatches: 0, submits: 0, writeBuffer: 0, mapAsync: 0, pipelines: 0 };
  const patches = [
    [GPUComputePassEncoder.prototype, "dispatchWorkgroups", "dispatches"],
    [GPUQueue.prototype, "submit", "submits"],
    [GPUQueue.prototype, "writeBuffer", "writeBuffer"],
    [GPUBuffer.prototype, "mapAsync", "mapAsync"],
    [GPUDevice.prototype, "createComputePipeline", "pipelines"],
    [GPUDevice.prototype, "createComputePipelineAsync", "pipelines"],
  ];
  const saved = patches.map(([proto, name, key]) => {
    const orig = proto[name];
    proto[name] = function (...a) { calls[key]++; return orig.apply(this, a); };
    return [proto, name, orig];
  });
  try {
    return { result: await fn(), calls };
  } finally {
    for (const [proto, name, orig] of saved) proto[name] = orig;
  }
}

async function timedCounted(fn, warmup, repeats) {
  const first = await countGpuCalls(fn);
  const r = await timed(fn, Math.max(0, warmup - 1), repeats);
  return { ...r, gpuCalls: first.calls };
}

async function adapterInfo() {
  if (!navigator.gpu) return null;
  const a = await navigator.gpu.requestAdapter();
  if (!a) return null;
  const i = a.info ?? {};
  return {
    vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
    isFallbackAdapter: i.isFallbackAdapter ?? a.isFallbackAdapter ?? null,
  };
}

// ---------------------------------------------------------------- tacit-rm

/** The package's entry: `index.js` where the build has one (it picks the wasm flavour), else the glue. */
let TACIT_ENTRY = "/pkg/tacit_rm.js";

async function tacitOpen(backend, weights) {
  const mod = await import(TACIT_ENTRY);
  await mod.default();
  const rm = await mod.RewardModel.open({
    name: "bench", backend, persist: false, dim: data.DIM, hidden: [data.HIDDEN], objective: "ips",
    // The peers train one head on the rows given: no personal part trained beside it and no
    // replay window adding earlier calls' rows (the package's defaults have both).
    personalization: "none", replayTurns: 0,
  });
  if (rm.backend !== backend) throw new Error(`tacit-rm opened on ${rm.backend}, not ${backend}`);
  if (weights) await rm.importWeights(weights);
  return { mod, rm };
}

/** Logs the training set as observations with explicit propensities (not timed). */
async function tacitObserve(rm, set, rows = data.N_TRAIN) {
  const pending = [];
  for (let i = 0; i < rows; i++) {
    pending.push(rm.observe({
      id: `r${i}`,
      embedding: set.emb.subarray(i * data.DIM, (i + 1) * data.DIM),
      shown: { position: 0, candidates: 1 },
      events: set.observed[i] ? ["copy"] : [],
      propensity: set.propensity[i],
    }));
    if (pending.length === 1024) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
}

const tacitTrainOptions = () => ({
  objective: "ips", epochs: 1, batchSize: data.BATCH,
  learningRate: data.LEARNING_RATE, weightDecay: 0, validationFraction: 0,
  seed: data.TRAIN_SEED, propensityClip: data.PROPENSITY_CLIP,
});

/** Every layer's kernel (TF.js layout) then bias, as one plain array. */
function flatWeights(bytes) {
  return data.denseLayers(bytes).flatMap((l) => [...l.kernel, ...l.bias]);
}

/** A fresh model's initial weights (safetensors), the ones both libraries start from. */
async function initialWeights({ entry } = {}) {
  if (entry) TACIT_ENTRY = entry;
  const mod = await import(TACIT_ENTRY);
  await mod.default();
  const rm = await mod.RewardModel.open({
    name: "init", backend: "cpu", persist: false, dim: data.DIM, hidden: [data.HIDDEN],
    objective: "ips", seed: data.MODEL_SEED, personalization: "none", replayTurns: 0,
  });
  const bytes = rm.exportWeights();
  await rm.close();
  return {
    weights: Array.from(bytes), adapter: await adapterInfo(), userAgent: navigator.userAgent,
    tacitWasm: mod.wasmFileName?.() ?? "tacit_rm_bg.wasm",
  };
}

async function tacitRun({ backend, weights, warmup, repeats, trainWarmup, trainRepeats, entry }) {
  if (entry) TACIT_ENTRY = entry;
  weights = new Uint8Array(weights);
  const { rm } = await tacitOpen(backend, weights);
  const score = {};
  for (const n of data.SCORE_SIZES) {
    const x = data.embeddings(n, 1000 + n);
    const r = await timedCounted(() => rm.score(x), warmup, repeats);
    score[n] = { medianMs: r.medianMs, timesMs: r.timesMs, scores: Array.from(r.last), gpuCalls: r.gpuCalls };
  }
  const set = data.trainingSet();
  const probe = data.embeddings(64, 1064);
  const times = [];
  let result;
  let trainCalls = null;
  for (let i = 0; i < trainWarmup + trainRepeats; i++) {
    await rm.importWeights(weights);
    await tacitObserve(rm, set);
    if (i === 0 && trainWarmup > 0) {
      const c = await countGpuCalls(() => rm.train(tacitTrainOptions()));
      result = c.result;
      trainCalls = c.calls;
      continue;
    }
    const t0 = performance.now();
    result = await rm.train(tacitTrainOptions());
    const dt = performance.now() - t0;
    if (i >= trainWarmup) times.push(dt);
  }
  const trainedScores = Array.from(await rm.score(probe));
  // The same-work check of the algorithm itself: a short run (CHECK_STEPS steps) whose
  // weights both libraries must reproduce closely (see run.mjs).
  await rm.importWeights(weights);
  await tacitObserve(rm, set, data.CHECK_STEPS * data.BATCH);
  const short = await rm.train(tacitTrainOptions());
  const shortWeights = flatWeights(rm.exportWeights());
  const backendAfter = rm.backend;
  await rm.close();
  return {
    score,
    train: {
      medianMs: data.median(times), timesMs: times, finalLoss: result.finalLoss, steps: result.steps,
      fellBackToCpu: result.fellBackToCpu || short.fellBackToCpu, trainedScores, gpuCalls: trainCalls,
    },
    short: { steps: short.steps, loss: short.finalLoss, weights: shortWeights },
    backendAfter,
  };
}

async function tacitCold({ backend, weights, entry }) {
  if (entry) TACIT_ENTRY = entry;
  const bytes = new Uint8Array(weights);
  const x = data.embeddings(64, 1064);
  const t0 = performance.now();
  const { rm } = await tacitOpen(backend, bytes);
  const s = await rm.score(x);
  const ms = performance.now() - t0;
  await rm.close();
  return { ms, scores: Array.from(s) };
}

// ---------------------------------------------------------------- TensorFlow.js

async function tfLoad(backend) {
  for (const src of TF_SCRIPTS[backend]) await loadScript(src);
  const tf = globalThis.tf;
  if (backend === "wasm") tf.wasm.setWasmPaths(TF_WASM_DIR);
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js cannot use ${backend}`);
  await tf.ready();
  if (tf.getBackend() !== backend) throw new Error(`TF.js runs on ${tf.getBackend()}`);
  return tf;
}

/** The head as TF.js variables, from tacit-rm's safetensors bytes. */
function tfHead(tf, bytes) {
  return data.denseLayers(bytes).map(({ kernel, shape, bias }) => ({
    kernel: tf.variable(tf.tensor2d(kernel, shape)),
    bias: tf.variable(tf.tensor1d(bias)),
    init: { kernel, shape, bias },
  }));
}

function tfForward(tf, head, x) {
  let h = x;
  head.forEach((l, i) => {
    h = tf.fused.matMul({
      a: h, b: l.kernel, bias: l.bias, activation: i + 1 < head.length ? "relu" : "linear",
    });
  });
  return h; // [n, 1]
}

async function tfScore(tf, head, x, n) {
  const input = tf.tensor2d(x, [n, data.DIM]);
  const z = tf.tidy(() => tfForward(tf, head, input));
  input.dispose();
  const out = await z.data();
  z.dispose();
  return out;
}

/**
 * tacit-rm's `ips` batch loss, exactly: with z clipped to ±15, a = w·t and b = w·(1 − t)
 * (w = 1), the partial risks R⁺ = mean(a·sp(−z)) and R⁻ = mean(b·sp(z)), each clamped at 0
 * (the non-negative correction; its gradient is 0 for a clamped part, as tacit-rm's).
 */
function tfIpsLoss(tf, z, t) {
  const zc = tf.clipByValue(z, -data.LOGIT_CLIP, data.LOGIT_CLIP);
  const pos = tf.mean(tf.mul(t, tf.softplus(tf.neg(zc))));
  const neg = tf.mean(tf.mul(tf.sub(1, t), tf.softplus(zc)));
  return { pos, neg, total: tf.add(tf.relu(pos), tf.relu(neg)) };
}

/**
 * One training call as an app would write it in TF.js: upload the set, 100 Adam steps on
 * tacit-rm's minibatches (weight decay 0 on both sides: TF.js's Adam has no decoupled
 * decay), the epoch's mean batch loss read back at the end.
 */
async function tfTrain(tf, head, set, order, { steps = data.STEPS, audit = false } = {}) {
  const rows = steps * data.BATCH;
  const opt = tf.train.adam(data.LEARNING_RATE, data.BETA1, data.BETA2, data.EPSILON);
  const X = tf.tensor2d(set.emb.subarray(0, rows * data.DIM), [rows, data.DIM]);
  const T = tf.tensor2d(set.target.subarray(0, rows), [rows, 1]);
  const I = tf.tensor2d(order.subarray(0, rows), [steps, data.BATCH], "int32");
  const vars = head.flatMap((l) => [l.kernel, l.bias]);
  const risks = [];
  let sum = tf.scalar(0);
  for (let s = 0; s < steps; s++) {
    const next = tf.tidy(() => {
      const idx = tf.reshape(tf.slice(I, [s, 0], [1, data.BATCH]), [data.BATCH]);
      const xb = tf.gather(X, idx);
      const tb = tf.gather(T, idx);
      const cost = opt.minimize(() => {
        const loss = tfIpsLoss(tf, tfForward(tf, head, xb), tb);
        if (audit) risks.push(tf.keep(tf.stack([loss.pos, loss.neg])));
        return loss.total;
      }, true, vars);
      return tf.add(sum, cost);
    });
    sum.dispose();
    sum = next;
  }
  const total = (await sum.data())[0];
  for (const t of [sum, X, T, I]) t.dispose();
  opt.dispose();
  let minRisk = null;
  if (audit) {
    minRisk = [Infinity, Infinity];
    for (const r of risks) {
      const [p, n] = await r.data();
      minRisk = [Math.min(minRisk[0], p), Math.min(minRisk[1], n)];
      r.dispose();
    }
  }
  return { loss: total / steps, minRisk };
}

function tfReset(head) {
  for (const l of head) {
    l.kernel.assign(globalThis.tf.tensor2d(l.init.kernel, l.init.shape));
    l.bias.assign(globalThis.tf.tensor1d(l.init.bias));
  }
}

/**
 * A peer's training calls: `trainWarmup` untimed ones, then `trainRepeats` timed ones, each
 * from the initial weights (`reset()`, before the clock starts). The first warm-up call, on
 * WebGPU, counts the GPU calls of a plain run; elsewhere it records every batch's partial risks
 * (does the non-negative correction engage on this data? The trajectory is the same on every
 * backend, as the loss checks show, so one audit covers it). `train(options)` runs one call
 * (`options`: `{ audit: true }` or undefined) and resolves to `{ loss, minRisk }`.
 */
async function timedTrainingCalls({ backend, trainWarmup, trainRepeats }, reset, train) {
  const times = [];
  let finalLoss;
  let minRisk;
  let trainCalls = null;
  for (let i = 0; i < trainWarmup + trainRepeats; i++) {
    reset();
    const t0 = performance.now();
    let r;
    if (i === 0 && trainWarmup > 0) {
      if (backend === "webgpu") {
        const c = await countGpuCalls(() => train(undefined));
        trainCalls = c.calls;
        r = c.result;
      } else {
        r = await train({ audit: true });
        minRisk = r.minRisk;
      }
    } else {
      r = await train(undefined);
    }
    const dt = performance.now() - t0;
    if (i >= trainWarmup) times.push(dt);
    finalLoss = r.loss;
  }
  return { times, finalLoss, minRisk, trainCalls };
}

async function tfRun({ backend, weights, warmup, repeats, trainWarmup, trainRepeats }) {
  const tf = await tfLoad(backend);
  const head = tfHead(tf, new Uint8Array(weights));
  const score = {};
  for (const n of data.SCORE_SIZES) {
    const x = data.embeddings(n, 1000 + n);
    const r = await timedCounted(() => tfScore(tf, head, x, n), warmup, repeats);
    score[n] = { medianMs: r.medianMs, timesMs: r.timesMs, scores: Array.from(r.last), gpuCalls: r.gpuCalls };
  }
  const set = data.trainingSet();
  const order = data.batchOrder();
  const probe = data.embeddings(64, 1064);
  const tensorsBefore = tf.memory().numTensors;
  const { times, finalLoss, minRisk, trainCalls } = await timedTrainingCalls(
    { backend, trainWarmup, trainRepeats },
    () => tf.tidy(() => tfReset(head)),
    (options) => tfTrain(tf, head, set, order, options),
  );
  const leaked = tf.memory().numTensors - tensorsBefore;
  const trainedScores = Array.from(await tfScore(tf, head, probe, 64));
  tf.tidy(() => tfReset(head));
  const short = await tfTrain(tf, head, set, data.batchOrder(data.CHECK_STEPS * data.BATCH), { steps: data.CHECK_STEPS });
  const shortWeights = [];
  for (const l of head) shortWeights.push(...(await l.kernel.data()), ...(await l.bias.data()));
  return {
    score,
    train: { medianMs: data.median(times), timesMs: times, finalLoss, steps: data.STEPS, trainedScores, leaked, minRisk, gpuCalls: trainCalls },
    short: { steps: data.CHECK_STEPS, loss: short.loss, weights: shortWeights },
    version: tf.version_core,
    flags: { deferredSubmitBatch: backend === "webgpu" ? tf.env().get("WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE") : null },
    wasmFeatures: backend === "wasm" ? {
      simd: await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"),
      threads: await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT"),
    } : null,
  };
}

async function tfCold({ backend, weights }) {
  const bytes = new Uint8Array(weights);
  const x = data.embeddings(64, 1064);
  const t0 = performance.now();
  const tf = await tfLoad(backend);
  const head = tfHead(tf, bytes);
  const s = await tfScore(tf, head, x, 64);
  const ms = performance.now() - t0;
  return { ms, scores: Array.from(s) };
}

// ---------------------------------------------------------------- jax-js

const JAX = "/bench/node_modules/@jax-js/jax/dist/";
/**
 * jax-js's backend registry lives in a chunk of the published build (0.1.25, pinned in
 * package.json): its `getBackend` (exported as `s`) is the only way to a backend's buffer
 * slots, which the leak check counts. The same URL as index.js's own import, so the same
 * module instance.
 */
const JAX_BACKEND_CHUNK = `${JAX}backend-CnjgxpXq.js`;

/** Every jax-js module this page fetched (for the bundle-size rows), from resource timing. */
function jaxFilesLoaded() {
  return performance.getEntriesByType("resource")
    .map((e) => new URL(e.name).pathname)
    .filter((p) => p.startsWith(JAX))
    .map((p) => p.slice(1));
}

/**
 * Imports jax-js and starts `backend` only. Returns { jax: null, why } where jax-js reports
 * the backend unavailable in this browser: the row then says so.
 */
async function jaxLoad(backend) {
  const jax = await import(`${JAX}index.js`);
  const started = await jax.init(backend);
  if (!started.includes(backend)) return { jax: null, why: `jax-js init("${backend}") started only ${started.join(", ")}` };
  jax.defaultDevice(backend);
  return { jax };
}

/**
 * Counts the live device buffers (slots) of a jax-js backend by wrapping its malloc /
 * incRef / decRef (the reference counts jax-js frees buffers by): TF.js's
 * `tf.memory().numTensors` for jax-js.
 */
async function jaxTrackBuffers(backend) {
  const { s: getBackend } = await import(JAX_BACKEND_CHUNK);
  const b = getBackend(backend);
  if (b.type !== backend) throw new Error(`jax-js backend registry gave ${b.type}, not ${backend}`);
  const live = new Map();
  let allocated = 0;
  const { malloc, incRef, decRef } = b;
  b.malloc = function (...a) {
    const slot = malloc.apply(this, a);
    allocated++;
    live.set(slot, 1);
    return slot;
  };
  b.incRef = function (slot) {
    incRef.call(this, slot);
    if (live.has(slot)) live.set(slot, live.get(slot) + 1);
  };
  b.decRef = function (slot) {
    decRef.call(this, slot);
    const r = live.get(slot);
    if (r === 1) live.delete(slot);
    else if (r) live.set(slot, r - 1);
  };
  return { live: () => live.size, allocated: () => allocated };
}

/**
 * The head in jax-js as an app would write it: the weights as a flat list [kernel₀, bias₀,
 * kernel₁, bias₁] (kernels [in, out], from tacit-rm's safetensors), the forward pass and the
 * training step under `jit` (jax-js fuses and caches the kernels per input shape), the
 * gradient from `valueAndGrad`. jax-js has no optimizer in its core package (its optax is a
 * separate one), so Adam is written here with array ops, as tacit-rm's `optim.rs` and TF.js's
 * `tf.train.adam` compute it (weight decay 0 on every side, as in the TF.js head: with it
 * tacit-rm's AdamW is this Adam; the bias corrections 1 − βᵗ come in as scalars per step).
 * jax-js arrays are reference-counted and every call takes ownership of its arguments:
 * `.ref` / `jax.tree.ref` keep one.
 */
function jaxModel(jax) {
  const { numpy: np, nn } = jax;
  const forward = (p, x) => {
    let h = x;
    for (let i = 0; i < p.length; i += 2) {
      h = np.matmul(h, p[i]).add(p[i + 1]);
      if (i + 2 < p.length) h = nn.relu(h);
    }
    return h; // [n, 1]
  };
  // tacit-rm's `ips` batch loss, as tfIpsLoss: logits clipped at ±15, the two partial risks
  // each clamped at 0 (the non-negative correction); the partial risks ride along as aux.
  const ipsLoss = (p, xb, tb) => {
    const zc = np.clip(forward(p, xb), -data.LOGIT_CLIP, data.LOGIT_CLIP);
    const pos = np.mean(tb.ref.mul(nn.softplus(zc.ref.neg())));
    const neg = np.mean(np.subtract(1, tb).mul(nn.softplus(zc)));
    return [nn.relu(pos.ref).add(nn.relu(neg.ref)), np.stack([pos, neg])];
  };
  const lossAndGrad = jax.valueAndGrad(ipsLoss, { hasAux: true });
  /** One step: the minibatch gathered from the uploaded set, the loss and its gradient, Adam. */
  const step = jax.jit((p, m, v, sum, X, T, idx, bc1, bc2) => {
    const xb = np.take(X, idx.ref, 0);
    const tb = np.take(T, idx, 0);
    const [[loss, risks], g] = lossAndGrad(jax.tree.ref(p), xb, tb);
    const P = [], M = [], V = [];
    for (let k = 0; k < p.length; k++) {
      const mk = m[k].mul(data.BETA1).add(g[k].ref.mul(1 - data.BETA1));
      const vk = v[k].mul(data.BETA2).add(g[k].ref.mul(g[k]).mul(1 - data.BETA2));
      const update = mk.ref.div(bc1.ref).div(np.sqrt(vk.ref.div(bc2.ref)).add(data.EPSILON));
      P.push(p[k].sub(update.mul(data.LEARNING_RATE)));
      M.push(mk);
      V.push(vk);
    }
    bc1.dispose();
    bc2.dispose();
    return [P, M, V, sum.add(loss), risks];
  });
  return { np, ref: jax.tree.ref, forward: jax.jit(forward), step };
}

/** The head's arrays on the device, from tacit-rm's safetensors bytes (upload, not timed in training). */
function jaxHead(np, layers) {
  return layers.flatMap(({ kernel, shape, bias }) => [np.array(kernel, { shape }), np.array(bias)]);
}

async function jaxScore(model, head, x, n) {
  const input = model.np.array(x, { shape: [n, data.DIM] });
  return model.forward(model.ref(head), input).data(); // data() reads back and frees
}

/**
 * One training call as an app would write it in jax-js, the same work as tfTrain: upload the
 * set, `steps` Adam steps on tacit-rm's minibatches, the epoch's mean batch loss read back at
 * the end. Takes ownership of `head`; returns the trained head.
 */
async function jaxTrain(model, head, set, order, { steps = data.STEPS, audit = false } = {}) {
  const { np } = model;
  const rows = steps * data.BATCH;
  const X = np.array(set.emb.subarray(0, rows * data.DIM), { shape: [rows, data.DIM] });
  const T = np.array(set.target.subarray(0, rows), { shape: [rows, 1] });
  const I = np.array(order.subarray(0, rows), { shape: [steps, data.BATCH], dtype: np.int32 });
  let p = head;
  let m = p.map((a) => np.zeros(a.shape));
  let v = p.map((a) => np.zeros(a.shape));
  let sum = np.array(0);
  const risks = [];
  for (let s = 0; s < steps; s++) {
    const t = s + 1;
    const out = model.step(p, m, v, sum, X.ref, T.ref, I.ref.slice(s), 1 - data.BETA1 ** t, 1 - data.BETA2 ** t);
    [p, m, v, sum] = out;
    if (audit) risks.push(out[4]);
    else out[4].dispose();
  }
  const total = (await sum.data())[0];
  for (const a of [X, T, I, ...m, ...v]) a.dispose();
  let minRisk = null;
  if (audit) {
    minRisk = [Infinity, Infinity];
    for (const r of risks) {
      const [pos, neg] = await r.data();
      minRisk = [Math.min(minRisk[0], pos), Math.min(minRisk[1], neg)];
    }
  }
  return { loss: total / steps, minRisk, head: p };
}

async function jaxRun({ backend, weights, warmup, repeats, trainWarmup, trainRepeats }) {
  const { jax, why } = await jaxLoad(backend);
  if (!jax) return { unavailable: why };
  const buffers = await jaxTrackBuffers(backend);
  const model = jaxModel(jax);
  const layers = data.denseLayers(new Uint8Array(weights));
  let head = jaxHead(model.np, layers);
  const score = {};
  for (const n of data.SCORE_SIZES) {
    const x = data.embeddings(n, 1000 + n);
    const r = await timedCounted(() => jaxScore(model, head, x, n), warmup, repeats);
    score[n] = { medianMs: r.medianMs, timesMs: r.timesMs, scores: Array.from(r.last), gpuCalls: r.gpuCalls };
  }
  const set = data.trainingSet();
  const order = data.batchOrder();
  const probe = data.embeddings(64, 1064);
  // Live device buffers with one head alive (the initial one here, the trained one after).
  const buffersBefore = buffers.live();
  const allocatedBefore = buffers.allocated();
  let fresh;
  const { times, finalLoss, minRisk, trainCalls } = await timedTrainingCalls(
    { backend, trainWarmup, trainRepeats },
    () => {
      // The initial weights, as tfReset: uploaded before the clock starts (the previous head freed).
      fresh = jaxHead(model.np, layers);
      for (const a of head) a.dispose();
    },
    async (options) => {
      const r = await jaxTrain(model, fresh, set, order, options);
      head = r.head;
      return r;
    },
  );
  const leaked = buffers.live() - buffersBefore;
  // The counter must have seen the training calls' buffers, or it checks nothing.
  const buffersAllocated = buffers.allocated() - allocatedBefore;
  const trainedScores = Array.from(await jaxScore(model, head, probe, 64));
  for (const a of head) a.dispose();
  const short = await jaxTrain(model, jaxHead(model.np, layers), set, data.batchOrder(data.CHECK_STEPS * data.BATCH), { steps: data.CHECK_STEPS });
  const shortWeights = [];
  for (const a of short.head) shortWeights.push(...(await a.data()));
  return {
    score,
    train: { medianMs: data.median(times), timesMs: times, finalLoss, steps: data.STEPS, trainedScores, leaked, buffersAllocated, minRisk, gpuCalls: trainCalls },
    short: { steps: data.CHECK_STEPS, loss: short.loss, weights: shortWeights },
    files: jaxFilesLoaded(),
  };
}

async function jaxCold({ backend, weights }) {
  const bytes = new Uint8Array(weights);
  const x = data.embeddings(64, 1064);
  const t0 = performance.now();
  const { jax, why } = await jaxLoad(backend);
  if (!jax) return { unavailable: why };
  const model = jaxModel(jax);
  const head = jaxHead(model.np, data.denseLayers(bytes));
  const s = await jaxScore(model, head, x, 64);
  const ms = performance.now() - t0;
  return { ms, scores: Array.from(s), files: jaxFilesLoaded() };
}

// ---------------------------------------------------------------- latency of a chat turn

/**
 * The call every chat turn makes: scoring 4 candidates, `calls` times after `warmup` calls,
 * on one backend ("auto" included: it places each call, DESIGN §11). Each call is timed on
 * its own (performance.now() is coarsened to 0.1 ms in a page that is not cross-origin
 * isolated, so p50/p99 are at that resolution) and the whole loop once (its mean per call is
 * exact). Returns the scores of the last call for the same-work check and where the model
 * says it ran.
 */
async function tacitLatency({ backend, weights, calls, warmup, entry }) {
  if (entry) TACIT_ENTRY = entry;
  const mod = await import(TACIT_ENTRY);
  await mod.default();
  const rm = await mod.RewardModel.open({
    name: "latency", backend, persist: false, dim: data.DIM, hidden: [data.HIDDEN], objective: "ips",
  });
  await rm.importWeights(new Uint8Array(weights));
  const x = data.embeddings(4, 1004);
  let last;
  for (let i = 0; i < warmup; i++) last = await rm.score(x);
  const times = new Array(calls);
  const start = performance.now();
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    last = await rm.score(x);
    times[i] = performance.now() - t0;
  }
  const meanMs = (performance.now() - start) / calls;
  const stats = rm.stats();
  await rm.close();
  const sorted = [...times].sort((a, b) => a - b);
  const pick = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return {
    p50Ms: pick(0.5), p99Ms: pick(0.99), meanMs, calls, opened: stats.backend,
    servedBy: stats.lastScore, scores: Array.from(last),
  };
}

window.bench = { initialWeights, tacitRun, tacitCold, tfRun, tfCold, jaxRun, jaxCold, adapterInfo, tacitLatency };
window.benchReady = true;
