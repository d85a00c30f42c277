// Reads the package's generated declarations (pkg/tacit_rm.d.ts), for the tests that hold
// them against real objects.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

export const declarations = readFileSync(new URL("../../../pkg/tacit_rm.d.ts", import.meta.url), "utf8");

/** The member names of `export interface NAME { … }` (top-level members only). */
export function interfaceKeys(name) {
  const start = declarations.search(new RegExp(`export interface ${name}\\b[^{]*\\{`));
  assert.ok(start >= 0, `the .d.ts declares no interface ${name}`);
  const text = declarations.slice(declarations.indexOf("{", start) + 1).replace(/\/\*[\s\S]*?\*\//g, "");
  // Keep only what is at depth 0 of the interface body (nested types and signatures dropped).
  let depth = 0;
  let body = "";
  for (const c of text) {
    if ("{([".includes(c)) depth++;
    else if ("})]".includes(c)) {
      if (depth === 0) break;
      depth--;
    } else if (depth === 0) body += c;
  }
  return new Set([...body.matchAll(/(?:^|[;\n])\s*([A-Za-z_]\w*)\??\s*:/g)].map((m) => m[1]));
}

export function assertSameKeys(declared, actual, what) {
  const missing = [...actual].filter((k) => !declared.has(k));
  const extra = [...declared].filter((k) => !actual.has(k));
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] }, `${what}: the .d.ts lacks ${missing} / declares unknown ${extra}`);
}
