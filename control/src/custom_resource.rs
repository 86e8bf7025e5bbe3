//! The CloudFormation custom resource: the stack's registration with the
//! service, and its clean removal.
//!
//! - **Create** (and **Update** when the token or the endpoint changed):
//!   POST the short-lived `RegistrationToken` to `RegistrationUrl` and store
//!   the service credential it is exchanged for as the SSM SecureString
//!   [`ParameterNames::service_credential`](scanner_contract::ParameterNames::service_credential)
//!   (overwritten). The protocol is in control/README.md.
//! - **Delete**: the sweep with TTL 0 ([`crate::sweep`]: every owned
//!   snapshot and available volume, the ownership tag checked again before
//!   each delete), then the credential parameter. It never calls the
//!   registration endpoint, so it works when the service is gone; a
//!   resource already removed is not an error. It fails only when owned
//!   resources are left, and the reason names them.
//!
//! Whatever happens, CloudFormation is answered: a stack whose custom
//! resource never answers hangs for an hour. So the work runs under a time
//! budget that ends [`RESPONSE_RESERVE`] before the Lambda's deadline, any
//! failure (a malformed request included, when it has a `ResponseURL`)
//! becomes a FAILED answer with the reason, and the answer is PUT to the
//! pre-signed URL with retries. `NoEcho` is always set; neither the token nor
//! the credential is ever logged or answered ([`Properties`] and
//! [`Request`] print without them).
//!
//! The request and response types are `aws_lambda_events`'s; the resource
//! properties are kept as JSON there and parsed here, so that a Delete never
//! depends on them and a bad property gives a FAILED answer that names it.
//!
//! TLS: reqwest 0.12 builds its rustls configuration with the process-level
//! `CryptoProvider` when one is installed and otherwise with *ring*
//! explicitly (`builder_with_provider`), and the AWS SDK names aws-lc-rs
//! explicitly too; so the two providers linked into one binary never reach
//! rustls's "no process-level CryptoProvider" panic and nothing is installed
//! at start (the unit test `an_https_client_builds_and_fails_cleanly` makes
//! an HTTPS request with both linked).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lambda_events::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus,
};
use aws_sdk_ssm::types::ParameterType;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::calls::ApiCalls;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::regions::regions;
use crate::sweep::{SweepError, sweep};

/// Time kept back from the Lambda's deadline for answering CloudFormation.
pub const RESPONSE_RESERVE: Duration = Duration::from_secs(20);
/// The work's budget when no deadline is known (`control invoke`).
const DEFAULT_BUDGET: Duration = Duration::from_secs(600);
/// Attempts at PUTting the answer.
const RESPONSE_ATTEMPTS: u32 = 5;
/// The first pause between attempts (doubled each time).
const RESPONSE_BACKOFF: Duration = Duration::from_millis(250);
/// Connecting to the registration endpoint or the response URL.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One HTTP request, all of it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest registration response read (a credential and some JSON).
const MAX_REGISTRATION_RESPONSE: usize = 64 * 1024;
/// Largest credential stored: a standard-tier SSM parameter holds 4 KB.
const MAX_CREDENTIAL_BYTES: usize = 4096;
/// Characters of the reason sent to CloudFormation (its whole response is
/// limited to 4 KB).
const MAX_REASON_CHARS: usize = 2000;
/// Characters of an endpoint's error message quoted in a reason.
const MAX_QUOTED_CHARS: usize = 300;

/// A custom resource request as it arrived. Its `Debug` names the request
/// and leaves the properties (the token) out, because the handler logs
/// every event.
#[derive(Clone, PartialEq)]
pub struct Request(pub Value);

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = |name: &str| self.0.get(name).and_then(Value::as_str).unwrap_or("?");
        f.debug_struct("CustomResource")
            .field("request_type", &field("RequestType"))
            .field("logical_resource_id", &field("LogicalResourceId"))
            .field("request_id", &field("RequestId"))
            .finish_non_exhaustive()
    }
}

