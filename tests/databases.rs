//! Real MariaDB and PostgreSQL servers for the JDBC sink's end-to-end tests,
//! each on a free loopback port with a throwaway data directory, started by
//! the tests themselves (Debian's `mariadb-server` and `postgresql`, which
//! `scripts/test.sh` installs when missing), and queried through their own
//! command-line clients.
//!
//! Both refuse to run as root without help: MariaDB is told `--user=root`,
//! PostgreSQL runs as `nobody` through `setpriv` (which execs, so the
//! lifeline's SIGKILL reaches the server itself).

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::{free_port, wait_until, Lifeline};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MariaDB (MySQL's protocol and SQL).
    MariaDb,
    /// PostgreSQL.
    Postgres,
}

/// A database server on 127.0.0.1, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Database {
    /// Which server it is.
    pub flavor: Flavor,
    port: u16,
    dir: tempfile::TempDir,
    proc: Option<Lifeline>,
    starts: usize,
    remove_dir: bool,
}

/// The user the sink logs in as on MariaDB, with a password.
pub const MARIADB_USER: &str = "weir";
/// Its password.
pub const MARIADB_PASSWORD: &str = "weir-s3cret";

fn as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory of PostgreSQL's server programs: `WEIR_PG_BIN`, else
/// Debian's newest `/usr/lib/postgresql/N/bin`, else the `PATH`.
fn pg_bin(program: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_PG_BIN") {
        return Path::new(&dir).join(program);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(program))
        .filter(|p| p.exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(Path::parent).and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| PathBuf::from(program))
}

/// `program args` as user `nobody` when this process is root.
fn unprivileged(program: &Path, args: &[&OsStr]) -> (PathBuf, Vec<std::ffi::OsString>) {
    if as_root() {
        let mut all: Vec<std::ffi::OsString> =
            ["--reuid=nobody", "--regid=nogroup", "--clear-groups"].iter().map(Into::into).collect();
        all.push(program.into());
        all.extend(args.iter().map(|a| a.into()));
        (PathBuf::from("setpriv"), all)
    } else {
        (program.to_path_buf(), args.iter().map(|a| a.into()).collect())
    }
}

