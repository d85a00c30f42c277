//! The `tacit` command line: evaluate objectives on simulated feedback, create, train and
//! apply weights, bench the backends.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use tacit_rm::backend::gpu::GpuContext;
use tacit_rm::backend::Device;
use tacit_rm::data::Dataset;
use tacit_rm::eval::users::{self, System, UsersConfig, UsersData};
use tacit_rm::eval::{self, EvalConfig, Method};
use tacit_rm::feedback::flip::FlipRates;
use tacit_rm::feedback::{self, Examples};
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind};
use tacit_rm::rng::Rng;
use tacit_rm::sim::{Protocol, SimConfig, Simulator};
use tacit_rm::store::{self, Weights};
use tacit_rm::trainer::{self, TrainConfig, TrainRequest};
use tacit_rm::{Error, Result};

#[derive(Parser)]
#[command(
    name = "tacit",
    version,
    about = "tacit-rm: a reward model that learns from implicit feedback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train every method on simulated feedback and score a clean test split.
    Eval(Box<EvalArgs>),
    /// Write freshly initialised weights.
    Init(InitArgs),
    /// Train weights on a feedback file, or on simulated feedback of a labelled data set.
    Train(TrainArgs),
    /// Score the embeddings of a data or feedback file.
    Score(ScoreArgs),
    /// Time scoring and training on every backend of this machine.
    Bench(BenchArgs),
    /// Push local training to a tacit-server and pull the merged global (offline: queued).
    Sync(SyncArgs),
}

#[derive(Args)]
struct SyncArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    #[arg(long, env = "TACIT_TOKEN")]
    token: String,
    #[arg(long)]
    model: String,
    /// Local weights (created from the global on the first run); rebased in place.
    #[arg(long)]
    weights: PathBuf,
    /// Sync state: reference weights and the queue of pushes.
    #[arg(long)]
    state: PathBuf,
    /// Examples trained on since the last sync.
    #[arg(long, default_value_t = 1)]
    n_examples: u64,
    #[arg(long, default_value_t = 10.0)]
    clip_norm: f64,
    /// How long to keep retrying pushes before leaving them queued, seconds.
    #[arg(long, default_value_t = 10.0)]
    retry_seconds: f64,
    /// On a model the server aggregates securely: how long to wait for the round to end
    /// before leaving it (a dropout; the next sync learns whether it counted), seconds.
    #[arg(long, default_value_t = 120.0)]
    round_wait_seconds: f64,
}

