//! `worker run`, the daemon, against the local AWS emulator: jobs put on
//! the queue by the control Lambda's own enqueue code, snapshots uploaded
//! from images built by the real tools, the `worker` binary run as a child
//! process (killed, signalled, left idle), and what arrives where reports
//! go (a local HTTP receiver, a directory, S3).
//!
//! The emulator's faults and latency are global, so these tests take the
//! EBS tests' lock ([`super::ebs::exclusive`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::types::QueueAttributeName;
use e2e::emulator::Emulator;
use e2e::image::{self, MIB};
use e2e::receiver::Receiver;
use e2e::{tree, workdir};
use scanner_contract::{JOB_VERSION, JobSnapshot, OwnershipTag, Pause, ScanJob};
use serde_json::json;
use worker::daemon::job::JobReport;

use super::ebs::{exclusive, upload};

/// Bound on one `worker run` in these tests: a few small jobs.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Names unique to one test (queues, parameter prefixes, buckets).
fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The SDK clients of a test, pointed at the emulator.
struct World {
    runtime: tokio::runtime::Runtime,
    sdk: SdkConfig,
    emulator: &'static Emulator,
}

impl World {
    fn new(emulator: &'static Emulator) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let sdk = runtime.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .endpoint_url(&emulator.url)
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "testing", "testing", None, None, "e2e",
                ))
                .load(),
        );
        Ok(Self {
            runtime,
            sdk,
            emulator,
        })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk)
    }

    fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    fn asg(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.sdk)
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(true)
                .build(),
        )
    }

    /// A new queue, with a dead-letter queue after `max_receive` receives
    /// when given: `(queue URL, DLQ URL)`.
    fn queue(&self, max_receive: Option<u32>) -> Result<(String, Option<String>)> {
        let sqs = self.sqs();
        self.block_on(async {
            let mut dlq = None;
            let mut request = sqs.create_queue().queue_name(unique("jobs"));
            if let Some(max) = max_receive {
                let dlq_url = sqs
                    .create_queue()
                    .queue_name(unique("dlq"))
                    .send()
                    .await?
                    .queue_url
                    .context("no DLQ URL")?;
                let arn = sqs
                    .get_queue_attributes()
                    .queue_url(&dlq_url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send()
                    .await?
                    .attributes
                    .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                    .context("no DLQ ARN")?;
                request = request.attributes(
                    QueueAttributeName::RedrivePolicy,
                    json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string(),
                );
                dlq = Some(dlq_url);
            }
            let url = request.send().await?.queue_url.context("no queue URL")?;
            Ok((url, dlq))
        })
    }

    /// `(visible, in flight)` messages of a queue.
    fn depth(&self, url: &str) -> Result<(u64, u64)> {
        let sqs = self.sqs();
        self.block_on(async {
            let attributes = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await?
                .attributes
                .unwrap_or_default();
            let get = |name| {
                attributes
                    .get(&name)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Ok((
                get(QueueAttributeName::ApproximateNumberOfMessages),
                get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            ))
        })
    }

    /// Put `jobs` on the queue with the control Lambda's own code.
    fn enqueue(&self, url: &str, jobs: &[ScanJob]) -> Result<()> {
        let sent = self.block_on(control::enqueue::enqueue(
            &self.sqs(),
            url,
            jobs,
            std::time::Duration::ZERO,
        ))?;
        ensure!(
            sent.sent == jobs.len() && sent.failed.is_empty(),
            "enqueue: {sent:?}"
        );
        Ok(())
    }

    fn put_parameter(&self, name: &str, value: &str, secure: bool) -> Result<()> {
        let ssm = self.ssm();
        self.block_on(
            ssm.put_parameter()
                .name(name)
                .value(value)
                .overwrite(true)
                .r#type(if secure {
                    aws_sdk_ssm::types::ParameterType::SecureString
                } else {
                    aws_sdk_ssm::types::ParameterType::String
                })
                .send(),
        )?;
        Ok(())
    }

    /// Ids of the volumes and snapshots carrying the ownership tag.
    fn owned(&self) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let ec2 = self.ec2();
        let tag = OwnershipTag::default();
        self.block_on(async {
            let volumes = ec2
                .describe_volumes()
                .send()
                .await?
                .volumes()
                .iter()
                .filter(|v| {
                    tag.is_owned(v.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))))
                })
                .filter_map(|v| v.volume_id().map(str::to_string))
                .collect();
            let snapshots = ec2
                .describe_snapshots()
                .owner_ids("self")
                .send()
                .await?
                .snapshots()
                .iter()
                .filter(|s| {
                    tag.is_owned(s.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))))
                })
                .filter_map(|s| s.snapshot_id().map(str::to_string))
                .collect();
            Ok((volumes, snapshots))
        })
    }

    /// Delete the test's own snapshots (they carry the ownership tag:
    /// checked here, right before the call, as everywhere).
    fn delete_snapshots(&self, ids: &[String]) -> Result<()> {
        let ec2 = self.ec2();
        let (_, owned) = self.owned()?;
        for id in ids {
            ensure!(owned.contains(id), "{id} is not owned; not deleting it");
            self.block_on(ec2.delete_snapshot().snapshot_id(id).send())?;
        }
        Ok(())
    }

    /// An instance for the worker to attach volumes to: its own.
    fn worker_instance(&self) -> Result<String> {
        let ec2 = self.ec2();
        self.block_on(async {
            let answer = ec2
                .run_instances()
                .image_id("ami-12345678")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .min_count(1)
                .max_count(1)
                .send()
                .await?;
            answer
                .instances()
                .first()
                .and_then(|i| i.instance_id())
                .map(str::to_string)
                .context("an instance")
        })
    }

    fn latency(&self, ms: u64) -> Result<()> {
        self.emulator.set_latency("ebs", "GetSnapshotBlock", ms)
    }
}

