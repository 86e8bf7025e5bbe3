//! Self-update: replace the function's code (and the stack's template) with
//! the release's — only what a trusted manifest vouches for.
//!
//! The manifest, `s3://CONTROL_RELEASE_BUCKET/CONTROL_RELEASE_PREFIX/manifest.json`
//! (written by `scripts/package`), names each artifact's SHA-256 and size:
//! `{"version": "0.2.0", "artifacts": {"control-x86_64.zip": {"sha256":
//! "<hex>", "size": N}, …}}`. Each artifact this function needs (its own
//! architecture's zip; `template.json` when `CONTROL_STACK_NAME` is set) is
//! downloaded into memory — never more than the manifest's size, and never
//! more than a hard cap — and hashed with `sha2`. Only when *every* hash
//! matches does anything change, and what is deployed is the verified bytes
//! themselves (`UpdateFunctionCode` with `ZipFile`, `UpdateStack` with
//! `TemplateBody`), never a second read of the bucket that could differ
//! from what was checked. On a mismatch, or a missing or malformed
//! manifest, nothing changes and an SNS alert names the artifact, the
//! expected and the actual hash.
//!
//! The trust model: the manifest's integrity rests on who may write the
//! release bucket; this check catches an artifact replaced or corrupted
//! after the manifest was written (or a manifest and artifact out of step),
//! and makes the deployed code exactly the code that was hashed.

use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, Parameter, TemplateStage};
use aws_smithy_types::Blob;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::config::ConfigError;
use crate::ctx::Ctx;
use crate::error::ApiError;

/// The release bucket.
pub const ENV_RELEASE_BUCKET: &str = "CONTROL_RELEASE_BUCKET";
/// The key prefix of the release in the bucket (may be empty).
pub const ENV_RELEASE_PREFIX: &str = "CONTROL_RELEASE_PREFIX";
/// The SNS topic refused updates are reported to.
pub const ENV_ALERT_TOPIC_ARN: &str = "CONTROL_ALERT_TOPIC_ARN";
/// The stack whose template is updated too (optional).
pub const ENV_STACK_NAME: &str = "CONTROL_STACK_NAME";
/// The function to update, when not running in Lambda.
pub const ENV_FUNCTION_NAME: &str = "CONTROL_FUNCTION_NAME";
/// Set by Lambda: the function's own name.
pub const ENV_LAMBDA_FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";

/// The manifest's name under the prefix.
pub const MANIFEST: &str = "manifest.json";
/// The template's name in the manifest.
pub const TEMPLATE: &str = "template.json";
/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// Largest function zip: what `UpdateFunctionCode` accepts inline.
const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Largest template: what `UpdateStack` accepts as `TemplateBody`.
const MAX_TEMPLATE_BYTES: u64 = 51_200;
/// A stack update that has nothing to change answers this.
const NO_UPDATES: &str = "No updates are to be performed";
/// Reading one S3 object, all of it.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where releases come from and what they update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfUpdateConfig {
    /// The release bucket; a self-update needs it.
    pub bucket: Option<String>,
    /// The key prefix (no leading or trailing `/`; empty: the bucket's root).
    pub prefix: String,
    /// The SNS topic for alerts; a self-update needs it.
    pub alert_topic_arn: Option<String>,
    /// The stack to update; `None`: the function code only.
    pub stack_name: Option<String>,
    /// The function to update; a self-update needs it.
    pub function_name: Option<String>,
    /// The architecture in artifact names: `x86_64` or `arm64` (the
    /// binary's own).
    pub arch: String,
}

impl SelfUpdateConfig {
    /// Read the variables through `get` (trimmed, empty as unset).
    ///
    /// # Errors
    /// [`ConfigError`] for a value that cannot be used.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let prefix = get(ENV_RELEASE_PREFIX)
            .unwrap_or_default()
            .trim_matches('/')
            .to_string();
        if prefix.contains("//") || prefix.chars().any(char::is_control) {
            return Err(ConfigError {
                var: ENV_RELEASE_PREFIX,
                value: prefix,
                expected: "an S3 key prefix (releases/0.2.0)",
            });
        }
        let alert_topic_arn = get(ENV_ALERT_TOPIC_ARN);
        if let Some(arn) = &alert_topic_arn {
            if !arn.starts_with("arn:") || !arn.contains(":sns:") {
                return Err(ConfigError {
                    var: ENV_ALERT_TOPIC_ARN,
                    value: arn.clone(),
                    expected: "an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
                });
            }
        }
        Ok(Self {
            bucket: get(ENV_RELEASE_BUCKET),
            prefix,
            alert_topic_arn,
            stack_name: get(ENV_STACK_NAME),
            function_name: get(ENV_FUNCTION_NAME).or_else(|| get(ENV_LAMBDA_FUNCTION_NAME)),
            arch: binary_arch().to_string(),
        })
    }

    /// The key of `name` in the release.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// This binary's architecture as artifact names spell it.