#[derive(Args)]
struct BenchArgs {
    /// Timed repeats per figure (after one warm-up call).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Settings of the simulator (shared by `eval` and `train` on labelled data).
#[derive(Args, Clone)]
struct SimArgs {
    /// Propensity protocol: label, covariate or confounded; for `tacit eval`, also `users`
    /// (the multi-user protocol: a data set with a `utility` [U, N] tensor).
    #[arg(long, default_value = "confounded")]
    protocol: String,
    /// Decay α of the label protocol.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Mean reaction rate.
    #[arg(long = "obs-rate", default_value_t = 0.3)]
    obs_rate: f64,
    /// Flip rates of revealed labels, "R10,R01".
    #[arg(long, default_value = "0,0")]
    flip: String,
    /// Logit slope of the covariate / confounded propensity.
    #[arg(long, default_value_t = SimConfig::default().strength)]
    strength: f64,
}

impl SimArgs {
    fn config(&self) -> Result<SimConfig> {
        let flip = parse_floats(&self.flip, "--flip")?;
        if flip.len() != 2 {
            return Err(Error::InvalidConfig(
                "--flip takes two rates, R10,R01".into(),
            ));
        }
        let cfg = SimConfig {
            protocol: Protocol::parse(&self.protocol)?,
            alpha: self.alpha,
            obs_rate: self.obs_rate,
            flip: FlipRates::new(flip[0], flip[1])?,
            strength: self.strength,
            ..SimConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Optimisation settings.
#[derive(Args, Clone)]
struct OptArgs {
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    #[arg(long = "batch-size", default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = TrainConfig::default().optimizer.lr)]
    lr: f64,
    #[arg(long = "weight-decay", default_value_t = TrainConfig::default().optimizer.weight_decay)]
    weight_decay: f64,
}

impl OptArgs {
    fn config(&self, seed: u64) -> TrainConfig {
        let d = TrainConfig::default();
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: tacit_rm::optim::AdamWConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..d.optimizer
            },
            seed,
            ..d
        }
    }
}

#[derive(Args)]
struct EvalArgs {
    /// Labelled data set (safetensors: response_emb|emb, label, optional prompt_emb, pair_id).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    sim: SimArgs,
    /// Number of seeds (splits, feedback draws and initialisations).
    #[arg(long, default_value_t = 5)]
    seeds: usize,
    /// Comma-separated methods, or "all" (every objective plus the oracle).
    #[arg(long, default_value = "all")]
    methods: String,
    /// Hidden layer sizes, e.g. "128" or "256,64"; empty for a linear head.
    #[arg(long, default_value = "")]
    hidden: String,
    #[arg(long, default_value = "relu")]
    activation: String,
    #[command(flatten)]
    opt: OptArgs,
    /// What the app's propensity model sees: exposure, exposure+embedding, or "true" (the
    /// simulator's own propensities, a diagnostic ceiling).
    #[arg(long, default_value = "exposure+embedding")]
    propensity: String,
    /// Where to train and score: cpu or gpu.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the markdown table here too.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Give noise-aware objectives the simulator's flip rates instead of estimating them.
    #[arg(long = "flip-known")]
    flip_known: bool,
    /// Print each (seed, method) result as it finishes.
    #[arg(long)]
    verbose: bool,
    /// `--protocol users` (the multi-user protocol): federated users (default: all but the
    /// new users).
    #[arg(long)]
    users: Option<usize>,
    /// `--protocol users`: users held out as new users.
    #[arg(long = "new-users", default_value_t = UsersConfig::default().new_users)]
    new_users: usize,
    /// `--protocol users`: turns per federated user over all rounds.
    #[arg(long, default_value_t = UsersConfig::default().turns)]
    turns: usize,
    /// `--protocol users`: sync rounds.
    #[arg(long, default_value_t = UsersConfig::default().rounds)]
    rounds: usize,
    /// `--protocol users`: the new users' turn counts, e.g. "0,5,10,20,40".
    #[arg(long = "new-user-turns", default_value = "0,5,10,20,40")]
    new_user_turns: String,
    /// `--protocol users`: comma-separated systems, or "all"
    /// (global, local, personal, residual, ditto, mix, pooled, oracle).
    #[arg(long, default_value = "all")]
    systems: String,
    /// `--protocol users`: the objective every system trains with.
    #[arg(long, default_value = "implicit")]
    objective: String,
    /// `--protocol users`: the hidden width of the `personal` system's shared head, the taste
    /// basis (when `--hidden` is empty): the number of personal coefficients.
    #[arg(long = "basis-width", default_value_t = UsersConfig::default().basis_width)]
    basis_width: usize,
    /// `--protocol users`: the non-linearity of the `personal` system's hidden layer, relu or
    /// tanh (default: tanh).
    #[arg(long = "basis-activation")]
    basis_activation: Option<String>,
    /// `--protocol users`: the replay window of every per-user model (the package's
    /// `replayTurns`): each training call trains on the user's last N turns, kept on the
    /// device; `pooled` on every user's last N. 0: only the turns since the last call.
    #[arg(long = "replay-turns", default_value_t = UsersConfig::default().replay_turns)]
    replay_turns: usize,
    /// `--protocol users`: pull of the personal part toward the shared model.
    #[arg(long = "personal-pull", default_value_t = tacit_rm::personal::DEFAULT_PULL)]
    personal_pull: f64,
    /// `--protocol users`: client-level DP-FedAvg on the federated rounds, the ε that all the
    /// rounds together must stay within (every user joins every round: q = 1); the noise
    /// multiplier is the smallest that does. Absent: no noise.
    #[arg(long = "dp-epsilon")]
    dp_epsilon: Option<f64>,
    /// `--protocol users`: δ of the (ε, δ) guarantee with `--dp-epsilon`.
    #[arg(long = "dp-delta", default_value_t = 1e-5)]
    dp_delta: f64,
}

#[derive(Args)]
struct InitArgs {
    #[arg(long)]
    dim: usize,
    #[arg(long, default_value = "")]
    hidden: String,
    #[arg(long, default_value = "relu")]
    activation: String,
    /// Objective the weights are for (sets the number of outputs: 2 for beta).
    #[arg(long, default_value = "ips")]
    objective: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct TrainArgs {
    /// A feedback file (emb, observed, …) or a labelled data set (feedback is then simulated).
    #[arg(long)]
    data: PathBuf,
    /// Starting weights; default: fresh weights of --hidden.
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long, default_value = "")]
    hidden: String,
    #[arg(long, default_value = "ips")]
    objective: String,
    #[command(flatten)]
    sim: SimArgs,
    #[command(flatten)]
    opt: OptArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ScoreArgs {
    #[arg(long)]
    weights: PathBuf,
    /// A labelled data set or feedback file whose embeddings are scored.
    #[arg(long)]
    data: PathBuf,
    /// Write scores as a JSON array here (default: one per line on stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_floats(s: &str, flag: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| Error::InvalidConfig(format!("{flag}: '{v}' is not a number")))
        })
        .collect()
}

