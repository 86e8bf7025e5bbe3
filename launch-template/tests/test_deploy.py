"""The stack deployed in the local AWS emulator's CloudFormation (moto).

moto creates every resource type the template uses except one: the
registration custom resource (`Custom::Registration`), which moto would serve
by running the control Lambda in Docker. The test deploys a copy of the
template without it (and without the DependsOn that name it), then checks
what was made: the parameters, the queue and its dead-letter queue, the
function's configuration, the schedules, the roles' policies as written in
the template, the locked-down launch template, the empty worker group, the
ownership tag, and that deleting the stack removes it all.

Limits of the emulator, so not checked here: moto neither enforces IAM nor
evaluates the policies' conditions, keeps the security group's default
egress instead of the template's (HTTPS only), applies neither tags nor
Architectures to the Lambda function, MapPublicIpOnLaunch to the subnets,
nor AWS managed policies to a role (the template's
values are checked in test_template.py), and cannot delete a stack with a
route table or an internet gateway attachment: the deletion is tested on a
second stack that uses an existing VPC (the VpcId/SubnetIds branch) (parliament and test_template.py read
them instead), does not run the Lambda or the user data, and does not
resolve the launch template's `{{resolve:ssm:...}}` AMI reference against
real AMIs (see the test). One moto bug is worked around in the copy:
AWS::SSM::Parameter's Tags are a map in CloudFormation, a list in moto;
and one gap: moto has no Fn::Cidr, so the copy has the two subnets' ranges
computed (for the default NetworkCidr, and checked against the subnets made).

The emulator is tests/emulator/launch.py run by SCANNER_EMULATOR_PYTHON
(.cache/emulator-venv); this venv's boto3 talks to it.
"""

import ast
import ipaddress
import json
import os
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import boto3
import pytest

import resolve

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STACK = "mondoo-scanner"
BUCKET = "mondoo-releases"
PREFIX = "mondoo-scanner/0.1.0"
TAG = {"Key": "Created By", "Value": "Mondoo"}
# Not created in the emulator: the custom resource (see the module doc).
LEFT_OUT = {"Registration"}


