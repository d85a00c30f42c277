// The demo chat page: how a front end uses tacit-rm. Each turn shows a prompt and candidate
// answers sorted by reward; what the user does with them (copy, thumbs, regenerate, time spent
// reading) goes through `observe`; Train, Sync and a simulated user with a known taste show the
// model learning. Everything the page knows about the user stays in this browser, except the
// model's weights when it syncs.
import init, { RewardModel } from "/pkg/index.js";
import { CORPUS, TRAIN_TOPICS, EVAL_TOPICS } from "./corpus.js";
import { DIM, loadEncoder } from "./embeddings.js";
import { USERS, rng, pick as pickWith, simulateTurns as simulateUser, agreement as agreementOf } from "./users.js";

const SHOWN = 4;
const SIMULATED_TURNS = 96;
const params = new URLSearchParams(location.search);
// The demo server hands the page a client token in the URL fragment (never sent to servers).
const syncToken = new URLSearchParams(location.hash.slice(1)).get("token");

const $ = (id) => document.getElementById(id);
const random = rng(Date.now() >>> 0);
let rm;
let encoder;
let turn;
let turnCounter = 0;
let curve = [];

/** Shows a failure on the page (with its stable code) instead of throwing it away. */
function report(e) {
  $("error").textContent = e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? e);
}

function clearError() {
  $("error").textContent = "";
}

/** Runs an async UI action with its buttons disabled, reporting any failure. */
async function guarded(action) {
  const buttons = [...document.querySelectorAll("button")];
  const enabled = buttons.filter((b) => !b.disabled);
  enabled.forEach((b) => (b.disabled = true));
  clearError();
  try {
    await action();
  } catch (e) {
    report(e);
  } finally {
    enabled.forEach((b) => (b.disabled = false));
    refreshStats();
  }
}

const embed = (answers) => encoder.embed(answers);

const pick = (list, n) => pickWith(list, n, random);

function refreshStats() {
  if (!rm) return;
  try {
    const s = rm.stats();
    $("pending").textContent = s.pending;
    $("version").textContent = s.version;
    $("backend").textContent = s.backend;
  } catch (e) {
    report(e);
  }
}

// ---- a chat turn -------------------------------------------------------------------------

function newTurn() {
  const topic = CORPUS[Math.floor(random() * CORPUS.length)];
  turnCounter += 1;
  turn = {
    id: `turn-${Date.now()}-${turnCounter}`,
    topic,
    entries: pick(topic.answers, SHOWN).map((answer) => ({ answer, events: [], shownAt: performance.now() })),
  };
  return renderTurn();
}

/** Scores the turn's answers and shows them best first, with their scores. */
async function renderTurn() {
  const scores = await rm.score(embed(turn.entries.map((e) => e.answer)));
  turn.entries.forEach((e, i) => (e.score = scores[i]));
  turn.entries.sort((a, b) => b.score - a.score);
  $("prompt").textContent = turn.topic.prompt;
  const list = $("answers");
  list.replaceChildren();
  turn.entries.forEach((entry, position) => {
    entry.position = position;
    const li = document.createElement("li");
    li.dataset.testid = "answer";
    li.className = position === 0 ? "top" : "";
    const text = document.createElement("pre");
    text.textContent = entry.answer.text;
    const score = document.createElement("div");
    score.className = "score";
    score.dataset.testid = "score";
    score.textContent = `reward ${entry.score.toFixed(3)}`;
    const actions = document.createElement("div");
    actions.className = "actions";
    for (const [label, event] of [["Copy", "copy"], ["Thumbs up", "thumbs_up"], ["Thumbs down", "thumbs_down"], ["Regenerate", "regenerate"]]) {
      const b = document.createElement("button");
      b.textContent = label;
      b.dataset.testid = event;
      b.className = entry.events.includes(event) ? "on" : "";
      b.onclick = () => guarded(() => act(entry, event));
      actions.append(b);
    }
    li.append(score, text, actions);
    list.append(li);
  });
}