/// The resource's properties in the template.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Properties {
    /// The Lambda's ARN, which CloudFormation adds; not used.
    #[serde(default)]
    pub service_token: Option<String>,
    /// The short-lived registration token (secret).
    pub registration_token: String,
    /// The registration endpoint: `https://…` (`http://127.0.0.1…` in tests).
    pub registration_url: String,
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Properties")
            .field("registration_token", &"<redacted>")
            .field("registration_url", &self.registration_url)
            .finish_non_exhaustive()
    }
}

/// SUCCESS or FAILED, as CloudFormation spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The request was carried out.
    Success,
    /// It was not; the reason says why.
    Failed,
}

/// What the custom resource did and answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomResourceSummary {
    /// `Create`, `Update`, `Delete`, or what a malformed request said.
    pub request_type: String,
    /// The answer.
    pub status: Status,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The physical resource id answered.
    pub physical_resource_id: String,
    /// A new credential was stored.
    pub credential_stored: bool,
    /// Snapshots and volumes deleted (a Delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
    /// PUTs made to the response URL.
    pub response_attempts: u32,
}

/// What a Delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deleted {
    /// Owned snapshots.
    pub snapshots: usize,
    /// Owned volumes.
    pub volumes: usize,
}

/// Why CloudFormation could not be answered (the request itself failing is
/// a FAILED answer, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CustomResourceError {
    /// No `ResponseURL`: nobody to answer.
    #[error("a CloudFormation custom resource request without a ResponseURL string: cannot answer")]
    NoResponseUrl,
    /// The `ResponseURL` is not one to send an answer to.
    #[error("the ResponseURL cannot be answered: {0}")]
    BadResponseUrl(String),
    /// Every PUT failed.
    #[error(
        "answering CloudFormation ({status:?}) failed after {attempts} attempts: {detail}; the stack waits until its own timeout"
    )]
    Respond {
        /// The answer that was not delivered.
        status: Status,
        /// PUTs made.
        attempts: u32,
        /// The last failure.
        detail: String,
    },
}

/// What went wrong with the request (the reason of a FAILED answer).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("malformed custom resource request: {0}")]
    Malformed(String),
    #[error("invalid ResourceProperties: {0}")]
    Properties(String),
    #[error("StackId {0:?} is not a CloudFormation stack ARN")]
    StackId(String),
    #[error("RegistrationUrl: {0}")]
    RegistrationUrl(String),
    #[error("registering with {host}: {detail}")]
    Registration { host: String, detail: String },
    #[error("storing the service credential in SSM parameter {name}: {source}")]
    Store { name: String, source: ApiError },
    #[error("the sweep could not run: {0}")]
    Sweep(String),
    #[error("owned resources are left, delete them or retry: {0}")]
    Left(String),
    #[error("did not finish within {0:?}, the Lambda's time limit less the time to answer")]
    Timeout(Duration),
}

/// What the work did, for the summary.
#[derive(Default)]
struct Done {
    credential_stored: bool,
    deleted: Option<Deleted>,
}

