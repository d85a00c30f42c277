export * from "./tacit_rm.js";
import type { ErrorCode, InitInput, SyncInitInput } from "./tacit_rm.js";

/** Whether this engine runs WebAssembly SIMD (then the SIMD flavour is loaded). */
export function simdSupported(): boolean;
/** The file name of the wasm flavour `init()` loads here. */
export function wasmFileName(): "tacit_rm_simd_bg.wasm" | "tacit_rm_bg.wasm";

export interface InitOptions {
  /**
   * Where to load the WebAssembly from instead of the flavour beside this module: a URL (then
   * serve that flavour's file), a fetch `Response`, the bytes or a compiled module.
   */
  module_or_path?: InitInput | Promise<InitInput>;
}

/** What `init` / `initSync` loaded. */
export interface Loaded {
  /**
   * `"simd"` or `"baseline"`: the build `init()` picked by feature detection; `"custom"`: the
   * caller's `module_or_path` or `initSync` bytes.
   */
  readonly flavour: "simd" | "baseline" | "custom";
}

/**
 * Loads the module (once per page or worker; later calls return the first call's result).
 * Rejects with a `TacitError` of code `"wasm_load"` whose `hint` says what to change (a
 * missing file, a bundler's HTML fallback page, a node process that should use `initSync`).
 */
export default function init(options?: InitOptions): Promise<Loaded>;
/** Synchronous loading from bytes or a compiled module (node: read `wasmFileName()`). */
export function initSync(options: { module: SyncInitInput }): Loaded;

/**
 * What every failure of the package is (every rejected promise and thrown error): branch on
 * `code`, never on the message. `instanceof TacitError` holds for the errors the library
 * throws (made in its WebAssembly as `Error`s with this name and a `code`) and for those of
 * another copy of the package; `isTacitError(e)` is the same test as a type guard.
 */
export class TacitError extends Error {
  constructor(code: ErrorCode, message: string, options?: { hint?: string; cause?: unknown });
  readonly name: "TacitError";
  readonly code: ErrorCode;
  /** What to change, for loading failures (`wasm_load`). */
  readonly hint?: string;
}

/** Whether `value` is an error of this package (narrows `catch (e)`'s `unknown`). */
export function isTacitError(value: unknown): value is TacitError;
