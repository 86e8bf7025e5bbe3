//! Running the `worker` binary the way a user does: a child process with a
//! wall-clock bound and an address-space bound, its exit code, standard
//! output and standard error captured.
//!
//! Finding the binary: `env!("CARGO_BIN_EXE_worker")` exists only inside the
//! `worker` package, and artifact dependencies are unstable, so on first use
//! the kit runs `$CARGO build -p worker --bin worker` with the profile of the
//! running test binary and takes the executable's path from cargo's JSON
//! messages. That build is a no-op when `worker` is fresh, and always tests
//! the current sources; it does not deadlock, because cargo releases its
//! build lock before it runs tests. `WORKER_BIN=/path/to/worker` skips the
//! build and tests that binary instead (a release build, an installed one).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use worker::report::Report;

use crate::tools;

/// Wall-clock bound for an ordinary scan of a test image (tens of MiB, a
/// debug build): generous, so only a hang trips it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Wall-clock bound for a scan of hostile input: a parser that loops is
/// killed and the test fails, instead of the suite hanging.
pub const HOSTILE_TIMEOUT: Duration = Duration::from_secs(20);

/// Address-space bound for every run (`prlimit --as`): a length field read
/// from a hostile image must never turn into an unbounded allocation.
pub const MEMORY_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// glibc reserves 64 MiB of address space per malloc arena, up to eight per
/// core; capping the arenas keeps [`MEMORY_LIMIT`] about real allocations on
/// a many-core machine.
const MALLOC_ARENA_MAX: &str = "4";

/// Exit code of a Rust program that panicked on its main thread.
pub const PANIC_EXIT_CODE: i32 = 101;

/// The `worker` executable, built on first use (see the module docs).
///
/// # Errors
/// When the build fails or cargo names no executable.
pub fn binary() -> Result<&'static Path> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_or_build().map_err(|err| format!("{err:#}")))
        .as_deref()
        .map_err(|err| anyhow!("the worker binary is not available: {err}"))
}

fn locate_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WORKER_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("WORKER_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    // Not the variables cargo set for this test process: build scripts
    // (ring's) track CARGO_MANIFEST_DIR, so inheriting it would make the
    // next `cargo` in a shell rebuild ring and everything above it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.args(["build", "-p", "worker", "--bin", "worker"])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir_name()?.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = tools::run_output(&mut cmd).context("building the worker binary")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_worker_bin = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "worker"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
        if let (true, Some(path)) = (is_worker_bin, message["executable"].as_str()) {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("`cargo build -p worker` named no worker executable:\n{stdout}")
}

/// The profile directory the running test binary sits in (`debug`,
/// `release`, …): `target/<profile>/deps/e2e-<hash>`.
fn profile_dir_name() -> Result<String> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    exe.parent()
        .filter(|deps| deps.file_name() == Some(OsStr::new("deps")))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .with_context(|| {
            format!(
                "the test binary {} is not in target/<profile>/deps",
                exe.display()
            )
        })
}

/// How one run of `worker` ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// The exit code, `None` when killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Outcome {
    /// Everything about the run, for assertion messages.
    pub fn summary(&self) -> String {
        let stdout: String = self.stdout.chars().take(4000).collect();
        let stderr: String = self.stderr.chars().take(8000).collect();
        format!(
            "`{}` ended with code {:?} signal {:?} after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            self.command, self.code, self.signal, self.elapsed
        )
    }

    /// Whether the output shows a panic.
    pub fn panicked(&self) -> bool {
        self.code == Some(PANIC_EXIT_CODE) || self.stderr.contains("panicked")
    }

    /// Require a clean end: exit 0 or 1, no panic, no signal, and when 0,
    /// standard output parses as a report (or an array of them).
    ///
    /// # Errors
    /// Describing the run when any of that fails.
    pub fn check_clean_exit(&self) -> Result<()> {
        if self.panicked() {
            bail!("the worker panicked: {}", self.summary());
        }
        match self.code {
            Some(0) => {
                parse_reports(&self.stdout)
                    .with_context(|| format!("exit 0 without a report: {}", self.summary()))?;
                Ok(())
            }
            Some(1) => Ok(()),
            _ => bail!("expected exit 0 or 1: {}", self.summary()),
        }
    }

    /// Require exit 0 with no panic and parse standard output as one report.
    ///
    /// # Errors
    /// Describing the run when it failed or printed something else.
    pub fn report(&self) -> Result<Report> {
        if self.code != Some(0) || self.panicked() {
            bail!("expected a report with exit 0: {}", self.summary());
        }
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("standard output is not one report: {}", self.summary()))
    }

    /// Standard output as untyped JSON (to look at nulls and raw fields).
    ///
    /// # Errors
    /// When it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("standard output is not JSON: {}", self.summary()))
    }
}

