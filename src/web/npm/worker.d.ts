// The "tacit-rm/worker" entry (worker-client.js): a RewardModel in a module worker.
import type {
  ModelInfo,
  Observation,
  OpenOptions,
  ScoreOptions,
  Stats,
  SyncOptions,
  SyncResult,
  TrainOptions,
  TrainResult,
} from "./tacit_rm.js";

export { TacitError, isTacitError } from "./index.js";

/**
 * `init` options that can travel to the worker: a URL (a relative one resolves against the
 * page), the bytes or a compiled module (not a `Response` or a promise).
 */
export interface WorkerInitOptions {
  module_or_path?: string | URL | BufferSource | WebAssembly.Module;
}

/**
 * A `RewardModel` running in a module worker of its own (worker.js beside this module), so
 * that training never blocks the page. The same methods and options, with these differences:
 * - every method is async: `stats()` and `exportWeights()` return promises here;
 * - one model per worker: each `open` starts a worker (which loads the .wasm), `close` ends it;
 * - typed arrays passed in are copied (structured clone; the caller's arrays stay usable, and
 *   a view into a larger buffer is sliced first), results (`score`, `rank`, `exportWeights`)
 *   are transferred, not copied;
 * - `onProgress` runs on the calling thread with each epoch's `ProgressEvent`; returning
 *   `false` (or throwing) stops the training at the end of the epoch the worker is in when
 *   it reads that (one or two epochs after the event; `result.epochs` lists them all);
 * - errors are `TacitError`s with the worker's `code`, `message` and `hint`.
 */
export class WorkerRewardModel implements AsyncDisposable {
  private constructor();
  /** Starts a worker and opens the model there; `init` goes to the worker's `init()`. */
  static open(options?: OpenOptions, init?: WorkerInitOptions): Promise<WorkerRewardModel>;
  /** `RewardModel.delete(name)`, in a worker started for it. */
  static delete(name: string, init?: WorkerInitOptions): Promise<void>;
  /** `RewardModel.list()`, in a worker started for it. */
  static list(init?: WorkerInitOptions): Promise<ModelInfo[]>;
  /** `RewardModel.deleteAll()`, in a worker started for it. */
  static deleteAll(init?: WorkerInitOptions): Promise<void>;
  readonly name: string;
  readonly dim: number;
  readonly persistent: boolean;
  /** Where the model runs, as of the worker's last reply; throws `closed` after `close()`. */
  readonly backend: "webgpu" | "cpu";
  score(embeddings: Float32Array | number[], options?: ScoreOptions): Promise<Float32Array>;
  rank(embeddings: Float32Array | number[], options?: ScoreOptions): Promise<Uint32Array>;
  observe(observation: Observation): Promise<number>;
  /** `onProgress` is called on this thread; see the class comment for how `false` stops. */
  train(options?: TrainOptions): Promise<TrainResult>;
  sync(options: SyncOptions): Promise<SyncResult>;
  /** A promise here (synchronous on `RewardModel`). */
  stats(): Promise<Stats>;
  /** A promise here (synchronous on `RewardModel`). */
  exportWeights(): Promise<Uint8Array>;
  importWeights(bytes: Uint8Array): Promise<void>;
  reset(): Promise<void>;
  forget(): Promise<void>;
  /** Closes the model and ends its worker (idempotent); later calls reject with `closed`. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