/// Small images, uploaded as snapshots: `(debian snapshot, alpine snapshot)`.
fn snapshots(emulator: &Emulator, dir: &Path) -> Result<(String, String)> {
    let debian_root = dir.join("debian");
    tree::debian_root(&debian_root)?;
    let debian = image::gpt_disk(dir, &debian_root)?.disk;
    let alpine_root = dir.join("alpine");
    tree::alpine_root(&alpine_root)?;
    let alpine = image::bare_ext4(dir, "alpine.img", &alpine_root, 32 * MIB)?;
    Ok((upload(emulator, &debian)?, upload(emulator, &alpine)?))
}

fn job(scan_id: &str, instance: &str, snapshots: &[&str]) -> ScanJob {
    ScanJob {
        version: JOB_VERSION,
        scan_id: scan_id.to_string(),
        region: "us-east-1".to_string(),
        instance_id: instance.to_string(),
        snapshots: snapshots
            .iter()
            .enumerate()
            .map(|(n, id)| JobSnapshot {
                snapshot_id: (*id).to_string(),
                volume_id: format!("vol-{n:017x}"),
                device_name: Some(format!("/dev/xvd{}", char::from(b'a' + n as u8))),
            })
            .collect(),
        created_at: "2026-01-01T00:00:00Z".to_string(),
    }
}

/// A `worker run` child process; its log goes to `log`.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(
        emulator: &Emulator,
        args: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(e2e::run::binary()?)
            .arg("run")
            .args(["--availability-zone", "us-east-1a", "--poll-seconds", "1"])
            .args(args)
            .envs(emulator.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting worker run")?;
        Ok(Self { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the worker to exit on its own (idle), within [`RUN_TIMEOUT`].
    fn wait(&mut self) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > RUN_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "worker run did not finish in {RUN_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    fn exits_cleanly(&mut self) -> Result<()> {
        let status = self.wait()?;
        ensure!(status.success(), "worker run: {status}\n{}", self.log());
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `condition` holds, polling, for at most `limit`.
fn eventually(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what}: not within {limit:?}")
}

fn parse_report(body: &[u8]) -> Result<JobReport> {
    serde_json::from_slice(body).context("a job report")
}

/// The job report a worker wrote at `path`; when there is none, the error
/// carries the worker logs under `dir`, which say why.
fn report_file(path: &Path, dir: &Path) -> Result<JobReport> {
    match std::fs::read(path) {
        Ok(body) => parse_report(&body).with_context(|| format!("{}", path.display())),
        Err(err) => {
            let mut logs = String::new();
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.path();
                if name.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&name).unwrap_or_default();
                    logs.push_str(&format!("--- {}\n{text}\n", name.display()));
                }
            }
            bail!("reading the report {}: {err}\n{logs}", path.display())
        }
    }
}

