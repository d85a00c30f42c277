// examples/react-hook/ (Vite + React, the `useRewardModel` hook) as a user builds it: the
// package installed from its packed tarball into a fresh app, React and its Vite plugin the
// versions tests/js pins, the example's own vite.config.js. The production build (served by
// `vite preview`) and the dev server (where React's StrictMode mounts, unmounts and remounts
// the hook, so the page scores with the model of the second mount) are loaded in headless
// Chromium on both wasm flavours; the scores must equal the JS reference of the page's weights.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { build, createServer, preview } from "vite";

import { launch } from "./lib/browser.mjs";
import { FLAVOUR_FILE, exampleApp, scoreExample, assertScored } from "./lib/example-app.mjs";

let app;
let browser;

const vite = (extra) => ({
  root: app.dir,
  configFile: join(app.dir, "vite.config.js"),
  logLevel: "warn",
  clearScreen: false,
  ...extra,
});

before(async () => {
  app = exampleApp("react-hook", ["index.html", "src", "vite.config.js"], {
    linked: ["react", "react-dom", "scheduler", "@vitejs/plugin-react"],
  });
  browser = await launch({ webgpu: false });
});

after(async () => {
  await browser?.close();
  app?.remove();
});

test("the React hook example builds, and the built page scores on each flavour", async () => {
  const outDir = join(app.dir, "dist");
  await build(vite({ build: { outDir, emptyOutDir: true } }));
  const assets = readdirSync(join(outDir, "assets"));
  const wasm = assets.filter((f) => f.endsWith(".wasm"));
  assert.equal(wasm.length, 2, `emitted: ${assets}`);
  for (const re of Object.values(FLAVOUR_FILE)) assert.ok(wasm.some((f) => re.test(`/${f}`)), `${re} in ${wasm}`);

  const server = await preview(vite({ build: { outDir }, preview: { host: "127.0.0.1", port: 0 } }));
  try {
    const url = server.resolvedUrls.local[0];
    for (const flavour of ["simd", "baseline"]) assertScored(await scoreExample(browser, url, flavour), flavour);
  } finally {
    await server.close();
  }
});

test("the React hook example scores on the dev server (StrictMode remounts the hook)", async () => {
  const server = await createServer(vite({ server: { host: "127.0.0.1", port: 0 } }));
  await server.listen();
  try {
    const url = server.resolvedUrls.local[0];
    for (const flavour of ["simd", "baseline"]) {
      const got = await scoreExample(browser, url, flavour);
      assert.ok(
        got.requests.some((p) => p.startsWith("/node_modules/.vite/deps/react")),
        `React came pre-bundled: ${got.requests}`,
      );
      assertScored(got, flavour);
    }
  } finally {
    await server.close();
  }
});
