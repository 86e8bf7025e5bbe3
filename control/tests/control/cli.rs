//! `control invoke EVENT.json` from a shell: the binary, configured by
//! environment variables, pointed at the emulator.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::fleet::{self, launch};
use crate::runtime_api::RuntimeApi;
use crate::{HOME, World, with_world};

/// Longest a `control invoke` may take here.
const TIMEOUT: Duration = Duration::from_secs(120);

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `control invoke EVENT` with the emulator's environment and `vars`.
fn invoke(world: &World, event: &Path, vars: &[(&str, &str)]) -> Result<Outcome> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_control"))
        .arg("invoke")
        .arg(event)
        .env_clear()
        .envs(world.emulator.env())
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting control")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            child.kill()?;
            anyhow::bail!("control invoke took over {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let join = |h: std::thread::JoinHandle<std::io::Result<String>>| {
        h.join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?
            .context("reading output")
    };
    Ok(Outcome {
        code: status.code(),
        stdout: join(out)?,
        stderr: join(err)?,
    })
}

#[test]
fn control_invoke_handles_one_event_from_a_shell() -> Result<()> {
    with_world(|world| async move {
        let ec2 = world.ec2(HOME).await;
        let instance = launch(&ec2, &[], &["/dev/xvda"]).await?;
        let sqs = world.sqs().await;
        let queue = fleet::queue(&sqs, "jobs").await?;
        let dir = tempfile::tempdir()?;
        let scheduled = dir.path().join("scheduled.json");
        std::fs::write(
            &scheduled,
            json!({
                "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
                "detail-type": "Scheduled Event", "source": "aws.events",
                "account": "123456789012", "time": "2024-05-01T12:00:00Z", "region": HOME,
                "resources": ["arn:aws:events:us-east-1:123456789012:rule/scan"], "detail": {}
            })
            .to_string(),
        )?;
        let vars = [
            ("CONTROL_REGIONS", HOME),
            ("CONTROL_QUEUE_URL", queue.as_str()),
        ];

        let outcome = invoke(&world, &scheduled, &vars)?;
        ensure!(
            outcome.code == Some(0),
            "exit {:?}: {}",
            outcome.code,
            outcome.stderr
        );
        let response: Value = serde_json::from_str(&outcome.stdout)
            .with_context(|| format!("stdout is not JSON: {}", outcome.stdout))?;
        ensure!(
            response["action"] == "scan" && response["jobs"] == 1,
            "{response:#}"
        );
        // Not a terminal: the logs are JSON lines.
        for line in outcome.stderr.lines() {
            serde_json::from_str::<Value>(line)
                .with_context(|| format!("log line is not JSON: {line}"))?;
        }
        let jobs = fleet::jobs(&sqs, &queue).await?;
        ensure!(jobs.contains_key(&instance), "the job is on the queue");

        // Every enabled region when none is configured (the emulator lists
        // regions the account has not opted into as well: they are left out).
        let sweep = dir.path().join("sweep.json");
        std::fs::write(&sweep, r#"{"action": "sweep", "ttl_hours": 0}"#)?;
        let outcome = invoke(&world, &sweep, &[])?;
        ensure!(
            outcome.code == Some(0),
            "exit {:?}: {}",
            outcome.code,
            outcome.stderr
        );
        let response: Value = serde_json::from_str(&outcome.stdout)?;
        let regions: Vec<&str> = response["regions"]
            .as_array()
            .context("regions")?
            .iter()
            .filter_map(|r| r["region"].as_str())
            .collect();
        ensure!(
            regions.contains(&HOME)
                && regions.contains(&"eu-west-1")
                && !regions.contains(&"ap-east-1"),
            "{regions:?}"
        );
        Ok(())
    })
}

#[test]
fn control_invoke_fails_clearly() -> Result<()> {
    with_world(|world| async move {
        let dir = tempfile::tempdir()?;
        let event = dir.path().join("event.json");
        std::fs::write(&event, r#"{"action": "delete-everything"}"#)?;
        let outcome = invoke(&world, &event, &[("CONTROL_REGIONS", HOME)])?;
        ensure!(outcome.code == Some(1), "exit {:?}", outcome.code);
        ensure!(outcome.stdout.is_empty(), "{}", outcome.stdout);
        ensure!(
            outcome
                .stderr
                .contains("unknown variant `delete-everything`"),
            "{}",
            outcome.stderr
        );

        let outcome = invoke(&world, &dir.path().join("missing.json"), &[])?;
        ensure!(
            outcome.code == Some(1) && outcome.stderr.contains("missing.json"),
            "{}",
            outcome.stderr
        );

        std::fs::write(&event, r#"{"action": "scale"}"#)?;
        let outcome = invoke(&world, &event, &[("CONTROL_SWEEP_TTL_HOURS", "soon")])?;
        ensure!(
            outcome.code == Some(1) && outcome.stderr.contains("CONTROL_SWEEP_TTL_HOURS=\"soon\""),
            "{}",
            outcome.stderr
        );
        Ok(())
    })
}

/// Kills the child when dropped, so no failure path leaves it running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn in_lambda_the_binary_answers_events_through_the_runtime_api() -> Result<()> {
    with_world(|world| async move {
        let api = RuntimeApi::start(&[
            json!({"action": "sweep", "ttl_hours": 0}).to_string(),
            json!({"action": "nonsense"}).to_string(),
        ])?;
        let _function = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_control"))
                .env_clear()
                .envs(world.emulator.env())
                .envs([
                    ("AWS_LAMBDA_RUNTIME_API", api.address.as_str()),
                    ("AWS_LAMBDA_FUNCTION_NAME", "control"),
                    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
                    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                    ("AWS_LAMBDA_LOG_STREAM_NAME", "stream"),
                    ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/control"),
                    ("CONTROL_REGIONS", HOME),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting control")?,
        );

        let (path, body) = api.next_post(TIMEOUT)?;
        ensure!(
            path == "/2018-06-01/runtime/invocation/req-0/response",
            "{path}: {body}"
        );
        let response: Value = serde_json::from_str(&body)?;
        ensure!(
            response["action"] == "sweep" && response["regions"][0]["region"] == HOME,
            "{response:#}"
        );

        let (path, body) = api.next_post(TIMEOUT)?;
        ensure!(
            path == "/2018-06-01/runtime/invocation/req-1/error",
            "{path}: {body}"
        );
        let error: Value = serde_json::from_str(&body)?;
        ensure!(
            error["errorType"] == "InvalidEvent"
                && error["errorMessage"]
                    .as_str()
                    .is_some_and(|m| m.contains("unknown variant `nonsense`")),
            "{error:#}"
        );
        Ok(())
    })
}
