//! Self-update against the emulator: a release in S3, the function in
//! Lambda (created with a zip; moto needs its IAM role to exist), and the
//! alert topic subscribed by an SQS queue the test reads. A tampered
//! artifact changes nothing and raises the alert; a matching one becomes
//! the function's code; an unchanged one is a no-op.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use aws_smithy_types::Blob;
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine as _;
use control::self_update::{Change, SelfUpdateConfig};
use control::{Config, Ctx, Response, handle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{HOME, World, config, with_world};

const BUCKET: &str = "scanner-releases";
const PREFIX: &str = "scanner/0.2.0";
const FUNCTION: &str = "control";
const ARTIFACT: &str = "control-x86_64.zip";

/// A valid, empty zip archive whose comment makes it distinct: just the
/// end-of-central-directory record.
fn zip(comment: &str) -> Vec<u8> {
    let mut bytes = b"PK\x05\x06".to_vec();
    bytes.extend([0; 16]);
    bytes.extend(u16::try_from(comment.len()).unwrap_or(0).to_le_bytes());
    bytes.extend(comment.as_bytes());
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// Everything a self-update talks to, made in the emulator.
struct Release {
    ctx: Ctx,
    s3: aws_sdk_s3::Client,
    lambda: aws_sdk_lambda::Client,
    sqs: aws_sdk_sqs::Client,
    inbox: String,
}

impl Release {
    async fn new(world: &World, deployed: &[u8]) -> Result<Self> {
        let sdk = world.loader().load().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("CreateBucket: {}", DisplayErrorContext(&err)))?;
        let role = create_role(world, "control-role")?;
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        lambda
            .create_function()
            .function_name(FUNCTION)
            .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
            .handler("bootstrap")
            .role(role)
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(Blob::new(deployed))
                    .build(),
            )
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("CreateFunction: {}", DisplayErrorContext(&err)))?;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let topic = sns
            .create_topic()
            .name("scanner-alerts")
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("CreateTopic: {}", DisplayErrorContext(&err)))?
            .topic_arn()
            .context("no topic ARN")?
            .to_string();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let inbox = crate::fleet::queue(&sqs, "alerts-inbox").await?;
        let inbox_arn = format!("arn:aws:sqs:{HOME}:123456789012:alerts-inbox");
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(inbox_arn)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("Subscribe: {}", DisplayErrorContext(&err)))?;
        let config = Config {
            self_update: SelfUpdateConfig {
                bucket: Some(BUCKET.to_string()),
                prefix: PREFIX.to_string(),
                alert_topic_arn: Some(topic),
                stack_name: None,
                function_name: Some(FUNCTION.to_string()),
                arch: "x86_64".to_string(),
            },
            ..config(&[HOME], "unused")
        };
        Ok(Self {
            ctx: world.ctx(config).await,
            s3,
            lambda,
            sqs,
            inbox,
        })
    }

    async fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/{name}"))
            .body(bytes.to_vec().into())
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("PutObject {name}: {}", DisplayErrorContext(&err)))?;
        Ok(())
    }

    /// A manifest vouching for `artifact`.
    async fn manifest(&self, artifact: &[u8]) -> Result<()> {
        self.manifest_with(artifact, b"{}").await
    }

    /// A manifest vouching for `artifact` and `template`.
    async fn manifest_with(&self, artifact: &[u8], template: &[u8]) -> Result<()> {
        let manifest = json!({
            "version": "0.2.0",
            "artifacts": {
                ARTIFACT: {"sha256": sha256_hex(artifact), "size": artifact.len()},
                "control-arm64.zip": {"sha256": sha256_hex(b"arm"), "size": 3},
                "template.json": {"sha256": sha256_hex(template), "size": template.len()},
            }
        });
        self.put("manifest.json", manifest.to_string().as_bytes())
            .await
    }

    /// The context again, now updating `stack` too.
    async fn with_stack(&mut self, world: &World, stack: &str) {
        let mut config = self.ctx.config().clone();
        config.self_update.stack_name = Some(stack.to_string());
        self.ctx = world.ctx(config).await;
    }

    /// The function's CodeSha256.
    async fn code_sha256(&self) -> Result<String> {
        let function = self
            .lambda
            .get_function()
            .function_name(FUNCTION)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("GetFunction: {}", DisplayErrorContext(&err)))?;
        Ok(function
            .configuration()
            .and_then(|c| c.code_sha256())
            .context("no CodeSha256")?
            .to_string())
    }

    /// The alerts that arrived (their subject and message).
    async fn alerts(&self) -> Result<Vec<(String, String)>> {
        let mut alerts = Vec::new();
        for (body, _) in crate::fleet::receive(&self.sqs, &self.inbox).await? {
            let envelope: Value = serde_json::from_str(&body).context("an SNS envelope")?;
            alerts.push((
                envelope["Subject"].as_str().unwrap_or_default().to_string(),
                envelope["Message"].as_str().unwrap_or_default().to_string(),
            ));
        }
        Ok(alerts)
    }
}