pub fn binary_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

/// The release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The release's version.
    pub version: String,
    /// Each artifact by file name.
    pub artifacts: BTreeMap<String, Artifact>,
}

/// One artifact of the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Its SHA-256, 64 hex digits.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What happened to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// It was updated.
    Updated,
    /// It already ran this release.
    Unchanged,
    /// Not configured (the stack).
    NotConfigured,
}

/// What a self-update did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfUpdateSummary {
    /// The release's version.
    pub version: String,
    /// The function's code.
    pub function: Change,
    /// The function's code's SHA-256 now (base64, as Lambda shows it).
    pub code_sha256: String,
    /// The stack's template.
    pub stack: Change,
}

/// Why a self-update changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum SelfUpdateError {
    /// A variable it needs is not set.
    #[error("self-update needs {0}")]
    NotConfigured(&'static str),
    /// The release could not be trusted; nothing was changed.
    #[error("self-update refused, nothing changed ({alert}): {reason}")]
    Refused {
        /// Why.
        reason: String,
        /// Whether the alert went out.
        alert: String,
    },
    /// An AWS call failed (reading the function, or updating).
    #[error("self-update: {0}")]
    Api(#[from] ApiError),
}

/// A reason to refuse the release.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("manifest s3://{bucket}/{key}: {detail}")]
    Manifest {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error(
        "artifact {name} (s3://{bucket}/{key}): expected SHA-256 {expected} ({expected_size} bytes), actual {actual} ({actual_size} bytes)"
    )]
    Mismatch {
        name: String,
        bucket: String,
        key: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: String,
    },
    #[error("artifact {name} (s3://{bucket}/{key}): {detail}")]
    Artifact {
        name: String,
        bucket: String,
        key: String,
        detail: String,
    },
}

/// Run a self-update.
///
/// # Errors
/// [`SelfUpdateError`]: not configured, refused (and alerted), or a failed
/// AWS call.
pub async fn self_update(ctx: &Ctx) -> Result<SelfUpdateSummary, SelfUpdateError> {
    let config = &ctx.config().self_update;
    let bucket = config
        .bucket
        .as_deref()
        .ok_or(SelfUpdateError::NotConfigured(ENV_RELEASE_BUCKET))?;
    let function = config
        .function_name
        .as_deref()
        .ok_or(SelfUpdateError::NotConfigured(
            "AWS_LAMBDA_FUNCTION_NAME or CONTROL_FUNCTION_NAME",
        ))?;
    let topic = config
        .alert_topic_arn
        .as_deref()
        .ok_or(SelfUpdateError::NotConfigured(ENV_ALERT_TOPIC_ARN))?;

    let verified = match verify(ctx, config, bucket).await {
        Ok(verified) => verified,
        Err(refusal) => {
            let reason = refusal.to_string();
            tracing::error!(reason, "self-update refused");
            let alert = match alert(ctx, topic, &reason).await {
                Ok(()) => format!("alert sent to {topic}"),
                Err(err) => format!("the alert to {topic} failed too: {err}"),
            };
            return Err(SelfUpdateError::Refused { reason, alert });
        }
    };

    // The function's code.
    let lambda = ctx.lambda();
    let current = lambda
        .get_function()
        .function_name(function)
        .send()
        .await
        .map_err(|err| ApiError::new(format!("GetFunction {function}"), &err))?;
    let current_sha = current
        .configuration()
        .and_then(|c| c.code_sha256())
        .unwrap_or_default();
    let wanted_sha = base64::engine::general_purpose::STANDARD.encode(verified.zip_sha256);
    let function_change = if current_sha == wanted_sha {
        Change::Unchanged
    } else {
        let updated = lambda
            .update_function_code()
            .function_name(function)
            .zip_file(Blob::new(verified.zip))
            .send()
            .await
            .map_err(|err| ApiError::new(format!("UpdateFunctionCode {function}"), &err))?;
        tracing::info!(
            function,
            version = verified.version,
            code_sha256 = updated.code_sha256().unwrap_or_default(),
            "function code updated"
        );
        Change::Updated
    };

    // The stack's template.
    let stack_change = match (&config.stack_name, verified.template) {
        (Some(stack), Some(template)) => update_stack(ctx, stack, &template).await?,
        _ => Change::NotConfigured,
    };
    Ok(SelfUpdateSummary {
        version: verified.version,
        function: function_change,
        code_sha256: wanted_sha,
        stack: stack_change,
    })
}

/// The verified release: the bytes that were hashed.
struct Verified {
    version: String,
    zip: Vec<u8>,
    zip_sha256: [u8; 32],
    template: Option<String>,
}

