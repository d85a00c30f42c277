//! TypeScript declarations of the options and result objects (added to the generated
//! `.d.ts`). Kept beside the serde types in `options.rs` and `crate::model`; the package
//! build type-checks a usage file against the result (`www/pkg-check.ts` via `tsc`).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/**
 * Stable error codes: `e.code` of every rejected promise or thrown error (a `TacitError`; the
 * package README has a table of what each means). `no_gpu` and `io` come from the native
 * library only; `wasm_load` from `init()` only.
 */
export type ErrorCode =
  | "dim_mismatch" | "non_finite_input" | "empty_input" | "unknown_name" | "invalid_config"
  | "corrupt_weights" | "incompatible_weights" | "invalid_data" | "no_gpu" | "device_lost"
  | "io" | "unknown_option" | "no_webgpu" | "busy" | "closed" | "storage"
  | "network" | "sync_conflict" | "sync_unauthorized" | "sync_rejected" | "wasm_load";

/**
 * How training reads the feedback. Pick by the signals the app logs (AUROC gain over `naive`
 * measured on three simulated-user protocols; the root README's Results section):
 * - several candidates per turn (one `turn` id) and the user copies, picks or likes one of them:
 *   `"pairwise"`: the best or level with the best on every protocol (+0.050 to +0.165);
 * - reactions with a sign on single answers (`copy`/`thumbs_up` and `thumbs_down`/`regenerate`):
 *   `"noise-ips"`, `"dr"` or `"noise"` (+0.04 to +0.12 each);
 * - positive reactions only, and silence caused by exposure (position, scrolling) rather than
 *   by what the answer looks like: `"implicit"` (+0.055; nothing when exposure follows the
 *   content, where it is no better than `naive`);
 * - `"snips"`, `"ips"` (positives weighted by 1/propensity) and `"beta"` (a two-output head:
 *   open the model with `objective: "beta"`) gain little (-0.03 to +0.04); `"naive"` (silence =
 *   dislike) is the baseline.
 */
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
  /**
   * The objective `train` uses by default. "auto" (the default for a new model) picks it per
   * training call from the pending observations by the rule of `Objective`'s list: "pairwise"
   * when at least half of them are in turns of several answers one of which got a positive
   * reaction, else "noise-ips" when any reaction has a sign (thumbs_down, regenerate), else
   * "implicit"; `TrainResult.objective` says which. A stored model keeps its own.
   */
  objective?: Objective | "auto";
  /** Seed of the initial weights; default 0. */
  seed?: number;
  /**
   * The personal part kept beside the shared (synced) head; default "basis" on a head with a
   * hidden layer (the default head has one), "residual" on a linear head (`hidden: []`). It
   * is stored with the weights and never sent by `sync` (see `Personalization`). A stored
   * model keeps the kind it was made with: asking for another is an `incompatible_weights`
   * error.
   */
  personalization?: Personalization;
  /**
   * The replay window: each `train` call trains on the user's most recent `replayTurns`
   * turns, the pending ones and, where they leave room, turns trained on before (kept on the
   * device with the weights, in the same IndexedDB record; never exported by `exportWeights`,
   * never in a `sync` request; `forget` and `reset` empty it). The held-out turns a call
   * validates on are pending ones only. An integer in 0..=1000 (0: no replay, a call trains on
   * the pending observations alone); default 40 for a new model, or the stored model's.
   * Unlike the head options it may change from one `open` to the next (the stored record
   * takes the new value at once). A window of n turns keeps at most 16·n observations.
   */
  replayTurns?: number;
}

/**
 * What stays on the device besides the shared model (the package README compares them):
 * - `"basis"` (default on a head with a hidden layer): a shared taste basis (the shared head's
 *   last hidden layer, learned by everyone) and one coefficient per hidden unit learned on the
 *   device; adapts from a few turns;
 * - `"residual"` (default on a linear head): a personal head whose score is added to the
 *   shared one, with the shared score's weight (`blend`) chosen per user on its own held-out
 *   turns;
 * - `"ditto"`: the same with the blend fixed at 1;
 * - `"mix"`: the user's own whole model beside the crowd's, blended per user;
 * - `"none"`: the shared model alone (a sync replaces the user's taste with the crowd's).
 */
export type Personalization = "none" | "residual" | "ditto" | "mix" | "basis";

export interface ScoreOptions {
  /** The shared (crowd) model's score alone, without the personal part; default false. */
  sharedOnly?: boolean;
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
  /** The part this epoch trained: the personal runs come first, then the shared one. */
  part: "shared" | "personal";
  /** Share of the whole call's planned epochs done (both parts), in (0, 1]; for a progress bar. */
  fraction: number;
}

