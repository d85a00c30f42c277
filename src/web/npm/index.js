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

// Each flavour as a literal `new URL("./…", import.meta.url)`: the one form bundlers (Vite,
// webpack 5, Parcel, Rollup with its URL plugin) see, copy the file for and rewrite. A file
// name computed at run time is invisible to them: they would ship neither file, or one.
function bundledWasm(simd) {
  return simd
    ? new URL("./tacit_rm_simd_bg.wasm", import.meta.url)
    : new URL("./tacit_rm_bg.wasm", import.meta.url);
}

/**
 * What every failure of the package is: an `Error` named "TacitError" with a stable `code`
 * (and, for loading failures, a `hint` saying what to change). The library's own errors are
 * made on the Rust side as plain `Error`s with that name and a `code` (src/web/error.rs);
 * `instanceof TacitError` recognises them by that shape, and so recognises the errors of a
 * second copy of the package too (a bundler may load two).
 */
export class TacitError extends Error {
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TacitError";
    this.code = code;
    if (options.hint !== undefined) this.hint = options.hint;
  }

  static [Symbol.hasInstance](value) {
    // Subclasses keep the ordinary prototype check.
    if (this !== TacitError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return isTacitError(value);
  }
}

/** Whether `value` is an error of this package (then `value.code` is an `ErrorCode`). */
export function isTacitError(value) {
  return value instanceof Error && value.name === "TacitError" && typeof value.code === "string";
}

const HINT_NODE =
  'node cannot fetch files: load the bytes with initSync({ module: readFileSync(new URL(wasmFileName(), import.meta.resolve("tacit-rm"))) })';
const HINT_HTML =
  "the server answered with a page, not the .wasm: the bundler did not serve the package's " +
  'files. Vite 8 does; with Vite 7 or older add optimizeDeps: { exclude: ["tacit-rm"] } to ' +
  "vite.config. Otherwise serve tacit_rm_bg.wasm and tacit_rm_simd_bg.wasm beside the bundle, " +
  "or pass init({ module_or_path: url })";
const HINT_MISSING =
  "serve both tacit_rm_bg.wasm and tacit_rm_simd_bg.wasm beside the module, or pass init({ module_or_path: url })";
const HINT_CORRUPT =
  "serve this package's .wasm unchanged (no text transform or proxy rewriting), with Content-Type application/wasm";

function loadError(message, hint, cause) {
  return new TacitError("wasm_load", `${message} (${hint})`, { hint, cause });
}

function describe(e) {
  return e instanceof Error ? e.message : String(e);
}

// Fetches `url` ourselves, so that a missing file or a bundler's HTML fallback page is named
// as such instead of surfacing as a compile error about magic bytes.
async function fetchWasm(url) {
  if (url.protocol === "file:") {
    throw loadError(`cannot fetch ${url}`, HINT_NODE);
  }
  let response;
  try {
    response = await fetch(url);
  } catch (cause) {
    throw loadError(`fetching ${url} failed: ${describe(cause)}`, HINT_MISSING, cause);
  }
  if (!response.ok) {
    throw loadError(`${url} answered HTTP ${response.status}`, HINT_MISSING);
  }
  if (/^text\/html/i.test(response.headers.get("content-type") ?? "")) {
    throw loadError(`${url} is an HTML page, not WebAssembly`, HINT_HTML);
  }
  return response;
}

// `init`'s argument: nothing or `{}` (the flavour beside this file), `{ module_or_path }`, or
// the source itself (the glue's older positional form).
function requestedSource(options) {
  if (options === undefined || options === null) return undefined;
  const bag = typeof options === "object" && Object.getPrototypeOf(options) === Object.prototype;
  return bag ? options.module_or_path : options;
}

function toUrl(source) {
  try {
    return new URL(source, globalThis.document?.baseURI ?? globalThis.location?.href);
  } catch (cause) {
    throw loadError(`${JSON.stringify(source)} is not a URL`, HINT_MISSING, cause);
  }
}

async function load(options) {
  let flavour = "custom";
  let source;
  try {
    source = await requestedSource(options);
  } catch (cause) {
    throw loadError(`module_or_path rejected: ${describe(cause)}`, HINT_MISSING, cause);
  }
  if (source === undefined) {
    const simd = simdSupported();
    flavour = simd ? "simd" : "baseline";
    source = bundledWasm(simd);
  }
  if (typeof source === "string") source = toUrl(source);
  if (source instanceof URL) source = await fetchWasm(source);
  try {
    await initGlue({ module_or_path: source });
  } catch (cause) {
    throw loadError(`the WebAssembly did not compile: ${describe(cause)}`, HINT_CORRUPT, cause);
  }
  return Object.freeze({ flavour });
}

let loaded;

/**
 * Loads the module. Without arguments it fetches the flavour this engine supports from beside
 * this file; `{ module_or_path }` (a URL, a Response, bytes or a compiled module) loads that
 * instead. Resolves to `{ flavour }`; rejects with a `TacitError` of code `wasm_load`. Later
 * calls return the first call's result (one module per page or worker).
 */
export default function init(options) {
  if (loaded === undefined) {
    loaded = load(options);
    // A failed load may be retried (e.g. after the app fixes its URL).
    loaded.catch(() => {
      loaded = undefined;
    });
  }
  return loaded;
}

/** Synchronous loading from bytes or a compiled module (node: read `wasmFileName()`). */
export function initSync(options) {
  try {
    initSyncGlue(options);
  } catch (cause) {
    throw loadError(`the WebAssembly did not compile: ${describe(cause)}`, HINT_CORRUPT, cause);
  }
  const result = Object.freeze({ flavour: "custom" });
  // A later `init()` finds the module loaded (as the glue's own `init` would).
  loaded ??= Promise.resolve(result);
  return result;
}