/// Read the manifest and the artifacts this function needs, and check each
/// against it.
async fn verify(ctx: &Ctx, config: &SelfUpdateConfig, bucket: &str) -> Result<Verified, Refusal> {
    let key = config.key(MANIFEST);
    let manifest_error = |detail: String| Refusal::Manifest {
        bucket: bucket.to_string(),
        key: key.clone(),
        detail,
    };
    let text = download(ctx, bucket, &key, MAX_MANIFEST_BYTES)
        .await
        .map_err(|err| manifest_error(err.describe(MAX_MANIFEST_BYTES)))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|err| manifest_error(format!("not a release manifest: {err}")))?;
    for (name, artifact) in &manifest.artifacts {
        if !is_sha256_hex(&artifact.sha256) {
            return Err(manifest_error(format!(
                "{name}: sha256 {:?} is not 64 hex digits",
                artifact.sha256
            )));
        }
    }
    let zip_name = format!("control-{}.zip", config.arch);
    let (zip, zip_sha256) =
        fetch_verified(ctx, config, bucket, &manifest, &zip_name, MAX_ZIP_BYTES)
            .await
            .map_err(|refusal| refusal.unwrap_or_else(manifest_error))?;
    let template = match &config.stack_name {
        None => None,
        Some(_) => {
            let (bytes, _) =
                fetch_verified(ctx, config, bucket, &manifest, TEMPLATE, MAX_TEMPLATE_BYTES)
                    .await
                    .map_err(|refusal| refusal.unwrap_or_else(manifest_error))?;
            Some(String::from_utf8(bytes).map_err(|_| Refusal::Artifact {
                name: TEMPLATE.to_string(),
                bucket: bucket.to_string(),
                key: config.key(TEMPLATE),
                detail: "not UTF-8 text".to_string(),
            })?)
        }
    };
    Ok(Verified {
        version: manifest.version,
        zip,
        zip_sha256,
        template,
    })
}

/// Download the artifact `name` and check its size and hash against the
/// manifest. `Err(Err(detail))`: the manifest does not list it properly.
async fn fetch_verified(
    ctx: &Ctx,
    config: &SelfUpdateConfig,
    bucket: &str,
    manifest: &Manifest,
    name: &str,
    cap: u64,
) -> Result<(Vec<u8>, [u8; 32]), Result<Refusal, String>> {
    let artifact = manifest
        .artifacts
        .get(name)
        .ok_or_else(|| Err(format!("lists no {name}")))?;
    if artifact.size > cap {
        return Err(Err(format!(
            "{name} has {} bytes, more than the {cap} allowed",
            artifact.size
        )));
    }
    let key = config.key(name);
    let mismatch = |actual: String, actual_size: String| Refusal::Mismatch {
        name: name.to_string(),
        bucket: bucket.to_string(),
        key: key.clone(),
        expected: artifact.sha256.to_ascii_lowercase(),
        expected_size: artifact.size,
        actual,
        actual_size,
    };
    let bytes = match download(ctx, bucket, &key, artifact.size).await {
        Ok(bytes) => bytes,
        Err(DownloadError::TooLarge(length)) => {
            let size =
                length.map_or_else(|| format!("more than {}", artifact.size), |l| l.to_string());
            return Err(Ok(mismatch("not computed (too large)".to_string(), size)));
        }
        Err(DownloadError::Failed(detail)) => {
            return Err(Ok(Refusal::Artifact {
                name: name.to_string(),
                bucket: bucket.to_string(),
                key: key.clone(),
                detail,
            }));
        }
    };
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let actual = hex(&digest);
    if actual != artifact.sha256.to_ascii_lowercase() || bytes.len() as u64 != artifact.size {
        return Err(Ok(mismatch(actual, bytes.len().to_string())));
    }
    Ok((bytes, digest))
}

/// Why an S3 object was not read.
enum DownloadError {
    /// It has more bytes than allowed (the size, when S3 said it).
    TooLarge(Option<u64>),
    /// The call or the read failed.
    Failed(String),
}

impl DownloadError {
    fn describe(self, limit: u64) -> String {
        match self {
            Self::TooLarge(Some(length)) => {
                format!("{length} bytes, more than the {limit} allowed")
            }
            Self::TooLarge(None) => format!("more than the {limit} bytes allowed"),
            Self::Failed(detail) => detail,
        }
    }
}

