//! Report delivery: where a job's report goes, and nothing else leaves.
//!
//! - `https://…`: a POST of the JSON report with the service credential as
//!   `Authorization: Bearer …`, retried with exponential back-off on
//!   connection errors, 429 and 5xx. The credential is never logged (nor is
//!   the request, whose headers carry it). `http://` is accepted only for a
//!   loopback host (local runs and tests).
//! - `s3://bucket/prefix`: `PutObject` of `prefix/SCAN_ID/INSTANCE_ID.json`.
//! - `file:///directory`: `directory/SCAN_ID/INSTANCE_ID.json`, written to a
//!   temporary name and renamed, so a reader never sees half a report.
//!
//! reqwest with rustls: the AWS SDK links rustls with aws-lc-rs and reqwest
//! links it with ring, so rustls cannot pick a process-wide provider by
//! itself. reqwest 0.12 uses ring explicitly when no provider is installed,
//! so building the client cannot panic; a unit test below holds it to that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;

use super::config::{ConfigError, Secret};

/// Where reports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// POST to this URL.
    Https(String),
    /// An S3 bucket and key prefix (no leading or trailing `/`, may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// A local directory.
    Directory(PathBuf),
}

impl Destination {
    /// Parse `https://…`, `s3://bucket/prefix` or `file:///dir`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the value for any other scheme, an
    /// `http://` URL to a host that is not loopback, or an empty bucket or
    /// path.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let invalid = |expected| ConfigError::Invalid {
            name: "report-destination".to_string(),
            value: value.to_string(),
            expected,
        };
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("s3://BUCKET/PREFIX with a bucket name"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("file:///ABSOLUTE/DIRECTORY"));
            }
            return Ok(Self::Directory(PathBuf::from(path)));
        }
        let url = reqwest::Url::parse(value)
            .map_err(|_| invalid("https://…, s3://bucket/prefix or file:///directory"))?;
        match url.scheme() {
            "https" => Ok(Self::Https(value.to_string())),
            "http" if is_loopback(&url) => Ok(Self::Https(value.to_string())),
            "http" => Err(invalid(
                "https:// (plain http:// only to a loopback address)",
            )),
            _ => Err(invalid(
                "https://…, s3://bucket/prefix or file:///directory",
            )),
        }
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Why a report was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("delivering the report to {destination}: {detail}")]
pub struct DeliveryError {
    /// The destination (never the credential).
    pub destination: String,
    /// What failed.
    pub detail: String,
}

/// Tries of one HTTPS delivery, the first included.
const HTTPS_ATTEMPTS: u32 = 5;
/// Back-off before the second try; doubled after each.
const HTTPS_FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// One POST: a report is at most a few MiB.
const HTTPS_TIMEOUT: Duration = Duration::from_secs(60);

/// A destination with its clients.
#[derive(Debug, Clone)]
pub struct Sink {
    destination: Destination,
    credential: Option<Secret>,
    http: reqwest::Client,
    s3: aws_sdk_s3::Client,
}

