// webpack 5 handles the package's `new URL("./….wasm", import.meta.url)` expressions itself
// (asset modules): both .wasm files are emitted and their URLs rewritten, with no loader or
// rule. This config only names the entry and the page, and keeps the assets' file names
// readable (webpack's default is the content hash alone).
import HtmlWebpackPlugin from "html-webpack-plugin";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

export default {
  mode: "production",
  context: here("."),
  entry: "./main.js",
  output: {
    path: here("./dist/"),
    filename: "[name].[contenthash].js",
    assetModuleFilename: "[name]-[contenthash][ext]",
    clean: true,
  },
  plugins: [new HtmlWebpackPlugin({ template: "./index.html" })],
  // webpack's size hint counts both .wasm files as if the page loaded them up front: it loads
  // one of the two (the flavour the engine supports), after the script runs. The hint stays on
  // for the JS.
  performance: { assetFilter: (file) => !file.endsWith(".wasm") },
};
