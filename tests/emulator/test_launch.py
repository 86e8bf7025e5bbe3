"""Tests of the emulator launcher, through boto3 (the reference SDK) against a launched server.

python -m pytest tests/emulator
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

LAUNCH = Path(__file__).resolve().parent / "launch.py"
BLOCK = 524288


def start_server(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCH), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("READY http://127.0.0.1:"), line
    return proc, line.split()[1]


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        proc.kill() if proc.poll() is None else None
        proc.stdout.close()


@pytest.fixture(scope="session")
def url():
    proc, url = start_server()
    yield url
    stop_server(proc)


@pytest.fixture(autouse=True)
def clean_controls(url):
    yield
    control(url, "DELETE", "faults")
    control(url, "DELETE", "latency")


def control(url: str, method: str, resource: str, body=None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}/_emulator/{resource}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def inject(url: str, **fault) -> None:
    control(url, "POST", "faults", fault)


def client(url: str, service: str, attempts: int = 1, validate: bool = True):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIAEMULATOR",
        aws_secret_access_key="secret",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            parameter_validation=validate,
        ),
    )


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def block_data(index: int, salt: int = 0) -> bytes:
    return bytes([(index + salt) % 256]) * BLOCK


def put(ebs, snapshot_id: str, index: int, data: bytes) -> None:
    ebs.put_snapshot_block(
        SnapshotId=snapshot_id,
        BlockIndex=index,
        BlockData=data,
        DataLength=len(data),
        Checksum=checksum(data),
        ChecksumAlgorithm="SHA256",
    )


def make_snapshot(ebs, blocks: dict[int, bytes], size_gib: int = 1, **kwargs) -> str:
    snapshot_id = ebs.start_snapshot(VolumeSize=size_gib, **kwargs)["SnapshotId"]
    for index, data in blocks.items():
        put(ebs, snapshot_id, index, data)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(blocks))
    return snapshot_id


def read(ebs, snapshot_id: str, index: int, token: str) -> tuple[bytes, str]:
    answer = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
    return answer["BlockData"].read(), answer["Checksum"]


def tokens(ebs, snapshot_id: str) -> dict[int, str]:
    blocks = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]
    return {b["BlockIndex"]: b["BlockToken"] for b in blocks}


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_start_snapshot_reports_real_block_size(url):
    ec2 = client(url, "ec2")
    volumes = len(ec2.describe_volumes()["Volumes"])
    answer = client(url, "ebs").start_snapshot(VolumeSize=1)
    assert answer["BlockSize"] == 524288
    assert answer["Status"] == "pending"
    assert len(ec2.describe_volumes()["Volumes"]) == volumes  # no made-up volume


def test_blocks_are_listed_sorted_and_read_back(url):
    ebs, ec2 = client(url, "ebs"), client(url, "ec2")
    blocks = {7: block_data(7), 2: block_data(2), 5: block_data(5)}
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for index, data in blocks.items():
        put(ebs, snapshot_id, index, data)

    def state():
        return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]

    assert state() == "pending"
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=3)
    assert state() == "completed"

    listing = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert [b["BlockIndex"] for b in listing["Blocks"]] == [2, 5, 7]
    assert listing["BlockSize"] == BLOCK and listing["VolumeSize"] == 1
    assert "NextToken" not in listing
    for index, token in tokens(ebs, snapshot_id).items():
        data, sent_checksum = read(ebs, snapshot_id, index, token)
        assert data == blocks[index] and sent_checksum == checksum(data)


def test_list_snapshot_blocks_paginates_and_starts_at_index(url):
    ebs = client(url, "ebs")
    indices = list(range(0, 2 * 120, 2))[::-1]  # 120 blocks, written in reverse order
    snapshot_id = make_snapshot(ebs, {i: block_data(i) for i in indices})

    first = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100)
    assert [b["BlockIndex"] for b in first["Blocks"]] == sorted(indices)[:100]
    second = ebs.list_snapshot_blocks(
        SnapshotId=snapshot_id, MaxResults=100, NextToken=first["NextToken"]
    )
    assert [b["BlockIndex"] for b in second["Blocks"]] == sorted(indices)[100:]
    assert "NextToken" not in second

    # Starts at the index, or the next one present (odd indices are absent).
    started = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, StartingBlockIndex=201)
    assert [b["BlockIndex"] for b in started["Blocks"]] == list(range(202, 240, 2))
    # NextToken wins over StartingBlockIndex.
    both = ebs.list_snapshot_blocks(
        SnapshotId=snapshot_id, MaxResults=100, NextToken=first["NextToken"], StartingBlockIndex=0
    )
    assert both["Blocks"] == second["Blocks"]


def test_missing_snapshot_or_block_is_resource_not_found(url):
    ebs = client(url, "ebs")
    snapshot_id = make_snapshot(ebs, {0: block_data(0)})
    with pytest.raises(ClientError) as missing_block:
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=9, BlockToken="AAAA")
    assert error_code(missing_block) == "ResourceNotFoundException"
    assert missing_block.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    absent = "snap-0123456789abcdef0"
    calls = [
        lambda: ebs.get_snapshot_block(SnapshotId=absent, BlockIndex=0, BlockToken="AAAA"),
        lambda: ebs.list_snapshot_blocks(SnapshotId=absent),
        lambda: ebs.list_changed_blocks(FirstSnapshotId=snapshot_id, SecondSnapshotId=absent),
        lambda: put(ebs, absent, 0, block_data(0)),
        lambda: ebs.complete_snapshot(SnapshotId=absent, ChangedBlocksCount=0),
    ]
    for call in calls:
        with pytest.raises(ClientError) as missing:
            call()
        assert error_code(missing) == "ResourceNotFoundException"
        assert missing.value.response["Reason"] == "SNAPSHOT_NOT_FOUND"

    with pytest.raises(ClientError) as bad_token:
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken="AAAA")
    assert error_code(bad_token) == "ValidationException"


def test_put_snapshot_block_validates_like_aws(url):
    ebs = client(url, "ebs")
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = block_data(1)
    bad = [
        dict(BlockIndex=0, BlockData=data, DataLength=BLOCK, Checksum=checksum(b"x")),
        dict(BlockIndex=0, BlockData=data[:4096], DataLength=4096, Checksum=checksum(data[:4096])),
        dict(BlockIndex=2048, BlockData=data, DataLength=BLOCK, Checksum=checksum(data)),
    ]
    for params in bad:
        with pytest.raises(ClientError) as invalid:
            ebs.put_snapshot_block(SnapshotId=snapshot_id, ChecksumAlgorithm="SHA256", **params)
        assert error_code(invalid) == "ValidationException"
    unchecked = client(url, "ebs", validate=False)  # botocore itself refuses MaxResults < 100
    with pytest.raises(ClientError) as too_few:
        unchecked.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=10)
    assert error_code(too_few) == "ValidationException"


def test_list_changed_blocks_against_parent(url):
    ebs = client(url, "ebs")
    parent_blocks = {0: block_data(0), 1: block_data(1), 2: block_data(2)}
    parent = make_snapshot(ebs, parent_blocks)
    child_blocks = {1: block_data(1, salt=100), 5: block_data(5)}
    child = make_snapshot(ebs, child_blocks, ParentSnapshotId=parent)

    child_tokens = tokens(ebs, child)
    assert sorted(child_tokens) == [0, 1, 2, 5]
    assert read(ebs, child, 0, child_tokens[0])[0] == parent_blocks[0]
    assert read(ebs, child, 1, child_tokens[1])[0] == child_blocks[1]

    changed = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)
    assert changed["BlockSize"] == BLOCK
    by_index = {b["BlockIndex"]: b for b in changed["ChangedBlocks"]}
    assert sorted(by_index) == [1, 5]
    assert by_index[1]["SecondBlockToken"] == child_tokens[1]
    assert "FirstBlockToken" in by_index[1]
    assert "FirstBlockToken" not in by_index[5]
    # In reverse, a block only the second snapshot (here: the parent) lacks still shows up.
    reverse = ebs.list_changed_blocks(FirstSnapshotId=child, SecondSnapshotId=parent)
    assert [b["BlockIndex"] for b in reverse["ChangedBlocks"]] == [1, 5]
    alone = ebs.list_changed_blocks(SecondSnapshotId=child)
    assert [b["BlockIndex"] for b in alone["ChangedBlocks"]] == [0, 1, 2, 5]


def test_ec2_snapshot_of_restored_volume_carries_blocks_until_deleted(url):
    ebs, ec2 = client(url, "ebs"), client(url, "ec2")
    blocks = {3: block_data(3), 0: block_data(0)}
    source = make_snapshot(ebs, blocks)
    volume = ec2.create_volume(SnapshotId=source, AvailabilityZone="us-east-1a")
    assert volume["Size"] == 1
    copy = ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]

    copy_tokens = tokens(ebs, copy)
    assert sorted(copy_tokens) == [0, 3]
    for index, token in copy_tokens.items():
        assert read(ebs, copy, index, token)[0] == blocks[index]
    # Same lineage: nothing changed between the source and its volume's snapshot.
    unchanged = ebs.list_changed_blocks(FirstSnapshotId=source, SecondSnapshotId=copy)
    assert unchanged["ChangedBlocks"] == []

    blank = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    blank_snapshot = ec2.create_snapshot(VolumeId=blank)["SnapshotId"]
    assert ebs.list_snapshot_blocks(SnapshotId=blank_snapshot)["Blocks"] == []

    ec2.delete_snapshot(SnapshotId=copy)
    with pytest.raises(ClientError) as gone:
        ebs.get_snapshot_block(SnapshotId=copy, BlockIndex=3, BlockToken=copy_tokens[3])
    assert error_code(gone) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as gone_list:
        ebs.list_snapshot_blocks(SnapshotId=copy)
    assert error_code(gone_list) == "ResourceNotFoundException"


def test_throttling_faults_then_success(url):
    ebs = client(url, "ebs")
    snapshot_id = make_snapshot(ebs, {0: block_data(0)})
    token = tokens(ebs, snapshot_id)[0]
    inject(
        url,
        service="ebs",
        action="GetSnapshotBlock",
        count=2,
        status=429,
        code="ThrottlingException",
    )
    for _ in range(2):
        with pytest.raises(ClientError) as throttled:
            read(ebs, snapshot_id, 0, token)
        assert error_code(throttled) == "ThrottlingException"
        assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert read(ebs, snapshot_id, 0, token)[0] == block_data(0)
    state = control(url, "GET", "faults")
    assert state["pending"] == []
    assert state["served"] == {"ebs:GetSnapshotBlock:ThrottlingException": 2}

    # A client that retries gets through the same faults on its own.
    inject(
        url,
        service="ebs",
        action="GetSnapshotBlock",
        count=2,
        status=503,
        code="InternalServerException",
    )
    retrying = client(url, "ebs", attempts=3)
    answer = retrying.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken=token)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2
    # Other actions of the service are untouched by an action-specific fault.
    inject(url, service="ebs", action="GetSnapshotBlock")
    assert tokens(ebs, snapshot_id) == {0: token}
    assert len(control(url, "GET", "faults")["pending"]) == 1


@pytest.mark.parametrize(
    "service, action, call, code, status",
    [
        (
            "ec2",
            "DescribeInstances",
            lambda c, _: c.describe_instances(),
            "RequestLimitExceeded",
            503,
        ),
        (
            "sqs",
            "ReceiveMessage",
            lambda c, q: c.receive_message(QueueUrl=q),
            "RequestThrottled",
            403,
        ),
        (
            "ssm",
            "GetParameter",
            lambda c, _: c.get_parameter(Name="/p"),
            "ThrottlingException",
            400,
        ),
        (
            "autoscaling",
            "DescribeAutoScalingGroups",
            lambda c, _: c.describe_auto_scaling_groups(),
            "Throttling",
            400,
        ),
        ("cloudformation", "DescribeStacks", lambda c, _: c.describe_stacks(), "Throttling", 400),
        ("sns", "ListTopics", lambda c, _: c.list_topics(), "Throttled", 429),
        ("sts", "GetCallerIdentity", lambda c, _: c.get_caller_identity(), "Throttling", 400),
        ("s3", "ListBuckets", lambda c, _: c.list_buckets(), "SlowDown", 503),
    ],
)
def test_faults_in_each_protocol(url, service, action, call, code, status):
    aws = client(url, service)
    queue = client(url, "sqs").create_queue(QueueName="faults")["QueueUrl"]
    inject(url, service=service, action=action, code=code, status=status, message="injected")
    with pytest.raises(ClientError) as injected:
        call(aws, queue)
    assert error_code(injected) == code
    assert injected.value.response["Error"]["Message"] == "injected"
    assert injected.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if service == "ssm":
        with pytest.raises(ClientError) as real:
            call(aws, queue)  # the parameter does not exist: moto's own error again
        assert error_code(real) == "ParameterNotFound"
    else:
        call(aws, queue)


def test_corrupt_fault_flips_a_byte_but_keeps_the_checksum(url):
    ebs = client(url, "ebs")
    snapshot_id = make_snapshot(ebs, {4: block_data(4)})
    token = tokens(ebs, snapshot_id)[4]
    inject(url, service="ebs", action="GetSnapshotBlock", corrupt=True)
    data, sent_checksum = read(ebs, snapshot_id, 4, token)
    assert len(data) == BLOCK and data != block_data(4)
    assert sent_checksum == checksum(block_data(4)) != checksum(data)
    assert read(ebs, snapshot_id, 4, token)[0] == block_data(4)
    assert control(url, "GET", "faults")["served"] == {"ebs:GetSnapshotBlock:corrupt": 1}


def test_latency_knob_delays_matching_calls(url):
    ebs = client(url, "ebs")
    snapshot_id = make_snapshot(ebs, {0: block_data(0)})
    token = tokens(ebs, snapshot_id)[0]
    control(url, "POST", "latency", {"service": "ebs", "action": "GetSnapshotBlock", "ms": 300})
    assert control(url, "GET", "latency")["latency"] == [
        {"service": "ebs", "action": "GetSnapshotBlock", "ms": 300.0}
    ]
    started = time.monotonic()
    read(ebs, snapshot_id, 0, token)
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    tokens(ebs, snapshot_id)
    assert time.monotonic() - started < 0.3


def test_control_endpoints_reject_bad_input(url):
    for body in [
        {"action": "GetSnapshotBlock"},
        {"service": "ebs", "count": 0},
        {"service": "ebs", "colour": "red"},
    ]:
        with pytest.raises(urllib.error.HTTPError) as rejected:
            control(url, "POST", "faults", body)
        assert rejected.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as unknown:
        control(url, "GET", "nothing")
    assert unknown.value.code == 404


def test_ready_file_and_clean_exit_on_sigterm(tmp_path):
    ready = tmp_path / "url"
    proc, url = start_server("--ready-file", str(ready))
    assert ready.read_text().strip() == url
    assert control(url, "GET", "health") == {"status": "ok"}
    started = time.monotonic()
    assert stop_server(proc) == 0
    assert time.monotonic() - started < 5


def test_exit_on_stdin_eof():
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCH), "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("READY ")
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()


def raw(url: str, path: str, service: str, headers=None, data=None):
    """An unsigned-but-scoped request, to look at the wire format itself."""
    scope = (
        f"AWS4-HMAC-SHA256 Credential=AKIAEMULATOR/20250101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host, Signature=0"
    )
    request = urllib.request.Request(
        url + path, data=data, headers={"Authorization": scope, **(headers or {})}
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    return answer.value.code, answer.value.headers, answer.value.read().decode()


def test_fault_wire_format(url):
    faults = [
        {
            "service": "ebs",
            "action": "ListSnapshotBlocks",
            "status": 429,
            "reason": "ACCOUNT_THROTTLED",
            "code": "RequestThrottledException",
        },
        {"service": "sqs", "action": "ReceiveMessage", "status": 400, "code": "RequestThrottled"},
        {
            "service": "ec2",
            "action": "DescribeInstances",
            "status": 503,
            "code": "RequestLimitExceeded",
        },
        {"service": "autoscaling", "action": "DescribeAutoScalingGroups", "code": "Throttling"},
    ]
    control(url, "POST", "faults", faults)

    status, headers, body = raw(url, "/snapshots/snap-0123456789abcdef0/blocks", "ebs")
    assert status == 429 and headers["x-amzn-ErrorType"] == "RequestThrottledException"
    assert json.loads(body)["Reason"] == "ACCOUNT_THROTTLED"

    status, headers, body = raw(
        url,
        "/",
        "sqs",
        {"X-Amz-Target": "AmazonSQS.ReceiveMessage", "Content-Type": "application/x-amz-json-1.0"},
        b"{}",
    )
    assert headers["x-amzn-query-error"] == "RequestThrottled;Sender"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert json.loads(body)["__type"] == "RequestThrottled"

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = raw(url, "/", "ec2", form, b"Action=DescribeInstances&Version=2016-11-15")
    assert status == 503
    assert "<Response><Errors><Error><Code>RequestLimitExceeded</Code>" in body
    status, _, body = raw(
        url, "/", "autoscaling", form, b"Action=DescribeAutoScalingGroups&Version=2011-01-01"
    )
    assert "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>" in body
    assert control(url, "GET", "faults")["pending"] == []


def test_moto_reset_keeps_the_patches(url):
    ebs = client(url, "ebs")
    snapshot_id = make_snapshot(ebs, {1: block_data(1)})
    reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    with pytest.raises(ClientError) as gone:
        ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert error_code(gone) == "ResourceNotFoundException"
    assert ebs.start_snapshot(VolumeSize=1)["BlockSize"] == BLOCK


def test_busy_port_fails_fast(url):
    port = url.rsplit(":", 1)[1]
    taken = subprocess.run(
        [sys.executable, str(LAUNCH), "--port", port],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert taken.returncode == 1 and taken.stdout == ""
    assert "cannot serve" in taken.stderr


def test_path_regex_limits_a_fault_to_matching_requests(url):
    """A fault with path_regex fails only the blocks whose path matches."""
    ebs = client(url, "ebs")
    snapshot_id = make_snapshot(ebs, {0: block_data(0), 1: block_data(1)})
    listed = tokens(ebs, snapshot_id)
    inject(
        url,
        service="ebs",
        action="GetSnapshotBlock",
        count=100,
        status=500,
        code="InternalServerException",
        path_regex="/blocks/[1-9][0-9]*$",
    )
    assert read(ebs, snapshot_id, 0, listed[0])[0] == block_data(0)
    with pytest.raises(ClientError) as failed:
        read(ebs, snapshot_id, 1, listed[1])
    assert error_code(failed) == "InternalServerException"