/// An IAM role (moto's Lambda checks that the function's role exists); its
/// ARN. IAM's query API over a plain socket: signatures are not checked,
/// the credential scope routes the request.
fn create_role(world: &World, name: &str) -> Result<String> {
    let address = world.emulator.url.trim_start_matches("http://");
    let body = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument=%7B%7D"
    );
    let mut stream = TcpStream::connect(address).context("connecting to the emulator")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!("CreateRole: {response}");
    }
    Ok(format!("arn:aws:iam::123456789012:role/{name}"))
}

async fn self_update(ctx: &Ctx) -> Result<control::self_update::SelfUpdateSummary> {
    match handle(json!({"action": "self-update"}), ctx).await? {
        Response::SelfUpdate(summary) => Ok(summary),
        other => bail!("a self-update answered {other:?}"),
    }
}

#[test]
fn a_tampered_artifact_is_refused_nothing_changes_and_the_alert_arrives() -> Result<()> {
    with_world(|world| async move {
        let v1 = zip("control 0.1.0");
        let release = Release::new(&world, &v1).await?;
        let v2 = zip("control 0.2.0");
        let mut tampered = v2.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        release.manifest(&v2).await?;
        release.put(ARTIFACT, &tampered).await?;

        let err = handle(json!({"action": "self-update"}), &release.ctx)
            .await
            .expect_err("a tampered artifact is refused");
        let text = err.to_string();
        ensure!(text.contains("refused, nothing changed"), "{text}");
        for part in [ARTIFACT, &sha256_hex(&v2), &sha256_hex(&tampered)] {
            ensure!(text.contains(part), "{part} in {text}");
        }
        ensure!(
            release.code_sha256().await? == sha256_base64(&v1),
            "unchanged"
        );
        let alerts = release.alerts().await?;
        ensure!(alerts.len() == 1, "{alerts:?}");
        let (subject, message) = &alerts[0];
        ensure!(subject.contains("self-update refused"), "{subject}");
        for part in [ARTIFACT, &sha256_hex(&v2), &sha256_hex(&tampered)] {
            ensure!(message.contains(part), "{part} in {message}");
        }

        // A longer artifact: refused without reading past the manifest's size.
        let mut longer = v2.clone();
        longer.extend(b"more");
        release.put(ARTIFACT, &longer).await?;
        let err = handle(json!({"action": "self-update"}), &release.ctx)
            .await
            .expect_err("a longer artifact is refused");
        ensure!(err.to_string().contains("too large"), "{err}");

        // A malformed manifest, and none at all.
        release.put("manifest.json", b"{\"version\": 2}").await?;
        let err = handle(json!({"action": "self-update"}), &release.ctx)
            .await
            .expect_err("a malformed manifest is refused");
        ensure!(err.to_string().contains("not a release manifest"), "{err}");
        release
            .s3
            .delete_object()
            .bucket(BUCKET)
            .key(format!("{PREFIX}/manifest.json"))
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("DeleteObject: {}", DisplayErrorContext(&err)))?;
        let err = handle(json!({"action": "self-update"}), &release.ctx)
            .await
            .expect_err("no manifest is refused");
        ensure!(err.to_string().contains("NoSuchKey"), "{err}");
        ensure!(release.alerts().await?.len() == 3, "three more alerts");
        ensure!(
            release.code_sha256().await? == sha256_base64(&v1),
            "unchanged"
        );
        Ok(())
    })
}