@pytest.fixture(scope="module")
def endpoint():
    python = os.environ.get("SCANNER_EMULATOR_PYTHON")
    if not python:
        pytest.fail("SCANNER_EMULATOR_PYTHON is not set (scripts/test sets it to .cache/emulator-venv/bin/python)")
    server = subprocess.Popen(
        [python, str(REPO / "tests/emulator/launch.py"), "--port", "0", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = server.stdout.readline().strip()
        assert line.startswith("READY "), f"emulator said {line!r}"
        yield line.split(" ", 1)[1]
    finally:
        server.stdin.close()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def aws(endpoint):
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return lambda service: session.client(service, endpoint_url=endpoint)


def without_cidr(node, template):
    """Fn::Cidr (which moto 5.2.5 does not know) replaced by its value for
    the default NetworkCidr, computed with ipaddress as CloudFormation does."""
    if isinstance(node, list):
        return [without_cidr(item, template) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Fn::Cidr"}:
        block, count, host_bits = node["Fn::Cidr"]
        assert block == {"Ref": "NetworkCidr"}, block
        network = ipaddress.ip_network(template["Parameters"]["NetworkCidr"]["Default"])
        subnets = network.subnets(new_prefix=network.max_prefixlen - int(host_bits))
        return [str(subnet) for subnet, _ in zip(subnets, range(int(count)))]
    return {key: without_cidr(value, template) for key, value in node.items()}


def deployable_copy():
    """template.json without what the emulator cannot create."""
    template = resolve.load()
    template["Resources"] = without_cidr(template["Resources"], template)
    for name in LEFT_OUT:
        del template["Resources"][name]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::SSM::Parameter":
            # moto 5.2.5 reads AWS::SSM::Parameter's Tags as a list of
            # {Key, Value}; CloudFormation's schema (and cfn-lint) has a map.
            tags = resource["Properties"]["Tags"]
            resource["Properties"]["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        if "DependsOn" in resource:
            resource["DependsOn"] = [d for d in resource["DependsOn"] if d not in LEFT_OUT]
    return template


@pytest.fixture(scope="module")
def stack(aws):
    s3 = aws("s3")
    s3.create_bucket(Bucket=BUCKET)
    code = BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("bootstrap", "#!/bin/sh\n")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/control-x86_64.zip", Body=code.getvalue())
    cfn = aws("cloudformation")
    cfn.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(deployable_copy()),
        Parameters=[
            {"ParameterKey": "ReleaseBucket", "ParameterValue": BUCKET},
            {"ParameterKey": "ReleasePrefix", "ParameterValue": PREFIX},
            {"ParameterKey": "ReportDestination", "ParameterValue": "s3://customer-reports/scanner"},
            {"ParameterKey": "WorkerMaxSize", "ParameterValue": "3"},
        ],
        Capabilities=["CAPABILITY_IAM"],
        Tags=[TAG],
    )
    cfn.get_waiter("stack_create_complete").wait(StackName=STACK, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return cfn.describe_stacks(StackName=STACK)["Stacks"][0]


def physical_ids(aws):
    resources = aws("cloudformation").describe_stack_resources(StackName=STACK)["StackResources"]
    # moto lists the stack itself too, without a logical id; its Lambda
    # permissions have no physical id.
    return {r["LogicalResourceId"]: r.get("PhysicalResourceId") for r in resources if "LogicalResourceId" in r}


def test_every_resource_is_created(aws, stack):
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    template = deployable_copy()
    resolver = resolve.Resolver(template, resolve.parameters(template, ReleaseBucket=BUCKET, ReleasePrefix=PREFIX))
    want = [name for name, r in template["Resources"].items() if "Condition" not in r or resolver.condition(r["Condition"])]
    assert "AlertSubscription" not in want, "no AlertEmail, no subscription"
    assert sorted(physical_ids(aws)) == sorted(want)


def test_the_parameters_hold_the_settings(aws, stack):
    ssm = aws("ssm")
    found = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/mondoo/scanner", Recursive=True):
        found.update({p["Name"].rsplit("/", 1)[1]: p["Value"] for p in page["Parameters"]})
    queue_url = physical_ids(aws)["JobQueue"]
    assert json.loads(found.pop("pause")) == {"until": 0}
    assert found == {
        "queue-url": queue_url,
        "report-destination": "s3://customer-reports/scanner",
        "read-mode": "direct",
        "concurrency": "2",
        "idle-minutes": "10",
        "ownership-tag": "Created By=Mondoo",
    }
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/mondoo/scanner/pause")["TagList"]
    assert TAG in tags


def test_the_queue_has_a_dead_letter_queue(aws, stack):
    sqs = aws("sqs")
    url = physical_ids(aws)["JobQueue"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 3
    dlq_url = physical_ids(aws)["JobDeadLetterQueue"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"Created By": "Mondoo"}


def test_the_control_function_is_configured_for_this_stack(aws, stack):
    ids = physical_ids(aws)
    function = aws("lambda").get_function(FunctionName=ids["ControlFunction"])
    config = function["Configuration"]
    assert config["FunctionName"] == f"{STACK}-control"
    assert (config["Runtime"], config["Handler"]) == ("provided.al2023", "bootstrap")
    env = config["Environment"]["Variables"]
    assert env["CONTROL_QUEUE_URL"] == ids["JobQueue"]
    assert env["CONTROL_ASG_NAME"] == ids["WorkerGroup"] == f"{STACK}-workers"
    assert env["CONTROL_ALERT_TOPIC_ARN"] == ids["AlertTopic"]
    assert env["CONTROL_STACK_NAME"] == STACK
    assert (env["CONTROL_RELEASE_BUCKET"], env["CONTROL_RELEASE_PREFIX"]) == (BUCKET, PREFIX)
    assert (env["CONTROL_OWNERSHIP_TAG_KEY"], env["CONTROL_OWNERSHIP_TAG_VALUE"]) == ("Created By", "Mondoo")
    assert env["CONTROL_PARAMETER_PREFIX"] == "/mondoo/scanner"
    assert env["CONTROL_REGIONS"] == ""
    role = config["Role"].rsplit("/", 1)[1]
    assert role == ids["ControlRole"]


def test_the_schedules_invoke_the_control_function(aws, stack):
    events = aws("events")
    function_arn = aws("lambda").get_function(FunctionName=f"{STACK}-control")["Configuration"]["FunctionArn"]
    ids = physical_ids(aws)
    want = {
        "ScanRule": ("rate(1 day)", None),
        "SweepRule": ("rate(1 hour)", {"action": "sweep"}),
        "ScaleRule": ("rate(5 minutes)", {"action": "scale"}),
        "SelfUpdateRule": ("rate(1 day)", {"action": "self-update"}),
    }
    for logical, (schedule, payload) in want.items():
        name = ids[logical].split("|")[0].rsplit("/", 1)[-1]
        rule = events.describe_rule(Name=name)
        assert rule["ScheduleExpression"] == schedule, logical
        targets = events.list_targets_by_rule(Rule=name)["Targets"]
        assert [t["Arn"] for t in targets] == [function_arn], logical
        assert (json.loads(targets[0]["Input"]) if "Input" in targets[0] else None) == payload, logical
    policy = json.loads(aws("lambda").get_policy(FunctionName=f"{STACK}-control")["Policy"])
    principals = {s["Principal"]["Service"] for s in policy["Statement"]}
    assert principals == {"events.amazonaws.com"}
    assert len(policy["Statement"]) == 4


def test_the_roles_carry_exactly_the_templates_policies(aws, stack):
    iam = aws("iam")
    ids = physical_ids(aws)
    template = resolve.load()
    values = resolve.parameters(
        template, ReleaseBucket=BUCKET, ReleasePrefix=PREFIX, ReportDestination="s3://customer-reports/scanner")
    values.update({"AWS::Region": REGION, "AWS::AccountId": stack["StackId"].split(":")[4], "AWS::StackName": STACK})
    resolver = resolve.Resolver(template, values)
    values = resolver.values
    queue_arn = aws("sqs").get_queue_attributes(
        QueueUrl=ids["JobQueue"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    real = {"<JobQueue.Arn>": queue_arn}
    for role, policy_name in [("ControlRole", "control"), ("WorkerRole", "worker")]:
        document = iam.get_role_policy(RoleName=ids[role], PolicyName=policy_name)["PolicyDocument"]
        if isinstance(document, str):
            # moto returns a policy that CloudFormation made as the Python
            # repr of a dict, not as JSON.
            document = ast.literal_eval(document)
        want = resolver.resolve(template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"])
        text = json.dumps(want)
        text = text.replace(json.dumps(resolve.fake(values, "JobQueue", "Arn")), json.dumps(queue_arn))
        text = text.replace(json.dumps(resolve.fake(values, "AlertTopic", "Ref")), json.dumps(ids["AlertTopic"]))
        assert document == json.loads(text), role
        assert TAG in iam.list_role_tags(RoleName=ids[role])["Tags"], role
    profile = iam.get_instance_profile(InstanceProfileName=ids["WorkerInstanceProfile"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [ids["WorkerRole"]]


def test_the_workers_are_locked_down_and_scaled_to_zero(aws, stack):
    ec2 = aws("ec2")
    ids = physical_ids(aws)
    group = aws("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[ids["WorkerGroup"]])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, 0, 3)
    assert group["Instances"] == []
    assert {"Key": "Created By", "Value": "Mondoo", "PropagateAtLaunch": True} in [
        {k: t[k] for k in ("Key", "Value", "PropagateAtLaunch")} for t in group["Tags"]]
    assert sorted(group["VPCZoneIdentifier"].split(",")) == sorted([ids["WorkerSubnetA"], ids["WorkerSubnetB"]])
    version = ec2.describe_launch_template_versions(LaunchTemplateId=ids["WorkerLaunchTemplate"])["LaunchTemplateVersions"][0]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert "KeyName" not in data
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert data["InstanceType"] == "m6i.large"
    assert data["IamInstanceProfile"]["Arn"].endswith("/" + ids["WorkerInstanceProfile"])
    kinds = {spec["ResourceType"]: spec["Tags"] for spec in data["TagSpecifications"]}
    assert sorted(kinds) == ["instance", "network-interface", "volume"]
    assert all(TAG in tags for tags in kinds.values())
    group_sg = ec2.describe_security_groups(GroupIds=[ids["WorkerSecurityGroup"]])["SecurityGroups"][0]
    assert group_sg["IpPermissions"] == []
    assert group_sg["VpcId"] == ids["WorkerVpc"]
    # (moto ignores SecurityGroupEgress and leaves the default allow-all
    # egress: the HTTPS-only rule is checked in test_template.py.)
    subnets = ec2.describe_subnets(SubnetIds=[ids["WorkerSubnetA"], ids["WorkerSubnetB"]])["Subnets"]
    assert sorted(s["CidrBlock"] for s in subnets) == ["10.213.0.0/25", "10.213.0.128/25"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    vpc = ec2.describe_vpcs(VpcIds=[ids["WorkerVpc"]])["Vpcs"][0]
    assert vpc["CidrBlock"] == "10.213.0.0/24"
    assert TAG in vpc["Tags"]


def test_a_stack_in_an_existing_vpc_deploys_and_deletes_cleanly(aws, stack):
    # Runs after the checks above (pytest keeps file order); a second stack
    # beside the first: its own names, parameter prefix and the account's
    # default VPC instead of a VPC of its own.
    ec2 = aws("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    name, prefix = "scanner-byo", "/mondoo/byo"
    cfn = aws("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=json.dumps(deployable_copy()),
        Parameters=[
            {"ParameterKey": "ReleaseBucket", "ParameterValue": BUCKET},
            {"ParameterKey": "ReleasePrefix", "ParameterValue": PREFIX},
            {"ParameterKey": "ReportDestination", "ParameterValue": "https://reports.example.com/ingest"},
            {"ParameterKey": "ParameterPrefix", "ParameterValue": prefix},
            {"ParameterKey": "VpcId", "ParameterValue": vpc},
            {"ParameterKey": "SubnetIds", "ParameterValue": ",".join(subnets)},
            {"ParameterKey": "Architecture", "ParameterValue": "arm64"},
        ],
        Capabilities=["CAPABILITY_IAM"],
    )
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    resources = cfn.describe_stack_resources(StackName=name)["StackResources"]
    ids = {r["LogicalResourceId"]: r.get("PhysicalResourceId") for r in resources if "LogicalResourceId" in r}
    assert not any(logical.startswith(("WorkerVpc", "WorkerSubnet", "WorkerRoute", "WorkerInternet")) for logical in ids)
    assert ec2.describe_security_groups(GroupIds=[ids["WorkerSecurityGroup"]])["SecurityGroups"][0]["VpcId"] == vpc
    group = aws("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[f"{name}-workers"])["AutoScalingGroups"][0]
    assert sorted(group["VPCZoneIdentifier"].split(",")) == sorted(subnets)
    data = ec2.describe_launch_template_versions(LaunchTemplateId=ids["WorkerLaunchTemplate"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["InstanceType"] == "m7g.large"
    config = aws("lambda").get_function(FunctionName=f"{name}-control")["Configuration"]
    assert config["Environment"]["Variables"]["CONTROL_PARAMETER_PREFIX"] == prefix

    cfn.delete_stack(StackName=name)
    cfn.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    assert aws("ssm").get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"] == []
    assert aws("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[f"{name}-workers"])["AutoScalingGroups"] == []
    assert [url for url in aws("sqs").list_queues().get("QueueUrls", []) if name in url] == []
    with pytest.raises(aws("lambda").exceptions.ResourceNotFoundException):
        aws("lambda").get_function(FunctionName=f"{name}-control")
    assert ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [f"{name}-workers"]}])["LaunchTemplates"] == []
    # The first stack is untouched.
    assert aws("ssm").get_parameter(Name="/mondoo/scanner/pause")["Parameter"]["Value"] == '{"until":0}'
