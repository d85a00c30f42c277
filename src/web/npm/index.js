// The package's entry: the wasm-bindgen glue (`tacit_rm.js`), with `init()` choosing the wasm
// flavour the engine supports. The SIMD build (`+simd128`) scores and trains 2–3× faster on
// the CPU path; engines without WebAssembly SIMD get the baseline build. Both builds share
// the same glue (the package build checks that), so only the .wasm differs.
export * from "./tacit_rm.js";
import initGlue, { initSync as initSyncGlue } from "./tacit_rm.js";

// (module (func (result v128) i32.const 0 i8x16.splat i8x16.popcnt)): valid only where
// WebAssembly SIMD is supported.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15,
  253, 98, 11,
]);

/** Whether this engine runs WebAssembly SIMD (then the SIMD flavour is loaded). */
export function simdSupported() {
  try {
    return WebAssembly.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

/** The file name of the wasm flavour `init()` loads here. */
export function wasmFileName() {
  return simdSupported() ? "tacit_rm_simd_bg.wasm" : "tacit_rm_bg.wasm";
}

/**
 * Loads the module. Without arguments it fetches the flavour of `wasmFileName()` beside this
 * file; pass `{ module_or_path }` (a URL, a Response, bytes or a compiled module) to choose.
 */
export default function init(options) {
  if (options === undefined) {
    options = { module_or_path: new URL(wasmFileName(), import.meta.url) };
  }
  return initGlue(options);
}

/** Synchronous loading from bytes or a compiled module (node: read `wasmFileName()`). */
export function initSync(options) {
  return initSyncGlue(options);
}
