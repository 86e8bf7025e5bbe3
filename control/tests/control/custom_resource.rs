//! The CloudFormation custom resource against the emulator, with local HTTP
//! servers standing in for the registration endpoint and for the
//! pre-signed response URL: the credential stored as a SecureString, the
//! delete leaving nothing owned (and everything of the customer's), every
//! failure answered FAILED with its reason, and create/delete many times.

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::error::display::DisplayErrorContext;
use control::custom_resource::{CustomResourceSummary, RESPONSE_RESERVE, Status};
use control::{Ctx, Response, handle, handle_until};
use serde_json::{Value, json};

use crate::fleet::{self, launch, volumes_of};
use crate::http::{Recorded, Server};
use crate::{HOME, World, config, with_world};

const WEST: &str = "eu-west-1";
const STACK: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/scanner/0b6c3a40-5d4e-11ef-a7b1-0a1b2c3d4e5f";
const OWNED: &[(&str, &str)] = &[("Created By", "Mondoo")];
const LOOK_ALIKE: &[(&str, &str)] = &[("Created By", "mondoo")];
/// The credential parameter under the default prefix.
const CREDENTIAL: &str = "/mondoo/scanner/service-credential";

async fn ctx(world: &World) -> Ctx {
    world.ctx(config(&[HOME, WEST], "unused")).await
}

/// A request of `kind` answered to `answers`, with the given properties.
fn request(kind: &str, answers: &Server, properties: Value) -> Value {
    let mut request = json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:control",
        "ResponseURL": format!("{}/cloudformation-response?X-Amz-Signature=abc", answers.url),
        "StackId": STACK,
        "RequestId": format!("req-{kind}"),
        "ResourceType": "Custom::ScannerRegistration",
        "LogicalResourceId": "Registration",
        "ResourceProperties": properties,
    });
    if kind != "Create" {
        request["PhysicalResourceId"] = json!(CREDENTIAL);
    }
    request
}

fn properties(token: &str, registration: &str) -> Value {
    json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:control",
        "RegistrationToken": token,
        "RegistrationUrl": format!("{registration}/v1/register"),
    })
}

/// An endpoint that exchanges any token `T` for the credential `cred-T`.
fn registration() -> Result<Server> {
    Server::start(|request| {
        let token = serde_json::from_str::<Value>(&request.body)
            .ok()
            .and_then(|body| body["token"].as_str().map(str::to_string))
            .unwrap_or_default();
        (
            200,
            json!({"credential": format!("cred-{token}")}).to_string(),
        )
    })
}

/// Handle `event`; the summary.
async fn answer(ctx: &Ctx, event: Value) -> Result<CustomResourceSummary> {
    match handle(event, ctx).await? {
        Response::CustomResource(summary) => Ok(summary),
        other => bail!("a custom resource request answered {other:?}"),
    }
}

/// The answer CloudFormation received: a PUT with an empty content type.
fn received(answers: &Server) -> Result<Value> {
    let put: Recorded = answers.next()?;
    ensure!(put.method == "PUT", "{put:?}");
    ensure!(
        put.path == "/cloudformation-response?X-Amz-Signature=abc",
        "{put:?}"
    );
    ensure!(put.header("content-type") == Some(""), "{put:?}");
    put.json()
}

async fn ssm(world: &World) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&world.loader().load().await)
}

/// The stored credential (decrypted) and its type; `None`: no parameter.
async fn credential(world: &World) -> Result<Option<(String, ParameterType)>> {
    match ssm(world)
        .await
        .get_parameter()
        .name(CREDENTIAL)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(answer) => {
            let parameter = answer.parameter().context("no parameter")?;
            Ok(Some((
                parameter.value().unwrap_or_default().to_string(),
                parameter.r#type().context("no type")?.clone(),
            )))
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            Ok(None)
        }
        Err(err) => bail!("GetParameter: {}", DisplayErrorContext(&err)),
    }
}

/// Owned snapshot ids and volume ids in `region`.
async fn owned(world: &World, region: &str) -> Result<(Vec<String>, Vec<String>)> {
    let ec2 = world.ec2(region).await;
    let snapshots = fleet::snapshots(&ec2)
        .await?
        .iter()
        .filter(|s| fleet::tags(s).get("Created By").map(String::as_str) == Some("Mondoo"))
        .filter_map(|s| s.snapshot_id().map(str::to_string))
        .collect();
    let answer = ec2
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Created By")
                .values("Mondoo")
                .build(),
        )
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("DescribeVolumes: {}", DisplayErrorContext(&err)))?;
    let volumes = answer
        .volumes()
        .iter()
        .filter_map(|v| v.volume_id().map(str::to_string))
        .collect();
    Ok((snapshots, volumes))
}

