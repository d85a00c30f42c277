// The smallest page that uses tacit-rm through a bundler: load the WebAssembly, open a model,
// score four answers and show them best first. `npm run build` (webpack 5 needs no configuration
// for the package's two .wasm files beyond its defaults; webpack.config.js only names the page).
import init, { RewardModel, featurize, isTacitError } from "tacit-rm";

const ANSWERS = [
  "Here is a step-by-step fix: update the lockfile, then rebuild.",
  "I cannot help with that.",
  "Try turning it off and on again.",
  "The error means the wasm file was not served; copy it beside the bundle.",
];
const DIM = 64;

const status = document.getElementById("status");
const list = document.getElementById("ranking");

async function main() {
  const { flavour } = await init();
  // No encoder in this example: the built-in featurizer stands in for sentence embeddings.
  const embeddings = featurize(ANSWERS, DIM);
  const rm = await RewardModel.open({ name: "webpack-example", dim: DIM, hidden: [16] });
  const scores = await rm.score(embeddings);
  const order = await rm.rank(embeddings);
  for (const i of order) {
    const item = document.createElement("li");
    item.textContent = `${scores[i].toFixed(4)}  ${ANSWERS[i]}`;
    list.append(item);
  }
  status.textContent = `Scored ${scores.length} answers on ${rm.backend} (${flavour} WebAssembly).`;
  // For the browser console (and the repository's test of this page).
  window.example = { flavour, rm, embeddings, scores };
}

main().catch((e) => {
  status.textContent = isTacitError(e) ? `${e.code}: ${e.message}` : String(e);
  window.example = { error: status.textContent };
});
