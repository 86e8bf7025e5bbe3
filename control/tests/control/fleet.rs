//! Making AWS resources in the emulator and reading them back: instances
//! with volumes, customer snapshots and volumes with look-alike tags, the
//! queue and its jobs, the worker group.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, InstanceType, ResourceType, Snapshot, Tag, TagSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_types::error::display::DisplayErrorContext;
use scanner_contract::ScanJob;

/// An image id; the emulator does not check that it exists.
const IMAGE: &str = "ami-12345678";

/// Tags as `(key, value)` pairs.
pub type Tags<'a> = &'a [(&'a str, &'a str)];

fn tag_spec(kind: ResourceType, tags: Tags<'_>) -> Option<TagSpecification> {
    (!tags.is_empty()).then(|| {
        TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .build()
    })
}

/// A running instance tagged `tags` with an 8 GiB EBS volume on each of
/// `devices`; its id.
pub async fn launch(ec2: &aws_sdk_ec2::Client, tags: Tags<'_>, devices: &[&str]) -> Result<String> {
    let mut request = ec2
        .run_instances()
        .image_id(IMAGE)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .set_tag_specifications(tag_spec(ResourceType::Instance, tags).map(|t| vec![t]));
    for device in devices {
        request = request.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(*device)
                .ebs(EbsBlockDevice::builder().volume_size(8).build())
                .build(),
        );
    }
    let answer = request
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("RunInstances: {}", DisplayErrorContext(&err)))?;
    answer
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .context("RunInstances made no instance")
}

/// `(volume id, device)` of the instance's EBS volumes, in block-device
/// order.
pub async fn volumes_of(
    ec2: &aws_sdk_ec2::Client,
    instance: &str,
) -> Result<Vec<(String, String)>> {
    let answer = ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("DescribeInstances: {}", DisplayErrorContext(&err)))?;
    let described = answer
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .with_context(|| format!("{instance} not found"))?;
    Ok(described
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            Some((
                m.ebs()?.volume_id()?.to_string(),
                m.device_name()?.to_string(),
            ))
        })
        .collect())
}

/// The instance's state (`running`, `terminated`, …).
pub async fn state(ec2: &aws_sdk_ec2::Client, instance: &str) -> Result<String> {
    let answer = ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("DescribeInstances: {}", DisplayErrorContext(&err)))?;
    answer
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| i.state()?.name().map(|n| n.as_str().to_string()))
        .with_context(|| format!("{instance} has no state"))
}

/// Stop the instance.
pub async fn stop(ec2: &aws_sdk_ec2::Client, instance: &str) -> Result<()> {
    ec2.stop_instances()
        .instance_ids(instance)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("StopInstances: {}", DisplayErrorContext(&err)))?;
    Ok(())
}

/// A 1 GiB volume in the region's first zone, tagged `tags`; its id.
pub async fn volume(ec2: &aws_sdk_ec2::Client, region: &str, tags: Tags<'_>) -> Result<String> {
    let answer = ec2
        .create_volume()
        .availability_zone(format!("{region}a"))
        .size(1)
        .set_tag_specifications(tag_spec(ResourceType::Volume, tags).map(|t| vec![t]))
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("CreateVolume: {}", DisplayErrorContext(&err)))?;
    answer
        .volume_id()
        .map(str::to_string)
        .context("no volume id")
}

/// Attach `volume` to `instance` as `device`.
pub async fn attach(
    ec2: &aws_sdk_ec2::Client,
    volume: &str,
    instance: &str,
    device: &str,
) -> Result<()> {
    ec2.attach_volume()
        .volume_id(volume)
        .instance_id(instance)
        .device(device)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("AttachVolume: {}", DisplayErrorContext(&err)))?;
    Ok(())
}

/// A snapshot of `volume` tagged `tags` (as a customer, or a worker, makes
/// one); its id.
pub async fn snapshot(ec2: &aws_sdk_ec2::Client, volume: &str, tags: Tags<'_>) -> Result<String> {
    let answer = ec2
        .create_snapshot()
        .volume_id(volume)
        .set_tag_specifications(tag_spec(ResourceType::Snapshot, tags).map(|t| vec![t]))
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("CreateSnapshot: {}", DisplayErrorContext(&err)))?;
    answer
        .snapshot_id()
        .map(str::to_string)
        .context("no snapshot id")
}

/// Every snapshot of the account in the region.
pub async fn snapshots(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Snapshot>> {
    let answer = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("DescribeSnapshots: {}", DisplayErrorContext(&err)))?;
    Ok(answer.snapshots().to_vec())
}