/// Carry out the custom resource request `event` and answer CloudFormation,
/// finishing before `deadline` (the Lambda's; `None`: within ten minutes).
///
/// # Errors
/// [`CustomResourceError`] when CloudFormation cannot be answered; every
/// other failure is answered FAILED and reported in the summary.
pub async fn custom_resource(
    ctx: &Ctx,
    event: &Request,
    deadline: Option<SystemTime>,
) -> Result<CustomResourceSummary, CustomResourceError> {
    let event = &event.0;
    let text = |name: &str| {
        event
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let response_url = event
        .get("ResponseURL")
        .and_then(Value::as_str)
        .ok_or(CustomResourceError::NoResponseUrl)?;
    let response_url = checked_url(response_url).map_err(CustomResourceError::BadResponseUrl)?;
    let http = http_client().map_err(|err| {
        CustomResourceError::BadResponseUrl(format!("no HTTP client: {}", error_chain(&err)))
    })?;
    let credential_name = ctx.config().parameters.service_credential();
    // Stable across updates: an Update or a Delete keeps the id it was given;
    // a Create names the parameter it manages.
    let physical_resource_id = Some(text("PhysicalResourceId"))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| credential_name.clone());
    let mut request_type = text("RequestType");
    if request_type.is_empty() {
        request_type = "unknown".to_string();
    }

    let budget = deadline.map_or(DEFAULT_BUDGET, |deadline| {
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(RESPONSE_RESERVE)
    });
    let outcome = match tokio::time::timeout(budget, act(ctx, &http, event)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Timeout(budget)),
    };
    let (done, reason) = match outcome {
        Ok(done) => (done, None),
        Err(failure) => {
            let reason = truncate(&failure.to_string(), MAX_REASON_CHARS);
            tracing::error!(request_type = %request_type, reason = %reason, "custom resource request failed");
            (Done::default(), Some(reason))
        }
    };
    let status = if reason.is_some() {
        Status::Failed
    } else {
        Status::Success
    };

    let mut response = CloudFormationCustomResourceResponse::default();
    response.status = match status {
        Status::Success => CloudFormationCustomResourceResponseStatus::Success,
        Status::Failed => CloudFormationCustomResourceResponseStatus::Failed,
    };
    response.reason.clone_from(&reason);
    response
        .physical_resource_id
        .clone_from(&physical_resource_id);
    response.stack_id = text("StackId");
    response.request_id = text("RequestId");
    response.logical_resource_id = text("LogicalResourceId");
    response.no_echo = true;
    response.data = HashMap::from([("CredentialParameter".to_string(), credential_name)]);
    let attempts = respond(&http, &response_url, &response, deadline)
        .await
        .map_err(|(attempts, detail)| CustomResourceError::Respond {
            status,
            attempts,
            detail,
        })?;
    tracing::info!(request_type = %request_type, ?status, attempts, "answered CloudFormation");
    Ok(CustomResourceSummary {
        request_type,
        status,
        reason,
        physical_resource_id,
        credential_stored: done.credential_stored,
        deleted: done.deleted,
        response_attempts: attempts,
    })
}

/// Carry out the request.
async fn act(ctx: &Ctx, http: &reqwest::Client, event: &Value) -> Result<Done, Failure> {
    let request: CloudFormationCustomResourceRequest =
        serde_json::from_value(event.clone()).map_err(|err| Failure::Malformed(err.to_string()))?;
    match request {
        CloudFormationCustomResourceRequest::Create(create) => {
            let properties = properties(&create.resource_properties)?;
            register(ctx, http, &properties, &create.stack_id).await
        }
        CloudFormationCustomResourceRequest::Update(update) => {
            let properties = properties(&update.resource_properties)?;
            let old = properties_loosely(&update.old_resource_properties);
            if old.as_ref().is_some_and(|(token, url)| {
                *token == properties.registration_token && *url == properties.registration_url
            }) {
                tracing::info!("registration unchanged, nothing to do");
                return Ok(Done::default());
            }
            register(ctx, http, &properties, &update.stack_id).await
        }
        CloudFormationCustomResourceRequest::Delete(_) => remove(ctx).await,
        // The enum is non-exhaustive: a request type this code does not know.
        _ => Err(Failure::Malformed(
            "unknown RequestType (expected Create, Update or Delete)".to_string(),
        )),
    }
}

fn properties(value: &Value) -> Result<Properties, Failure> {
    let properties: Properties = serde_json::from_value(value.clone())
        .map_err(|err| Failure::Properties(err.to_string()))?;
    if properties.registration_token.trim().is_empty() {
        return Err(Failure::Properties(
            "RegistrationToken is empty".to_string(),
        ));
    }
    Ok(properties)
}

/// The old token and endpoint, whatever else the old properties held.
fn properties_loosely(value: &Value) -> Option<(String, String)> {
    Some((
        value.get("RegistrationToken")?.as_str()?.to_string(),
        value.get("RegistrationUrl")?.as_str()?.to_string(),
    ))
}

/// The registration request: what the service learns about the stack.
#[derive(Serialize)]
struct RegistrationRequest<'a> {
    token: &'a str,
    account_id: &'a str,
    region: &'a str,
    stack_id: &'a str,
}