#[test]
fn create_stores_the_credential_as_a_secure_string_and_answers_success() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let endpoint = registration()?;
        let answers = Server::answering(200, "")?;

        let summary = answer(
            &ctx,
            request("Create", &answers, properties("tok-1", &endpoint.url)),
        )
        .await?;
        ensure!(summary.status == Status::Success, "{summary:?}");
        ensure!(summary.credential_stored, "{summary:?}");

        let post = endpoint.next()?;
        ensure!(
            post.method == "POST" && post.path == "/v1/register",
            "{post:?}"
        );
        ensure!(
            post.json()?
                == json!({"token": "tok-1", "account_id": "123456789012",
                          "region": "us-east-1", "stack_id": STACK}),
            "{post:?}"
        );
        let sent = received(&answers)?;
        ensure!(
            sent == json!({
                "Status": "SUCCESS", "PhysicalResourceId": CREDENTIAL,
                "StackId": STACK, "RequestId": "req-Create", "LogicalResourceId": "Registration",
                "NoEcho": true, "Data": {"CredentialParameter": CREDENTIAL},
            }),
            "{sent}"
        );
        ensure!(
            credential(&world).await?
                == Some(("cred-tok-1".to_string(), ParameterType::SecureString)),
            "the credential is stored"
        );

        // An update with the same token: nothing to do, the same resource.
        let mut update = request("Update", &answers, properties("tok-1", &endpoint.url));
        update["OldResourceProperties"] = properties("tok-1", &endpoint.url);
        let summary = answer(&ctx, update).await?;
        ensure!(summary.status == Status::Success && !summary.credential_stored);
        ensure!(endpoint.received().is_empty(), "no registration");
        ensure!(received(&answers)?["PhysicalResourceId"] == CREDENTIAL);

        // A new token: registered again, the credential overwritten.
        let mut update = request("Update", &answers, properties("tok-2", &endpoint.url));
        update["OldResourceProperties"] = properties("tok-1", &endpoint.url);
        let summary = answer(&ctx, update).await?;
        ensure!(summary.status == Status::Success && summary.credential_stored);
        ensure!(endpoint.next()?.json()?["token"] == "tok-2");
        let sent = received(&answers)?;
        ensure!(sent["Status"] == "SUCCESS" && sent["PhysicalResourceId"] == CREDENTIAL);
        ensure!(credential(&world).await?.map(|(value, _)| value).as_deref() == Some("cred-tok-2"));
        Ok(())
    })
}

#[test]
fn delete_leaves_nothing_owned_and_everything_of_the_customers() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let mut customers = Vec::new();
        for region in [HOME, WEST] {
            let ec2 = world.ec2(region).await;
            let instance = launch(&ec2, &[], &["/dev/xvda"]).await?;
            let (root, _) = volumes_of(&ec2, &instance).await?[0].clone();
            for _ in 0..2 {
                fleet::snapshot(&ec2, &root, OWNED).await?;
                fleet::volume(&ec2, region, OWNED).await?;
            }
            customers.push(fleet::snapshot(&ec2, &root, LOOK_ALIKE).await?);
            customers.push(fleet::snapshot(&ec2, &root, &[]).await?);
            customers.push(fleet::volume(&ec2, region, LOOK_ALIKE).await?);
            customers.push(root);
            let (snapshots, volumes) = owned(&world, region).await?;
            ensure!(snapshots.len() == 2 && volumes.len() == 2);
        }
        ssm(&world)
            .await
            .put_parameter()
            .name(CREDENTIAL)
            .value("cred")
            .r#type(ParameterType::SecureString)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("PutParameter: {}", DisplayErrorContext(&err)))?;

        // The registration endpoint is gone: a delete does not need it.
        let gone = Server::answering(200, "")?;
        let gone_url = gone.url.clone();
        drop(gone);
        let answers = Server::answering(200, "")?;
        let summary = answer(
            &ctx,
            request("Delete", &answers, properties("tok", &gone_url)),
        )
        .await?;
        ensure!(summary.status == Status::Success, "{summary:?}");
        let deleted = summary.deleted.context("a delete says what it deleted")?;
        ensure!(
            deleted.snapshots == 4 && deleted.volumes == 4,
            "{deleted:?}"
        );
        let sent = received(&answers)?;
        ensure!(
            sent["Status"] == "SUCCESS" && sent["PhysicalResourceId"] == CREDENTIAL,
            "{sent}"
        );

        let mut left = Vec::new();
        for region in [HOME, WEST] {
            let (snapshots, volumes) = owned(&world, region).await?;
            ensure!(
                snapshots.is_empty() && volumes.is_empty(),
                "{region}: {snapshots:?} {volumes:?}"
            );
            let ec2 = world.ec2(region).await;
            left.extend(
                fleet::snapshots(&ec2)
                    .await?
                    .iter()
                    .filter_map(|s| s.snapshot_id().map(str::to_string)),
            );
            left.extend(fleet::volume_ids(&ec2).await?);
        }
        for id in &customers {
            ensure!(left.contains(id), "the customer's {id} was deleted");
        }
        ensure!(
            credential(&world).await?.is_none(),
            "the credential is deleted"
        );

        // Again, with everything already gone (CloudFormation retries).
        let summary = answer(
            &ctx,
            request("Delete", &answers, properties("tok", &gone_url)),
        )
        .await?;
        ensure!(summary.status == Status::Success, "{summary:?}");
        ensure!(received(&answers)?["Status"] == "SUCCESS");
        Ok(())
    })
}