fn parse_hidden(s: &str) -> Result<Vec<usize>> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| Error::InvalidConfig(format!("--hidden: '{v}' is not a layer size")))
        })
        .collect()
}

/// Reads a data or feedback file, refusing absurd sizes before allocating.
fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let io = |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > tacit_rm::data::MAX_DATA_BYTES {
        return Err(Error::InvalidData(format!(
            "{} is {len} bytes, over the limit",
            path.display()
        )));
    }
    std::fs::read(path).map_err(io)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}

fn run_eval(a: EvalArgs) -> Result<()> {
    if a.sim.protocol == "users" {
        return run_users_eval(a);
    }
    let ds = Dataset::load(&a.data)?;
    let cfg = EvalConfig {
        sim: a.sim.config()?,
        seeds: a.seeds,
        methods: Method::parse_list(&a.methods)?,
        hidden: parse_hidden(&a.hidden)?,
        activation: Activation::parse(&a.activation)?,
        train: a.opt.config(0),
        propensity_features: eval::PropensityFeatures::parse(&a.propensity)?,
        flip_known: a.flip_known,
        ..EvalConfig::default()
    };
    eprintln!(
        "tacit eval: {} rows × {} dims, protocol {}, {} seeds, {} methods",
        ds.len(),
        ds.dim(),
        cfg.sim.protocol.name(),
        cfg.seeds,
        cfg.methods.len()
    );
    let verbose = a.verbose;
    let device = parse_backend(&a.backend)?;
    eprintln!("backend: {}", describe(&device));
    let result = eval::run_on(&device, &ds, &cfg, &mut |seed, method, m| {
        if verbose {
            eprintln!("  seed {seed} {:<10} auroc {:.4}", method.name(), m.auroc);
        }
    })?;
    let table = result.markdown();
    println!("{table}");
    if let Some(path) = a.json {
        write_file(&path, result.to_json().as_bytes())?;
    }
    if let Some(path) = a.markdown {
        write_file(&path, table.as_bytes())?;
    }
    Ok(())
}