async function act(entry, event) {
  if (event === "copy") {
    // The clipboard may be unavailable (no permission, not focused): the copy still counts.
    await navigator.clipboard?.writeText(entry.answer.text).catch(() => {});
  }
  if (event === "regenerate") {
    // The user asked for another answer in its place: this one is logged as rejected now.
    await observe(entry, [...entry.events, "regenerate"]);
    const unseen = turn.topic.answers.filter((a) => !turn.entries.some((e) => e.answer.id === a.id));
    const [fresh] = pick(unseen, 1);
    turn.entries[turn.entries.indexOf(entry)] = { answer: fresh, events: [], shownAt: performance.now() };
    return renderTurn();
  }
  // Thumbs replace each other; the latest decisive event wins when the row is built.
  if (event.startsWith("thumbs")) entry.events = entry.events.filter((e) => !e.startsWith("thumbs"));
  entry.events.push(event);
  return renderTurn();
}

/** Logs one shown answer; resolves once IndexedDB has it. */
function observe(entry, events, dwellMs = performance.now() - entry.shownAt) {
  return rm.observe({
    id: entry.answer.id,
    turn: turn.id,
    embedding: embed([entry.answer]),
    shown: { position: entry.position, candidates: SHOWN },
    events,
    dwellMs,
    length: entry.answer.text.length,
  });
}

async function nextTurn() {
  for (const entry of turn.entries) await observe(entry, entry.events);
  await newTurn();
}

// ---- training and its plot -----------------------------------------------------------------

function drawPlot() {
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  if (!curve.length) return;
  const line = (values, color) => {
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = 8 + (i / Math.max(1, values.length - 1)) * (width - 16);
      const y = height - 8 - ((v - lo) / (hi - lo || 1)) * (height - 16);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  };
  line(curve.map((p) => p.trainLoss), "#d9480f");
  line(curve.map((p) => p.effectiveSampleSize), "#2b8a3e");
}

async function train() {
  curve = [];
  $("progress").value = 0;
  $("plot").dataset.points = "0";
  const result = await rm.train({
    objective: $("objective").value,
    epochs: Number($("epochs").value),
    onProgress: (p) => {
      $("progress").value = p.fraction;
      curve.push(p);
      $("plot").dataset.points = String(curve.length);
      drawPlot();
    },
  });
  $("progress").value = 1;
  $("train-status").textContent =
    `trained ${result.objective} on ${result.examples} observations: ${result.epochs.length} epochs, ` +
    `final loss ${result.finalLoss?.toFixed(4)}${result.stoppedEarly ? " (stopped early)" : ""}`;
  await renderTurn();
}

// ---- sync ----------------------------------------------------------------------------------

async function sync() {
  $("sync-status").textContent = "syncing…";
  // The server holds one shared "demo" model, whatever the local model is called.
  const r = await rm.sync({ url: location.origin, token: syncToken ?? "", model: "demo" });
  $("sync-status").textContent =
    `version ${r.version}: ${r.pushed ? "pushed an update" : "nothing to push"}` +
    `${r.pulled ? ", pulled the merged model" : ""}${r.queued ? `, ${r.queued} queued` : ""}`;
  await renderTurn();
}

// ---- the simulated user --------------------------------------------------------------------

/** How often `model`'s top answer is one the user likes best, on never-trained prompts. */
const agreement = (user, model = rm, options = undefined) =>
  agreementOf(model, user, { topics: EVAL_TOPICS, draws: 6, embed, shown: SHOWN, options });

/** `user` reacts to SIMULATED_TURNS turns shown in `model`'s order; each reaction is observed. */
const simulateTurns = (user, model, draw) =>
  simulateUser(model, user, { turns: SIMULATED_TURNS, topics: TRAIN_TOPICS, embed, draw, tag: `sim-${user}-${Date.now()}`, shown: SHOWN });

async function simulate() {
  const user = $("sim-user").value;
  const draw = rng(11);
  const before = await agreement(user);
  $("agree-before").textContent = `${(100 * before).toFixed(0)}%`;
  $("agree-after").textContent = "training…";
  await simulateTurns(user, rm, draw);
  await train();
  const after = await agreement(user);
  $("agree-after").textContent = `${(100 * after).toFixed(0)}%`;
  document.body.dataset.agreeBefore = String(before);
  document.body.dataset.agreeAfter = String(after);
}

const percent = (v) => `${(100 * v).toFixed(0)}%`;