fn os_ids(report: &JobReport) -> Vec<String> {
    report
        .snapshots
        .iter()
        .flat_map(|s| s.report.iter().flat_map(|r| r.volumes.iter()))
        .filter_map(|v| v.os.as_ref()?.id.clone())
        .collect()
}

#[test]
fn a_worker_configured_in_ssm_drains_jobs_for_several_instances_over_https() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (debian, alpine) = snapshots(emulator, dir.path())?;
    let (owned_volumes_before, owned_snapshots_before) = world.owned()?;
    let (queue, _) = world.queue(None)?;
    let receiver = Receiver::start()?;
    let prefix = format!("/{}", unique("scanner"));
    world.put_parameter(&format!("{prefix}/queue-url"), &queue, false)?;
    world.put_parameter(
        &format!("{prefix}/report-destination"),
        &receiver.url,
        false,
    )?;
    world.put_parameter(
        &format!("{prefix}/service-credential"),
        "s3cret-token",
        true,
    )?;
    world.put_parameter(&format!("{prefix}/concurrency"), "2", false)?;
    world.put_parameter(&format!("{prefix}/idle-minutes"), "0.05", false)?;
    let jobs = [
        job("scan-1", "i-00000000000000001", &[&debian]),
        job("scan-1", "i-00000000000000002", &[&alpine]),
        job("scan-1", "i-00000000000000003", &[&debian, &alpine]),
    ];
    world.enqueue(&queue, &jobs)?;
    // The first delivery is refused: the worker retries it.
    receiver.fail_next(503);
    let mut worker = Worker::start(
        emulator,
        &[
            "--parameter-prefix",
            &prefix,
            "--instance-id",
            "i-0feedfeedfeedfeed",
        ],
        &[],
        dir.path().join("worker.log"),
    )?;
    worker.exits_cleanly()?;

    let received = receiver.received();
    ensure!(
        received.len() == 4,
        "3 reports and one refused try: {received:?}"
    );
    let mut instances = BTreeSet::new();
    for request in received.iter().skip(1) {
        ensure!(
            request.authorization.as_deref() == Some("Bearer s3cret-token"),
            "the credential goes with the report: {:?}",
            request.authorization
        );
        ensure!(
            request.request_line.starts_with("POST /reports "),
            "{}",
            request.request_line
        );
        let report = parse_report(&request.body)?;
        ensure!(report.complete(), "{:?}", report.reasons());
        ensure!(report.scan_id == "scan-1" && report.worker_instance_id == "i-0feedfeedfeedfeed");
        let expected = jobs
            .iter()
            .find(|j| j.instance_id == report.instance_id)
            .context("a report for a job's instance")?;
        let snapshot_ids: Vec<_> = report
            .snapshots
            .iter()
            .map(|s| s.snapshot_id.clone())
            .collect();
        let wanted: Vec<_> = expected
            .snapshots
            .iter()
            .map(|s| s.snapshot_id.clone())
            .collect();
        ensure!(snapshot_ids == wanted, "{snapshot_ids:?} vs {wanted:?}");
        let mut oses = os_ids(&report);
        oses.sort();
        let mut want_os: Vec<String> = wanted
            .iter()
            .map(|id| if *id == debian { "debian" } else { "alpine" }.to_string())
            .collect();
        want_os.sort();
        ensure!(oses == want_os, "{oses:?} vs {want_os:?}");
        instances.insert(report.instance_id);
    }
    ensure!(
        instances.len() == 3,
        "one report per instance: {instances:?}"
    );
    ensure!(world.depth(&queue)? == (0, 0), "the queue is drained");

    let log = worker.log();
    ensure!(
        !log.contains("s3cret-token"),
        "the credential is never logged"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("the log is JSON lines:\n{log}"))?;
    ensure!(
        lines
            .iter()
            .any(|l| l["span"]["instance"] == "i-00000000000000003"
                && l["message"] == "report delivered"),
        "events carry the job's instance:\n{log}"
    );

    // Nothing owned was made by the worker; the test's snapshots go, and
    // then nothing owned is left.
    ensure!(
        world.owned()? == (owned_volumes_before, owned_snapshots_before),
        "the worker created no owned resource"
    );
    world.delete_snapshots(&[debian.clone(), alpine.clone()])?;
    let (volumes, snapshots) = world.owned()?;
    ensure!(
        !snapshots.contains(&debian) && !snapshots.contains(&alpine) && volumes.is_empty(),
        "owned resources left: {volumes:?} {snapshots:?}"
    );
    Ok(())
}

