// Every value of every row of a SQLite database file, read with Python's sqlite3 module (node 20
// has no SQLite of its own; python3 is already a dependency of `cargo xtask setup`): blobs as
// bytes, text and numbers as the UTF-8 bytes of their text.
import { execFileSync } from "node:child_process";

const DUMP = `
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

/** `[{ table, bytes }]` for every non-null value in the database at `path` (a file path). */
export function sqliteValues(path) {
  const rows = JSON.parse(execFileSync("python3", ["-c", DUMP, path], { maxBuffer: 1 << 28 }).toString());
  return rows.map(([table, b64]) => ({ table, bytes: new Uint8Array(Buffer.from(b64, "base64")) }));
}
