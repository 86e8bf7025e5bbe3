//! The `worker` binary: `worker scan TARGET...` scans disk images or block
//! devices from a shell; `worker run` is the SQS daemon (`worker::daemon`). Thin: parsing arguments, logging and output only;
//! the pipeline lives in the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use worker::block::{BlockSource, EbsOptions, EbsSource, FileSource};
use worker::report::{Report, cyclonedx, table};
use worker::{ScanOptions, scan};

/// Agentless scanner: reads disks in user space and reports their OS and packages.
#[derive(Parser, Debug)]
#[command(name = "worker", version, about)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Scan disk images or block devices and print one report per target.
    Scan(ScanArgs),
    /// Walk every directory entry of every readable volume and print counts
    /// as JSON (a full-tree read, as `find` on a mount would do).
    Walk(WalkArgs),
    /// Upload a disk image as an EBS snapshot (EBS direct APIs; zero blocks
    /// skipped) and print its id as JSON.
    UploadImage(UploadArgs),
    /// The worker daemon: take scan jobs from the SQS queue, deliver one
    /// report per job, scale in when idle. Configured by SSM parameters
    /// under --parameter-prefix; flags and WORKER_* variables override them.
    Run(Box<RunArgs>),
    /// Print saved reports as tables: what `worker scan --format json` wrote,
    /// or the job reports `worker run` delivered (file:// or S3).
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
struct ShowArgs {
    /// Report files (JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// At most this many rows per package table (default: all).
    #[arg(long, value_name = "N")]
    packages: Option<usize>,
}

/// Largest report file `worker show` reads: a report of a few volumes with
/// thousands of packages is a few MiB.
const MAX_REPORT_FILE: u64 = 64 << 20;

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// SSM parameter prefix the settings are read under.
    #[arg(long, env = "WORKER_PARAMETER_PREFIX", default_value = scanner_contract::DEFAULT_PARAMETER_PREFIX)]
    parameter_prefix: String,
    /// The scan queue's URL (SSM: queue-url).
    #[arg(long, env = "WORKER_QUEUE_URL")]
    queue_url: Option<String>,
    /// Where reports go: https://…, s3://bucket/prefix or file:///dir (SSM: report-destination).
    #[arg(long, env = "WORKER_REPORT_DESTINATION")]
    report_destination: Option<String>,
    /// Sent as a bearer token with HTTPS reports (SSM: service-credential,
    /// a SecureString). Prefer the environment: flags show in `ps`.
    #[arg(long, env = "WORKER_SERVICE_CREDENTIAL", hide_env_values = true)]
    service_credential: Option<worker::daemon::config::Secret>,
    /// `direct` (EBS direct APIs) or `attach` (SSM: read-mode).
    #[arg(long, env = "WORKER_READ_MODE")]
    read_mode: Option<String>,
    /// Jobs at once (SSM: concurrency; default: by CPUs and memory).
    #[arg(long, env = "WORKER_CONCURRENCY")]
    concurrency: Option<String>,
    /// Minutes without a job before scaling in; 0 never (SSM: idle-minutes; default 10).
    #[arg(long, env = "WORKER_IDLE_MINUTES")]
    idle_minutes: Option<String>,
    /// The ownership tag as KEY=VALUE (SSM: ownership-tag; default "Created By=Mondoo").
    #[arg(long, env = "WORKER_OWNERSHIP_TAG")]
    ownership_tag: Option<String>,
    /// This instance's id (default: instance metadata, IMDSv2).
    #[arg(long, env = "WORKER_INSTANCE_ID")]
    instance_id: Option<String>,
    /// This instance's Availability Zone (default: instance metadata).
    #[arg(long, env = "WORKER_AVAILABILITY_ZONE")]
    availability_zone: Option<String>,
    /// AWS region of the queue and parameters (default: AWS_REGION, then the instance's).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// Where attached volumes' device links are found (attach mode).
    #[arg(long, env = "WORKER_DEVICE_DIR", default_value = "/dev/disk/by-id")]
    device_dir: PathBuf,
    /// Visibility timeout of a taken message in seconds; the heartbeat renews it every third.
    #[arg(long, env = "WORKER_VISIBILITY_TIMEOUT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(3..=43_200))]
    visibility_timeout: u64,
    /// SQS long-poll wait in seconds.
    #[arg(long, env = "WORKER_POLL_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    poll_seconds: u64,
    /// A failed job's message returns after this many seconds.
    #[arg(long, env = "WORKER_RETRY_DELAY", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=43_200))]
    retry_delay: u64,
    /// How long a job waits for its snapshots to complete, in seconds.
    #[arg(long, env = "WORKER_SNAPSHOT_WAIT", default_value_t = 7200)]
    snapshot_wait: u64,
    /// Seconds between snapshot state checks while waiting.
    #[arg(long, env = "WORKER_SNAPSHOT_POLL", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    snapshot_poll: u64,
}