#[test]
fn reports_reach_a_directory_and_an_s3_prefix() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (debian, alpine) = snapshots(emulator, dir.path())?;
    let (queue, _) = world.queue(None)?;
    let reports = dir.path().join("reports");
    world.enqueue(&queue, &[job("scan-f", "i-0000000000000000f", &[&alpine])])?;
    let destination = format!("file://{}", reports.display());
    let common = [
        "--queue-url",
        queue.as_str(),
        "--instance-id",
        "i-0feedfeedfeedfeed",
        "--idle-minutes",
        "0.05",
    ];
    let mut args = common.to_vec();
    args.extend(["--report-destination", destination.as_str()]);
    Worker::start(emulator, &args, &[], dir.path().join("file.log"))?.exits_cleanly()?;
    let report = report_file(&reports.join("scan-f/i-0000000000000000f.json"), dir.path())?;
    ensure!(os_ids(&report) == ["alpine"], "{:?}", os_ids(&report));

    let bucket = unique("reports");
    let s3 = world.s3();
    world.block_on(s3.create_bucket().bucket(&bucket).send())?;
    world.enqueue(&queue, &[job("scan-s", "i-0000000000000000e", &[&debian])])?;
    let destination = format!("s3://{bucket}/scanner/reports");
    let mut args = common.to_vec();
    args.extend(["--report-destination", destination.as_str()]);
    Worker::start(
        emulator,
        &args,
        &[("WORKER_READ_MODE", "direct")],
        dir.path().join("s3.log"),
    )?
    .exits_cleanly()?;
    let object = world.block_on(async {
        let answer = s3
            .get_object()
            .bucket(&bucket)
            .key("scanner/reports/scan-s/i-0000000000000000e.json")
            .send()
            .await?;
        anyhow::Ok(answer.body.collect().await?.into_bytes())
    })?;
    let report = parse_report(&object)?;
    ensure!(os_ids(&report) == ["debian"], "{:?}", os_ids(&report));
    ensure!(world.depth(&queue)? == (0, 0), "the queue is drained");
    world.delete_snapshots(&[debian, alpine])?;
    Ok(())
}