/// An S3 object, when it has at most `limit` bytes (reading no further).
async fn download(
    ctx: &Ctx,
    bucket: &str,
    key: &str,
    limit: u64,
) -> Result<Vec<u8>, DownloadError> {
    let read = async {
        let object = ctx
            .s3()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| {
                DownloadError::Failed(ApiError::new(format!("GetObject {key}"), &err).to_string())
            })?;
        let length = object.content_length().and_then(|l| u64::try_from(l).ok());
        if length.is_some_and(|length| length > limit) {
            return Err(DownloadError::TooLarge(length));
        }
        let mut body = object.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body
            .next()
            .await
            .transpose()
            .map_err(|err| DownloadError::Failed(format!("reading {key}: {err}")))?
        {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(DownloadError::TooLarge(length));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    tokio::time::timeout(DOWNLOAD_TIMEOUT, read)
        .await
        .map_err(|_| {
            DownloadError::Failed(format!(
                "reading {key} took longer than {DOWNLOAD_TIMEOUT:?}"
            ))
        })?
}

/// Update `stack` to `template` when it differs from the current one, with
/// every parameter the new template still has kept at its previous value.
async fn update_stack(ctx: &Ctx, stack: &str, template: &str) -> Result<Change, SelfUpdateError> {
    let cloudformation = ctx.cloudformation();
    let current = cloudformation
        .get_template()
        .stack_name(stack)
        .template_stage(TemplateStage::Original)
        .send()
        .await
        .map_err(|err| ApiError::new(format!("GetTemplate {stack}"), &err))?;
    if current.template_body() == Some(template) {
        return Ok(Change::Unchanged);
    }
    let described = cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|err| ApiError::new(format!("DescribeStacks {stack}"), &err))?;
    let new_parameters: Vec<String> = serde_json::from_str::<serde_json::Value>(template)
        .ok()
        .and_then(|t| {
            t.get("Parameters")
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
        })
        .unwrap_or_default();
    let kept: Vec<Parameter> = described
        .stacks()
        .first()
        .map(|s| s.parameters())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.parameter_key())
        .filter(|key| new_parameters.iter().any(|k| k.as_str() == *key))
        .map(|key| {
            Parameter::builder()
                .parameter_key(key)
                .use_previous_value(true)
                .build()
        })
        .collect();
    let updated = cloudformation
        .update_stack()
        .stack_name(stack)
        .template_body(template)
        .set_parameters(Some(kept))
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityNamedIam)
        .capabilities(Capability::CapabilityAutoExpand)
        .send()
        .await;
    match updated {
        Ok(_) => {
            tracing::info!(stack, "stack update started");
            Ok(Change::Updated)
        }
        Err(err) => {
            let err = ApiError::new(format!("UpdateStack {stack}"), &err);
            if err.detail.contains(NO_UPDATES) {
                Ok(Change::Unchanged)
            } else {
                Err(err.into())
            }
        }
    }
}

/// Publish the refusal to the alert topic.
async fn alert(ctx: &Ctx, topic: &str, reason: &str) -> Result<(), ApiError> {
    let function = ctx
        .config()
        .self_update
        .function_name
        .clone()
        .unwrap_or_default();
    let message = format!(
        "The scanner's self-update of {function} was refused and nothing was changed.\n\n{reason}\n"
    );
    ctx.sns()
        .publish()
        .topic_arn(topic)
        .subject("Scanner self-update refused: release does not match its manifest")
        .message(message)
        .send()
        .await
        .map_err(|err| ApiError::new(format!("Publish {topic}"), &err))?;
    Ok(())
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn configuration() {
        let vars: HashMap<&str, &str> = HashMap::from([
            (ENV_RELEASE_BUCKET, "releases"),
            (ENV_RELEASE_PREFIX, "/scanner/0.2.0/"),
            (
                ENV_ALERT_TOPIC_ARN,
                "arn:aws:sns:us-east-1:123456789012:alerts",
            ),
            (ENV_LAMBDA_FUNCTION_NAME, "control"),
        ]);
        let config =
            SelfUpdateConfig::from_vars(|n| vars.get(n).map(|v| v.to_string())).expect("valid");
        assert_eq!(config.key(MANIFEST), "scanner/0.2.0/manifest.json");
        assert_eq!(config.function_name.as_deref(), Some("control"));
        assert!(
            ["x86_64", "arm64"].contains(&config.arch.as_str()),
            "{}",
            config.arch
        );
        let err = SelfUpdateConfig::from_vars(|n| {
            (n == ENV_ALERT_TOPIC_ARN).then(|| "alerts".to_string())
        })
        .expect_err("not an ARN");
        assert_eq!(err.var, ENV_ALERT_TOPIC_ARN);
    }

    #[test]
    fn manifests() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"version": "0.2.0", "artifacts": {"control-x86_64.zip": {"sha256": "ab", "size": 3}}}"#,
        )
        .expect("the documented format");
        assert_eq!(manifest.artifacts["control-x86_64.zip"].size, 3);
        assert!(
            serde_json::from_str::<Manifest>(r#"{"version": "1", "artifacts": {}, "x": 1}"#)
                .is_err()
        );
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
    }
}