#[test]
fn a_delete_that_leaves_owned_resources_fails_naming_them() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let ec2 = world.ec2(HOME).await;
        // A customer's instance (an owned one, a worker, the sweep may end).
        let instance = launch(&ec2, &[], &["/dev/xvda"]).await?;
        let attached = fleet::volume(&ec2, HOME, OWNED).await?;
        fleet::attach(&ec2, &attached, &instance, "/dev/xvdf").await?;
        let answers = Server::answering(200, "")?;
        let summary = answer(&ctx, request("Delete", &answers, json!({}))).await?;
        ensure!(summary.status == Status::Failed, "{summary:?}");
        let sent = received(&answers)?;
        let reason = sent["Reason"].as_str().context("a reason")?;
        ensure!(sent["Status"] == "FAILED", "{sent}");
        ensure!(
            reason.contains(&format!("{attached} in {HOME} (in-use)")),
            "{reason}"
        );
        Ok(())
    })
}

#[test]
fn a_refusing_or_unsafe_endpoint_is_answered_failed_with_the_reason() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let answers = Server::answering(200, "")?;
        let refusing = Server::answering(403, r#"{"error": "registration token expired"}"#)?;
        let summary = answer(
            &ctx,
            request("Create", &answers, properties("old-token", &refusing.url)),
        )
        .await?;
        ensure!(summary.status == Status::Failed && !summary.credential_stored);
        let sent = received(&answers)?;
        let reason = sent["Reason"].as_str().context("a reason")?;
        ensure!(sent["Status"] == "FAILED", "{sent}");
        ensure!(reason.contains("HTTP 403"), "{reason}");
        ensure!(reason.contains("registration token expired"), "{reason}");
        ensure!(!sent.to_string().contains("old-token"), "{sent}");
        ensure!(credential(&world).await?.is_none());

        // An answer without a credential.
        let odd = Server::answering(200, r#"{"token": "x"}"#)?;
        answer(&ctx, request("Create", &answers, properties("t", &odd.url))).await?;
        let sent = received(&answers)?;
        let reason = sent["Reason"].as_str().unwrap_or_default();
        ensure!(reason.contains(r#"is not {"credential""#), "{reason}");

        // Plain HTTP anywhere but 127.0.0.1 is refused before any request.
        answer(
            &ctx,
            request(
                "Create",
                &answers,
                properties("t", "http://register.example.com"),
            ),
        )
        .await?;
        let sent = received(&answers)?;
        let reason = sent["Reason"].as_str().unwrap_or_default();
        ensure!(reason.contains("plain HTTP"), "{reason}");
        ensure!(credential(&world).await?.is_none());
        Ok(())
    })
}

#[test]
fn malformed_requests_are_answered_failed() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let answers = Server::answering(200, "")?;
        let endpoint = registration()?;
        let url = format!(
            "{}/cloudformation-response?X-Amz-Signature=abc",
            answers.url
        );
        let cases = [
            (
                json!({"ResponseURL": url, "StackId": STACK, "RequestId": "r1",
                       "LogicalResourceId": "Registration"}),
                "missing field `RequestType`",
            ),
            (
                json!({"RequestType": "Replace", "ResponseURL": url, "StackId": STACK,
                       "RequestId": "r2", "LogicalResourceId": "Registration"}),
                "unknown variant `Replace`",
            ),
            (
                request("Create", &answers, json!({"RegistrationToken": "t"})),
                "missing field `RegistrationUrl`",
            ),
            (
                request(
                    "Create",
                    &answers,
                    json!({"RegistrationToken": "t", "RegistrationUrl": endpoint.url,
                           "RegistrationTokn": "t"}),
                ),
                "unknown field `RegistrationTokn`",
            ),
            (
                {
                    let mut create = request("Create", &answers, properties("t", &endpoint.url));
                    create["StackId"] = json!("scanner");
                    create
                },
                "not a CloudFormation stack ARN",
            ),
        ];
        for (event, expected) in cases {
            let summary = answer(&ctx, event.clone()).await?;
            ensure!(summary.status == Status::Failed, "{event}: {summary:?}");
            let sent = received(&answers)?;
            let reason = sent["Reason"].as_str().unwrap_or_default();
            ensure!(reason.contains(expected), "{event}: {reason}");
            ensure!(sent["Status"] == "FAILED", "{sent}");
            ensure!(sent["RequestId"] == event["RequestId"], "{sent}");
        }
        ensure!(endpoint.received().is_empty(), "nothing was registered");

        // Without a ResponseURL there is nobody to answer: an error.
        let err = handle(json!({"RequestType": "Create", "StackId": STACK}), &ctx)
            .await
            .expect_err("no ResponseURL");
        ensure!(err.to_string().contains("without a ResponseURL"), "{err}");
        Ok(())
    })
}

