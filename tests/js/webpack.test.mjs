// examples/webpack/ as a user builds it: the package installed from its packed tarball (`npm
// pack` of pkg/) into a fresh app, built by webpack 5 (production mode) with the example's own
// webpack.config.js, `dist/` served on loopback and loaded in headless Chromium on both wasm
// flavours (the baseline one forced as in vite.test.mjs). The page's scores must equal the JS
// reference of its exported weights.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import webpack from "webpack";

import { launch } from "./lib/browser.mjs";
import { serve } from "./lib/server.mjs";
import { FLAVOUR_FILE, exampleApp, scoreExample, assertScored } from "./lib/example-app.mjs";

let app;
let browser;

before(async () => {
  // The config imports html-webpack-plugin: linked from tests/js, where the lockfile pins it.
  app = exampleApp("webpack", ["index.html", "main.js", "webpack.config.js"], { linked: ["html-webpack-plugin"] });
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  app?.remove();
});

/** Runs webpack with `config`; resolves to its stats, rejects on any error or warning. */
function compile(config) {
  return new Promise((resolve, reject) => {
    webpack(config, (err, stats) => {
      if (err) return reject(err);
      const { errors, warnings } = stats.toJson({ all: false, errors: true, warnings: true });
      if (errors.length || warnings.length) {
        return reject(new Error(`webpack: ${[...errors, ...warnings].map((e) => e.message).join("\n")}`));
      }
      resolve(stats);
    });
  });
}

test("webpack 5 emits both wasm flavours, and the built page scores on each", async () => {
  const { default: config } = await import(pathToFileURL(join(app.dir, "webpack.config.js")).href);
  const started = performance.now();
  await compile(config);
  console.log(`webpack production build: ${Math.round(performance.now() - started)} ms`);

  const dist = join(app.dir, "dist");
  const files = readdirSync(dist);
  const wasm = files.filter((f) => f.endsWith(".wasm"));
  assert.equal(wasm.length, 2, `emitted: ${files}`);
  for (const re of Object.values(FLAVOUR_FILE)) assert.ok(wasm.some((f) => re.test(`/${f}`)), `${re} in ${wasm}`);
  assert.ok(files.includes("index.html"), `emitted: ${files}`);

  const server = await serve(dist);
  try {
    for (const flavour of ["simd", "baseline"]) {
      const got = await scoreExample(browser, `${server.url}/index.html`, flavour);
      // The wasm came from the bundle's own output, not from node_modules or beside the source.
      assert.ok(wasm.includes(got.wasm[0].slice(1)), `${got.wasm[0]} is one of the emitted ${wasm}`);
      assertScored(got, flavour);
    }
  } finally {
    await server.close();
  }
});