/// The registration response.
#[derive(Deserialize)]
struct RegistrationResponse {
    credential: String,
}

/// An endpoint's error answer, `{"error": "…"}`.
#[derive(Deserialize)]
struct RegistrationRefusal {
    error: String,
}

/// Exchange the token for the credential and store it.
async fn register(
    ctx: &Ctx,
    http: &reqwest::Client,
    properties: &Properties,
    stack_id: &str,
) -> Result<Done, Failure> {
    let url = checked_url(&properties.registration_url).map_err(Failure::RegistrationUrl)?;
    let (region, account_id) =
        stack_region_and_account(stack_id).ok_or_else(|| Failure::StackId(stack_id.to_string()))?;
    let host = url.host_str().unwrap_or_default().to_string();
    let failed = |detail: String| Failure::Registration {
        host: host.clone(),
        detail,
    };
    let response = http
        .post(url.clone())
        .json(&RegistrationRequest {
            token: &properties.registration_token,
            account_id,
            region,
            stack_id,
        })
        .send()
        .await
        .map_err(|err| failed(error_chain(&err.without_url())))?;
    let status = response.status();
    let body = read_bounded(response, MAX_REGISTRATION_RESPONSE)
        .await
        .map_err(failed)?;
    if !status.is_success() {
        let message = serde_json::from_slice::<RegistrationRefusal>(&body).map_or_else(
            |_| String::from_utf8_lossy(&body).into_owned(),
            |refusal| refusal.error,
        );
        return Err(failed(format!(
            "refused with HTTP {status}: {}",
            truncate(message.trim(), MAX_QUOTED_CHARS)
        )));
    }
    let credential = serde_json::from_slice::<RegistrationResponse>(&body)
        .map_err(|err| {
            failed(format!(
                "HTTP {status}, but the answer is not {{\"credential\": \"…\"}}: {err}"
            ))
        })?
        .credential;
    if credential.trim().is_empty() {
        return Err(failed(format!(
            "HTTP {status}, but the credential is empty"
        )));
    }
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(failed(format!(
            "HTTP {status}, but the credential has {} bytes (at most {MAX_CREDENTIAL_BYTES})",
            credential.len()
        )));
    }
    let name = ctx.config().parameters.service_credential();
    ctx.ssm()
        .put_parameter()
        .name(&name)
        .value(credential)
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .description(
            "The scanner's service credential (written by the control Lambda's registration)",
        )
        .send()
        .await
        .map_err(|err| Failure::Store {
            name: name.clone(),
            source: ApiError::new(format!("PutParameter {name}"), &err),
        })?;
    tracing::info!(parameter = %name, host = %host, "registered; service credential stored");
    Ok(Done {
        credential_stored: true,
        deleted: None,
    })
}

/// Remove everything the integration made: the sweep with TTL 0, then the
/// credential; then look again for anything owned that is left.
async fn remove(ctx: &Ctx) -> Result<Done, Failure> {
    let summary = match sweep(ctx, Duration::ZERO).await {
        Ok(summary) => summary,
        // A region that stopped is looked at again below.
        Err(SweepError::Incomplete { summary, .. }) => *summary,
        Err(err @ SweepError::Regions(_)) => return Err(Failure::Sweep(err.to_string())),
    };
    let failed: HashMap<&str, &str> = summary
        .regions
        .iter()
        .flat_map(|region| &region.failed)
        .map(|failed| (failed.id.as_str(), failed.error.as_str()))
        .collect();
    let mut left = still_owned(ctx, &failed).await;
    let name = ctx.config().parameters.service_credential();
    match ctx.ssm().delete_parameter().name(&name).send().await {
        Ok(_) => tracing::info!(parameter = %name, "service credential deleted"),
        Err(err) => {
            let err = ApiError::new(format!("DeleteParameter {name}"), &err);
            if !err.is_code("ParameterNotFound") {
                left.push(format!("SSM parameter {name} ({err})"));
            }
        }
    }
    if !left.is_empty() {
        return Err(Failure::Left(left.join("; ")));
    }
    Ok(Done {
        credential_stored: false,
        deleted: Some(Deleted {
            snapshots: summary.snapshots_deleted,
            volumes: summary.volumes_deleted,
        }),
    })
}

