// The "tacit-rm/worker" entry: a `RewardModel` that runs in a module worker of its own, behind
// the same methods, so that training (and large scoring batches) never block the page. Each
// `WorkerRewardModel.open` starts one worker (worker.js, beside this file) holding one model;
// `close()` ends it. Arguments are copied to the worker (structured clone; the caller's arrays
// stay usable), results are transferred back (no copy). Errors are rebuilt as `TacitError`s
// with the worker's `code`, `message` and `hint`. See worker.d.ts and the README's "In a worker".
import { TacitError } from "./index.js";

const PRIVATE = Symbol("WorkerRewardModel");
const HINT_WORKER =
  "serve worker.js, index.js, tacit_rm.js and both .wasm files beside worker-client.js (a bundler does when it sees the new Worker(new URL(...)) call)";

function closedError() {
  return new TacitError("closed", "the model is closed");
}

function rebuild(data) {
  if (typeof data.code === "string") {
    return new TacitError(data.code, data.message, data.hint === undefined ? {} : { hint: data.hint });
  }
  const e = new Error(data.message);
  e.name = data.name;
  return e;
}

/**
 * Views over part of a larger buffer are sliced first: structured clone would otherwise copy
 * the whole buffer (e.g. every row of a batch, for each row's `observe`).
 */
function compact(value) {
  if (!ArrayBuffer.isView(value) || value instanceof DataView) return value;
  const whole = value.byteOffset === 0 && value.byteLength === value.buffer.byteLength;
  return whole ? value : value.slice();
}

function initData(init) {
  if (init === undefined || init === null) return undefined;
  let source = init.module_or_path;
  // URLs resolve against the page (the worker's base would be this package's folder).
  if (typeof source === "string" || source instanceof URL) {
    source = new URL(source, globalThis.document?.baseURI ?? globalThis.location?.href).href;
  }
  return { module_or_path: source };
}

/** One worker and the calls waiting on it. */
class Channel {
  constructor() {
    // A literal `new URL(…, import.meta.url)` inside `new Worker(…)`: the form bundlers
    // (Vite, webpack 5, Parcel) recognise, bundling worker.js and its .wasm files.
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.pending = new Map();
    this.next = 1;
    this.dead = null;
    /** Whether the model opened (a later worker error is a crash, not a load failure). */
    this.started = false;
    this.worker.onmessage = ({ data }) => {
      const call = this.pending.get(data.id);
      if (call === undefined) return;
      if (data.progress !== undefined) {
        call.progress?.(data.progress);
        return;
      }
      this.pending.delete(data.id);
      call.settle(data);
    };
    // The worker could not start (worker.js or its imports not served), or it died.
    this.worker.onerror = (event) => {
      event.preventDefault?.();
      const what = event.message || "worker.js or its imports could not be loaded";
      this.fail(
        this.started
          ? new TacitError("closed", `the model's worker stopped: ${what}`)
          : new TacitError("wasm_load", `the worker did not start: ${what} (${HINT_WORKER})`, { hint: HINT_WORKER }),
      );
    };
    this.worker.onmessageerror = () => this.fail(new TacitError("closed", "the worker sent a message that could not be read"));
  }

  /** Ends the worker; every call still waiting rejects with `error`. */
  fail(error) {
    if (this.dead) return;
    this.dead = error;
    this.worker.terminate();
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
  }

  /** Posts `message` with a fresh id; resolves to the worker's reply `{ value, backend }`. */
  request(message, progress) {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      const settle = (data) => (data.error ? reject(rebuild(data.error)) : resolve(data));
      this.pending.set(id, { settle, reject, progress: progress?.(id) });
      try {
        this.worker.postMessage({ ...message, id });
      } catch (cause) {
        this.pending.delete(id);
        // A function or another value structured clone cannot copy (a typo'd callback key).
        reject(new TacitError("invalid_config", `the arguments cannot be sent to the worker: ${cause.message}`, { cause }));
      }
    });
  }
}

/**
 * A reward model in a module worker, with `RewardModel`'s methods, all async (`stats` and
 * `exportWeights` too). One model per worker: each `open` starts a worker, `close` ends it.
 */
export class WorkerRewardModel {
  #channel;
  #info;
  #backend;
  #closed = false;

  constructor(token, channel, reply) {
    if (token !== PRIVATE) throw new TypeError("use WorkerRewardModel.open(options)");
    this.#channel = channel;
    this.#info = reply.value;
    this.#backend = reply.backend;
    channel.started = true;
  }

