// Benchmark of the two wasm flavours on the CPU path, in node (same machine, same run):
// scoring 10 000 embeddings and one training call of 100 AdamW steps at batch 256 (`ips`),
// through a 384→128→1 head. Writes results/wasm-flavours.{json,md}. Run with
// `cargo xtask bench-flavours` (after `cargo xtask pkg`).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const FLAVOURS = ["tacit_rm_bg.wasm", "tacit_rm_simd_bg.wasm"];
const REPEATS = 5;

async function measure(flavour) {
  const m = await import("../../pkg/index.js");
  m.initSync({ module: readFileSync(new URL(`../../pkg/${flavour}`, import.meta.url)) });
  const dim = 384;
  const x = new Float32Array(10000 * dim).map((_, i) => Math.sin(i * 0.37));
  const median = (a) => a.sort((p, q) => p - q)[a.length >> 1];
  const rm = await m.RewardModel.open({ dim, hidden: [128], persist: false });
  await rm.score(x);
  const score = [];
  for (let i = 0; i < REPEATS; i++) {
    const t = performance.now();
    await rm.score(x);
    score.push(performance.now() - t);
  }
  const train = [];
  for (let r = 0; r < REPEATS; r++) {
    for (let i = 0; i < 25600; i++) {
      await rm.observe({
        id: `a${i}`,
        embedding: x.subarray((i % 10000) * dim, (i % 10000 + 1) * dim),
        shown: { position: i % 3, candidates: 3 },
        events: i % 4 === 0 ? ["copy"] : [],
        propensity: 0.5,
      });
    }
    const t = performance.now();
    const result = await rm.train({ objective: "ips", epochs: 1, batchSize: 256, validationFraction: 0 });
    train.push(performance.now() - t);
    if (result.epochs.length !== 1 || result.steps !== 100) throw new Error("not 100 steps");
  }
  return { flavour, score10k_ms: median(score), train100_ms: median(train) };
}

if (process.argv[2]) {
  console.log(JSON.stringify(await measure(process.argv[2])));
} else {
  const rows = FLAVOURS.map((f) =>
    JSON.parse(execFileSync(process.execPath, [new URL(import.meta.url).pathname, f]).toString()));
  const [base, simd] = rows;
  const md = [
    `Node ${process.version}, CPU path, 384→128→1 head, median of ${REPEATS} runs after a warm-up.`,
    "",
    "| task | baseline ms | simd128 ms | baseline / simd128 |",
    "|---|---:|---:|---:|",
    `| score n=10000 | ${base.score10k_ms.toFixed(1)} | ${simd.score10k_ms.toFixed(1)} | ${(base.score10k_ms / simd.score10k_ms).toFixed(2)}× |`,
    `| train 100 steps × batch 256 (ips) | ${base.train100_ms.toFixed(1)} | ${simd.train100_ms.toFixed(1)} | ${(base.train100_ms / simd.train100_ms).toFixed(2)}× |`,
    "",
  ].join("\n");
  const out = new URL("../../results/", import.meta.url);
  writeFileSync(new URL("wasm-flavours.json", out), JSON.stringify({ node: process.version, repeats: REPEATS, rows }, null, 2) + "\n");
  writeFileSync(new URL("wasm-flavours.md", out), md);
  console.log(md);
}
