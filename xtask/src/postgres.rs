//! A throwaway Postgres cluster for the sync server's tests: Debian's `postgresql` package
//! (installed by `setup` when missing), `initdb` into a temporary directory, `pg_ctl start`
//! on a free loopback port, and `pg_ctl stop` plus removal when dropped. Postgres refuses to
//! run as root, so as root (CI) the cluster runs as the `postgres` user the package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{install_apt, run, Result};

/// The directory holding `initdb` and `pg_ctl`: the newest installed major version.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Idempotent: installs the server package only when no `initdb` is present.
pub fn ensure_installed() -> Result {
    if bin_dir().is_none() {
        install_apt(&["postgresql"])?;
    }
    bin_dir()
        .map(|_| ())
        .ok_or_else(|| "postgresql is installed but no initdb was found".into())
}

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub url: String,
}

fn is_root() -> bool {
    crate::output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl Cluster {
    pub fn start() -> Result<Cluster> {
        let bin = bin_dir().ok_or("no Postgres installed (cargo xtask setup installs it)")?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("tacit-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let port = free_port()?;
        let cluster = Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cluster.dir))?;
        }
        let data = cluster.dir.join("data");
        run(cluster
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-instructions",
                "-D",
            ])
            .arg(&data))?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=300",
            cluster.dir.display()
        );
        run(cluster
            .command("pg_ctl")
            .args(["-w", "-l"])
            .arg(cluster.dir.join("log"))
            .args(["-o", &options, "-D"])
            .arg(&data)
            .arg("start"))?;
        eprintln!("postgres: throwaway cluster at {}", cluster.url);
        Ok(cluster)
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data().join("data");
        let _ = run(self
            .command("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(&data)
            .arg("stop"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
