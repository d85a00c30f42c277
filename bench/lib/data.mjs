// The benchmark's workload, shared by the page (both libraries) and the node driver (checks):
// deterministic embeddings, the `ips` training set, tacit-rm's batch order, and a safetensors
// parser. Nothing here depends on either library.

// The tests' independent safetensors parser (served beside the page from the repo root).
import { parseSafetensors } from "../../tests/js/lib/reference.mjs";

export { parseSafetensors };

export const DIM = 384;
export const HIDDEN = 128;
export const STEPS = 100;
export const BATCH = 256;
/** One epoch of 100 batches of 256: tacit-rm's `train({ epochs: 1, batchSize: 256 })`. */
export const N_TRAIN = STEPS * BATCH;
/** Steps of the short run whose trained weights both libraries must reproduce. */
export const CHECK_STEPS = 10;
export const SCORE_SIZES = [64, 1000, 10000];
/** tacit-rm's defaults, used by both sides. */
export const LEARNING_RATE = 0.01;
export const BETA1 = 0.9;
export const BETA2 = 0.999;
export const EPSILON = 1e-8;
export const PROPENSITY_CLIP = 0.1;
export const LOGIT_CLIP = 15;
/** tacit-rm's `train` seed (its shuffle); the model's initial weights come from `MODEL_SEED`. */
export const TRAIN_SEED = 0;
export const MODEL_SEED = 1;

/** xorshift32 stream of floats in [-1, 1). */
function uniformStream(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

/** `n` unit-length `DIM`-d embeddings (float32), like a sentence encoder's. */
export function embeddings(n, seed) {
  const next = uniformStream(seed);
  const out = new Float32Array(n * DIM);
  for (let r = 0; r < n; r++) {
    let norm = 0;
    for (let c = 0; c < DIM; c++) {
      const v = next();
      out[r * DIM + c] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let c = 0; c < DIM; c++) out[r * DIM + c] /= norm;
  }
  return out;
}

/**
 * The `ips` training set. A hidden direction `u` sets the user's taste: an answer is liked
 * with probability σ(2·√DIM·x·u) (a mild signal, as implicit feedback is); a liked answer gets
 * a reaction with propensity π ~ U[0.5, 1] (o = y·Bernoulli(π)); the target is
 * t = o / max(π, 0.1), computed as tacit-rm does (f64, then f32). π ≥ 0.5 keeps the
 * propensity clip and (checked on every batch, see page.mjs) the non-negative correction
 * from engaging, so that both libraries follow the same smooth loss.
 */
export function trainingSet(seed = 11) {
  const emb = embeddings(N_TRAIN, seed);
  const dir = embeddings(1, seed + 1);
  const next = uniformStream(seed + 2);
  const u01 = () => (next() + 1) / 2;
  const observed = new Uint8Array(N_TRAIN);
  const propensity = new Float32Array(N_TRAIN);
  const target = new Float32Array(N_TRAIN);
  const scale = 2 * Math.sqrt(DIM);
  for (let i = 0; i < N_TRAIN; i++) {
    let dot = 0;
    for (let c = 0; c < DIM; c++) dot += emb[i * DIM + c] * dir[c];
    const liked = u01() < 1 / (1 + Math.exp(-scale * dot));
    const p = Math.fround(0.5 + 0.5 * u01());
    const o = liked && u01() < p ? 1 : 0;
    observed[i] = o;
    propensity[i] = p;
    target[i] = Math.fround(o * (1 / Math.max(p, PROPENSITY_CLIP)));
  }
  return { emb, observed, propensity, target };
}

// tacit-rm's generator (src/rng.rs: xoshiro256++ seeded through SplitMix64), so that the
// TF.js side draws exactly the minibatches tacit-rm's trainer draws (`make_batches`).
const M64 = (1n << 64n) - 1n;
const rotl = (x, k) => ((x << k) | (x >> (64n - k))) & M64;

export class Rng {
  constructor(seed) {
    let sm = BigInt(seed) & M64;
    const next = () => {
      sm = (sm + 0x9e3779b97f4a7c15n) & M64;
      let z = sm;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
      return z ^ (z >> 31n);
    };
    this.s = [next(), next(), next(), next()];
  }

  nextU64() {
    const s = this.s;
    const result = (rotl((s[0] + s[3]) & M64, 23n) + s[0]) & M64;
    const t = (s[1] << 17n) & M64;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45n);
    return result;
  }

  /** Uniform integer in [0, n) (Lemire's multiply-shift, as `Rng::below`). */
  below(n) {
    return Number((this.nextU64() * BigInt(n)) >> 64n);
  }

  shuffle(items) {
    for (let i = items.length - 1; i >= 1; i--) {
      const j = this.below(i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
  }
}

/** Row indices of every step of `epochs` epochs, as tacit-rm's trainer draws them. */
export function batchOrder(n = N_TRAIN, epochs = 1, seed = TRAIN_SEED) {
  const rng = new Rng(seed);
  const out = new Int32Array(n * epochs);
  for (let e = 0; e < epochs; e++) {
    const order = Array.from({ length: n }, (_, i) => i);
    rng.shuffle(order);
    out.set(order, e * n);
  }
  return out;
}

/**
 * The 384→128→1 head of tacit-rm's weights in TF.js's layout: tacit-rm stores
 * `layers.{i}.weight` as [out, in]; a dense kernel is [in, out].
 */
export function denseLayers(bytes) {
  const { tensors } = parseSafetensors(bytes);
  const layers = [];
  for (let i = 0; `layers.${i}.weight` in tensors; i++) {
    const w = tensors[`layers.${i}.weight`];
    const [out, inp] = w.shape;
    const kernel = new Float32Array(inp * out);
    for (let o = 0; o < out; o++) {
      for (let c = 0; c < inp; c++) kernel[c * out + o] = w.data[o * inp + c];
    }
    layers.push({ kernel, shape: [inp, out], bias: tensors[`layers.${i}.bias`].data });
  }
  return layers;
}

/** float64 logits of the relu head in `bytes` for `n × DIM` embeddings (the checks' reference). */
export function referenceScores(bytes, x) {
  const layers = denseLayers(bytes);
  const n = x.length / DIM;
  const out = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    let h = Float64Array.from(x.subarray(r * DIM, (r + 1) * DIM));
    layers.forEach(({ kernel, shape: [inp, outs], bias }, li) => {
      const next = new Float64Array(outs);
      for (let o = 0; o < outs; o++) next[o] = bias[o];
      for (let c = 0; c < inp; c++) {
        const hc = h[c];
        if (hc === 0) continue;
        for (let o = 0; o < outs; o++) next[o] += kernel[c * outs + o] * hc;
      }
      if (li + 1 < layers.length) for (let o = 0; o < outs; o++) next[o] = Math.max(0, next[o]);
      h = next;
    });
    out[r] = h[0];
  }
  return out;
}

/** max |a − b| / max(1, |b|). */
export function maxRelDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  }
  return worst;
}

export function median(values) {
  const v = [...values].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
