export * from "./tacit_rm.js";
import type { InitInput, InitOutput, SyncInitInput } from "./tacit_rm.js";

/** Whether this engine runs WebAssembly SIMD (then the SIMD flavour is loaded). */
export function simdSupported(): boolean;
/** The file name of the wasm flavour `init()` loads here. */
export function wasmFileName(): "tacit_rm_simd_bg.wasm" | "tacit_rm_bg.wasm";
/** Loads the module; without arguments, the flavour of `wasmFileName()` beside this file. */
export default function init(
  options?: { module_or_path: InitInput | Promise<InitInput> },
): Promise<InitOutput>;
/** Synchronous loading from bytes or a compiled module. */
export function initSync(options: { module: SyncInitInput }): InitOutput;
