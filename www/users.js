// Simulated users with a known taste: a utility over an answer's style attributes. The demo's
// measurement panel asks how often the model's top answer is the user's favourite, before and
// after training on that user's simulated feedback.

export const USERS = {
  "terse-coder": {
    label: "Terse coder: short answers with code, no pleasantries",
    weights: { long: -1.0, code: 1.5, friendly: -1.0 },
  },
  "friendly-explainer": {
    label: "Friendly explainer: long, warm answers, no code",
    weights: { long: 1.5, code: -1.0, friendly: 1.0 },
  },
};

export function utility(user, answer) {
  const w = USERS[user].weights;
  return Object.entries(w).reduce((s, [k, v]) => s + v * answer.attributes[k], 0);
}

/** A deterministic PRNG (mulberry32), so that a simulation can be replayed. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * What the user does with `shown` answers (in display order): copies one, chosen by a
 * Bradley–Terry draw on utilities (so usually the best), sometimes thumbs-down the worst;
 * dwells longer on what it likes. Returns per-answer `{ events, dwellMs }`.
 */
export function react(user, shown, random) {
  const u = shown.map((a) => utility(user, a));
  const weights = u.map((x) => Math.exp(2 * x));
  let r = random() * weights.reduce((s, w) => s + w, 0);
  let chosen = 0;
  for (; chosen < weights.length - 1; chosen++) {
    r -= weights[chosen];
    if (r <= 0) break;
  }
  const worst = u.indexOf(Math.min(...u));
  return shown.map((_, i) => ({
    events: i === chosen ? ["copy"] : i === worst && random() < 0.5 ? ["thumbs_down"] : [],
    dwellMs: Math.round(1000 + 3000 * random() + (i === chosen ? 4000 : 0)),
  }));
}

/** `n` distinct items of `list`, drawn with `draw`. */
export function pick(list, n, draw) {
  const pool = [...list];
  const out = [];
  while (out.length < n && pool.length) out.push(pool.splice(Math.floor(draw() * pool.length), 1)[0]);
  return out;
}

/**
 * `user` reacts to `turns` turns of `shown` answers to `topics` (in turn), shown in `model`'s
 * current order as a user would see them; every reaction goes through `model.observe`.
 * `embed(answers)` gives the answers' embeddings; turn ids are `${tag}-${t}`.
 */
export async function simulateTurns(model, user, { turns, topics, embed, draw, tag, shown = 4 }) {
  for (let t = 0; t < turns; t++) {
    const topic = topics[t % topics.length];
    const answers = pick(topic.answers, shown, draw);
    const scores = await model.score(embed(answers));
    const order = answers.map((a, i) => [a, scores[i]]).sort((x, y) => y[1] - x[1]).map(([a]) => a);
    const reactions = react(user, order, draw);
    for (const [position, answer] of order.entries()) {
      await model.observe({
        id: answer.id,
        turn: `${tag}-${t}`,
        embedding: embed([answer]),
        shown: { position, candidates: shown },
        events: reactions[position].events,
        dwellMs: reactions[position].dwellMs,
        length: answer.text.length,
      });
    }
  }
}

/**
 * How often `model`'s top answer is one `user` likes best: `draws` draws of `shown` answers per
 * topic, the same draws for every model (a fixed seed). `options` go to `model.score`.
 */
export async function agreement(model, user, { topics, draws, embed, shown = 4, options }) {
  const draw = rng(7);
  let agree = 0;
  let total = 0;
  for (const topic of topics) {
    for (let k = 0; k < draws; k++) {
      const answers = pick(topic.answers, shown, draw);
      const scores = await model.score(embed(answers), options);
      const top = scores.indexOf(Math.max(...scores));
      const best = Math.max(...answers.map((a) => utility(user, a)));
      agree += utility(user, answers[top]) === best ? 1 : 0;
      total += 1;
    }
  }
  return agree / total;
}
