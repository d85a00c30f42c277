// A module worker using the package: opens a model, scores, trains, and reports back.
import init, { RewardModel } from "/pkg/index.js";

const ready = init();

self.onmessage = async ({ data }) => {
  try {
    await ready;
    const rm = await RewardModel.open({ persist: false, dim: data.dim, hidden: [16], seed: data.seed });
    const scores = await rm.score(new Float32Array(data.x));
    for (let i = 0; i < 24; i++) {
      await rm.observe({
        id: `a${i}`,
        turn: `t${i >> 1}`,
        embedding: new Float32Array(data.x.slice((i % 8) * data.dim, (i % 8 + 1) * data.dim)),
        shown: { position: i % 2, candidates: 2 },
        events: i % 3 === 0 ? ["copy"] : [],
      });
    }
    const progress = [];
    const trained = await rm.train({ epochs: 3, onProgress: (p) => { progress.push({ part: p.part, epoch: p.epoch, fraction: p.fraction }); } });
    self.postMessage({
      backend: rm.backend,
      scores: Array.from(scores),
      weights: Array.from(rm.exportWeights()),
      progress,
      examples: trained.examples,
    });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