/// Parse `text` as one report or an array of reports.
///
/// # Errors
/// When it is neither.
pub fn parse_reports(text: &str) -> Result<Vec<Report>> {
    let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    if value.is_array() {
        serde_json::from_value(value).context("not an array of reports")
    } else {
        Ok(vec![serde_json::from_value(value).context("not a report")?])
    }
}

/// A run of `worker` with its bounds.
#[derive(Debug, Clone)]
pub struct Run {
    args: Vec<OsString>,
    timeout: Duration,
    memory_limit: u64,
    env: Vec<(String, String)>,
}

impl Run {
    /// `worker ARGS…` with [`DEFAULT_TIMEOUT`] and [`MEMORY_LIMIT`].
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self {
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            timeout: DEFAULT_TIMEOUT,
            memory_limit: MEMORY_LIMIT,
            env: Vec::new(),
        }
    }

    /// Set environment variables for the run (the emulator's endpoint, …).
    #[must_use]
    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// `worker scan TARGET --format json`.
    pub fn scan_json(target: &Path) -> Self {
        Self::new([
            OsStr::new("scan"),
            target.as_os_str(),
            OsStr::new("--format"),
            OsStr::new("json"),
        ])
    }

    /// Use another wall-clock bound.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Run it. A run that outlives its timeout is killed and is an error.
    ///
    /// # Errors
    /// When the binary is unavailable, cannot start, or times out.
    pub fn run(&self) -> Result<Outcome> {
        let binary = binary()?;
        let mut cmd = tools::tool("prlimit")?;
        cmd.arg(format!("--as={}", self.memory_limit))
            .arg("--")
            .arg(binary)
            .args(&self.args)
            .env("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!(
            "worker {}",
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        let stdout = drain(child.stdout.take().context("child stdout")?);
        let stderr = drain(child.stderr.take().context("child stderr")?);
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the worker")? {
                break Some(status);
            }
            if started.elapsed() > self.timeout {
                // Ignore a failed kill: the child may have just exited.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        let stdout = collect(stdout)?;
        let stderr = collect(stderr)?;
        let Some(status) = status else {
            bail!(
                "`{command}` did not finish within {:?} and was killed (a hang or an endless loop)\nstderr:\n{stderr}",
                self.timeout
            );
        };
        Ok(Outcome {
            command,
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
            elapsed,
        })
    }
}

type Drain = std::thread::JoinHandle<std::io::Result<Vec<u8>>>;

fn drain(mut pipe: impl Read + Send + 'static) -> Drain {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        pipe.read_to_end(&mut buf)?;
        Ok(buf)
    })
}

fn collect(handle: Drain) -> Result<String> {
    let bytes = handle
        .join()
        .map_err(|_| anyhow!("a pipe reader panicked"))?
        .context("reading the worker's output")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `worker ARGS…` with the default bounds.
///
/// # Errors
/// As [`Run::run`].
pub fn run_worker<I, S>(args: I) -> Result<Outcome>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::new(args).run()
}

/// `worker scan TARGET --format json`, requiring exit 0 and one report.
///
/// # Errors
/// When the run fails or prints no report.
pub fn scan(target: &Path) -> Result<Report> {
    Run::scan_json(target).run()?.report()
}
