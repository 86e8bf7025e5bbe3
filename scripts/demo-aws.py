#!/usr/bin/env python3
"""The AWS side of `scripts/demo`, against the local emulator (boto3 from the
emulator's venv; endpoint and dummy credentials from the environment).

  demo-aws.py fleet NAME=IMAGE ...   upload each disk image as a snapshot (EBS
                                     direct APIs, zero blocks skipped), boot an
                                     instance from it, make the scan queue and
                                     its dead-letter queue; print them as JSON
  demo-aws.py resources [--none-owned]
                                     count the scanner's resources and the
                                     customer's (instances, volumes, snapshots);
                                     with --none-owned, exit 1 when any of the
                                     scanner's is left

What the fleet stands for is the customer's: nothing here carries the
ownership tag, so the sweep at the end must leave all of it alone.
"""
import base64
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3

BLOCK = 512 * 1024
OWNERSHIP = ("Created By", "Mondoo")


def client(service: str):
    return boto3.client(service, region_name=os.environ.get("AWS_REGION", "us-east-1"))


def upload(path: str, name: str) -> str:
    """The image as a completed snapshot; zero blocks are not sent (they read as zeros)."""
    ebs = client("ebs")
    size = os.path.getsize(path)
    gib = max(1, -(-size // (1 << 30)))
    snapshot = ebs.start_snapshot(
        VolumeSize=gib,
        Description=f"demo: the {name} instance's root disk",
        Tags=[{"Key": "Name", "Value": f"demo-{name}"}],
    )["SnapshotId"]
    blocks = []
    with open(path, "rb") as image:
        index = 0
        while chunk := image.read(BLOCK):
            if chunk.count(0) != len(chunk):
                blocks.append((index, chunk.ljust(BLOCK, b"\0")))
            index += 1

    def put(block: tuple[int, bytes]) -> None:
        index, data = block
        ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, blocks))
    ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=len(blocks))
    return snapshot


def fleet(specs: list[str]) -> None:
    ec2 = client("ec2")
    instances = []
    for spec in specs:
        name, _, path = spec.partition("=")
        snapshot = upload(path, name)
        image = ec2.register_image(
            Name=f"demo-{name}",
            RootDeviceName="/dev/xvda",
            Architecture="x86_64",
            VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}],
        )["ImageId"]
        gib = max(1, -(-os.path.getsize(path) // (1 << 30)))
        instance = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            # The emulator ignores an image's mappings; naming the snapshot
            # here gives the root volume its data, as an AMI launch would.
            BlockDeviceMappings=[
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"SnapshotId": snapshot, "VolumeSize": gib, "DeleteOnTermination": True},
                }
            ],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"demo-{name}"}]}
            ],
        )["Instances"][0]["InstanceId"]
        instances.append({"name": name, "instance_id": instance, "image_snapshot": snapshot})
        print(f"  {instance}  demo-{name}  (root disk from {snapshot})", file=sys.stderr)
    sqs = client("sqs")
    dlq = sqs.create_queue(QueueName="scanner-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName="scanner-jobs",
        Attributes={
            "VisibilityTimeout": "300",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    print(json.dumps({"queue_url": queue, "dlq_url": dlq, "instances": instances}))


def owned(tags: list[dict] | None) -> bool:
    return any((t["Key"], t["Value"]) == OWNERSHIP for t in tags or [])


def resources(none_owned: bool) -> None:
    ec2 = client("ec2")
    counts = {}

    def count(kind: str, items: list[dict]) -> None:
        mine = sum(owned(i.get("Tags")) for i in items)
        counts[kind] = {"scanner": mine, "customer": len(items) - mine}

    count(
        "instances",
        [
            i
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")
        ],
    )
    count("volumes", ec2.describe_volumes()["Volumes"])
    count("snapshots", ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    print(f"{'':12}{'scanner':>9}{'customer':>10}")
    for kind, c in counts.items():
        print(f"{kind:12}{c['scanner']:>9}{c['customer']:>10}")
    left = sum(c["scanner"] for c in counts.values())
    if none_owned and left:
        sys.exit(f"demo: {left} of the scanner's resources are left: {json.dumps(counts)}")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "fleet":
        fleet(sys.argv[2:])
    elif sys.argv[1:2] == ["resources"] and sys.argv[2:] in ([], ["--none-owned"]):
        resources(sys.argv[2:] == ["--none-owned"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