fn run(what: &str, program: &Path, args: &[&OsStr]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {} (is it installed? scripts/test.sh installs it)", program.display()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Database {
    /// Starts a server of `flavor` with an empty data directory and waits
    /// until it answers queries.
    pub fn start(flavor: Flavor) -> anyhow::Result<Database> {
        Self::start_with(flavor, false)
    }

    fn start_with(flavor: Flavor, remove_dir: bool) -> anyhow::Result<Database> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        match flavor {
            Flavor::MariaDb => {
                let datadir = format!("--datadir={}", data.display());
                // Temporary tables of its own: servers started side by side
                // must not share /tmp.
                std::fs::create_dir(dir.path().join("tmp"))?;
                let tmpdir = format!("--tmpdir={}", dir.path().join("tmp").display());
                run(
                    "mariadb-install-db",
                    Path::new("mariadb-install-db"),
                    &[
                        OsStr::new("--no-defaults"),
                        OsStr::new(&datadir),
                        OsStr::new("--user=root"),
                        OsStr::new("--auth-root-authentication-method=normal"),
                        OsStr::new("--skip-test-db"),
                        OsStr::new(&tmpdir),
                    ],
                )?;
            }
            Flavor::Postgres => {
                std::fs::create_dir(&data)?;
                if as_root() {
                    run(
                        "chown",
                        Path::new("chown"),
                        &[OsStr::new("-R"), OsStr::new("nobody:nogroup"), dir.path().as_os_str()],
                    )?;
                }
                let (program, args) = unprivileged(
                    &pg_bin("initdb"),
                    &[
                        OsStr::new("-D"),
                        data.as_os_str(),
                        OsStr::new("-U"),
                        OsStr::new("postgres"),
                        OsStr::new("--auth=trust"),
                        OsStr::new("-E"),
                        OsStr::new("UTF8"),
                        OsStr::new("--no-sync"),
                    ],
                );
                let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
                run("initdb", &program, &args)?;
            }
        }
        let mut db = Database { flavor, port: free_port(), dir, proc: None, starts: 0, remove_dir };
        db.launch()?;
        if flavor == Flavor::MariaDb {
            db.execute(
                "mysql",
                &format!(
                    "CREATE USER '{MARIADB_USER}'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}'; GRANT ALL ON *.* TO '{MARIADB_USER}'@'%'"
                ),
            )?;
        }
        Ok(db)
    }

    /// A JDBC URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        match self.flavor {
            Flavor::MariaDb => format!("jdbc:mysql://127.0.0.1:{}/{name}", self.port),
            Flavor::Postgres => format!("jdbc:postgresql://127.0.0.1:{}/{name}?user=postgres", self.port),
        }
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let admin = if self.flavor == Flavor::MariaDb { "mysql" } else { "postgres" };
        self.execute(admin, &format!("CREATE DATABASE {name}"))?;
        Ok(())
    }

    /// Runs `sql` (one or more statements) in database `db`; returns the
    /// rows, tab-separated.
    pub fn execute(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        match self.flavor {
            Flavor::MariaDb => run(
                "mariadb",
                Path::new("mariadb"),
                &[
                    OsStr::new("--protocol=TCP"),
                    OsStr::new("-h127.0.0.1"),
                    OsStr::new(&format!("-P{port}")),
                    OsStr::new("-uroot"),
                    OsStr::new("-N"),
                    OsStr::new("-B"),
                    OsStr::new("-e"),
                    OsStr::new(sql),
                    OsStr::new(db),
                ],
            ),
            Flavor::Postgres => run(
                "psql",
                Path::new("psql"),
                &[
                    OsStr::new("-h"),
                    OsStr::new("127.0.0.1"),
                    OsStr::new("-p"),
                    OsStr::new(&port),
                    OsStr::new("-U"),
                    OsStr::new("postgres"),
                    OsStr::new("-X"),
                    OsStr::new("-q"),
                    OsStr::new("-v"),
                    OsStr::new("ON_ERROR_STOP=1"),
                    OsStr::new("-At"),
                    OsStr::new("-F"),
                    OsStr::new("\t"),
                    OsStr::new("-c"),
                    OsStr::new(sql),
                    OsStr::new(db),
                ],
            ),
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
        self.launch()
    }

    /// What the server logged, over all its starts.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let path = self.dir.path().join(format!("server-{n}.log"));
                format!("--- server-{n}.log\n{}", std::fs::read_to_string(path).unwrap_or_default())
            })
            .collect()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let name = format!("server-{}", self.starts);
        let log = self.dir.path().join(format!("{name}.log"));
        let data = self.dir.path().join("data");
        let port = self.port.to_string();
        let remove = self.remove_dir.then(|| self.dir.path());
        let started = match self.flavor {
            Flavor::MariaDb => {
                let datadir = format!("--datadir={}", data.display());
                let socket = format!("--socket={}", data.join("sock").display());
                let port = format!("--port={port}");
                let tmpdir = format!("--tmpdir={}", self.dir.path().join("tmp").display());
                let args = [
                    OsStr::new("--no-defaults"),
                    OsStr::new(&datadir),
                    OsStr::new(&socket),
                    OsStr::new(&port),
                    OsStr::new("--bind-address=127.0.0.1"),
                    OsStr::new("--user=root"),
                    OsStr::new("--skip-log-bin"),
                    OsStr::new("--innodb-buffer-pool-size=64M"),
                    OsStr::new(&tmpdir),
                ];
                Lifeline::start(&name, Path::new("mariadbd"), &args, &[], &log, remove)?
            }
            Flavor::Postgres => {
                let (program, args) = unprivileged(
                    &pg_bin("postgres"),
                    &[
                        OsStr::new("-D"),
                        data.as_os_str(),
                        OsStr::new("-k"),
                        data.as_os_str(),
                        OsStr::new("-p"),
                        OsStr::new(&port),
                        OsStr::new("-h"),
                        OsStr::new("127.0.0.1"),
                        OsStr::new("-c"),
                        OsStr::new("fsync=off"),
                    ],
                );
                let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
                Lifeline::start(&name, &program, &args, &[], &log, remove)?
            }
        };
        let proc = &mut self.proc.insert(started).proc;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let admin = if self.flavor == Flavor::MariaDb { "mysql" } else { "postgres" };
        let ready = wait_until("the database server to start", START_TIMEOUT, || {
            if let Some(status) = proc.child.try_wait()? {
                return Ok(Some(Err(anyhow!("the server exited ({status})"))));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
                return Ok(None);
            }
            Ok(Some(Ok(())))
        });
        ready.and_then(|r| r).with_context(|| format!("starting {:?}; log:\n{}", self.flavor, self.log()))?;
        wait_until("the database server to answer", START_TIMEOUT, || Ok(self.execute(admin, "SELECT 1").ok()))
            .with_context(|| format!("{:?} does not answer; log:\n{}", self.flavor, self.log()))?;
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
    }
}

/// One server of each flavor shared by the tests of a test binary that
/// neither stop nor restart it (each uses its own database); started on
/// first use, killed when the test process exits.
pub fn shared(flavor: Flavor) -> &'static Database {
    static MARIADB: OnceLock<Result<Database, String>> = OnceLock::new();
    static POSTGRES: OnceLock<Result<Database, String>> = OnceLock::new();
    let cell = if flavor == Flavor::MariaDb { &MARIADB } else { &POSTGRES };
    match cell.get_or_init(|| Database::start_with(flavor, true).map_err(|e| format!("{e:#}"))) {
        Ok(db) => db,
        Err(e) => panic!("the shared {flavor:?} server did not start: {e}"),
    }
}
