// An independent reference for the package's scores: reads the exported safetensors bytes
// with a parser written here (not the package's) and runs the MLP in float64 JS.

/** Parses safetensors bytes: { metadata, tensors: { name: { shape, data: Float32Array } } }. */
export function parseSafetensors(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const base = 8 + headerLen;
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (t.dtype !== "F32") throw new Error(`${name}: ${t.dtype}`);
    const [a, b] = t.data_offsets;
    const copy = bytes.slice(base + a, base + b);
    tensors[name] = { shape: t.shape, data: new Float32Array(copy.buffer) };
  }
  return { metadata: header.__metadata__ ?? {}, tensors };
}

/**
 * First-output logits of the head in `bytes` for `n × dim` embeddings `x`; `prefix`
 * "personal." reads the personal head instead of the shared one.
 */
export function referenceScores(bytes, x, dim, prefix = "") {
  const { metadata, tensors } = parseSafetensors(bytes);
  const act = metadata.activation === "tanh" ? Math.tanh : (v) => Math.max(0, v);
  const layers = [];
  for (let i = 0; `${prefix}layers.${i}.weight` in tensors; i++) {
    layers.push([tensors[`${prefix}layers.${i}.weight`], tensors[`${prefix}layers.${i}.bias`]]);
  }
  const n = x.length / dim;
  const out = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    let h = Array.from(x.subarray(r * dim, (r + 1) * dim));
    layers.forEach(([w, b], li) => {
      const [rows, cols] = w.shape;
      const next = new Array(rows);
      for (let o = 0; o < rows; o++) {
        let s = b.data[o];
        for (let c = 0; c < cols; c++) s += w.data[o * cols + c] * h[c];
        next[o] = li + 1 < layers.length ? act(s) : s;
      }
      h = next;
    });
    out[r] = h[0];
  }
  return out;
}

/** Deterministic pseudo-random floats in [-1, 1). */
export function randomFloats(n, seed) {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}

export function maxRelDiff(a, b) {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  }
  return worst;
}
