// examples/vite/ as a user builds it: the package installed from its packed tarball (`npm
// pack` of pkg/) into a fresh app, then Vite's production build (served by `vite preview`) and
// its dev server (which pre-bundles the package into node_modules/.vite/deps/), each loaded in
// headless Chromium on both wasm flavours. The baseline flavour is forced the way an engine
// without WebAssembly SIMD would: `WebAssembly.validate` refuses the entry's SIMD probe. The
// page's scores must equal the JS reference of its exported weights.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, createServer, preview } from "vite";

import { launch, newPage } from "./lib/browser.mjs";
import { referenceScores, maxRelDiff } from "./lib/reference.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const EXAMPLE = join(ROOT, "examples/vite");
// The flavour's file in a request path: `tacit_rm_simd_bg.wasm` in dev,
// `assets/tacit_rm_simd_bg-<hash>.wasm` once built.
const FLAVOUR_FILE = { simd: /\/tacit_rm_simd_bg[-.][^/]*wasm$/, baseline: /\/tacit_rm_bg[-.][^/]*wasm$/ };

let app;
let browser;

// Vite's options for the app: no config file, as the example has none to need.
const vite = (extra) => ({ root: app, configFile: false, logLevel: "warn", clearScreen: false, ...extra });

before(async () => {
  app = mkdtempSync(join(tmpdir(), "tacit-rm-vite-"));
  const packed = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--pack-destination", app], { cwd: join(ROOT, "pkg") }),
  );
  for (const file of ["index.html", "main.js"]) cpSync(join(EXAMPLE, file), join(app, file));
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "example-under-test", private: true, type: "module" }));
  // The tarball has no dependencies: nothing to fetch from a registry.
  execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", `./${packed[0].filename}`], {
    cwd: app,
    stdio: ["ignore", "ignore", "inherit"],
  });
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  if (app) rmSync(app, { recursive: true, force: true });
});

/** Loads the example at `url` with the given flavour; returns what it scored and fetched. */
async function scoreExample(url, flavour) {
  const page = await newPage(browser);
  if (flavour === "baseline") {
    await page.addInitScript(() => {
      WebAssembly.validate = () => false;
    });
  }
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname));
  await page.goto(url);
  await page.waitForFunction(() => window.example !== undefined, null, { timeout: 60_000 });
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

function assertScored(got, flavour) {
  assert.equal(got.flavour, flavour);
  assert.equal(got.wasm.length, 1, `one .wasm fetched: ${got.wasm}`);
  assert.match(got.wasm[0], FLAVOUR_FILE[flavour]);
  assert.equal(got.scores.length, 4);
  assert.equal(got.rows, 4);
  assert.match(got.status, new RegExp(`^Scored 4 answers on cpu \\(${flavour} WebAssembly\\)\\.$`));
  const reference = referenceScores(new Uint8Array(got.weights), new Float32Array(got.x), got.dim);
  assert.ok(maxRelDiff(got.scores, reference) < 1e-5, `scores ${got.scores} vs reference ${reference}`);
}

test("vite build emits both wasm flavours, and the built page scores on each", async () => {
  const outDir = join(app, "dist");
  await build(vite({ build: { outDir, emptyOutDir: true } }));
  const wasm = readdirSync(join(outDir, "assets")).filter((f) => f.endsWith(".wasm"));
  assert.equal(wasm.length, 2, `emitted: ${wasm}`);
  for (const re of Object.values(FLAVOUR_FILE)) assert.ok(wasm.some((f) => re.test(`/${f}`)), `${re} in ${wasm}`);

  const server = await preview(vite({ build: { outDir }, preview: { host: "127.0.0.1", port: 0 } }));
  try {
    const url = server.resolvedUrls.local[0];
    for (const flavour of ["simd", "baseline"]) assertScored(await scoreExample(url, flavour), flavour);
  } finally {
    await server.close();
  }
});

test("the vite dev server serves the pre-bundled package with its wasm, on each flavour", async () => {
  const server = await createServer(vite({ server: { host: "127.0.0.1", port: 0 } }));
  await server.listen();
  try {
    const url = server.resolvedUrls.local[0];
    for (const flavour of ["simd", "baseline"]) {
      const got = await scoreExample(url, flavour);
      // The case that broke before: the entry runs from Vite's pre-bundled copy.
      assert.ok(
        got.requests.some((p) => p.startsWith("/node_modules/.vite/deps/tacit-rm")),
        `the pre-bundled package was loaded: ${got.requests}`,
      );
      assertScored(got, flavour);
    }
  } finally {
    await server.close();
  }
});