/// Every snapshot and volume, in every region, that still carries the
/// ownership tag (checked in code): `id in region (why)`. The sweep leaves
/// volumes in use, and a delete may have failed (`failed`: id → error).
async fn still_owned(ctx: &Ctx, failed: &HashMap<&str, &str>) -> Vec<String> {
    let calls = ApiCalls::default();
    let regions = match regions(ctx, &calls).await {
        Ok(regions) => regions,
        Err(err) => return vec![format!("anything owned (listing the regions: {err})")],
    };
    let ownership = &ctx.config().ownership;
    let mut left = Vec::new();
    for region in regions {
        let ec2 = ctx.ec2(&region, &calls);
        let tag_filter = crate::tags::owned_filter(ownership);
        let why = |id: &str, state: &str| {
            failed
                .get(id)
                .map_or_else(|| state.to_string(), |err| format!("delete failed: {err}"))
        };
        let mut snapshots = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter.clone())
            .into_paginator()
            .send();
        while let Some(page) = snapshots.next().await {
            match page {
                Ok(page) => {
                    for snapshot in page.snapshots() {
                        let tags = crate::tags::pairs(snapshot.tags());
                        if let (Some(id), true) = (snapshot.snapshot_id(), ownership.is_owned(tags))
                        {
                            let state = snapshot.state().map_or("", |s| s.as_str());
                            left.push(format!("{id} in {region} ({})", why(id, state)));
                        }
                    }
                }
                Err(err) => {
                    let err = ApiError::new("DescribeSnapshots", &err);
                    left.push(format!("owned snapshots in {region} (listing them: {err})"));
                    break;
                }
            }
        }
        let mut volumes = ec2
            .describe_volumes()
            .filters(tag_filter)
            .into_paginator()
            .send();
        while let Some(page) = volumes.next().await {
            match page {
                Ok(page) => {
                    for volume in page.volumes() {
                        let tags = crate::tags::pairs(volume.tags());
                        if let (Some(id), true) = (volume.volume_id(), ownership.is_owned(tags)) {
                            let state = volume.state().map_or("", |s| s.as_str());
                            left.push(format!("{id} in {region} ({})", why(id, state)));
                        }
                    }
                }
                Err(err) => {
                    let err = ApiError::new("DescribeVolumes", &err);
                    left.push(format!("owned volumes in {region} (listing them: {err})"));
                    break;
                }
            }
        }
    }
    left
}

/// PUT the answer to the pre-signed URL, retrying failures and server
/// errors while the deadline allows. The number of attempts, or it and the
/// last failure.
async fn respond(
    http: &reqwest::Client,
    url: &Url,
    response: &CloudFormationCustomResourceResponse,
    deadline: Option<SystemTime>,
) -> Result<u32, (u32, String)> {
    // No `"Reason": null` on a success: leave out what is not there.
    let mut answer = serde_json::to_value(response).map_err(|err| (0, err.to_string()))?;
    if let Some(fields) = answer.as_object_mut() {
        fields.retain(|_, value| !value.is_null());
    }
    let body = answer.to_string().into_bytes();
    let mut backoff = RESPONSE_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        // A pre-signed S3 URL is signed without a content type: send an
        // empty one (reqwest would send none; some clients add one).
        let sent = http
            .put(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(""))
            .body(body.clone())
            .send()
            .await;
        let (retry, detail) = match sent {
            Ok(answer) if answer.status().is_success() => return Ok(attempt),
            Ok(answer) => {
                let status = answer.status();
                let text = read_bounded(answer, MAX_REGISTRATION_RESPONSE)
                    .await
                    .map(|body| String::from_utf8_lossy(&body).into_owned())
                    .unwrap_or_default();
                (
                    status.is_server_error() || status.as_u16() == 429,
                    format!(
                        "HTTP {status} from {}: {}",
                        url.host_str().unwrap_or_default(),
                        truncate(text.trim(), MAX_QUOTED_CHARS)
                    ),
                )
            }
            // Without the URL: its query is the pre-signed signature.
            Err(err) => (true, error_chain(&err.without_url())),
        };
        let time_left = deadline.is_none_or(|deadline| {
            deadline
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > backoff + CONNECT_TIMEOUT)
        });
        if !retry || attempt >= RESPONSE_ATTEMPTS || !time_left {
            return Err((attempt, detail));
        }
        tracing::warn!(attempt, detail = %detail, "answering CloudFormation failed, retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// The HTTP client for the registration and the answer: bounded waits, no
/// redirects (neither endpoint has a reason to send one elsewhere).
fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// `url` parsed, when it is HTTPS — or plain HTTP to 127.0.0.1, which only
/// a test's local server can be.
pub fn checked_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|err| format!("{url:?} is not a URL: {err}"))?;
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(parsed),
        "http" if parsed.host_str() == Some("127.0.0.1") => Ok(parsed),
        "http" => Err(format!(
            "{url:?} is plain HTTP (only https:// is accepted; http:// only to 127.0.0.1)"
        )),
        _ => Err(format!("{url:?} is not an https:// URL")),
    }
}