impl Sink {
    /// A sink for `destination`; `credential` goes with HTTPS reports.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(
        destination: Destination,
        credential: Option<Secret>,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, DeliveryError> {
        let http = reqwest::Client::builder()
            .timeout(HTTPS_TIMEOUT)
            .build()
            .map_err(|err| DeliveryError {
                destination: describe(&destination),
                detail: format!("building the HTTPS client: {err}"),
            })?;
        // A custom endpoint (an S3-compatible store, the local emulator)
        // serves buckets by path, not by host name.
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(sdk.endpoint_url().is_some())
                .build(),
        );
        Ok(Self {
            destination,
            credential,
            http,
            s3,
        })
    }

    /// Deliver `body` (a JSON report) as `SCAN_ID/INSTANCE_ID.json`.
    ///
    /// # Errors
    /// [`DeliveryError`] naming the destination and what failed, after the
    /// retries.
    pub async fn deliver(
        &self,
        scan_id: &str,
        instance_id: &str,
        body: Vec<u8>,
    ) -> Result<String, DeliveryError> {
        let name = format!("{}/{}.json", safe(scan_id), safe(instance_id));
        let error = |detail: String| DeliveryError {
            destination: describe(&self.destination),
            detail,
        };
        match &self.destination {
            Destination::Directory(dir) => write_file(dir, &name, &body).await.map_err(error),
            Destination::S3 { bucket, prefix } => {
                let key = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                self.s3
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(body.into())
                    .send()
                    .await
                    .map_err(|err| error(DisplayErrorContext(&err).to_string()))?;
                Ok(format!("s3://{bucket}/{key}"))
            }
            Destination::Https(url) => self.post(url, body).await.map_err(error),
        }
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<String, String> {
        let mut backoff = HTTPS_FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=HTTPS_ATTEMPTS {
            let mut request = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(credential) = &self.credential {
                request = request.bearer_auth(credential.expose());
            }
            // Errors are described without the request (its headers hold
            // the credential): the status, or reqwest's error without URL.
            let retryable = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(url.to_string()),
                Ok(response) => {
                    let status = response.status();
                    last = format!("HTTP {status}");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(err) => {
                    let retryable = err.is_connect() || err.is_timeout() || err.is_request();
                    last = err.without_url().to_string();
                    retryable
                }
            };
            if !retryable || attempt == HTTPS_ATTEMPTS {
                break;
            }
            tracing::warn!(attempt, error = %last, "report delivery failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        Err(last)
    }
}

/// The destination for logs and errors.
fn describe(destination: &Destination) -> String {
    match destination {
        Destination::Https(url) => url.clone(),
        Destination::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        Destination::Directory(dir) => format!("file://{}", dir.display()),
    }
}

/// An id as one path component: anything but `[A-Za-z0-9._-]` becomes `_`
/// (ids come from a queue message).
fn safe(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => cleaned,
    }
}

async fn write_file(dir: &Path, name: &str, body: &[u8]) -> Result<String, String> {
    let path = dir.join(name);
    let parent = path.parent().unwrap_or(dir).to_path_buf();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|err| format!("creating {}: {err}", parent.display()))?;
    let temporary = path.with_extension("json.partial");
    tokio::fs::write(&temporary, body)
        .await
        .map_err(|err| format!("writing {}: {err}", temporary.display()))?;
    tokio::fs::rename(&temporary, &path).await.map_err(|err| {
        format!(
            "renaming {} to {}: {err}",
            temporary.display(),
            path.display()
        )
    })?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_plain_http_is_loopback_only() {
        assert_eq!(
            Destination::parse("s3://reports/scans/").ok(),
            Some(Destination::S3 {
                bucket: "reports".into(),
                prefix: "scans".into()
            })
        );
        assert_eq!(
            Destination::parse("file:///var/reports").ok(),
            Some(Destination::Directory("/var/reports".into()))
        );
        assert!(Destination::parse("https://api.example.com/reports").is_ok());
        assert!(Destination::parse("http://127.0.0.1:8080/r").is_ok());
        assert!(Destination::parse("http://localhost/r").is_ok());
        assert!(Destination::parse("http://example.com/r").is_err());
        assert!(Destination::parse("ftp://example.com/r").is_err());
        assert!(Destination::parse("s3:///x").is_err());
        assert!(Destination::parse("file://relative").is_err());
    }

    #[test]
    fn ids_cannot_climb_out_of_the_directory() {
        assert_eq!(safe("../../etc"), ".._.._etc");
        assert_eq!(safe(".."), "_");
        assert_eq!(safe("i-0123"), "i-0123");
    }

    /// Two rustls crypto providers are linked (aws-lc-rs by the SDK, ring by
    /// reqwest): an HTTPS request must fail with an error, not panic for want
    /// of a process-wide provider.
    #[tokio::test]
    async fn an_https_request_does_not_panic_on_the_crypto_provider() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let sink = Sink::new(
            Destination::Https("https://127.0.0.1:9/reports".into()),
            Some(Secret::new("secret")),
            &sdk,
        )
        .expect("the client builds");
        let err = sink
            .deliver("scan", "i-1", b"{}".to_vec())
            .await
            .expect_err("nothing listens on port 9");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
