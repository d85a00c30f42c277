//! TypeScript declarations of the options and result objects (added to the generated
//! `.d.ts`). Kept beside the serde types in `options.rs` and `crate::model`; the package
//! build type-checks a usage file against the result (`www/pkg-check.ts` via `tsc`).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Stable error codes: `e.code` of every rejected promise or thrown error. */
export type ErrorCode =
  | "dim_mismatch" | "non_finite_input" | "empty_input" | "unknown_name" | "invalid_config"
  | "corrupt_weights" | "incompatible_weights" | "invalid_data" | "no_gpu" | "device_lost"
  | "io" | "unknown_option" | "no_webgpu" | "busy" | "closed" | "storage"
  | "network" | "sync_conflict" | "sync_unauthorized" | "sync_rejected";

/** What every failure of the package is. */
export interface TacitError extends Error { name: "TacitError"; code: ErrorCode }

export type Objective =
  | "naive" | "ips" | "snips" | "noise" | "noise-ips" | "dr" | "implicit" | "pairwise" | "beta";

export interface OpenOptions {
  /** Storage key; default "default". */
  name?: string;
  /** "auto" (default): WebGPU when an adapter is available, else the CPU. */
  backend?: "auto" | "webgpu" | "cpu";
  /** Keep weights and pending observations in IndexedDB; default: when IndexedDB exists. */
  persist?: boolean;
  /** Embedding width; default 384 (or the stored model's). */
  dim?: number;
  /** Hidden layer sizes; default [128]. */
  hidden?: number[];
  activation?: "relu" | "tanh";
  /** The objective `train` uses by default; default "implicit". */
  objective?: Objective;
  /** Seed of the initial weights; default 0. */
  seed?: number;
}

export type FeedbackEvent = "copy" | "click" | "thumbs_up" | "thumbs_down" | "regenerate";

export interface Observation {
  /** The app's id of the answer. */
  id: string;
  /** Answers shown together share a turn id (a liked one is preferred over the others). */
  turn?: string;
  /** `dim` floats. */
  embedding: Float32Array | number[];
  shown: { position: number; candidates: number };
  events?: FeedbackEvent[];
  dwellMs?: number;
  /** Answer length (characters or tokens). */
  length?: number;
  /** The app's own propensity P(user reacts | shown), if it has one. */
  propensity?: number;
}

export interface ProgressEvent {
  epoch: number;
  epochs: number;
  trainLoss: number;
  valLoss: number | null;
  effectiveSampleSize: number;
  /** epoch / epochs */
  fraction: number;
}

export interface TrainOptions {
  objective?: Objective;
  /** Default 5. */
  epochs?: number;
  /** Default 64. */
  batchSize?: number;
  /** Default 0.01. */
  learningRate?: number;
  /** Default 1e-4. */
  weightDecay?: number;
  /** Share of turns held out for early stopping; default 0.2 (none below 10 observations). */
  validationFraction?: number;
  /** Default 3. */
  patience?: number;
  seed?: number;
  /** Default 0.1. */
  propensityClip?: number;
  /** Called after each epoch; return false to stop. */
  onProgress?: (p: ProgressEvent) => void | boolean;
}

export interface TrainResult {
  objective: Objective;
  examples: number;
  epochs: ProgressEvent[];
  bestEpoch: number;
  stoppedEarly: boolean;
  cancelled: boolean;
  steps: number;
  finalLoss: number | null;
  fellBackToCpu: boolean;
}

export interface SyncOptions {
  /** The sync server's base URL, e.g. "https://example.org/tacit". */
  url: string;
  /** A client token from `tacit-server token create`. */
  token: string;
  /** The model's name on the server; default: the local model's name. */
  model?: string;
  /** L2 bound of a pushed delta (at or under the server's); default 10. */
  clipNorm?: number;
  /** Per-request timeout; default 15000 ms. */
  timeoutMs?: number;
  /** How long one call may wait to retry a failed push before leaving it queued; default 3000 ms. */
  retryBudgetMs?: number;
}

export interface SyncResult {
  /** The global version the local weights now build on. */
  version: number;
  /** Updates the server accepted during this call. */
  pushed: number;
  /** A newer global was pulled and the local weights rebased onto it. */
  pulled: boolean;
  /** Updates still queued (kept in IndexedDB, pushed by a later call, never twice). */
  queued: number;
  /** The server could not be reached (see `reason`); what is queued stays queued. */
  offline: boolean;
  /**
   * Why the server counts as unreachable: no answer, or a refusal the update can outlive
   * (404 before the model exists, 429, 5xx; the update is kept and retried with backoff).
   * null when the server answered.
   */
  reason: string | null;
}

export interface Stats {
  pending: number;
  effectiveSampleSize: number | null;
  lastLoss: number | null;
  trainedExamples: number;
  version: number;
  backend: "webgpu" | "cpu";
  persistent: boolean;
}
"#;