export interface TrainOptions {
  /** Default: the model's (`OpenOptions.objective`, "auto" by default); see `Objective`. */
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
  /**
   * What the call trains: "both" (default: the personal part on the shared scores, then the
   * shared part with the personal scores held fixed), "personal" (the shared head stays as
   * the last sync left it), or "shared".
   */
  parts?: "both" | "personal" | "shared";
  /**
   * Pull of the personal part toward zero, i.e. toward the shared model (its weight decay),
   * in [0, 1]; default 1.
   */
  personalPull?: number;
  /** Called after each epoch; return false to stop. */
  onProgress?: (p: ProgressEvent) => void | boolean;
}

export interface TrainResult {
  objective: Objective;
  examples: number;
  /** The shared run's epochs (`part: "shared"`); the personal runs report through onProgress only. */
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
  /**
   * On a model the server aggregates securely: how long one call waits for the round to end
   * before leaving it (the update stays queued; the next call learns whether the round counted
   * it, so it is never counted twice). Default 60000 ms, at most 3600000.
   */
  roundWaitMs?: number;
}

/** The secure round a `sync` call took part in, or learned the outcome of. */
export interface SecureRound {
  round: number;
  /**
   * "counted": the round's released sum holds this model's queued updates (they left the queue);
   * "not_counted": it ended without them (too few members stayed, say), and they stay queued for
   * a later round; "busy": a round this call could not join is under way (call again later);
   * "left": the call left before the round ended (`roundWaitMs`).
   */
  outcome: "counted" | "not_counted" | "busy" | "left";
  /** Why a "not_counted" round did not count them; null otherwise. */
  reason: string | null;
}

/** A model's privacy spent so far, as its server's accountant reports it. */
export type PrivacySpent =
  | { dp: false }
  | {
      dp: true;
      /** The ε of (ε, δ)-DP that every release so far, together, satisfies. */
      epsilon: number;
      delta: number;
      /** Releases (aggregation rounds) so far. */
      rounds: number;
      noiseMultiplier: number;
      samplingRate: number;
      /** The ε the server will not exceed: a round that would is refused. */
      budgetEpsilon: number;
    };

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
  /**
   * Bytes of request bodies this call handed to `fetch`: the pushed shared-part deltas, or on a
   * model aggregated securely the round's messages (public keys, encrypted shares, the masked
   * update); never an observation, an embedding or the personal part. A request that failed counts.
   */
  sentBytes: number;
  /**
   * Whether this call sent the update masked (a secure round's input): only on a model the
   * server aggregates securely. A plain push is a clipped delta the server can read.
   */
  masked: boolean;
  /** The secure round this call took part in; null on a model aggregated in plain mode, or with nothing to send. */
  secureRound: SecureRound | null;
  /** What the server says the model has spent under differential privacy; null when it was not asked (offline) or did not answer. */
  privacy: PrivacySpent | null;
}

export interface Stats {
  pending: number;
  /** Trained observations kept in the replay window (`OpenOptions.replayTurns`). */
  replay: number;
  effectiveSampleSize: number | null;
  lastLoss: number | null;
  trainedExamples: number;
  version: number;
  backend: "webgpu" | "cpu";
  persistent: boolean;
  /** The personal part; null for `personalization: "none"`. */
  personal: PersonalStats | null;
  /** Which device served the last `score`/`rank` call and why; null before the first. */
  lastScore: ServedStats | null;
}

/**
 * Where a scoring call ran. Under `backend: "auto"` with a GPU, batches up to a crossover
 * measured at `open` (once per adapter and head shape) run on the CPU path, larger ones on
 * WebGPU; a software adapter (SwiftShader, llvmpipe) serves none. Same numbers either way.
 */
export interface ServedStats {
  device: "cpu" | "webgpu";
  reason: "only-device" | "small-batch" | "large-batch" | "software-adapter" | "device-lost";
  rows: number;
}

/**
 * One model stored by this origin (`RewardModel.list()`): what `open({ name })` restores.
 * Read from small records, not the weights.
 */
export interface ModelInfo {
  name: string;
  dim: number;
  hidden: number[];
  activation: "relu" | "tanh";
  /** "auto" or the objective the model was made with (`OpenOptions.objective`). */
  objective: Objective | "auto";
  personalization: Personalization;
  /** Observations stored and not yet trained on, by any tab. */
  pending: number;
  /**
   * When its weights or sync state were last stored (ms since the epoch); null for a model
   * stored by an earlier version of the package and not opened since.
   */
  updatedAt: number | null;
}

export interface PersonalStats {
  kind: Personalization;
  /** The weight of the shared score in `blend·shared + personal`. */
  blend: number;
  /**
   * The personal part's share of the score, Σ|personal| / (Σ|blend·shared| + Σ|personal|) on
   * the last training call's rows: 0 = the crowd's model, 1 = the user's own.
   */
  share: number;
  /** Observations the personal part has trained on. */
  trainedExamples: number;
}
"#;