  /**
   * Starts a worker and opens the model there (`RewardModel.open(options)`). `init` is passed
   * to the worker's `init()`: leave it out to load the .wasm beside the package.
   */
  static async open(options, init) {
    const channel = new Channel();
    try {
      const reply = await channel.request({ op: "open", options, init: initData(init) });
      return new WorkerRewardModel(PRIVATE, channel, reply);
    } catch (e) {
      channel.fail(closedError());
      throw e;
    }
  }

  /** `RewardModel.delete(name)` in a short-lived worker. */
  static delete(name, init) {
    return WorkerRewardModel.#once({ op: "delete", name }, init);
  }

  /** `RewardModel.list()` in a short-lived worker. */
  static list(init) {
    return WorkerRewardModel.#once({ op: "list" }, init);
  }

  /** `RewardModel.deleteAll()` in a short-lived worker. */
  static deleteAll(init) {
    return WorkerRewardModel.#once({ op: "deleteAll" }, init);
  }

  /** One call of the package's static methods, in a worker started for it. */
  static async #once(message, init) {
    const channel = new Channel();
    try {
      return (await channel.request({ ...message, init: initData(init) })).value;
    } finally {
      channel.fail(closedError());
    }
  }

  get name() {
    return this.#info.name;
  }
  get dim() {
    return this.#info.dim;
  }
  get persistent() {
    return this.#info.persistent;
  }
  /** Where the model runs, as of the worker's last reply (a lost GPU moves it to "cpu"). */
  get backend() {
    if (this.#closed) throw closedError();
    return this.#backend;
  }

  async #call(method, args, progress) {
    if (this.#closed) throw closedError();
    const reply = await this.#channel.request({ op: "call", method, args, progress: progress !== undefined }, progress);
    if (reply.backend !== null && reply.backend !== undefined) this.#backend = reply.backend;
    return reply.value;
  }

  score(embeddings, ...rest) {
    return this.#call("score", [compact(embeddings), ...rest]);
  }
  rank(embeddings, ...rest) {
    return this.#call("rank", [compact(embeddings), ...rest]);
  }
  observe(observation, ...rest) {
    const sent =
      observation !== null && typeof observation === "object" && ArrayBuffer.isView(observation.embedding)
        ? { ...observation, embedding: compact(observation.embedding) }
        : observation;
    return this.#call("observe", [sent, ...rest]);
  }

  /**
   * `onProgress` runs here, on this thread, once per epoch the worker posts; its `false` (or
   * a throw) is sent back and stops the training at the end of the epoch running when the
   * worker reads it (one or two epochs after the event; no event is delivered after `false`).
   */
  train(options, ...rest) {
    const callback = options !== null && typeof options === "object" ? options.onProgress : undefined;
    if (typeof callback !== "function") return this.#call("train", [options, ...rest]);
    const { onProgress: _, ...sent } = options;
    const channel = this.#channel;
    const progress = (id) => {
      let stopped = false;
      return (event) => {
        if (stopped) return;
        let verdict;
        try {
          verdict = callback(event);
        } catch (e) {
          stopped = true;
          const message = e instanceof Error ? e.message : String(e);
          channel.worker.postMessage({ op: "cancel", id, error: message });
          return;
        }
        if (verdict === false) {
          stopped = true;
          channel.worker.postMessage({ op: "cancel", id });
        }
      };
    };
    return this.#call("train", [sent, ...rest], progress);
  }

  sync(...args) {
    return this.#call("sync", args);
  }
  /** Async here (sync on `RewardModel`): the worker's `rm.stats()`. */
  stats() {
    return this.#call("stats", []);
  }
  /** Async here (sync on `RewardModel`): the worker's `rm.exportWeights()`, transferred. */
  exportWeights() {
    return this.#call("exportWeights", []);
  }
  importWeights(bytes, ...rest) {
    return this.#call("importWeights", [compact(bytes), ...rest]);
  }
  reset() {
    return this.#call("reset", []);
  }
  forget() {
    return this.#call("forget", []);
  }

  /** Closes the model and ends its worker; later calls reject with `closed`. Idempotent. */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#channel.request({ op: "call", method: "close", args: [] });
    } catch {
      // A worker that already stopped has nothing left to release.
    } finally {
      this.#channel.fail(closedError());
    }
  }

  static {
    // `await using rm = await WorkerRewardModel.open(…)` where the engine has it.
    if (typeof Symbol.asyncDispose === "symbol") {
      Object.defineProperty(this.prototype, Symbol.asyncDispose, {
        value() {
          return this.close();
        },
        writable: true,
        configurable: true,
      });
    }
  }
}

export { TacitError, isTacitError } from "./index.js";
