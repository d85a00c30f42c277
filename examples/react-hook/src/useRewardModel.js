// A React hook around tacit-rm: loads the WebAssembly once per page, opens the model, and
// closes it when the component unmounts or the options change. The model restores itself from
// IndexedDB, so remounting (React's StrictMode does it on purpose in development) costs an open,
// never the user's data.
import { useEffect, useState } from "react";
import init, { RewardModel } from "tacit-rm";

/**
 * `useRewardModel(options)` → `{ model, flavour, error }`: `model` is null until it is open
 * (and after a failure, which is in `error`, a `TacitError` with a `code`). `options` are
 * `RewardModel.open`'s; a change of their content reopens the model.
 */
export function useRewardModel(options) {
  const [state, setState] = useState({ model: null, flavour: null, error: null });
  // Options are usually written inline: compare their content, not their identity.
  const key = JSON.stringify(options);
  useEffect(() => {
    let cancelled = false;
    let model = null;
    (async () => {
      const { flavour } = await init(); // the first call loads; later calls share it
      model = await RewardModel.open(JSON.parse(key));
      if (cancelled) {
        // Unmounted while opening: this model is nobody's.
        await model.close();
        return;
      }
      setState({ model, flavour, error: null });
    })().catch((error) => {
      if (!cancelled) setState({ model: null, flavour: null, error });
    });
    return () => {
      cancelled = true;
      setState({ model: null, flavour: null, error: null });
      model?.close();
    };
  }, [key]);
  return state;
}