#[test]
fn a_worker_killed_mid_job_leaves_the_job_to_the_next_worker() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (debian, alpine) = snapshots(emulator, dir.path())?;
    let (queue, _) = world.queue(None)?;
    let reports = dir.path().join("reports");
    let destination = format!("file://{}", reports.display());
    world.enqueue(&queue, &[job("scan-k", "i-0000000000000000a", &[&debian])])?;
    world.latency(3000)?;
    let args = [
        "--queue-url",
        queue.as_str(),
        "--report-destination",
        destination.as_str(),
        "--instance-id",
        "i-0feedfeedfeedfeed",
        // Idle longer than the visibility timeout: the killed worker's
        // message turns visible again within it.
        "--idle-minutes",
        "0.15",
        "--visibility-timeout",
        "3",
    ];
    let mut first = Worker::start(emulator, &args, &[], dir.path().join("first.log"))?;
    eventually(
        Duration::from_secs(30),
        "the first worker takes the job",
        || Ok(first.log().contains("job taken")),
    )?;
    // Longer than the visibility timeout: the heartbeat keeps the message.
    std::thread::sleep(Duration::from_secs(4));
    ensure!(
        world.depth(&queue)? == (0, 1),
        "the job stays in flight while the scan runs"
    );
    first.child.kill()?; // SIGKILL: no clean-up, no release
    first.child.wait()?;
    world.latency(0)?;
    ensure!(!reports.exists(), "the killed worker delivered nothing");
    let mut second = Worker::start(emulator, &args, &[], dir.path().join("second.log"))?;
    second.exits_cleanly()?;
    let report = report_file(&reports.join("scan-k/i-0000000000000000a.json"), dir.path())?;
    ensure!(
        report.complete() && report.attempt >= 2,
        "attempt {}",
        report.attempt
    );
    ensure!(os_ids(&report) == ["debian"]);
    ensure!(world.depth(&queue)? == (0, 0), "the queue is drained");
    world.delete_snapshots(&[debian, alpine])?;
    Ok(())
}

#[test]
fn a_poison_job_ends_in_the_dead_letter_queue_with_its_reason() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (queue, dlq) = world.queue(Some(2))?;
    let dlq = dlq.context("a DLQ")?;
    let sqs = world.sqs();
    world.block_on(
        sqs.send_message()
            .queue_url(&queue)
            .message_body("{\"not\": \"a job\"}")
            .send(),
    )?;
    world.enqueue(
        &queue,
        &[job(
            "scan-p",
            "i-0000000000000000b",
            &["snap-00000000000000bad"],
        )],
    )?;
    let reports = dir.path().join("reports");
    let destination = format!("file://{}", reports.display());
    let mut worker = Worker::start(
        emulator,
        &[
            "--queue-url",
            &queue,
            "--report-destination",
            &destination,
            "--instance-id",
            "i-0feedfeedfeedfeed",
            "--idle-minutes",
            "0.1",
            "--retry-delay",
            "0",
        ],
        &[],
        dir.path().join("worker.log"),
    )?;
    worker.exits_cleanly()?;
    ensure!(world.depth(&queue)? == (0, 0), "nothing left on the queue");
    ensure!(
        world.depth(&dlq)?.0 == 2,
        "both in the DLQ: {:?}\n{}",
        world.depth(&dlq)?,
        worker.log()
    );
    let report = report_file(&reports.join("scan-p/i-0000000000000000b.json"), dir.path())?;
    ensure!(!report.complete() && report.attempt == 2, "{report:?}");
    ensure!(
        report
            .reasons()
            .iter()
            .any(|r| r.contains("snap-00000000000000bad")),
        "the reason names the snapshot: {:?}",
        report.reasons()
    );
    let log = worker.log();
    ensure!(
        log.contains("not a scan job") && log.contains("dead-letter queue"),
        "{log}"
    );
    Ok(())
}