/// Every volume id of the region.
pub async fn volume_ids(ec2: &aws_sdk_ec2::Client) -> Result<Vec<String>> {
    let answer = ec2
        .describe_volumes()
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("DescribeVolumes: {}", DisplayErrorContext(&err)))?;
    Ok(answer
        .volumes()
        .iter()
        .filter_map(|v| v.volume_id().map(str::to_string))
        .collect())
}

/// A snapshot's tags.
pub fn tags(snapshot: &Snapshot) -> BTreeMap<String, String> {
    snapshot
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// A new queue in the home region; its URL.
pub async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    let answer = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("CreateQueue: {}", DisplayErrorContext(&err)))?;
    answer
        .queue_url()
        .map(str::to_string)
        .context("no queue URL")
}

/// Put `count` messages on the queue.
pub async fn send(sqs: &aws_sdk_sqs::Client, queue_url: &str, count: usize) -> Result<()> {
    for n in 0..count {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(format!("message {n}"))
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("SendMessage: {}", DisplayErrorContext(&err)))?;
    }
    Ok(())
}

/// Receive every visible message (they stay in flight for five minutes):
/// `(body, receipt handle)`.
pub async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<Vec<(String, String)>> {
    let mut messages = Vec::new();
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("ReceiveMessage: {}", DisplayErrorContext(&err)))?;
        if answer.messages().is_empty() {
            return Ok(messages);
        }
        for message in answer.messages() {
            messages.push((
                message.body().unwrap_or_default().to_string(),
                message.receipt_handle().unwrap_or_default().to_string(),
            ));
        }
    }
}

/// Delete received messages.
pub async fn delete(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[(String, String)],
) -> Result<()> {
    for (_, receipt) in messages {
        sqs.delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("DeleteMessage: {}", DisplayErrorContext(&err)))?;
    }
    Ok(())
}

/// Receive every job on the queue and delete it: parsed by the contract,
/// by instance id.
pub async fn jobs(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<BTreeMap<String, ScanJob>> {
    let messages = receive(sqs, queue_url).await?;
    delete(sqs, queue_url, &messages).await?;
    let mut jobs = BTreeMap::new();
    for (body, _) in &messages {
        let job = ScanJob::from_json(body).with_context(|| format!("message {body}"))?;
        let instance = job.instance_id.clone();
        ensure!(
            jobs.insert(instance.clone(), job).is_none(),
            "two jobs for {instance}"
        );
    }
    Ok(jobs)
}

/// Messages waiting plus in flight.
pub async fn depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<u64> {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("GetQueueAttributes: {}", DisplayErrorContext(&err)))?;
    let mut depth = 0;
    for value in answer.attributes().into_iter().flat_map(|a| a.values()) {
        depth += value.parse::<u64>()?;
    }
    Ok(depth)
}

/// A worker group `name` (0..=`max_size`, desired 0) launching from a
/// template that tags its instances with the ownership tag.
pub async fn worker_group(
    ec2: &aws_sdk_ec2::Client,
    autoscaling: &aws_sdk_autoscaling::Client,
    name: &str,
    max_size: i32,
) -> Result<()> {
    use aws_sdk_ec2::types::{LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData};
    ec2.create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(IMAGE)
                .instance_type(InstanceType::T3Micro)
                .tag_specifications(
                    LaunchTemplateTagSpecificationRequest::builder()
                        .resource_type(ResourceType::Instance)
                        .tags(Tag::builder().key("Created By").value("Mondoo").build())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("CreateLaunchTemplate: {}", DisplayErrorContext(&err)))?;
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(name)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(max_size)
        .desired_capacity(0)
        .availability_zones(format!("{}a", crate::HOME))
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("CreateAutoScalingGroup: {}", DisplayErrorContext(&err)))?;
    Ok(())
}

/// The group's desired capacity and instance count.
pub async fn group_size(
    autoscaling: &aws_sdk_autoscaling::Client,
    name: &str,
) -> Result<(i32, usize)> {
    let answer = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|err| {
            anyhow::anyhow!("DescribeAutoScalingGroups: {}", DisplayErrorContext(&err))
        })?;
    let group = answer
        .auto_scaling_groups()
        .first()
        .with_context(|| format!("no group {name}"))?;
    Ok((
        group.desired_capacity().unwrap_or(-1),
        group.instances().len(),
    ))
}