#[test]
fn the_answer_is_retried_until_it_is_taken() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let endpoint = registration()?;
        let count = std::sync::atomic::AtomicUsize::new(0);
        let answers = Server::start(move |_| {
            match count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0 | 1 => (503, "SlowDown".to_string()),
                _ => (200, String::new()),
            }
        })?;
        let summary = answer(
            &ctx,
            request("Create", &answers, properties("t", &endpoint.url)),
        )
        .await?;
        ensure!(summary.status == Status::Success, "{summary:?}");
        ensure!(summary.response_attempts == 3, "{summary:?}");
        for _ in 0..3 {
            ensure!(received(&answers)?["Status"] == "SUCCESS");
        }
        Ok(())
    })
}

#[test]
fn create_and_delete_five_times_in_a_row() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let endpoint = registration()?;
        let answers = Server::answering(200, "")?;
        let ec2 = world.ec2(WEST).await;
        let customer = fleet::volume(&ec2, WEST, LOOK_ALIKE).await?;
        for round in 0..5 {
            let token = format!("round-{round}");
            let summary = answer(
                &ctx,
                request("Create", &answers, properties(&token, &endpoint.url)),
            )
            .await?;
            ensure!(
                summary.status == Status::Success,
                "round {round}: {summary:?}"
            );
            ensure!(received(&answers)?["Status"] == "SUCCESS");
            ensure!(
                credential(&world).await?.map(|(value, _)| value) == Some(format!("cred-{token}"))
            );
            // What a scan would leave behind.
            let volume = fleet::volume(&ec2, WEST, OWNED).await?;
            fleet::snapshot(&ec2, &volume, OWNED).await?;

            let summary = answer(
                &ctx,
                request("Delete", &answers, properties(&token, &endpoint.url)),
            )
            .await?;
            ensure!(
                summary.status == Status::Success,
                "round {round}: {summary:?}"
            );
            ensure!(received(&answers)?["Status"] == "SUCCESS");
            ensure!(
                owned(&world, WEST).await? == (vec![], vec![]),
                "round {round}"
            );
            ensure!(credential(&world).await?.is_none(), "round {round}");
        }
        ensure!(fleet::volume_ids(&ec2).await?.contains(&customer));
        ensure!(endpoint.received().len() == 5);
        Ok(())
    })
}

#[test]
fn a_request_out_of_time_is_still_answered_failed() -> Result<()> {
    with_world(|world| async move {
        let ctx = ctx(&world).await;
        let answers = Server::answering(200, "")?;
        let ec2 = world.ec2(HOME).await;
        let volume = fleet::volume(&ec2, HOME, OWNED).await?;
        // The invocation's deadline leaves no time for the work, only for
        // the answer.
        let deadline = std::time::SystemTime::now() + RESPONSE_RESERVE;
        let response =
            handle_until(request("Delete", &answers, json!({})), &ctx, Some(deadline)).await?;
        let Response::CustomResource(summary) = response else {
            bail!("a custom resource request answered {response:?}");
        };
        ensure!(summary.status == Status::Failed, "{summary:?}");
        let sent = received(&answers)?;
        ensure!(sent["Status"] == "FAILED", "{sent}");
        let reason = sent["Reason"].as_str().unwrap_or_default();
        ensure!(reason.contains("did not finish within"), "{reason}");
        ensure!(
            owned(&world, HOME).await?.1 == vec![volume],
            "nothing was deleted"
        );
        Ok(())
    })
}