#[test]
fn the_pause_parameter_stops_intake_and_sigterm_stops_the_worker() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (debian, alpine) = snapshots(emulator, dir.path())?;
    let (queue, _) = world.queue(None)?;
    let prefix = format!("/{}", unique("scanner"));
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let pause = Pause {
        until,
        reason: "throttled".to_string(),
    };
    world.put_parameter(&format!("{prefix}/pause"), &pause.to_json(), false)?;
    world.enqueue(&queue, &[job("scan-z", "i-0000000000000000c", &[&alpine])])?;
    let reports = dir.path().join("reports");
    let destination = format!("file://{}", reports.display());
    let args = [
        "--parameter-prefix",
        prefix.as_str(),
        "--queue-url",
        queue.as_str(),
        "--report-destination",
        destination.as_str(),
        "--instance-id",
        "i-0feedfeedfeedfeed",
        "--idle-minutes",
        "0.05",
    ];
    let mut paused = Worker::start(emulator, &args, &[], dir.path().join("paused.log"))?;
    eventually(Duration::from_secs(30), "the worker sees the pause", || {
        Ok(paused.log().contains("intake paused"))
    })?;
    // Longer than the idle time: paused is not idle, and nothing is taken.
    std::thread::sleep(Duration::from_secs(5));
    ensure!(
        paused.child.try_wait()?.is_none(),
        "a paused worker does not scale in"
    );
    ensure!(world.depth(&queue)? == (1, 0), "the job is untouched");
    paused.signal("TERM")?;
    paused.exits_cleanly()?;
    ensure!(!reports.exists(), "nothing scanned while paused");

    world.put_parameter(&format!("{prefix}/pause"), &Pause::NONE.to_json(), false)?;
    Worker::start(emulator, &args, &[], dir.path().join("resumed.log"))?.exits_cleanly()?;
    ensure!(reports.join("scan-z/i-0000000000000000c.json").is_file());
    ensure!(world.depth(&queue)? == (0, 0));
    world.delete_snapshots(&[debian, alpine])?;
    Ok(())
}

#[test]
fn sigterm_releases_a_running_job_for_another_worker() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (debian, alpine) = snapshots(emulator, dir.path())?;
    let (queue, _) = world.queue(None)?;
    world.enqueue(&queue, &[job("scan-t", "i-0000000000000000d", &[&debian])])?;
    world.latency(3000)?;
    let reports = dir.path().join("reports");
    let destination = format!("file://{}", reports.display());
    let args = [
        "--queue-url",
        queue.as_str(),
        "--report-destination",
        destination.as_str(),
        "--instance-id",
        "i-0feedfeedfeedfeed",
        "--idle-minutes",
        "0.05",
    ];
    let mut worker = Worker::start(emulator, &args, &[], dir.path().join("worker.log"))?;
    let result = (|| {
        eventually(Duration::from_secs(30), "the worker takes the job", || {
            Ok(worker.log().contains("job taken"))
        })?;
        worker.signal("TERM")?;
        worker.exits_cleanly()?;
        ensure!(
            worker.log().contains("released on shutdown"),
            "{}",
            worker.log()
        );
        // Released with visibility 0, not left for the 300 s default timeout.
        eventually(Duration::from_secs(5), "the job is visible again", || {
            Ok(world.depth(&queue)? == (1, 0))
        })
    })();
    world.latency(0)?;
    result?;
    world.delete_snapshots(&[debian, alpine])?;
    Ok(())
}

#[test]
fn an_idle_worker_takes_itself_out_of_its_group() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let (queue, _) = world.queue(None)?;
    let group = unique("workers");
    let ec2 = world.ec2();
    let asg = world.asg();
    let instance = world.block_on(async {
        ec2.create_launch_template()
            .launch_template_name(&group)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id("ami-12345678")
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await?;
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(&group)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name(&group)
                    .version("$Latest")
                    .build(),
            )
            .min_size(0)
            .max_size(2)
            .desired_capacity(1)
            .availability_zones("us-east-1a")
            .send()
            .await?;
        let described = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await?;
        described
            .auto_scaling_groups()
            .first()
            .and_then(|g| g.instances().first())
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .context("the group launched an instance")
    })?;
    let destination = format!("file://{}", dir.path().join("reports").display());
    let mut worker = Worker::start(
        emulator,
        &[
            "--queue-url",
            &queue,
            "--report-destination",
            &destination,
            "--instance-id",
            &instance,
            "--idle-minutes",
            "0.05",
        ],
        &[],
        dir.path().join("worker.log"),
    )?;
    worker.exits_cleanly()?;
    let (desired, members) = world.block_on(async {
        let described = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await?;
        let group = described
            .auto_scaling_groups()
            .first()
            .context("the group")?;
        anyhow::Ok((
            group.desired_capacity(),
            group
                .instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect::<Vec<_>>(),
        ))
    })?;
    ensure!(
        desired == Some(0),
        "desired capacity decremented: {desired:?}\n{}",
        worker.log()
    );
    ensure!(
        !members.contains(&instance),
        "{instance} left the group: {members:?}"
    );
    Ok(())
}

