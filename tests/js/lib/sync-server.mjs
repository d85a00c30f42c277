// The real sync server (`tacit-server`, built by cargo) on loopback over a SQLite file in a
// temporary directory, or over a fresh database of the Postgres cluster that `cargo xtask test`
// starts (`TACIT_TEST_POSTGRES_URL`), with an admin and client tokens made by its own CLI.
import { createToken, startSyncServer } from "../../../www/serve.mjs";
import { psql } from "./stored-rows.mjs";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const SERVER_BIN =
  process.env.TACIT_SERVER_BIN ?? fileURLToPath(new URL("../../../target/debug/tacit-server", import.meta.url));

export const POSTGRES_URL = "TACIT_TEST_POSTGRES_URL";

/**
 * The databases a server test runs on: SQLite always; Postgres where `cargo xtask test` named its
 * cluster. `{ name, skip }`: `skip` is a reason (the test is reported as skipped, not passed)
 * where no cluster is named; under CI or `TACIT_REQUIRE_POSTGRES` that is a failure instead, so
 * that a Postgres test can never pass by not running.
 */
export function databases() {
  const postgres = { name: "postgres", skip: false };
  if (!process.env[POSTGRES_URL]) {
    if (process.env.CI || process.env.TACIT_REQUIRE_POSTGRES) {
      throw new Error(`${POSTGRES_URL} is not set but CI / TACIT_REQUIRE_POSTGRES requires the Postgres tests`);
    }
    postgres.skip = `set ${POSTGRES_URL} to a Postgres cluster (cargo xtask test does)`;
  }
  return [{ name: "sqlite", skip: false }, postgres];
}

/** A fresh database: `{ url, drop }`. */
function freshDatabase(kind, dir) {
  if (kind === "sqlite") return { url: `sqlite://${join(dir, "server.db")}`, drop() {} };
  const admin = process.env[POSTGRES_URL];
  if (!admin) throw new Error(`${POSTGRES_URL} is not set`);
  const name = `js_${randomBytes(6).toString("hex")}_${process.pid}`;
  psql(admin, `CREATE DATABASE ${name}`);
  return {
    url: `${admin.slice(0, admin.lastIndexOf("/"))}/${name}`,
    drop: () => psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

/**
 * Starts a server over a fresh database (`database`: "sqlite", the default, or "postgres");
 * resolves to { url, db, adminToken, token(name, admin), putModel, meta, close }.
 */
export async function startServer(extraArgs = [], { database = "sqlite" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "tacit-sync-"));
  const fresh = freshDatabase(database, dir);
  const db = fresh.url;
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
      fresh.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
