// The answers' embeddings. The demo's reward model reads 384-dimensional vectors; they come
// from MiniLM (all-MiniLM-L6-v2, int8 ONNX) run by transformers.js in this page when the model
// files are installed (`cargo xtask demo` installs them into target/demo/models/, served at
// /models/), and from the package's built-in hashing featurizer otherwise. Nothing is fetched
// from a hub or a CDN: remote models are switched off, and onnxruntime-web's own .wasm files are
// served from the demo's node_modules at /vendor/ort/.
import { featurize } from "/pkg/index.js";

export const DIM = 384;
export const MINILM = "all-MiniLM-L6-v2";
const MODEL_FILE = `/models/${MINILM}/onnx/model_quantized.onnx`;
const BATCH = 32;
// Embedding the corpus takes a minute or two on one core: the vectors are kept in IndexedDB
// (keyed by the model file's size and the answer's text), so a reload or a later visit reuses them.
const CACHE_DB = "tacit-demo-embeddings";
const CACHE_STORE = "minilm";

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function openCache() {
  const open = indexedDB.open(CACHE_DB, 1);
  open.onupgradeneeded = () => open.result.createObjectStore(CACHE_STORE);
  return request(open);
}

/**
 * The encoder the page uses: `{ kind: "minilm" | "featurizer", label, reason, prepare(answers,
 * onProgress), embed(answers) }`. `prefer: "featurizer"` skips MiniLM (the page's
 * `?embed=featurizer`); otherwise MiniLM is used when its files are served, and a failure to
 * load them is an error, not a silent fallback.
 */
export async function loadEncoder({ prefer = "minilm" } = {}) {
  if (prefer === "featurizer") return featurizerEncoder("asked for with ?embed=featurizer");
  const probe = await fetch(MODEL_FILE, { method: "HEAD" });
  if (!probe.ok) return featurizerEncoder(`the MiniLM files are not installed (${MODEL_FILE}: HTTP ${probe.status})`);
  return minilmEncoder(probe.headers.get("content-length") ?? "?");
}

function featurizerEncoder(reason) {
  return {
    kind: "featurizer",
    label: "hashing featurizer",
    reason,
    async prepare() {},
    embed: (answers) => featurize(answers.map((a) => a.text), DIM),
  };
}

async function minilmEncoder(modelSize) {
  const { env, AutoTokenizer, AutoModel } = await import("/vendor/transformers/transformers.js");
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = "/models/";
  env.backends.onnx.wasm.wasmPaths = {
    mjs: "/vendor/ort/ort-wasm-simd-threaded.asyncify.mjs",
    wasm: "/vendor/ort/ort-wasm-simd-threaded.asyncify.wasm",
  };
  const tokenizer = await AutoTokenizer.from_pretrained(MINILM);
  // q8 is transformers.js's name for the int8 file (onnx/model_quantized.onnx); the CPU
  // (WebAssembly) runs it: a software WebGPU adapter would be slower.
  const model = await AutoModel.from_pretrained(MINILM, { dtype: "q8", device: "wasm" });
  const cache = new Map();
  const db = await openCache();
  const version = `${MINILM}/${modelSize}`;
  const key = (a) => `${version}\n${a.text}`;

  /** Unit-length sentence embeddings of `texts`, one row of DIM each. */
  async function encode(texts) {
    const inputs = tokenizer(texts, { padding: true, truncation: true });
    const outputs = await model(inputs);
    // The file's output is `embedding`; a plain BERT export would give token states instead.
    const out = outputs.embedding ?? outputs.sentence_embedding ?? outputs.last_hidden_state;
    const data = out.data;
    const rows = [];
    if (out.dims.length === 2) {
      for (let i = 0; i < texts.length; i++) rows.push(data.slice(i * DIM, (i + 1) * DIM));
    } else {
      // Token states: the mean over the real tokens (sentence-transformers' pooling for MiniLM).
      const [, seq] = out.dims;
      const mask = inputs.attention_mask.data;
      for (let i = 0; i < texts.length; i++) {
        const row = new Float32Array(DIM);
        let count = 0;
        for (let t = 0; t < seq; t++) {
          if (!Number(mask[i * seq + t])) continue;
          count += 1;
          for (let d = 0; d < DIM; d++) row[d] += data[(i * seq + t) * DIM + d];
        }
        rows.push(row.map((v) => v / Math.max(count, 1)));
      }
    }
    return rows.map((row) => {
      const norm = Math.hypot(...row) || 1;
      return Float32Array.from(row, (v) => v / norm);
    });
  }

  return {
    kind: "minilm",
    label: "MiniLM-L6 int8 (transformers.js)",
    reason: `${MINILM} from /models/, on onnxruntime-web's WebAssembly`,
    /** Embeds every answer not embedded yet (the page does the whole corpus once). */
    async prepare(answers, onProgress = () => {}) {
      const stored = db.transaction(CACHE_STORE).objectStore(CACHE_STORE);
      const [keys, rows] = await Promise.all([request(stored.getAllKeys()), request(stored.getAll())]);
      const known = new Map(keys.map((k, i) => [k, rows[i]]));
      for (const a of answers) if (known.has(key(a))) cache.set(a.id, known.get(key(a)));
      // By length: a batch is padded to its longest answer, so similar lengths waste least.
      const todo = answers.filter((a) => !cache.has(a.id)).sort((x, y) => x.text.length - y.text.length);
      for (let i = 0; i < todo.length; i += BATCH) {
        const batch = todo.slice(i, i + BATCH);
        const rows = await encode(batch.map((a) => a.text));
        batch.forEach((a, k) => cache.set(a.id, rows[k]));
        const tx = db.transaction(CACHE_STORE, "readwrite");
        batch.forEach((a, k) => tx.objectStore(CACHE_STORE).put(rows[k], key(a)));
        await new Promise((resolve, reject) => {
          tx.oncomplete = resolve;
          tx.onerror = () => reject(tx.error);
        });
        onProgress(Math.min(i + BATCH, todo.length), todo.length);
      }
    },
    embed(answers) {
      const x = new Float32Array(answers.length * DIM);
      answers.forEach((a, i) => {
        const row = cache.get(a.id);
        if (!row) throw new Error(`answer ${a.id} was not embedded (prepare it first)`);
        x.set(row, i * DIM);
      });
      return x;
    },
  };
}