/**
 * Both simulated users, each in a model of its own (in memory, beside the page's model, with
 * the basis design): each starts from their shared model, trains on its own feedback, then both sync. The table shows each
 * user's agreement after its local training and after the sync (its personal part on the merged
 * shared model), the shared model's alone, and how much of the score is personal.
 */
async function simulateBoth() {
  const rows = [];
  // A shared model of their own on the server ("demo-users", made by www/serve.mjs), with a
  // hidden layer: the taste basis each user's personal coefficients read.
  const options = { url: location.origin, token: syncToken ?? "", model: "demo-users" };
  const users = Object.keys(USERS).map((user) => ({ user }));
  $("both-status").textContent = "training both users…";
  for (const [i, u] of users.entries()) {
    u.rm = await RewardModel.open({
      name: `sim-${u.user}`,
      persist: false,
      dim: DIM,
      hidden: [16],
      personalization: "basis",
      backend: "cpu",
    });
    await u.rm.sync(options);
    await simulateTurns(u.user, u.rm, rng(21 + i));
    await u.rm.train({ objective: $("objective").value, epochs: Number($("epochs").value) });
    u.local = await agreement(u.user, u.rm);
  }
  $("both-status").textContent = "syncing…";
  // Push both updates, then pull until both hold the newest merged model.
  for (const u of users) await u.rm.sync(options);
  for (const u of users) await u.rm.sync(options);
  for (const u of users) {
    const r = await u.rm.sync(options);
    const synced = await agreement(u.user, u.rm);
    const shared = await agreement(u.user, u.rm, { sharedOnly: true });
    const personal = u.rm.stats().personal;
    rows.push({ user: u.user, local: u.local, synced, shared, share: personal?.share ?? 0, version: r.version });
    await u.rm.close();
  }
  const body = $("both-rows");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "both-row";
    for (const text of [USERS[r.user].label.split(":")[0], percent(r.local), percent(r.synced), percent(r.shared), percent(r.share)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  $("both-status").textContent = `synced at version ${rows.at(-1).version}`;
  document.body.dataset.both = JSON.stringify(rows);
}

// ---- start ---------------------------------------------------------------------------------

async function main() {
  await init();
  // MiniLM when its files are served, else the hashing featurizer; `?embed=featurizer` forces it.
  encoder = await loadEncoder({ prefer: params.get("embed") ?? "minilm" });
  $("embedder").textContent = encoder.label;
  $("embedder").title = encoder.reason;
  document.body.dataset.embedder = encoder.kind;
  $("prompt").textContent = "Embedding the answers…";
  const started = performance.now();
  await encoder.prepare(
    CORPUS.flatMap((topic) => topic.answers),
    (done, total) => ($("prompt").textContent = `Embedding the answers with ${encoder.label}: ${done}/${total}`),
  );
  document.body.dataset.embedMs = String(Math.round(performance.now() - started));
  rm = await RewardModel.open({
    name: params.get("model") ?? "demo",
    dim: DIM,
    // A linear head: with hashed n-gram features and a few hundred observations it
    // generalises to unseen prompts better than a hidden layer does (MiniLM's vectors, unit
    // length and 384-d too, use the same head: the README compares the two).
    hidden: [],
    backend: params.get("backend") ?? "auto",
  });
  for (const [key, u] of Object.entries(USERS)) {
    const o = document.createElement("option");
    o.value = key;
    o.textContent = u.label;
    $("sim-user").append(o);
  }
  $("next").onclick = () => guarded(nextTurn);
  $("train").onclick = () => guarded(train);
  $("sync").onclick = () => guarded(sync);
  $("simulate").onclick = () => guarded(simulate);
  $("simulate-both").onclick = () => guarded(simulateBoth);
  $("reset").onclick = () =>
    guarded(async () => {
      await rm.reset();
      curve = [];
      drawPlot();
      $("progress").value = 0;
      $("train-status").textContent = "";
      await renderTurn();
    });
  await newTurn();
  for (const id of ["next", "train", "sync", "simulate", "simulate-both", "reset"]) $(id).disabled = false;
  refreshStats();
  document.body.dataset.ready = "true";
}

main().catch(report);