#[test]
fn attach_mode_reads_the_volume_found_by_its_serial_and_deletes_it() -> Result<()> {
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    let debian_root = dir.path().join("debian");
    tree::debian_root(&debian_root)?;
    let debian_image = image::gpt_disk(dir.path(), &debian_root)?.disk;
    let alpine_root = dir.path().join("alpine");
    tree::alpine_root(&alpine_root)?;
    let alpine_image = image::bare_ext4(dir.path(), "alpine.img", &alpine_root, 32 * MIB)?;
    let debian = upload(emulator, &debian_image)?;
    let alpine = upload(emulator, &alpine_image)?;
    let image_of = |snapshot: &str| {
        if snapshot == debian {
            debian_image.clone()
        } else {
            alpine_image.clone()
        }
    };
    let (owned_volumes_before, _) = world.owned()?;
    ensure!(
        owned_volumes_before.is_empty(),
        "no owned volume before: {owned_volumes_before:?}"
    );
    let (queue, _) = world.queue(None)?;
    world.enqueue(
        &queue,
        &[
            job("scan-a", "i-00000000000000a01", &[&debian]),
            job("scan-a", "i-00000000000000a02", &[&alpine, &debian]),
        ],
    )?;
    let (worker, linked, reports) = run_attach_worker(
        &world,
        dir.path(),
        &queue,
        &["--concurrency", "2"],
        image_of,
    )?;
    ensure!(
        linked.len() == 3,
        "one volume per snapshot of each job: {linked:?}"
    );
    for (instance_id, want) in [
        ("i-00000000000000a01", vec!["debian"]),
        ("i-00000000000000a02", vec!["alpine", "debian"]),
    ] {
        let report = report_file(
            &reports.join(format!("scan-a/{instance_id}.json")),
            dir.path(),
        )?;
        ensure!(
            report.complete() && report.read_mode == "attach",
            "{:?}",
            report.reasons()
        );
        ensure!(os_ids(&report) == want, "{:?} vs {want:?}", os_ids(&report));
    }
    let log = worker.log();
    ensure!(log.matches("volume deleted").count() == 3, "{log}");
    let (volumes, _) = world.owned()?;
    ensure!(volumes.is_empty(), "owned volumes left: {volumes:?}");
    ensure!(world.depth(&queue)? == (0, 0));
    world.delete_snapshots(&[debian.clone(), alpine.clone()])?;
    let (_, snapshots) = world.owned()?;
    ensure!(!snapshots.contains(&debian) && !snapshots.contains(&alpine));
    Ok(())
}

/// Runs an attach-mode `worker run` on this world's worker instance until
/// it exits idle, playing the kernel for it (see [`play_the_kernel`]); its
/// reports go to `dir/reports`, its log to `dir/worker.log`. The exited
/// worker (for its log), the volumes linked, and the reports directory.
fn run_attach_worker(
    world: &World,
    dir: &Path,
    queue: &str,
    extra_args: &[&str],
    target_of: impl Fn(&str) -> PathBuf,
) -> Result<(Worker, BTreeSet<String>, PathBuf)> {
    // The worker's own instance: volumes are attached to it.
    let instance = world.worker_instance()?;
    let devices = dir.join("by-id");
    std::fs::create_dir(&devices)?;
    let reports = dir.join("reports");
    let destination = format!("file://{}", reports.display());
    let device_dir = devices.display().to_string();
    let mut args = vec![
        "--queue-url",
        queue,
        "--report-destination",
        &destination,
        "--instance-id",
        &instance,
        "--idle-minutes",
        "0.05",
        "--read-mode",
        "attach",
        "--device-dir",
        &device_dir,
    ];
    args.extend_from_slice(extra_args);
    let mut worker = Worker::start(world.emulator, &args, &[], dir.join("worker.log"))?;
    let linked = play_the_kernel(world, &mut worker, &devices, target_of)?;
    worker.exits_cleanly()?;
    Ok((worker, linked, reports))
}

