// The module a `WorkerRewardModel` (worker-client.js, the "tacit-rm/worker" entry) runs in its
// module worker: it loads the package, opens one model and serves the client's messages.
// Not imported by apps; worker-client.js starts it with a literal
// `new Worker(new URL("./worker.js", import.meta.url), { type: "module" })`.
//
// The protocol (both sides are in this package, so it is free to change between versions):
//   client → worker  { id, op: "open", options, init }   init() with `init`, then RewardModel.open
//                    { id, op: "delete", name, init }    RewardModel.delete(name)
//                    { id, op: "list", init }            RewardModel.list()
//                    { id, op: "deleteAll", init }       RewardModel.deleteAll()
//                    { id, op: "call", method, args, progress }   a method of the open model
//                    { id, op: "cancel", error }         stop the train call `id` at its next epoch
//   worker → client  { id, value, backend }              the call resolved (typed arrays transferred)
//                    { id, error: { name, code, message, hint } }   it rejected
//                    { id, progress }                    a ProgressEvent of the train call `id`
import init, { RewardModel, isTacitError } from "./index.js";

/** The one model of this worker (a client opens one per worker). */
let model;
/** Train calls in flight: id → { stop, error } as the client's cancel messages left them. */
const running = new Map();

const METHODS = new Set([
  "score", "rank", "observe", "train", "sync", "stats", "exportWeights", "importWeights",
  "reset", "forget", "close",
]);

function errorData(e) {
  if (isTacitError(e)) {
    const out = { name: e.name, code: e.code, message: e.message };
    if (e.hint !== undefined) out.hint = e.hint;
    return out;
  }
  return { name: e?.name ?? "Error", code: null, message: e instanceof Error ? e.message : String(e) };
}

/** A typed array the worker made (a result) travels by transfer; one over wasm memory is copied. */
function transferable(value) {
  if (!ArrayBuffer.isView(value)) return [];
  const buffer = value.buffer;
  const whole = value.byteOffset === 0 && value.byteLength === buffer.byteLength;
  const shared = typeof SharedArrayBuffer === "function" && buffer instanceof SharedArrayBuffer;
  return whole && !shared && buffer instanceof ArrayBuffer ? [buffer] : [];
}

function currentBackend() {
  try {
    return model?.backend ?? null;
  } catch {
    return null; // closed
  }
}

async function load(options) {
  await init(options ?? undefined);
}

async function call(id, method, args, progress) {
  if (!METHODS.has(method)) throw new TypeError(`no method ${method}`);
  if (model === undefined) throw new TypeError("no model is open in this worker");
  if (method !== "train" || !progress) return model[method](...args);
  // The client's onProgress runs on its thread: each event is posted there, and a `false`
  // (or a throw) there comes back as a cancel message, read at the model's next yield
  // between epochs. Only objects with a function `onProgress` get here.
  const state = { stop: false, error: undefined };
  running.set(id, state);
  try {
    return await model.train({
      ...args[0],
      onProgress(p) {
        // The same as the callback throwing on the main thread: the call rejects with
        // `invalid_config` ("onProgress threw: …").
        if (state.error !== undefined) throw new Error(state.error);
        if (state.stop) return false;
        self.postMessage({ id, progress: p });
        return true;
      },
    });
  } finally {
    running.delete(id);
  }
}

async function handle(data) {
  switch (data.op) {
    case "open":
      await load(data.init);
      if (model !== undefined) throw new TypeError("this worker already has a model open");
      model = await RewardModel.open(data.options);
      return { name: model.name, dim: model.dim, persistent: model.persistent };
    case "delete":
      await load(data.init);
      return RewardModel.delete(data.name);
    case "list":
      await load(data.init);
      return RewardModel.list();
    case "deleteAll":
      await load(data.init);
      return RewardModel.deleteAll();
    case "call":
      return call(data.id, data.method, data.args, data.progress);
    default:
      throw new TypeError(`unknown message ${data.op}`);
  }
}

self.onmessage = async ({ data }) => {
  const { id } = data;
  if (data.op === "cancel") {
    const state = running.get(id);
    if (state !== undefined) {
      state.stop = true;
      if (typeof data.error === "string") state.error = data.error;
    }
    return;
  }
  let value;
  try {
    value = await handle(data);
  } catch (e) {
    self.postMessage({ id, error: errorData(e), backend: currentBackend() });
    return;
  }
  self.postMessage({ id, value, backend: currentBackend() }, transferable(value));
};
