// The real sync server (`tacit-server`, built by cargo) on loopback over a SQLite file in a
// temporary directory, with an admin and client tokens made by its own CLI.
import { createToken, startSyncServer } from "../../../www/serve.mjs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const SERVER_BIN =
  process.env.TACIT_SERVER_BIN ?? fileURLToPath(new URL("../../../target/debug/tacit-server", import.meta.url));

/** Starts a server; resolves to { url, db, adminToken, token(name, admin), putModel, meta, close }. */
export async function startServer(extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), "tacit-sync-"));
  const db = `sqlite://${join(dir, "server.db")}`;
  const token = (client, admin = false) => createToken(SERVER_BIN, db, client, admin);
  const adminToken = token("admin", true);
  const { child, url } = await startSyncServer(SERVER_BIN, db, extraArgs);
  return {
    url,
    db,
    adminToken,
    token,
    /** PUT a model's weights as the admin. */
    async putModel(name, bytes) {
      const r = await fetch(`${url}/v1/models/${name}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${adminToken}` },
        body: bytes,
      });
      if (r.status >= 300) throw new Error(`PUT ${name}: ${r.status} ${await r.text()}`);
    },
    async meta(name, clientToken) {
      const r = await fetch(`${url}/v1/models/${name}/meta`, { headers: { authorization: `Bearer ${clientToken}` } });
      return r.json();
    },
    async close() {
      child.kill("SIGTERM");
      await new Promise((r) => child.on("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
