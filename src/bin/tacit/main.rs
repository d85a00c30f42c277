//! `tacit`: the native command line (`cli.rs`). The crate also builds for wasm32, where
//! the browser package (`src/web/`) is the interface and this binary is empty.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