/// `tacit eval --protocol users`: the multi-user protocol (`tacit_rm::eval::users`).
fn run_users_eval(a: EvalArgs) -> Result<()> {
    let data = UsersData::load(&a.data)?;
    let new_user_turns = a
        .new_user_turns
        .split(',')
        .map(|t| {
            t.trim().parse::<usize>().map_err(|_| {
                Error::InvalidConfig(format!("--new-user-turns: '{t}' is not a count"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = UsersConfig {
        seeds: a.seeds,
        users: a.users,
        new_users: a.new_users,
        turns: a.turns,
        rounds: a.rounds,
        new_user_turns,
        hidden: parse_hidden(&a.hidden)?,
        activation: Activation::parse(&a.activation)?,
        basis_width: a.basis_width,
        basis_activation: match a.basis_activation.as_deref() {
            Some(name) => Some(Activation::parse(name)?),
            None => UsersConfig::default().basis_activation,
        },
        replay_turns: a.replay_turns,
        objective: tacit_rm::ObjectiveKind::parse(&a.objective)?,
        train: tacit_rm::model::TrainOptions {
            epochs: a.opt.epochs,
            batch_size: a.opt.batch_size,
            learning_rate: a.opt.lr,
            weight_decay: a.opt.weight_decay,
            personal_pull: a.personal_pull,
            ..Default::default()
        },
        systems: System::parse_list(&a.systems)?,
        dp: a.dp_epsilon.map(|epsilon| users::UsersDp {
            epsilon,
            delta: a.dp_delta,
        }),
        ..UsersConfig::default()
    };
    eprintln!(
        "tacit eval --protocol users: {} items × {} dims, {} users, {} seeds",
        data.emb.nrows(),
        data.emb.ncols(),
        data.users(),
        cfg.seeds
    );
    let device = parse_backend(&a.backend)?;
    eprintln!("backend: {}", describe(&device));
    let verbose = a.verbose;
    let result = users::run_on(&device, &data, &cfg, &mut |line| {
        if verbose {
            eprintln!("  {line}");
        }
    })?;
    let table = result.markdown();
    println!("{table}");
    if let Some(path) = a.json {
        write_file(&path, result.to_json().as_bytes())?;
    }
    if let Some(path) = a.markdown {
        write_file(&path, table.as_bytes())?;
    }
    Ok(())
}

fn parse_backend(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "gpu" => Ok(Device::Gpu(GpuContext::shared()?)),
        other => Err(Error::UnknownName {
            kind: "backend",
            name: other.into(),
            expected: "cpu, gpu".into(),
        }),
    }
}

fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu (ndarray)".into(),
        Device::Gpu(ctx) => format!("gpu ({} via {:?})", ctx.adapter.name, ctx.adapter.backend),
    }
}

fn run_bench(a: BenchArgs) -> Result<()> {
    if a.repeats == 0 {
        return Err(Error::InvalidConfig("--repeats must be at least 1".into()));
    }
    let mut devices = vec![Device::Cpu];
    let adapter = match GpuContext::shared() {
        Ok(ctx) => {
            let name = format!(
                "{} ({:?}, {:?})",
                ctx.adapter.name, ctx.adapter.backend, ctx.adapter.device_type
            );
            devices.push(Device::Gpu(ctx));
            name
        }
        Err(e) => {
            eprintln!("no GPU adapter, benchmarking the CPU only: {e}");
            "none".into()
        }
    };
    let figures = tacit_rm::bench::run(&devices, a.repeats)?;
    let table = tacit_rm::bench::markdown(&figures, &adapter);
    println!("{table}");
    if let Some(path) = a.json {
        let json = serde_json::json!({ "adapter": adapter, "figures": figures });
        write_file(
            &path,
            serde_json::to_string_pretty(&json)
                .expect("json")
                .as_bytes(),
        )?;
    }
    if let Some(path) = a.markdown {
        write_file(&path, table.as_bytes())?;
    }
    Ok(())
}

fn run_init(a: InitArgs) -> Result<()> {
    let kind = ObjectiveKind::parse(&a.objective)?;
    let cfg = HeadConfig {
        dim: a.dim,
        hidden: parse_hidden(&a.hidden)?,
        activation: Activation::parse(&a.activation)?,
        outputs: kind.head_outputs(),
    };
    if cfg.dim == 0 {
        return Err(Error::InvalidConfig("--dim must be at least 1".into()));
    }
    let w = Weights {
        objective: Some(kind),
        ..Weights::new(Head::init(&cfg, a.seed)?)
    };
    store::save(&a.out, &w)?;
    eprintln!(
        "wrote {} ({} parameters)",
        a.out.display(),
        cfg.num_params()
    );
    Ok(())
}

/// Examples from a feedback file, or simulated from a labelled data set (with propensities
/// from the propensity model, as an app would have them).
fn load_examples(path: &Path, sim: &SimArgs, seed: u64, kind: ObjectiveKind) -> Result<Examples> {
    let bytes = read_limited(path)?;
    if feedback::file::is_feedback_file(&bytes) {
        if kind.needs_reaction_mask() && !feedback::file::has_reaction_mask(&bytes) {
            return Err(Error::InvalidData(format!(
                "{kind} needs the reaction mask: add a 'feedback' tensor (and 'explicit' labels) to {}",
                path.display()
            )));
        }
        return feedback::file::read(&bytes);
    }
    let ds = Dataset::from_bytes(&bytes)?;
    let truth = ds.binary_labels();
    let simulator = Simulator::new(sim.config()?, ds.emb.view(), &truth, seed)?;
    let mut s = simulator.simulate(
        ds.emb.view(),
        &ds.scaled_labels(),
        &ds.groups(),
        &mut Rng::new(seed),
    )?;
    let defaults = EvalConfig::default();
    eval::attach_propensities(
        defaults.propensity_features,
        defaults.propensity_l2,
        &mut s,
        &mut [],
    )?;
    Ok(s.examples)
}

fn run_train(a: TrainArgs) -> Result<()> {
    let kind = ObjectiveKind::parse(&a.objective)?;
    let examples = load_examples(&a.data, &a.sim, a.seed, kind)?;
    let (head, version) = match &a.init {
        Some(p) => {
            let w = store::load(p)?;
            (w.head, w.version)
        }
        None => {
            let cfg = HeadConfig {
                dim: examples.dim(),
                hidden: parse_hidden(&a.hidden)?,
                activation: Activation::Relu,
                outputs: kind.head_outputs(),
            };
            (Head::init(&cfg, a.seed)?, 0)
        }
    };
    let objective = ObjectiveConfig::new(kind);
    let cfg = a.opt.config(a.seed);
    let request = TrainRequest::new(&head, &objective, &examples, &cfg);
    let trained = trainer::train(&request, &mut |e| {
        eprintln!(
            "epoch {:>3}/{}  loss {:.5}  ess {:.1}",
            e.epoch, e.epochs, e.train_loss, e.effective_sample_size
        );
        ControlFlow::Continue(())
    })?;
    let w = Weights {
        head: trained.head,
        exposure_head: trained.exposure_head,
        objective: Some(kind),
        version,
        personal: None,
    };
    store::save(&a.out, &w)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn run_score(a: ScoreArgs) -> Result<()> {
    let w = store::load(&a.weights)?;
    let bytes = read_limited(&a.data)?;
    let emb = if feedback::file::is_feedback_file(&bytes) {
        feedback::file::read(&bytes)?.emb
    } else {
        Dataset::from_bytes(&bytes)?.emb
    };
    let scores = Device::Cpu.score(&w.head, emb.view())?;
    match a.out {
        Some(path) => write_file(
            &path,
            serde_json::to_string(&scores)
                .expect("floats serialise")
                .as_bytes(),
        )?,
        None => scores.iter().for_each(|s| println!("{s}")),
    }
    Ok(())
}

fn run_sync(a: SyncArgs) -> Result<()> {
    if !(a.retry_seconds.is_finite() && a.retry_seconds >= 0.0) {
        return Err(Error::InvalidConfig("--retry-seconds must be >= 0".into()));
    }
    if !(a.round_wait_seconds.is_finite() && (0.0..=86_400.0).contains(&a.round_wait_seconds)) {
        return Err(Error::InvalidConfig(
            "--round-wait-seconds must be in [0, 86400]".into(),
        ));
    }
    let report = tacit_rm::sync::files::sync_files(&tacit_rm::sync::files::FileSync {
        url: a.url,
        token: a.token,
        model: a.model,
        weights: a.weights,
        state_dir: a.state,
        n_examples: a.n_examples,
        clip_norm: a.clip_norm,
        timeout: std::time::Duration::from_secs(30),
        retry_budget: std::time::Duration::from_secs_f64(a.retry_seconds),
        round_wait: std::time::Duration::from_secs_f64(a.round_wait_seconds),
    })?;
    use tacit_rm::sync::pass::PrivacyStatus;
    use tacit_rm::sync::secagg::session::SecureOutcome;
    let secure = match &report.secure_round {
        None => String::new(),
        Some(SecureOutcome::Counted { round, .. }) => format!(", secure round {round} counted it"),
        Some(SecureOutcome::NotCounted { round, reason }) => {
            format!(", secure round {round} ended without it ({reason}): kept for the next")
        }
        Some(SecureOutcome::Busy { round }) => {
            format!(", secure round {round} is under way without us: kept for the next")
        }
        Some(SecureOutcome::Left { round }) => {
            format!(", left secure round {round} before its end: the next sync learns its outcome")
        }
        Some(SecureOutcome::Nothing) => String::new(),
    };
    let privacy = match &report.privacy {
        Some(PrivacyStatus::On(p)) => format!(
            ", privacy spent ε = {:.4} (δ = {:e}, {} rounds, budget {})",
            p.epsilon, p.delta, p.rounds, p.budget_epsilon
        ),
        Some(PrivacyStatus::Off) => ", no differential privacy".to_string(),
        None => String::new(),
    };
    println!(
        "pushed {}, still queued {}, sent {} bytes{}{secure}{}{privacy}{}",
        report.pushed,
        report.still_queued,
        report.sent_bytes,
        if report.masked { " (masked)" } else { "" },
        match &report.pull {
            Some(tacit_rm::sync::PullOutcome::Updated { version }) =>
                format!(", pulled version {version}"),
            Some(tacit_rm::sync::PullOutcome::Unchanged) => ", global unchanged".to_string(),
            None => String::new(),
        },
        report
            .last_failure
            .map(|f| format!(" (offline: {f})"))
            .unwrap_or_default()
    );
    Ok(())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(a) => run_eval(*a),
        Command::Init(a) => run_init(a),
        Command::Train(a) => run_train(a),
        Command::Score(a) => run_score(a),
        Command::Bench(a) => run_bench(a),
        Command::Sync(a) => run_sync(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error[{}]: {e}", e.code());
            ExitCode::from(2)
        }
    }
}
