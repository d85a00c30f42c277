// What the bundler tests share: an example of examples/ set up as a user's app (the package
// installed from its packed tarball, `npm pack` of pkg/), the page loaded in Chromium on a
// chosen wasm flavour, and the checks that it scored with the flavour it says.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { newPage } from "./browser.mjs";
import { referenceScores, maxRelDiff } from "./reference.mjs";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const JS_MODULES = join(ROOT, "tests/js/node_modules");

// The flavour's file in a request path: `tacit_rm_simd_bg.wasm` in Vite's dev server,
// `assets/tacit_rm_simd_bg-<hash>.wasm` once built (examples/webpack names its assets the
// same way; webpack's default is the hash alone).
export const FLAVOUR_FILE = { simd: /\/tacit_rm_simd_bg[-.][^/]*wasm$/, baseline: /\/tacit_rm_bg[-.][^/]*wasm$/ };

/**
 * A fresh app in a temporary folder: `files` of examples/`example` copied in (folders too),
 * the packed tarball installed (it has no dependencies: nothing is fetched from a registry),
 * and `linked` packages (e.g. react) linked from tests/js/node_modules, where the lockfile pins
 * them. Returns { dir, remove }.
 */
export function exampleApp(example, files, { linked = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `tacit-rm-${example}-`));
  const source = join(ROOT, "examples", example);
  const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: join(ROOT, "pkg") }));
  for (const file of files) cpSync(join(source, file), join(dir, file), { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "example-under-test", private: true, type: "module" }));
  execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", `./${packed[0].filename}`], {
    cwd: dir,
    stdio: ["ignore", "ignore", "inherit"],
  });
  for (const name of linked) {
    const at = join(dir, "node_modules", name);
    mkdirSync(dirname(at), { recursive: true });
    symlinkSync(join(JS_MODULES, name), at, "dir");
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Loads the example at `url` with the given flavour (the baseline one forced the way an engine
 * without WebAssembly SIMD would: `WebAssembly.validate` refuses the entry's SIMD probe) and
 * waits for the page's `window.example`. Returns what it scored and the paths it requested.
 */
export async function scoreExample(browser, url, flavour) {
  const page = await newPage(browser);
  if (flavour === "baseline") {
    await page.addInitScript(() => {
      WebAssembly.validate = () => false;
    });
  }
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname));
  await page.goto(url);
  await page.waitForFunction(() => window.example !== undefined, null, { timeout: 60_000 }).catch(async (e) => {
    // Say what the page showed and logged, not only that it timed out.
    const status = await page.textContent("#status").catch(() => null);
    throw new Error(`${url} (${flavour}): no window.example: ${e.message}; #status ${JSON.stringify(status)}; errors ${JSON.stringify(page.errors)}`);
  });
  const shown = await page.evaluate(() => {
    const { error, flavour, rm, embeddings, scores } = window.example;
    if (error) return { error };
    return {
      flavour,
      dim: rm.dim,
      x: Array.from(embeddings),
      scores: Array.from(scores),
      weights: Array.from(rm.exportWeights()),
      status: document.getElementById("status").textContent,
      rows: document.querySelectorAll("#ranking li").length,
    };
  });
  assert.equal(shown.error, undefined, shown.error);
  assert.deepEqual(page.errors, []);
  await page.close();
  return { ...shown, wasm: requests.filter((p) => p.endsWith(".wasm")), requests };
}

/**
 * The page fetched exactly the flavour's .wasm, shows `answers` ranked rows and its status
 * line, and its scores equal the JS reference of its exported weights.
 */
export function assertScored(got, flavour, answers = 4) {
  assert.equal(got.flavour, flavour);
  assert.equal(got.wasm.length, 1, `one .wasm fetched: ${got.wasm}`);
  assert.match(got.wasm[0], FLAVOUR_FILE[flavour]);
  assert.equal(got.scores.length, answers);
  assert.equal(got.rows, answers);
  assert.match(got.status, new RegExp(`^Scored ${answers} answers on cpu \\(${flavour} WebAssembly\\)\\.$`));
  const reference = referenceScores(new Uint8Array(got.weights), new Float32Array(got.x), got.dim);
  assert.ok(maxRelDiff(got.scores, reference) < 1e-5, `scores ${got.scores} vs reference ${reference}`);
}
