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