#[derive(clap::Args, Debug)]
struct WalkArgs {
    /// A disk image file or block device.
    target: PathBuf,
    /// Threads listing directories at once (default 16: a walk waits on reads).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args, Debug)]
struct ScanArgs {
    /// Disk image files, block devices, or EBS snapshots (`ebs://snap-…` or
    /// `snap-…`, read through the EBS direct APIs). Several give a JSON array
    /// of reports.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Largest file a detector may read (package databases), in MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    max_file_mib: u64,
    #[command(flatten)]
    ebs: EbsArgs,
}

/// How snapshots are read (`ebs://` targets).
#[derive(clap::Args, Debug)]
struct EbsArgs {
    /// AWS region of the snapshots (default: AWS_REGION, then the profile).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// Snapshot blocks kept in memory, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    cache_mib: u64,
    /// GetSnapshotBlock requests in flight at most.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// EBS direct requests per second at most (AWS allows 1,000 per snapshot).
    #[arg(long, default_value_t = 500)]
    requests_per_second: u32,
    /// Tries per EBS direct request before a block is an error.
    #[arg(long, default_value_t = 8)]
    max_attempts: u32,
    /// ListSnapshotBlocks page size (100..10000; small values for testing).
    #[arg(long, default_value_t = 10_000, hide = true)]
    list_page_size: i32,
}

#[derive(clap::Args, Debug)]
struct UploadArgs {
    /// The disk image to upload.
    image: PathBuf,
    /// AWS region (default: AWS_REGION, then the profile).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// Snapshot description.
    #[arg(long)]
    description: Option<String>,
    /// Extra tags as KEY=VALUE (the ownership tag is always added).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Cyclonedx,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if matches!(cli.command, Command::Run(_)) {
        init_daemon_tracing(cli.verbose);
    } else {
        init_tracing(cli.verbose);
    }
    match cli.command {
        Command::Run(args) => run_daemon(*args),
        Command::Scan(args) => run_scan(&args),
        Command::UploadImage(args) => match run_upload(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(1)
            }
        },
        Command::Show(args) => run_show(&args),
        Command::Walk(args) => match run_walk(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(1)
            }
        },
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The daemon logs at info by default, as JSON when stderr is not a
/// terminal (journald → CloudWatch), with the span fields (job, instance,
/// snapshot) on every event.
fn init_daemon_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .init();
    }
}

fn run_daemon(args: RunArgs) -> ExitCode {
    let startup = worker::daemon::Startup {
        parameter_prefix: args.parameter_prefix,
        overrides: worker::daemon::config::Overrides {
            queue_url: args.queue_url,
            report_destination: args.report_destination,
            service_credential: args.service_credential,
            read_mode: args.read_mode,
            concurrency: args.concurrency,
            idle_minutes: args.idle_minutes,
            ownership_tag: args.ownership_tag,
        },
        instance_id: args.instance_id,
        availability_zone: args.availability_zone,
        region: args.region,
        device_dir: args.device_dir,
        timing: worker::daemon::config::Timing {
            visibility: Duration::from_secs(args.visibility_timeout),
            poll: Duration::from_secs(args.poll_seconds),
            retry_delay: Duration::from_secs(args.retry_delay),
            snapshot_wait: Duration::from_secs(args.snapshot_wait),
            snapshot_poll: Duration::from_secs(args.snapshot_poll),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(worker::daemon::run(startup)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "the worker daemon cannot run");
            eprintln!("error: {err}");
            ExitCode::from(1)
        }
    }
}

