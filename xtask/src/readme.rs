//! The README's commands are run, not just shown: `.ci/readme-commands.sh` runs each command
//! form of the README's `sh` blocks on a fresh build (`cargo xtask test` calls it), and the test
//! below fails when the README shows a command form the script does not run.

use std::process::Command;

use crate::{root, run, Result};

const SCRIPT: &str = ".ci/readme-commands.sh";

/// Forms the script does not run: benchmarks are commands of their own (they time, they do not
/// check); `cargo xtask test` is what runs the script (and is what `.ci/run` calls), and its
/// browser stage is the `wasm-pack test` line.
#[cfg(test)]
const NOT_RUN: [&str; 5] = [
    "$T bench",
    "$S bench",
    "cargo xtask bench-server",
    "cargo xtask test",
    "wasm-pack test",
];

pub fn run_readme_commands() -> Result {
    run(Command::new("bash").arg(root().join(SCRIPT)))
}

/// The command forms of a markdown text's `sh` blocks: the program and its sub-command words,
/// up to the first flag, placeholder or comment (`$T eval --data …` → `$T eval`). `tacit …`
/// is the installed CLI, which the script runs as `$T …`.
#[cfg(test)]
fn command_forms(markdown: &str) -> Vec<String> {
    let mut forms = Vec::new();
    let mut in_sh = false;
    let mut continued = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && (lang == "sh" || lang == "bash");
            continued = false;
            continue;
        }
        if !in_sh || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let was_continued = continued;
        continued = trimmed.ends_with('\\');
        if was_continued || trimmed.contains('=') && !trimmed.contains(' ') {
            continue; // an argument line, or `T=target/release/tacit`
        }
        let words: Vec<&str> = trimmed
            .split_whitespace()
            .take_while(|w| {
                !w.starts_with('-') && !w.starts_with('[') && !w.starts_with('#') && *w != "..."
            })
            .collect();
        let mut form = words.join(" ");
        if let Some(rest) = form.strip_prefix("tacit ") {
            form = format!("$T {rest}");
        }
        if !form.is_empty() {
            forms.push(form);
        }
    }
    forms
}

/// The forms `.ci/readme-commands.sh` runs, read the same way (its `step` prefix removed).
#[cfg(test)]
fn script_forms(script: &str) -> Vec<String> {
    let as_markdown = format!(
        "```sh\n{}\n```\n",
        script
            .lines()
            .map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("step ").unwrap_or(l);
                let l = l.strip_prefix("setsid ").unwrap_or(l);
                l.strip_prefix("ADMIN=$(step ")
                    .or_else(|| l.strip_prefix("ALICE=$(step "))
                    .unwrap_or(l)
                    .replace("\"$S\"", "$S")
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    command_forms(&as_markdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_up_to_the_first_flag() {
        let md = "text\n```sh\ncargo build --release\nT=target/release/tacit\n$T eval  --data F \\\n   --x 1\n$S token create --db D   # c\ntacit sync --url U\n```\n```js\nnot shell\n```\n";
        assert_eq!(
            command_forms(md),
            ["cargo build", "$T eval", "$S token create", "$T sync"]
        );
    }

    /// The rows of the README's layout table: the paths of the first column (each checked
    /// to exist) and the files named in the second (each checked under its row's folders).
    #[test]
    fn the_layout_table_matches_the_folders() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let table: Vec<&str> = readme
            .split("## How the code is laid out")
            .nth(1)
            .expect("the README has a layout section")
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .collect();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let mut listed = Vec::new();
        let mut missing = Vec::new();
        for row in &table {
            let cells: Vec<&str> = row.split('|').collect();
            let folders = ticked(cells[1]);
            for path in &folders {
                if !root().join(path).exists() {
                    missing.push(path.clone());
                }
                listed.push(path.trim_end_matches('/').to_string());
            }
            // Files named in the description, looked up in any folder of the row (or below).
            for name in ticked(cells[2]) {
                let is_file = name.ends_with(".rs")
                    || name.ends_with(".wgsl")
                    || name.ends_with(".mjs")
                    || name.ends_with(".sh");
                if !is_file || name.starts_with('.') {
                    continue;
                }
                let found = name.contains('/') && root().join(&name).exists()
                    || folders.iter().any(|f| {
                        let base = root().join(f);
                        let dir = if base.is_dir() {
                            base
                        } else {
                            base.parent().unwrap().to_path_buf()
                        };
                        dir.join(&name).exists() || find(&dir, &name)
                    });
                if !found {
                    missing.push(format!("{name} (row {})", cells[1].trim()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "the layout table names what is not there: {missing:?}"
        );
        // Every entry of src/ (but lib.rs, the index) has a row.
        let unlisted: Vec<String> = std::fs::read_dir(root().join("src"))
            .unwrap()
            .flatten()
            .map(|e| format!("src/{}", e.file_name().to_string_lossy()))
            .filter(|p| p != "src/lib.rs")
            .filter(|p| {
                !listed.iter().any(|l| {
                    l == p || p.trim_end_matches(".rs") == l || l.starts_with(&format!("{p}/"))
                })
            })
            .collect();
        assert!(unlisted.is_empty(), "the layout table lacks {unlisted:?}");
    }

    fn find(dir: &std::path::Path, name: &str) -> bool {
        std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten().any(|e| {
                let p = e.path();
                p.ends_with(name) || p.is_dir() && find(&p, name)
            })
        })
    }

    #[test]
    fn readme_commands_are_all_run() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let script = std::fs::read_to_string(root().join(SCRIPT)).unwrap();
        let run = script_forms(&script);
        let missing: Vec<String> = command_forms(&readme)
            .into_iter()
            .filter(|f| !NOT_RUN.contains(&f.as_str()) && !run.contains(f))
            .collect();
        assert!(
            missing.is_empty(),
            "the README shows commands that {SCRIPT} does not run: {missing:?}"
        );
    }
}
