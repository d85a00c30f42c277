// What IndexedDB holds, read in a page without the package: the tests' independent view of
// the package's storage.

const DB = "tacit-rm";

/** Whether the package's database exists (without opening it: an open would create it). */
export async function exists() {
  return (await indexedDB.databases()).some((d) => d.name === DB);
}

function request(r) {
  return new Promise((ok, fail) => {
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
}

/**
 * Every record of model `name` in every store of the database, whatever the store: keyed by
 * `name` itself or by an array starting with it. `null` when there is no database.
 * The connection is closed before returning (an open one would block a deleteDatabase).
 */
export async function dump(name) {
  if (!(await exists())) return null;
  const db = await request(indexedDB.open(DB));
  try {
    const out = {};
    for (const store of db.objectStoreNames) {
      const s = db.transaction(store).objectStore(store);
      const keys = await request(s.getAllKeys());
      const values = await request(db.transaction(store).objectStore(store).getAll());
      out[store] = keys
        .map((key, i) => ({ key, value: values[i] }))
        .filter(({ key }) => key === name || (Array.isArray(key) && key[0] === name));
    }
    return out;
  } finally {
    db.close();
  }
}