fn run_show(args: &ShowArgs) -> ExitCode {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for file in &args.files {
        match show(file, args.packages) {
            Ok(text) => {
                if let Err(err) = out.write_all(text.as_bytes()) {
                    if err.kind() == std::io::ErrorKind::BrokenPipe {
                        return ExitCode::SUCCESS;
                    }
                    eprintln!("error: writing the table: {err}");
                    return ExitCode::from(1);
                }
            }
            Err(err) => {
                eprintln!("error: {}: {err:#}", file.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One saved report as text: a job report (one table per snapshot under a
/// heading naming the instance) or a scan report.
fn show(file: &std::path::Path, max_packages: Option<usize>) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .context("opening the report")?
        .take(MAX_REPORT_FILE + 1)
        .read_to_end(&mut bytes)
        .context("reading the report")?;
    if bytes.len() as u64 > MAX_REPORT_FILE {
        anyhow::bail!("larger than {} MiB: not a report", MAX_REPORT_FILE >> 20);
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).context("not JSON")?;
    if value.get("snapshots").is_some() && value.get("instance_id").is_some() {
        let job: worker::daemon::job::JobReport =
            serde_json::from_value(value).context("not a job report")?;
        let mut text = format!(
            "instance {} ({}), scan {}, read by {} ({}, attempt {})\n",
            job.instance_id,
            job.region,
            job.scan_id,
            job.worker_instance_id,
            job.read_mode,
            job.attempt
        );
        for error in &job.errors {
            text.push_str(&format!("error: {error}\n"));
        }
        for snapshot in &job.snapshots {
            text.push_str(&format!(
                "\nsnapshot {} of {}{}\n",
                snapshot.snapshot_id,
                snapshot.volume_id,
                snapshot
                    .device_name
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
            match (&snapshot.report, &snapshot.error) {
                (Some(report), _) => {
                    text.push_str(&table::render_with(report, max_packages));
                }
                (None, Some(error)) => text.push_str(&format!("error: {error}\n")),
                (None, None) => text.push_str("not scanned\n"),
            }
        }
        Ok(text)
    } else {
        let report: Report = serde_json::from_value(value).context("not a scan report")?;
        Ok(table::render_with(&report, max_packages))
    }
}

fn run_scan(args: &ScanArgs) -> ExitCode {
    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if to_terminal {
        Format::Table
    } else {
        Format::Json
    });
    let mut reports = Vec::new();
    let mut failed = false;
    for target in &args.targets {
        match scan_target(target, args) {
            Ok(report) => reports.push(report),
            Err(err) => {
                eprintln!("error: {err}");
                failed = true;
            }
        }
    }
    if reports.is_empty() {
        return ExitCode::from(1);
    }
    let rendered = match render(&reports, format) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: rendering the report: {err}");
            return ExitCode::from(1);
        }
    };
    let written = match &args.output {
        Some(path) => std::fs::write(path, rendered.as_bytes())
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display())),
        None => match std::io::stdout().lock().write_all(rendered.as_bytes()) {
            // A reader that stopped early (`worker scan … | head`) is not an error.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(|err| anyhow::anyhow!("writing to standard output: {err}")),
        },
    };
    if let Err(err) = written {
        eprintln!("error: {err}");
        return ExitCode::from(1);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The snapshot id of an `ebs://snap-…` or bare `snap-…` target.
fn snapshot_id(target: &str) -> Option<&str> {
    let id = target.strip_prefix("ebs://").unwrap_or(target);
    let hex = id.strip_prefix("snap-")?;
    (!hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

fn open_target(target: &str, ebs: &EbsArgs) -> anyhow::Result<Arc<dyn BlockSource>> {
    if let Some(id) = snapshot_id(target) {
        let options = EbsOptions {
            region: ebs.region.clone(),
            cache_bytes: ebs.cache_mib.saturating_mul(1024 * 1024),
            max_in_flight: ebs.max_in_flight,
            requests_per_second: ebs.requests_per_second,
            max_attempts: ebs.max_attempts.max(1),
            list_page_size: ebs.list_page_size.clamp(100, 10_000),
            ..EbsOptions::default()
        };
        return Ok(Arc::new(EbsSource::open(id, options)?));
    }
    if target.starts_with("ebs://") {
        anyhow::bail!("{target}: not a snapshot id (expected ebs://snap-0123456789abcdef0)");
    }
    Ok(Arc::new(FileSource::open(std::path::Path::new(target))?))
}

fn run_upload(args: &UploadArgs) -> anyhow::Result<()> {
    let mut tags = Vec::new();
    for tag in &args.tags {
        let (key, value) = tag
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--tag {tag:?}: expected KEY=VALUE"))?;
        tags.push((key.to_string(), value.to_string()));
    }
    let options = worker::upload::UploadOptions {
        region: args.region.clone(),
        description: args.description.clone(),
        tags,
    };
    let uploaded = worker::upload::upload_image(&args.image, &options)?;
    println!("{}", serde_json::to_string_pretty(&uploaded)?);
    Ok(())
}

fn scan_target(target: &str, args: &ScanArgs) -> anyhow::Result<Report> {
    let source = open_target(target, &args.ebs)?;
    let bar = progress_bar();
    let callback_bar = bar.clone();
    let options = ScanOptions {
        max_file_size: args.max_file_mib.saturating_mul(1024 * 1024),
        on_progress: Some(Arc::new(move |event| match event {
            worker::ScanProgress::Planned { steps, .. } => callback_bar.set_length(steps),
            worker::ScanProgress::Step { message } => {
                callback_bar.inc(1);
                callback_bar.set_message(message);
            }
        })),
    };
    let name = target.to_string();
    tracing::info!(target = %name, size = source.size(), "scanning");
    let result = scan(source, &name, &options);
    bar.finish_and_clear();
    let report = result?;
    tracing::info!(
        target = %name,
        volumes = report.volumes.len(),
        bytes_read = report.stats.bytes_read,
        duration_ms = report.stats.duration_ms,
        "scanned"
    );
    Ok(report)
}

fn run_walk(args: &WalkArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let disk: Arc<dyn BlockSource> = Arc::new(FileSource::open(&args.target)?);
    let (regions, warnings) = worker::regions(&disk)?;
    let mut volumes = Vec::new();
    for (partition, region) in regions {
        let number = partition.as_ref().map(|p| p.number);
        let probe = worker::fs::probe(&*region)?;
        let Some(probe) = probe else {
            volumes.push(serde_json::json!({ "partition": number, "filesystem": null }));
            continue;
        };
        let mut options = worker::walk::WalkOptions {
            max_directories: probe.inodes_used.unwrap_or(u64::MAX),
            ..Default::default()
        };
        if let Some(threads) = args.threads {
            options.threads = threads;
        }
        let volume = worker::fs::Volume::new(region, probe.kind);
        let summary = worker::walk::walk(&volume, &options);
        volumes.push(match summary {
            Ok(summary) => serde_json::json!({
                "partition": number, "filesystem": probe.kind.name(), "walk": summary,
            }),
            Err(err) => serde_json::json!({
                "partition": number, "filesystem": probe.kind.name(), "error": err.to_string(),
            }),
        });
    }
    let output = serde_json::json!({
        "target": args.target.display().to_string(),
        "volumes": volumes,
        "errors": warnings,
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// A bar on stderr when it is a terminal; hidden otherwise (logs carry progress).
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

fn render(reports: &[Report], format: Format) -> anyhow::Result<String> {
    Ok(match (format, reports) {
        (Format::Table, _) => reports
            .iter()
            .map(table::render)
            .collect::<Vec<_>>()
            .join("\n"),
        (Format::Json, [one]) => serde_json::to_string_pretty(one)? + "\n",
        (Format::Json, many) => serde_json::to_string_pretty(many)? + "\n",
        (Format::Cyclonedx, [one]) => serde_json::to_string_pretty(&cyclonedx::bom(one))? + "\n",
        (Format::Cyclonedx, many) => {
            let boms: Vec<_> = many.iter().map(cyclonedx::bom).collect();
            serde_json::to_string_pretty(&boms)? + "\n"
        }
    })
}
