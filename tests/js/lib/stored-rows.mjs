// Every value of every row of the sync server's database, whichever database it runs on: a
// SQLite file read with Python's sqlite3 module (node 20 has no SQLite of its own; python3 is
// already a dependency of `cargo xtask setup`), or a Postgres database read with `psql` (part of
// the postgresql package `setup` installs). Blobs come back as their bytes, text and numbers as
// the UTF-8 bytes of their text.
import { execFileSync } from "node:child_process";

const SQLITE_DUMP = `
import base64, json, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
out = []
for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
    for row in db.execute('SELECT * FROM "%s"' % table.replace('"', '""')):
        for value in row:
            if value is None:
                continue
            raw = value if isinstance(value, bytes) else str(value).encode()
            out.append([table, base64.b64encode(raw).decode()])
print(json.dumps(out))
`;

/** `[{ table, bytes }]` for every non-null value in the database at `url` (sqlite:// or postgres://). */
export function storedValues(url) {
  if (url.startsWith("sqlite://")) return sqliteValues(url.slice("sqlite://".length));
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) return postgresValues(url);
  throw new Error(`no reader for the database ${url}`);
}

function sqliteValues(path) {
  const rows = JSON.parse(execFileSync("python3", ["-c", SQLITE_DUMP, path], { maxBuffer: 1 << 28 }).toString());
  return rows.map(([table, b64]) => ({ table, bytes: new Uint8Array(Buffer.from(b64, "base64")) }));
}

/** Runs one statement with psql, unaligned and tuples only: one output line per row. */
export function psql(url, sql) {
  return execFileSync("psql", ["--no-psqlrc", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], {
    maxBuffer: 1 << 28,
  }).toString();
}

// Each row as JSON (`row_to_json`): a bytea column is its hex text `\x…`, decoded back to its
// bytes here; every other value is its text.
function postgresValues(url) {
  const tables = psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    .split("\n")
    .filter(Boolean);
  const out = [];
  for (const table of tables) {
    const quoted = `"${table.replaceAll('"', '""')}"`;
    for (const line of psql(url, `SELECT row_to_json(t)::text FROM ${quoted} AS t`).split("\n")) {
      if (!line) continue;
      for (const value of Object.values(JSON.parse(line))) {
        if (value === null) continue;
        const text = typeof value === "string" ? value : JSON.stringify(value);
        const bytes = /^\\x([0-9a-f]{2})*$/.test(text) ? Buffer.from(text.slice(2), "hex") : Buffer.from(text);
        out.push({ table, bytes: new Uint8Array(bytes) });
      }
    }
  }
  return out;
}