/// Play the kernel while `worker` runs: when a volume is attached, its
/// by-id link appears (pointing at what `target_of(snapshot)` names, the
/// image or loop device the volume was made from), next to a decoy
/// partition link that must not be taken for the disk. The volumes linked.
fn play_the_kernel(
    world: &World,
    worker: &mut Worker,
    devices: &Path,
    target_of: impl Fn(&str) -> PathBuf,
) -> Result<BTreeSet<String>> {
    let ec2 = world.ec2();
    let mut linked = BTreeSet::new();
    let started = Instant::now();
    while worker.child.try_wait()?.is_none() {
        ensure!(
            started.elapsed() < RUN_TIMEOUT,
            "worker run did not finish:\n{}",
            worker.log()
        );
        let attached: Vec<(String, String)> = world.block_on(async {
            let answer = ec2.describe_volumes().send().await?;
            anyhow::Ok(
                answer
                    .volumes()
                    .iter()
                    .filter(|v| !v.attachments().is_empty())
                    .filter_map(|v| {
                        Some((v.volume_id()?.to_string(), v.snapshot_id()?.to_string()))
                    })
                    .collect(),
            )
        })?;
        for (volume, snapshot) in attached {
            if linked.insert(volume.clone()) {
                let serial = volume.replace('-', "");
                std::os::unix::fs::symlink(
                    target_of(&snapshot),
                    devices.join(format!("nvme-Amazon_Elastic_Block_Store_{serial}")),
                )?;
                std::os::unix::fs::symlink(
                    "/dev/null",
                    devices.join(format!("nvme-Amazon_Elastic_Block_Store_{serial}-part9")),
                )?;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(linked)
}

/// A loop device over an image, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn read_only(image: &Path) -> Result<Self> {
        let output = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image)
            .output()
            .context("running losetup")?;
        ensure!(
            output.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Self(PathBuf::from(
            String::from_utf8(output.stdout)?.trim(),
        )))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn attach_mode_mounts_a_filesystem_it_does_not_parse_read_only() -> Result<()> {
    if !e2e::mount::mounts_allowed() {
        // SCANNER_NO_MOUNT=1: the kernel mount is the point of this test.
        return Ok(());
    }
    let (_guard, emulator) = exclusive()?;
    let world = World::new(emulator)?;
    let dir = workdir()?;
    // A squashfs volume (probed, not parsed in user space) holding an
    // os-release.
    let tree_root = dir.path().join("squash-root");
    tree::write(
        &tree_root.join("etc/os-release"),
        "ID=squashos\nNAME=\"Squash OS\"\n",
    )?;
    let squash = dir.path().join("squash.img");
    image::mksquashfs(&squash, &tree_root)?;
    let snapshot = upload(emulator, &squash)?;
    let device = LoopDevice::read_only(&squash)?;
    let (queue, _) = world.queue(None)?;
    world.enqueue(
        &queue,
        &[job("scan-m", "i-00000000000000b01", &[&snapshot])],
    )?;
    let (worker, linked, reports) =
        run_attach_worker(&world, dir.path(), &queue, &[], |_| device.0.clone())?;
    ensure!(linked.len() == 1, "{linked:?}");
    let report = report_file(&reports.join("scan-m/i-00000000000000b01.json"), dir.path())?;
    ensure!(report.complete(), "{:?}", report.reasons());
    ensure!(
        os_ids(&report) == ["squashos"],
        "{:?}\n{}",
        report,
        worker.log()
    );
    let volume = &report.snapshots[0]
        .report
        .as_ref()
        .context("a scan")?
        .volumes[0];
    ensure!(
        volume
            .notes
            .iter()
            .any(|n| n.contains("read-only kernel mount")),
        "{:?}",
        volume.notes
    );
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    ensure!(
        !mounts.contains(&device.0.display().to_string()),
        "unmounted: {mounts}"
    );
    let (volumes, _) = world.owned()?;
    ensure!(volumes.is_empty(), "owned volumes left: {volumes:?}");
    world.delete_snapshots(&[snapshot])?;
    Ok(())
}