#[test]
fn a_matching_artifact_is_deployed_and_an_unchanged_one_is_a_no_op() -> Result<()> {
    with_world(|world| async move {
        let v1 = zip("control 0.1.0");
        let release = Release::new(&world, &v1).await?;
        let v2 = zip("control 0.2.0");
        release.manifest(&v2).await?;
        release.put(ARTIFACT, &v2).await?;

        let summary = self_update(&release.ctx).await?;
        ensure!(summary.function == Change::Updated, "{summary:?}");
        ensure!(summary.version == "0.2.0" && summary.stack == Change::NotConfigured);
        ensure!(
            release.code_sha256().await? == sha256_base64(&v2),
            "deployed"
        );

        let summary = self_update(&release.ctx).await?;
        ensure!(summary.function == Change::Unchanged, "{summary:?}");
        ensure!(release.code_sha256().await? == sha256_base64(&v2));
        ensure!(release.alerts().await?.is_empty(), "no alert");
        Ok(())
    })
}

/// A stack template with one parameter and one queue; `note` makes versions
/// differ.
fn template(note: &str) -> String {
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("scanner {note}"),
        "Parameters": {"Env": {"Type": "String"}},
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue",
                                "Properties": {"QueueName": {"Ref": "Env"}}}},
    })
    .to_string()
}

#[test]
fn the_stack_gets_the_verified_template_with_its_parameters_kept() -> Result<()> {
    with_world(|world| async move {
        let v1 = zip("control 0.1.0");
        let mut release = Release::new(&world, &v1).await?;
        let cloudformation = aws_sdk_cloudformation::Client::new(&world.loader().load().await);
        cloudformation
            .create_stack()
            .stack_name("scanner")
            .template_body(template("0.1.0"))
            .parameters(
                aws_sdk_cloudformation::types::Parameter::builder()
                    .parameter_key("Env")
                    .parameter_value("prod-jobs")
                    .build(),
            )
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("CreateStack: {}", DisplayErrorContext(&err)))?;
        release.with_stack(&world, "scanner").await;
        let v2 = zip("control 0.2.0");
        let t2 = template("0.2.0");
        release.put(ARTIFACT, &v2).await?;

        // A tampered template: neither the stack nor the function changes.
        release.manifest_with(&v2, t2.as_bytes()).await?;
        release
            .put("template.json", template("0.2.1").as_bytes())
            .await?;
        let err = handle(json!({"action": "self-update"}), &release.ctx)
            .await
            .expect_err("a tampered template is refused");
        ensure!(err.to_string().contains("template.json"), "{err}");
        ensure!(
            release.code_sha256().await? == sha256_base64(&v1),
            "the code stays"
        );
        let current = cloudformation
            .get_template()
            .stack_name("scanner")
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("GetTemplate: {}", DisplayErrorContext(&err)))?;
        ensure!(current.template_body() == Some(template("0.1.0").as_str()));
        ensure!(release.alerts().await?.len() == 1);

        // The verified one: both updated, the parameter kept.
        release.put("template.json", t2.as_bytes()).await?;
        let summary = self_update(&release.ctx).await?;
        ensure!(
            summary.function == Change::Updated && summary.stack == Change::Updated,
            "{summary:?}"
        );
        let current = cloudformation
            .get_template()
            .stack_name("scanner")
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("GetTemplate: {}", DisplayErrorContext(&err)))?;
        ensure!(current.template_body() == Some(t2.as_str()), "{current:?}");
        let stacks = cloudformation
            .describe_stacks()
            .stack_name("scanner")
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("DescribeStacks: {}", DisplayErrorContext(&err)))?;
        let parameters = stacks
            .stacks()
            .first()
            .map(|s| s.parameters().to_vec())
            .unwrap_or_default();
        ensure!(
            parameters
                .iter()
                .any(|p| p.parameter_key() == Some("Env")
                    && p.parameter_value() == Some("prod-jobs")),
            "{parameters:?}"
        );

        let summary = self_update(&release.ctx).await?;
        ensure!(
            summary.function == Change::Unchanged && summary.stack == Change::Unchanged,
            "{summary:?}"
        );
        Ok(())
    })
}
