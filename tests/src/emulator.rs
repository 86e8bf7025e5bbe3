//! The local AWS emulator (moto, `tests/emulator/launch.py`), started once
//! per test binary on 127.0.0.1 and stopped when the binary exits: it is
//! started with `--exit-on-stdin-eof` and its stdin pipe is held for the
//! life of the process, so it cannot outlive the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _process: Mutex<(Child, ChildStdin)>,
}

static EMULATOR: OnceLock<std::result::Result<Emulator, String>> = OnceLock::new();

/// The emulator of this test binary, started on first use.
///
/// # Errors
/// When `SCANNER_EMULATOR_PYTHON` is unset (run the tests through
/// `scripts/test`) or the emulator does not come up.
pub fn emulator() -> Result<&'static Emulator> {
    EMULATOR
        .get_or_init(|| start().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow::anyhow!("starting the AWS emulator: {err}"))
}

fn start() -> Result<Emulator> {
    let python = std::env::var_os("SCANNER_EMULATOR_PYTHON").context(
        "SCANNER_EMULATOR_PYTHON is not set: run the tests with scripts/test, which creates \
         the emulator's venv (.cache/emulator-venv) and sets it",
    )?;
    let launcher = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("emulator/launch.py");
    let mut child = Command::new(&python)
        .arg(&launcher)
        .args(["--port", "0", "--exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} {}",
                PathBuf::from(&python).display(),
                launcher.display()
            )
        })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stdin = child.stdin.take().context("no stdin")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the emulator's READY line")?;
    let Some(url) = line.trim().strip_prefix("READY ") else {
        let _ = child.kill();
        bail!("the emulator did not say READY (it said {line:?})");
    };
    Ok(Emulator {
        url: url.to_string(),
        _process: Mutex::new((child, stdin)),
    })
}

impl Emulator {
    /// The environment a `worker` run needs to talk to the emulator.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Make the next calls matching `fault` fail (see `tests/emulator/README.md`):
    /// e.g. `{"service": "ebs", "action": "GetSnapshotBlock", "count": 5,
    /// "status": 429, "code": "ThrottlingException"}`.
    ///
    /// # Errors
    /// When the emulator refuses it.
    pub fn inject(&self, fault: &serde_json::Value) -> Result<()> {
        self.control("POST", "/_emulator/faults", Some(fault))
            .map(drop)
    }

    /// Delay every `service` call of `action` by `ms` milliseconds before it
    /// reaches moto (`0` removes the delay), to slow a job down.
    ///
    /// # Errors
    /// When the emulator refuses it.
    pub fn set_latency(&self, service: &str, action: &str, ms: u64) -> Result<()> {
        let body = serde_json::json!({"service": service, "action": action, "ms": ms});
        self.control("POST", "/_emulator/latency", Some(&body))
            .map(drop)
    }

    /// Remove every pending fault.
    ///
    /// # Errors
    /// When the emulator cannot be reached.
    pub fn clear_faults(&self) -> Result<()> {
        self.control("DELETE", "/_emulator/faults", None).map(drop)
    }

    /// A plain HTTP/1.1 call to a control endpoint; the response body.
    fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String> {
        let address = self.url.trim_start_matches("http://");
        let mut stream =
            TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.map(serde_json::Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response.split_whitespace().nth(1).unwrap_or("");
        if !status.starts_with('2') {
            bail!("{method} {path}: {}", response.lines().next().unwrap_or(""));
        }
        Ok(response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }
}
