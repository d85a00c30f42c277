// Four answers scored by the model of `useRewardModel` and shown best first.
import { useEffect, useState } from "react";
import { featurize, isTacitError } from "tacit-rm";
import { useRewardModel } from "./useRewardModel.js";

const ANSWERS = [
  "Here is a step-by-step fix: update the lockfile, then rebuild.",
  "I cannot help with that.",
  "Try turning it off and on again.",
  "The error means the wasm file was not served; copy it beside the bundle.",
];
const DIM = 64;

export function App() {
  const { model, flavour, error } = useRewardModel({ name: "react-example", dim: DIM, hidden: [16] });
  const [ranked, setRanked] = useState(null);
  const [failure, setFailure] = useState(null);

  useEffect(() => {
    if (!model) return;
    let current = true;
    (async () => {
      // No encoder in this example: the built-in featurizer stands in for sentence embeddings
      // (it runs in the WebAssembly, so only once the hook has loaded it).
      const embeddings = featurize(ANSWERS, DIM);
      const scores = await model.score(embeddings);
      const order = await model.rank(embeddings);
      if (!current) return;
      setRanked({ model, flavour, embeddings, scores, order });
    })().catch(setFailure);
    return () => {
      current = false;
    };
  }, [model, flavour]);

  // Once the ranking is on screen: for the browser console (and the repository's test of this page).
  useEffect(() => {
    if (ranked) window.example = { flavour: ranked.flavour, rm: ranked.model, embeddings: ranked.embeddings, scores: ranked.scores };
  }, [ranked]);

  const problem = error ?? failure;
  useEffect(() => {
    if (problem) window.example = { error: describe(problem) };
  }, [problem]);

  let status = "Loading…";
  if (problem) status = describe(problem);
  else if (ranked) status = `Scored ${ranked.scores.length} answers on ${model.backend} (${flavour} WebAssembly).`;
  return (
    <>
      <h1>tacit-rm with React</h1>
      <p id="status">{status}</p>
      <ol id="ranking">
        {Array.from(ranked?.order ?? [], (i) => (
          <li key={i}>
            {ranked.scores[i].toFixed(4)} {ANSWERS[i]}
          </li>
        ))}
      </ol>
    </>
  );
}

function describe(e) {
  return isTacitError(e) ? `${e.code}: ${e.message}` : String(e);
}
