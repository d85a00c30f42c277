// Compiled (not run) by `cargo xtask test`: the package's declarations accept the documented
// usage and reject misuse (each @ts-expect-error must be an error, or tsc fails).
import init, {
  RewardModel,
  TacitError,
  featurize,
  isTacitError,
  type ErrorCode,
  type Loaded,
  type OpenOptions,
  type TrainOptions,
  type TrainResult,
  type Stats,
  type Observation,
  type Personalization,
  type PersonalStats,
  type ScoreOptions,
  type ModelInfo,
} from "../../pkg/index.js";

export async function usage(): Promise<number> {
  const loaded: Loaded = await init();
  const flavour: "simd" | "baseline" | "custom" = loaded.flavour;
  // @ts-expect-error: init resolves to a small result, not the glue's internal exports
  loaded.memory;
  // Every argument of these is optional.
  const byDefault: RewardModel = await RewardModel.open();
  const defaultTrain: TrainResult = await byDefault.train();
  const options: OpenOptions = { name: "default", dim: 384, hidden: [128], backend: "auto" };
  const rm: RewardModel = await RewardModel.open(options);
  const backend: "webgpu" | "cpu" = rm.backend;
  const scores: Float32Array = await rm.score(new Float32Array(384));
  const order: Uint32Array = await rm.rank(featurize(["a", "b"], 384));
  const obs: Observation = {
    id: "a1",
    turn: "t1",
    embedding: new Float32Array(384),
    shown: { position: 0, candidates: 3 },
    events: ["copy"],
    dwellMs: 5400,
  };
  const seq: number = await rm.observe(obs);
  const train: TrainOptions = {
    objective: "implicit",
    epochs: 5,
    onProgress: (p) => {
      const f: number = p.fraction;
      const part: "shared" | "personal" = p.part;
      return f < 2 && part !== "shared";
    },
  };
  const result: TrainResult = await rm.train(train);
  const stats: Stats = rm.stats();
  // The personal part: its options, the shared score alone, its stats, forget.
  const kinds: Personalization[] = ["none", "residual", "ditto", "mix", "basis"];
  const mine = await RewardModel.open({ dim: 384, personalization: kinds[4] });
  const crowd: Float32Array = await mine.score(new Float32Array(384), { sharedOnly: true });
  const crowdOrder: Uint32Array = await mine.rank(new Float32Array(384), { sharedOnly: true } satisfies ScoreOptions);
  await mine.train({ parts: "personal", personalPull: 0.5 });
  const personal: PersonalStats | null = mine.stats().personal;
  const share: number = personal?.share ?? 0;
  await mine.forget();
  // @ts-expect-error: not a personalization
  const bad4: OpenOptions = { personalization: "lora" };
  // @ts-expect-error: parts are "both", "personal" or "shared"
  const bad5: TrainOptions = { parts: "all" };
  // @ts-expect-error: a number is not a personal part's stats
  const bad6: number = mine.stats().personal;
  // The origin's models: listed, one deleted, everything deleted.
  const stored: ModelInfo[] = await RewardModel.list();
  const when: number | null = stored[0]?.updatedAt ?? null;
  const shape: number[] = stored[0]?.hidden ?? [];
  await RewardModel.delete(stored[0]?.name ?? "default");
  await RewardModel.deleteAll();
  // @ts-expect-error: list takes no options
  await RewardModel.list({ prefix: "a" });
  // @ts-expect-error: a listed model's name is a string
  const badName: number = stored[0].name;
  const bytes: Uint8Array = rm.exportWeights();
  await rm.importWeights(bytes);
  await rm.close();
  try {
    await RewardModel.open({ dim: 3 });
  } catch (e) {
    // `e` is `unknown`: the guard narrows it.
    if (isTacitError(e)) {
      const code: ErrorCode = e.code;
      const hint: string | undefined = e.hint;
      if (code === "dim_mismatch" || code === "wasm_load") return hint?.length ?? -1;
    }
    if (e instanceof TacitError && e.code === "busy") return -2;
    // @ts-expect-error: without the guard, `e` has no code
    return e.code;
  }
  const made: TacitError = new TacitError("closed", "the model is closed");
  // @ts-expect-error: not one of the codes
  const badCode: ErrorCode = "no_such_code";
  // @ts-expect-error: an unknown objective name
  const bad: TrainOptions = { objective: "hinge" };
  // @ts-expect-error: an unknown backend
  const bad2: OpenOptions = { backend: "webgl" };
  // @ts-expect-error: events are names, not free text
  const bad3: Observation = { id: "x", embedding: [], shown: { position: 0, candidates: 1 }, events: ["liked"] };
  return flavour.length + defaultTrain.examples + made.message.length + String(badCode).length + scores.length + order.length + seq + result.examples + stats.pending + backend.length + String(bad) .length + String(bad2).length + String(bad3).length + crowd.length + crowdOrder.length + share + String(bad4).length + String(bad5).length + String(bad6).length;
}