/// The region and the account of a stack ARN,
/// `arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/ID`.
fn stack_region_and_account(stack_id: &str) -> Option<(&str, &str)> {
    let mut parts = stack_id.splitn(6, ':');
    let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = arn == "arn"
        && service == "cloudformation"
        && !region.is_empty()
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource.starts_with("stack/");
    valid.then_some((region, account))
}

/// A response body, at most `limit` bytes.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| format!("reading the answer: {}", error_chain(&err.without_url())))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is longer than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes, `a: b: c` (reqwest's own `Display` stops at
/// the first).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most `max` characters of `text`, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_or_local_http() {
        assert!(checked_url("https://register.example.com/v1/register").is_ok());
        assert!(checked_url("http://127.0.0.1:8080/register").is_ok());
        for bad in [
            "http://register.example.com/",
            "http://localhost:8080/",
            "http://127.0.0.2/",
            "ftp://example.com/",
            "register.example.com",
            "",
        ] {
            assert!(checked_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stack_arns() {
        assert_eq!(
            stack_region_and_account(
                "arn:aws:cloudformation:eu-west-1:123456789012:stack/scanner/0b6c3a40-5d4e-11ef-a7b1-0a1b2c3d4e5f"
            ),
            Some(("eu-west-1", "123456789012"))
        );
        for bad in [
            "",
            "scanner",
            "arn:aws:s3:eu-west-1:123456789012:stack/x/y",
            "arn:aws:cloudformation:eu-west-1:1234:stack/x/y",
            "arn:aws:cloudformation::123456789012:stack/x/y",
        ] {
            assert_eq!(stack_region_and_account(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_token_is_never_printed() {
        let properties = Properties {
            service_token: None,
            registration_token: "secret-token-123".to_string(),
            registration_url: "https://r.example.com".to_string(),
        };
        assert!(!format!("{properties:?}").contains("secret-token-123"));
        let request = Request(serde_json::json!({
            "RequestType": "Create",
            "ResourceProperties": {"RegistrationToken": "secret-token-123"},
            "OldResourceProperties": {"RegistrationToken": "secret-token-123"},
        }));
        let printed = format!("{request:?}");
        assert!(printed.contains("Create"), "{printed}");
        assert!(!printed.contains("secret-token-123"), "{printed}");
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ééé", 2), "éé…");
    }

    /// With both rustls providers linked (the SDK's aws-lc-rs, reqwest's
    /// ring), building the client and making an HTTPS request is an error at
    /// worst, never rustls's "no process-level CryptoProvider" panic.
    #[tokio::test]
    async fn an_https_client_builds_and_fails_cleanly() {
        let http = http_client().expect("the client builds");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        let err = http
            .get(format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(err.is_connect(), "{err}");
    }
}
