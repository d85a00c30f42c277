//! `cargo xtask fuzz [--seconds N] [--target NAME]`: the coverage-guided fuzz targets of
//! `fuzz/` (libFuzzer through `libfuzzer-sys`) on stable Rust. cargo-fuzz needs a nightly
//! toolchain only for its sanitizers; the coverage instrumentation libFuzzer steers by is
//! stable codegen flags, passed here. Each target starts from its seed corpus in the repo
//! (`fuzz/corpus/<target>/`, kept current by `tests/parsers_prop.rs`), runs N seconds (60 by
//! default) and writes what it found to a work corpus under `fuzz/target/`; a crash fails
//! the command with the input saved under `fuzz/artifacts/<target>/`. Figures go to
//! `results/fuzz.{json,md}`.

use std::collections::BTreeMap;
use std::process::Command;

use crate::{cargo, describe, output, root, Result};

pub const TARGETS: [&str; 4] = ["weights", "delta", "observation", "update"];

/// The sanitizer-coverage passes libFuzzer reads (what cargo-fuzz passes, sanitizers aside).
const COVERAGE_FLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares";

struct Args {
    seconds: u64,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        seconds: 60,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                out.seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--seconds takes a whole number of seconds > 0")?;
            }
            "--target" => {
                let t = it.next().ok_or("--target takes a target name")?;
                if !TARGETS.contains(&t.as_str()) {
                    return Err(format!("unknown fuzz target '{t}' (targets: {TARGETS:?})"));
                }
                out.targets.push(t.clone());
            }
            other => {
                return Err(format!(
                    "unknown argument '{other}': cargo xtask fuzz [--seconds N] [--target NAME]..."
                ))
            }
        }
    }
    if out.targets.is_empty() {
        out.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(out)
}

/// One target's run, from libFuzzer's final statistics.
struct Run {
    executions: u64,
    per_second: u64,
    coverage: u64,
    corpus: u64,
    peak_rss_mb: u64,
}

pub fn fuzz(args: &[String]) -> Result {
    let args = parse(args)?;
    let host = output(Command::new("rustc").arg("-vV"))
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        })
        .ok_or("cannot read the host triple from `rustc -vV`")?;
    let fuzz_dir = root().join("fuzz");
    // An explicit --target keeps the flags off build scripts and proc macros (cargo-fuzz
    // does the same); the fuzz workspace has its own target directory.
    crate::run(
        cargo()
            .args(["build", "--release", "--bins", "--target", &host])
            .current_dir(&fuzz_dir)
            .env("RUSTFLAGS", COVERAGE_FLAGS),
    )?;
    let mut runs = BTreeMap::new();
    for target in &args.targets {
        let seeds = fuzz_dir.join("corpus").join(target);
        let work = fuzz_dir.join("target/corpus").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        for dir in [&work, &artifacts] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut cmd = Command::new(
            fuzz_dir
                .join("target")
                .join(&host)
                .join("release")
                .join(target),
        );
        cmd.arg(&work)
            .arg(&seeds)
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-print_final_stats=1")
            .arg("-rss_limit_mb=4096")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        eprintln!("$ {}", describe(&cmd));
        let out = cmd
            .output()
            .map_err(|e| format!("cannot start the {target} fuzz target: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "fuzz target {target} failed ({}); the input is under fuzz/artifacts/{target}/:\n{}",
                out.status,
                tail.join("\n")
            ));
        }
        let run = read_stats(&log).ok_or_else(|| {
            format!("fuzz target {target}: no final statistics in libFuzzer's output")
        })?;
        eprintln!(
            "fuzz {target}: {} executions in {} s ({} /s), coverage {}, corpus {}, no crash",
            run.executions, args.seconds, run.per_second, run.coverage, run.corpus
        );
        runs.insert(target.clone(), run);
    }
    write_results(args.seconds, &runs)
}

fn read_stats(log: &str) -> Option<Run> {
    let stat = |name: &str| -> Option<u64> {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    // The last status line ("#N DONE cov: C ft: F corp: K/…") has the coverage and corpus.
    let last = log.lines().rev().find(|l| l.contains(" cov: "))?;
    let after = |key: &str| -> Option<u64> {
        let (_, rest) = last.split_once(key)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    Some(Run {
        executions: stat("number_of_executed_units")?,
        per_second: stat("average_exec_per_sec")?,
        coverage: after(" cov: ")?,
        corpus: after(" corp: ").unwrap_or(0),
        peak_rss_mb: stat("peak_rss_mb").unwrap_or(0),
    })
}

fn write_results(seconds: u64, runs: &BTreeMap<String, Run>) -> Result {
    let mut json = String::from("{\"seconds\":");
    json.push_str(&seconds.to_string());
    json.push_str(",\"targets\":{");
    let mut md = String::from(
        "| target | seconds | executions | executions/s | coverage (edges) | corpus | peak RSS (MB) | crashes |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (i, (t, r)) in runs.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\"{t}\":{{\"executions\":{},\"executions_per_second\":{},\"coverage\":{},\"corpus\":{},\"peak_rss_mb\":{},\"crashes\":0}}",
            r.executions, r.per_second, r.coverage, r.corpus, r.peak_rss_mb
        ));
        md.push_str(&format!(
            "| {t} | {seconds} | {} | {} | {} | {} | {} | 0 |\n",
            r.executions, r.per_second, r.coverage, r.corpus, r.peak_rss_mb
        ));
    }
    json.push_str("}}\n");
    let dir = root().join("results");
    for (name, text) in [("fuzz.json", json), ("fuzz.md", md)] {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("cannot write results/{name}: {e}"))?;
    }
    eprintln!("fuzz: results/fuzz.json and results/fuzz.md written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statistics_are_read_from_libfuzzers_output() {
        let log = "#1024\tpulse  cov: 10 ft: 12 corp: 3/40b exec/s: 0 rss: 30Mb\n\
                   #52133\tDONE   cov: 1893 ft: 5120 corp: 211/19Kb lim: 4096 exec/s: 868 rss: 411Mb\n\
                   Done 52133 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 52133\n\
                   stat::average_exec_per_sec:     854\n\
                   stat::new_units_added:          188\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              411\n";
        let r = read_stats(log).unwrap();
        assert_eq!(
            (
                r.executions,
                r.per_second,
                r.coverage,
                r.corpus,
                r.peak_rss_mb
            ),
            (52133, 854, 1893, 211, 411)
        );
        assert!(read_stats("no statistics").is_none());
    }

    #[test]
    fn arguments_are_checked() {
        let a = |s: &[&str]| parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&[]).unwrap().targets.len(), TARGETS.len());
        assert_eq!(
            a(&["--seconds", "5", "--target", "delta"]).unwrap().targets,
            ["delta"]
        );
        assert!(a(&["--seconds", "0"]).is_err());
        assert!(a(&["--target", "nope"]).is_err());
        assert!(a(&["--frobnicate"]).is_err());
    }
}
