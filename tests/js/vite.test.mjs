// examples/vite/ as a user builds it: the package installed from its packed tarball (`npm
// pack` of pkg/) into a fresh app, then Vite's production build (served by `vite preview`) and
// its dev server (which pre-bundles the package into node_modules/.vite/deps/), each loaded in
// headless Chromium on both wasm flavours. The baseline flavour is forced the way an engine
// without WebAssembly SIMD would: `WebAssembly.validate` refuses the entry's SIMD probe. The
// page's scores must equal the JS reference of its exported weights.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { build, createServer, preview } from "vite";

import { launch } from "./lib/browser.mjs";
import { FLAVOUR_FILE, exampleApp, scoreExample, assertScored } from "./lib/example-app.mjs";

let app;
let browser;

// Vite's options for the app: no config file, as the example has none to need.
const vite = (extra) => ({ root: app.dir, configFile: false, logLevel: "warn", clearScreen: false, ...extra });

before(async () => {
  app = exampleApp("vite", ["index.html", "main.js"]);
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  app?.remove();
});

test("vite build emits both wasm flavours, and the built page scores on each", async () => {
  const outDir = join(app.dir, "dist");
  await build(vite({ build: { outDir, emptyOutDir: true } }));
  const wasm = readdirSync(join(outDir, "assets")).filter((f) => f.endsWith(".wasm"));
  assert.equal(wasm.length, 2, `emitted: ${wasm}`);
  for (const re of Object.values(FLAVOUR_FILE)) assert.ok(wasm.some((f) => re.test(`/${f}`)), `${re} in ${wasm}`);

  const server = await preview(vite({ build: { outDir }, preview: { host: "127.0.0.1", port: 0 } }));
  try {
    const url = server.resolvedUrls.local[0];
    for (const flavour of ["simd", "baseline"]) assertScored(await scoreExample(browser, url, flavour), flavour);
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
      const got = await scoreExample(browser, url, flavour);
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
