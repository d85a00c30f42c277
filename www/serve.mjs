// The demo's launcher (what `cargo xtask demo` runs): starts the sync server on an embedded
// SQLite file, makes tokens with its CLI, creates the demo model on it if missing, and serves
// the page on one origin — www/ at /, the npm package at /pkg/, the sync API (/v1/…,
// /healthz) proxied to the sync server, so the page syncs without cross-origin requests; and
// for the page's MiniLM embeddings, transformers.js and onnxruntime-web's files from www's
// node_modules at /vendor/ and the model files (target/demo/models/) at /models/.
// Ctrl-C or SIGTERM stops both.
//
//   node www/serve.mjs --server target/debug/tacit-server --db sqlite://target/demo/demo.db [--port 8080]
import { spawn, execFileSync } from "node:child_process";
import { createServer, request as httpRequest } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { readFileSync, mkdirSync } from "node:fs";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = "demo";
/** The page's model (www/app.js): the server's starting global has the same head. */
export const DEMO_SPEC = { dim: 384, hidden: [], seed: 0 };
// The shared model of the page's "Both users and sync" panel: a hidden layer, the taste basis
// the two users' personal parts (`personalization: "basis"`) read.
const USERS_MODEL = "demo-users";
export const USERS_SPEC = { dim: 384, hidden: [16], seed: 0 };
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".ts": "text/plain; charset=utf-8",
};
/** Where the demo keeps the MiniLM files `cargo xtask demo` installs. */
export const MODELS_DIR = join(ROOT, "target/demo/models");
// URL prefixes served from folders other than www/.
const mounts = (models) => [
  ["/pkg/", join(ROOT, "pkg")],
  ["/vendor/transformers/", join(ROOT, "www/node_modules/@huggingface/transformers/dist")],
  ["/vendor/ort/", join(ROOT, "www/node_modules/onnxruntime-web/dist")],
  ["/models/", models],
];

function lastLine(buffer) {
  return buffer.toString().trim().split("\n").at(-1);
}

/** A new token made with the server's own CLI (it prints the token as its last line). */
export function createToken(bin, db, client, admin = false) {
  return lastLine(
    execFileSync(bin, ["token", "create", "--db", db, "--client", client, ...(admin ? ["--admin"] : [])], {
      stdio: ["ignore", "pipe", "ignore"],
    }),
  );
}

/** The sync server as a child process on a free loopback port; resolves once it listens. */
export async function startSyncServer(bin, db, extraArgs = []) {
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--db", db, ...extraArgs], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`tacit-server exited (${code}) before listening`)));
  });
  return { child, url };
}

/** Creates the model `name` of `spec` on the sync server unless it is there already. */
async function ensureModel(syncUrl, adminToken, name, spec) {
  const meta = await fetch(`${syncUrl}/v1/models/${name}/meta`, {
    headers: { authorization: `Bearer ${adminToken}` },
  });
  if (meta.status === 200) return;
  const pkg = await import(pathToFileURL(join(ROOT, "pkg/index.js")).href);
  pkg.initSync({ module: readFileSync(join(ROOT, "pkg", pkg.wasmFileName())) });
  const rm = await pkg.RewardModel.open({ persist: false, backend: "cpu", ...spec });
  const put = await fetch(`${syncUrl}/v1/models/${name}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${adminToken}` },
    body: rm.exportWeights(),
  });
  if (put.status >= 300) throw new Error(`creating the model ${name}: ${put.status} ${await put.text()}`);
}

function proxy(req, res, syncUrl) {
  const target = new URL(req.url, syncUrl);
  const upstream = httpRequest(
    target,
    { method: req.method, headers: { ...req.headers, host: target.host } },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" });
    res.end(JSON.stringify({ code: "bad_gateway", message: "the sync server is not answering" }));
  });
  req.pipe(upstream);
}

async function serveFile(req, res, models) {
  let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  if (path.includes("..")) {
    res.writeHead(400).end();
    return;
  }
  const mount = mounts(models).find(([prefix]) => path.startsWith(prefix));
  const file = mount ? join(mount[1], path.slice(mount[0].length)) : join(ROOT, "www", path === "/" ? "index.html" : path);
  try {
    const headers = { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" };
    // The page asks with HEAD whether the model is there: no need to read 23 MB for that.
    if (req.method === "HEAD") {
      const info = await stat(file);
      if (!info.isFile()) throw new Error("not a file");
      res.writeHead(200, { ...headers, "content-length": info.size }).end();
      return;
    }
    const body = await readFile(file);
    res.writeHead(200, headers);
    res.end(body);
  } catch {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
}

/**
 * Starts the demo: the sync server on `db`, the page on `port` (0 = any free port), the MiniLM
 * files from `models` (a folder without them leaves the page on the hashing featurizer).
 * Resolves to { url, pageUrl (with the client token), syncUrl, adminToken, close }.
 */
export async function startDemo({ server, db, port = 0, models = MODELS_DIR }) {
  if (db.startsWith("sqlite://")) mkdirSync(dirname(db.slice("sqlite://".length)), { recursive: true });
  const adminToken = createToken(server, db, "demo-admin", true);
  const clientToken = createToken(server, db, "demo-page");
  // Every push closes a round, so that a Sync click shows the merged version at once.
  const sync = await startSyncServer(server, db, ["--round-updates", "1"]);
  try {
    await ensureModel(sync.url, adminToken, MODEL, DEMO_SPEC);
    await ensureModel(sync.url, adminToken, USERS_MODEL, USERS_SPEC);
  } catch (e) {
    sync.child.kill("SIGTERM");
    throw e;
  }
  const http = createServer((req, res) => {
    if (req.url.startsWith("/v1/") || req.url === "/healthz") proxy(req, res, sync.url);
    else serveFile(req, res, models);
  });
  await new Promise((resolve) => http.listen(port, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${http.address().port}/`;
  return {
    url,
    pageUrl: `${url}#token=${clientToken}`,
    syncUrl: sync.url,
    adminToken,
    clientToken,
    async close() {
      await new Promise((r) => http.close(r));
      http.closeAllConnections?.();
      if (sync.child.exitCode === null) {
        sync.child.kill("SIGTERM");
        await new Promise((r) => sync.child.on("exit", r));
      }
    },
  };
}

// Run directly: the demo until Ctrl-C / SIGTERM.
if (process.argv[1] && fileURLToPath(import.meta.url) === normalize(process.argv[1])) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const demo = await startDemo({
    server: arg("server", join(ROOT, "target/debug/tacit-server")),
    db: arg("db", `sqlite://${join(ROOT, "target/demo/demo.db")}`),
    port: Number(arg("port", "8080")),
  });
  console.log(`tacit-rm demo: open ${demo.pageUrl}`);
  console.log(`(sync server at ${demo.syncUrl}; Ctrl-C stops both)`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await demo.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
