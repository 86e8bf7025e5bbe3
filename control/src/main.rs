//! `control`: the Lambda function, or — with `invoke EVENT.json` — its
//! handler run once from a shell. Wiring only: tracing, configuration, the
//! runtime; the logic is the `control` library.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use control::{Config, Ctx, handle, handle_until};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

/// Set by the Lambda service in a function's environment.
const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// The control Lambda of the agentless EBS snapshot scanner. Configured by
/// environment variables (see control/README.md); in Lambda, it serves
/// events; from a shell, `control invoke EVENT.json` handles one.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Handle one event locally and print the JSON response.
    Invoke {
        /// The event, a JSON file (`-`: standard input).
        event: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("control: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("control: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = Config::from_env().context("configuration")?;
    let ctx = Ctx::load(config, control::ctx::default_loader()).await;
    match cli.command {
        Some(Command::Invoke { event }) => invoke(&ctx, &event).await,
        None if std::env::var_os(LAMBDA_RUNTIME_API).is_some() => {
            let ctx = &ctx;
            lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
                // The invocation's deadline, in milliseconds since the epoch.
                let deadline = std::time::UNIX_EPOCH
                    .checked_add(std::time::Duration::from_millis(event.context.deadline));
                handle_until(event.payload, ctx, deadline)
                    .await
                    .map_err(|err| Diagnostic {
                        error_type: err.kind().to_string(),
                        error_message: err.to_string(),
                    })
            }))
            .await
            .map_err(|err| anyhow::anyhow!("Lambda runtime: {err}"))
        }
        None => anyhow::bail!(
            "{LAMBDA_RUNTIME_API} is not set, so this is not Lambda: run `control invoke EVENT.json` \
             to handle one event (see `control --help`)"
        ),
    }
}

/// Handle the event in `path` once; the response on standard output.
async fn invoke(ctx: &Ctx, path: &std::path::Path) -> Result<()> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the event from standard input")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let event: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let response = handle(event, ctx).await?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

/// Logs on standard error: human-readable on a terminal, JSON lines
/// otherwise (Lambda, CloudWatch). `RUST_LOG` filters (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().with_ansi(false).init();
    }
}
