"""Static checks of the CloudFormation templates and their IAM policies:
cfn-lint, parliament, the ownership-tag conditions, the permissions file,
and the worker user data.

Runs in the template venv (.cache/template-venv, launch-template/requirements.txt);
the emulator deployment is in test_deploy.py.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
from parliament import analyze_policy_string
from parliament.statement import get_privilege_info

import resolve

HERE = Path(__file__).resolve().parent
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
TEMPLATES = sorted((HERE.parent).glob("*.json"))
TAG_KEY, TAG_VALUE = "Created By", "Mondoo"
OWNED = {"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": TAG_VALUE}}
TAGGED_IN_REQUEST = {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": TAG_VALUE}}

# Parameter sets the policies are checked under: every branch of every
# condition that changes a policy.
VARIANTS = {
    "https reports": {},
    "s3 reports": {"ReportDestination": "s3://customer-reports/scanner"},
}


def statements(template, values):
    """(role, statement) for every statement of every role, resolved."""
    for role, docs in resolve.role_policies(template, values).items():
        for doc in docs:
            for statement in doc["Statement"]:
                yield role, statement


def as_list(value):
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def template():
    return resolve.load()


def test_the_templates_are_the_ones_expected():
    names = [path.name for path in TEMPLATES]
    assert names == ["organization.json", "permissions.json", "template.json"], names


@pytest.mark.parametrize("name", ["template.json", "organization.json"])
def test_cfn_lint_finds_nothing(name):
    # Exit status 0: no error, no warning, no informational finding.
    result = subprocess.run(
        [CFN_LINT, "--format", "parseable", str(HERE.parent / name)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"cfn-lint {name}:\n{result.stdout}{result.stderr}"


def test_cfn_lint_would_catch_a_broken_template(tmp_path):
    # The check above can fail: a property CloudFormation does not know is an error.
    broken = resolve.load()
    broken["Resources"]["JobQueue"]["Properties"]["VisibilityTimeoutSeconds"] = 30
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = subprocess.run([CFN_LINT, str(path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "VisibilityTimeoutSeconds" in result.stdout


# parliament findings that are expected, each with why it is right.
JUSTIFIED = {
    ("ControlRole", "SnapshotSources", "RESOURCE_MISMATCH"):
        "CreateSnapshot(s) on the source instance/volume, split from the snapshot statement "
        "so that the snapshot alone carries the aws:RequestTag condition (IAM's own pattern); "
        "parliament wants every resource type of an action in one statement.",
    ("ControlRole", "CreateOwnedSnapshots", "RESOURCE_MISMATCH"):
        "the other half of the same split: the new snapshot, with aws:RequestTag.",
    ("WorkerRole", "VolumeFromOwnedSnapshot", "RESOURCE_MISMATCH"):
        "CreateVolume's source snapshot, split from the new volume (aws:RequestTag) "
        "so that the snapshot can carry aws:ResourceTag instead.",
    ("ControlRole", "UpdateOwnCode", "PRIVILEGE_ESCALATION"):
        "lambda:UpdateFunctionCode on the function's own ARN only: code running as the function "
        "already holds this role, so replacing it grants nothing the role does not have.",
    ("WorkerRole", "EncryptedVolumeGrants", "PERMISSIONS_MANAGEMENT_ACTIONS"):
        "kms:CreateGrant is needed for volumes from encrypted snapshots; limited to grants "
        "for AWS resources (kms:GrantIsForAWSResource) made through EC2/EBS.",
}


def test_parliament_finds_only_justified_findings(template):
    # Statement by statement, so that each finding names its statement.
    seen = set()
    unexpected = []
    for variant, overrides in VARIANTS.items():
        values = resolve.parameters(template, **overrides)
        for role, statement in statements(template, values):
            policy = {"Version": "2012-10-17", "Statement": [statement]}
            analyzed = analyze_policy_string(json.dumps(policy), include_community_auditors=True)
            for finding in analyzed.findings:
                key = (role, statement["Sid"], finding.issue)
                seen.add(key)
                if key not in JUSTIFIED:
                    unexpected.append((variant, *key, finding.detail))
    assert unexpected == []
    # A justification whose finding is gone is stale.
    assert set(JUSTIFIED) <= seen, set(JUSTIFIED) - seen


def test_parliament_would_catch_a_typo():
    analyzed = analyze_policy_string(
        json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ec2:DeleteSnapshots", "Resource": "*"}]}),
        include_community_auditors=True,
    )
    assert "UNKNOWN_ACTION" in {finding.issue for finding in analyzed.findings}


# CreateX actions whose statement names an existing source resource, by ARN
# resource type (EC2 service authorization reference): the new resource is
# authorized in another statement, which carries aws:RequestTag.
CREATE_SOURCES = {
    "ec2:CreateSnapshots": {"instance", "volume"},
    "ec2:CreateSnapshot": {"volume"},
    "ec2:CreateVolume": {"snapshot"},
}
# Create actions that make nothing taggable: a log stream, a KMS grant.
UNTAGGABLE_CREATES = {"logs:CreateLogStream", "kms:CreateGrant"}


def arn_type(arn):
    """The resource type of an ARN: arn:aws:ec2:*::snapshot/* -> snapshot."""
    return arn.split(":", 5)[5].split("/", 1)[0]


def tag_violations(template, values):
    problems = []
    for role, statement in statements(template, values):
        sid = statement["Sid"]
        condition = statement.get("Condition", {})
        assert statement["Effect"] == "Allow", (role, sid)
        for action in as_list(statement["Action"]):
            verb = action.split(":", 1)[1]
            if re.match(r"(Delete|Terminate|Detach)", verb):
                if condition != OWNED:
                    problems.append(f"{role}/{sid}: {action} without {OWNED}")
            elif action == "ec2:CreateTags":
                create = condition.get("StringEquals", {}).get("ec2:CreateAction")
                if not create or set(condition) != {"StringEquals"} or len(condition["StringEquals"]) != 1:
                    problems.append(f"{role}/{sid}: ec2:CreateTags without only an ec2:CreateAction condition")
            elif verb.startswith("Create") or action == "ssm:AddTagsToResource":
                if action in UNTAGGABLE_CREATES:
                    continue
                # The statement's resources this action can name at all
                # (parliament's copy of the service authorization reference).
                service, name = action.split(":", 1)
                known = {r["resource_type"].rstrip("*") for r in get_privilege_info(service, name)["resource_types"]}
                types = {arn_type(arn) for arn in as_list(statement["Resource"]) if arn != "*"} & known
                if "*" in as_list(statement["Resource"]):
                    problems.append(f"{role}/{sid}: {action} on Resource *")
                elif condition == TAGGED_IN_REQUEST:
                    continue
                elif types <= CREATE_SOURCES.get(action, set()):
                    # Only source resources; the customer's own instances and
                    # volumes have no tag of ours, a snapshot to make a volume
                    # from must be ours.
                    if "snapshot" in types and condition != OWNED:
                        problems.append(f"{role}/{sid}: {action} from a snapshot without {OWNED}")
                else:
                    problems.append(f"{role}/{sid}: {action} on {sorted(types)} without {TAGGED_IN_REQUEST}")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_deletes_need_the_ownership_tag_and_creates_set_it(template, variant):
    values = resolve.parameters(template, **VARIANTS[variant])
    assert tag_violations(template, values) == []


def test_the_tag_check_catches_an_unconditioned_delete(template):
    broken = json.loads(json.dumps(template))
    for statement in broken["Resources"]["ControlRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
        if statement["Sid"] == "DeleteOwnedSnapshots":
            del statement["Condition"]
        if statement["Sid"] == "CreateOwnedSnapshots":
            statement["Condition"] = {"StringLike": {f"aws:RequestTag/{TAG_KEY}": "*"}}
    problems = tag_violations(broken, resolve.parameters(broken))
    assert any("DeleteOwnedSnapshots: ec2:DeleteSnapshot" in p for p in problems), problems
    assert any("CreateOwnedSnapshots: ec2:CreateSnapshots" in p for p in problems), problems


def template_permissions(template):
    """The roles' statements and managed policies as the permissions file writes them."""
    roles = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        props = resource["Properties"]
        entries = []
        for policy in props.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:
                    condition, statement, otherwise = statement["Fn::If"]
                    assert otherwise == {"Ref": "AWS::NoValue"}, name
                    statement = dict(statement, OnlyIf=condition)
                entries.append(statement)
        roles[name] = {"ManagedPolicies": props.get("ManagedPolicyArns", []), "Statements": entries}
    return roles


def test_the_permissions_file_lists_exactly_the_templates_permissions(template):
    listed = json.loads((HERE.parent / "permissions.json").read_text())
    assert listed["OwnershipTag"] == {"Key": TAG_KEY, "Value": TAG_VALUE}
    want = template_permissions(template)
    assert sorted(listed["Roles"]) == sorted(want)
    for role, entry in listed["Roles"].items():
        assert entry["UsedBy"], role
        statements_ = []
        for statement in entry["Statements"]:
            statement = dict(statement)
            reason = statement.pop("Reason")
            assert len(reason) > 20, (role, statement["Sid"], "a reason says why")
            if "OnlyIf" in statement:
                assert statement["OnlyIf"] in listed["Conditions"], statement["OnlyIf"]
                assert statement["OnlyIf"] in template["Conditions"], statement["OnlyIf"]
            statements_.append(statement)
        assert statements_ == want[role]["Statements"], role
        managed = []
        for policy in entry["ManagedPolicies"]:
            assert len(policy["Reason"]) > 20, (role, policy)
            managed.append(policy["PolicyArn"])
        assert managed == want[role]["ManagedPolicies"], role
    sids = [(role, s["Sid"]) for role, e in listed["Roles"].items() for s in e["Statements"]]
    assert len(sids) == len(set(sids)), "a Sid names one statement"


def test_every_resource_that_takes_tags_carries_the_ownership_tag(template):
    # Whether a type takes tags, and in which property, comes from its
    # CloudFormation resource schema (shipped with cfn-lint). Types that take
    # none get the stack-level tags (README: deploy with --tags).
    checked = 0
    for name, resource in template["Resources"].items():
        kind = resource["Type"]
        if kind.startswith("Custom::"):
            continue
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", kind).schema
        tagging = schema.get("tagging", {})
        if not tagging.get("taggable", "Tags" in schema.get("properties", {})) or not tagging.get("tagProperty"):
            continue
        prop = tagging["tagProperty"].rsplit("/", 1)[1]
        assert prop in resource["Properties"], f"{name} ({kind}) takes tags in {prop} but has none"
        tags = resource["Properties"][prop]
        if prop == "TagSpecifications":
            tags = tags[0]["Tags"]
        if isinstance(tags, dict):
            assert tags.get(TAG_KEY) == TAG_VALUE, name
        else:
            assert {"Key": TAG_KEY, "Value": TAG_VALUE} in [
                {k: v for k, v in tag.items() if k != "PropagateAtLaunch"} for tag in tags], name
        checked += 1
    assert checked >= 15, checked
    group = template["Resources"]["WorkerGroup"]["Properties"]["Tags"]
    assert {"Key": TAG_KEY, "Value": TAG_VALUE, "PropagateAtLaunch": True} in group
    specs = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["TagSpecifications"]
    assert sorted(spec["ResourceType"] for spec in specs) == ["instance", "network-interface", "volume"]
    for spec in specs:
        assert {"Key": TAG_KEY, "Value": TAG_VALUE} in spec["Tags"], spec["ResourceType"]


def test_the_worker_launch_template_is_locked_down(template):
    data = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert "KeyName" not in data
    assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"])
    assert "al2023-ami-kernel-default-${Architecture}" in data["ImageId"]["Fn::Sub"]
    group = template["Resources"]["WorkerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    asg = template["Resources"]["WorkerGroup"]["Properties"]
    assert (asg["MinSize"], asg["DesiredCapacity"], asg["MaxSize"]) == ("0", "0", {"Ref": "WorkerMaxSize"})


def test_the_user_data_is_valid_bash_and_checks_the_sha256(template):
    values = resolve.parameters(template)
    resolver = resolve.Resolver(template, values)
    data = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    script = resolver.resolve(data["UserData"]["Fn::Base64"])
    assert "${" not in script, "every ${...} is a template parameter or a pseudo parameter"
    assert "s3://mondoo-releases/mondoo-scanner/latest/manifest.json" in script
    assert "sha256sum --check --strict" in script
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def integrity_check(template):
    """The user data's lines from reading the manifest to checking the tarball."""
    resolver = resolve.Resolver(template, resolve.parameters(template))
    data = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    lines = resolver.resolve(data["UserData"]["Fn::Base64"]).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("want="))
    end = next(i for i, line in enumerate(lines) if "sha256sum --check" in line)
    return "\n".join(["set -euo pipefail"] + lines[start:end + 1])


def run_check(template, work, tarball):
    return subprocess.run(
        ["bash", "-c", integrity_check(template)],
        env={"PATH": "/usr/bin:/bin", "work": str(work), "tarball": tarball},
        capture_output=True, text=True,
    )


def test_the_user_data_installs_only_a_tarball_whose_sha256_matches_the_manifest(template, tmp_path):
    import hashlib
    tarball = "worker-x86_64.tar.gz"
    body = b"not really a tarball, but bytes with a digest"
    (tmp_path / tarball).write_bytes(body)
    manifest = {"version": "0.2.0", "artifacts": {
        tarball: {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    result = run_check(template, tmp_path, tarball)
    assert result.returncode == 0, result.stderr
    (tmp_path / tarball).write_bytes(body + b"!")
    result = run_check(template, tmp_path, tarball)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
    # An artifact the manifest does not list stops the install too.
    result = run_check(template, tmp_path, "worker-arm64.tar.gz")
    assert result.returncode != 0


REPO = HERE.parents[1]


def test_the_parameters_are_the_ones_the_contract_names(template):
    # worker/contract/src/params.rs is the one definition of the names; the
    # template creates each of them except the SecureString, which the
    # registration (the control Lambda) writes.
    source = (REPO / "worker/contract/src/params.rs").read_text()
    leaves = set(re.findall(r'self\.name\("([a-z-]+)"\)', source))
    assert len(leaves) >= 8, leaves
    made = set()
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::SSM::Parameter":
            name = resource["Properties"]["Name"]["Fn::Sub"]
            assert name.startswith("${ParameterPrefix}/"), name
            made.add(name.split("/", 1)[1])
    assert made == leaves - {"service-credential"}
    control = {s["Sid"]: s for s in template["Resources"]["ControlRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]}
    writable = {r["Fn::Sub"].rsplit("/", 1)[1] for r in control["WriteParameters"]["Resource"]}
    assert writable == {"pause", "service-credential"}


def test_the_control_function_gets_every_setting_it_reads(template):
    env = template["Resources"]["ControlFunction"]["Properties"]["Environment"]["Variables"]
    # The variables control/src/config.rs reads today must all be set.
    source = (REPO / "control/src/config.rs").read_text()
    read = set(re.findall(r'"(CONTROL_[A-Z_]+)"', source))
    assert read, "control/src/config.rs names its variables"
    assert read <= set(env), read - set(env)
    assert set(env) == {
        "CONTROL_REGIONS", "CONTROL_QUEUE_URL", "CONTROL_ASG_NAME", "CONTROL_OWNERSHIP_TAG_KEY",
        "CONTROL_OWNERSHIP_TAG_VALUE", "CONTROL_OPT_OUT_TAG", "CONTROL_INCLUDE_STOPPED",
        "CONTROL_SNAPSHOT_MAX_AGE_HOURS", "CONTROL_SWEEP_TTL_HOURS", "CONTROL_INSTANCE_TTL_HOURS",
        "CONTROL_MAX_PENDING_SNAPSHOTS", "CONTROL_JOB_SPREAD_SECONDS", "CONTROL_SNAPSHOT_CALLS_PER_SECOND",
        "CONTROL_SCAN_BUDGET_SECONDS", "CONTROL_INCLUDE_TAGS",
        "CONTROL_EXCLUDE_TAGS", "CONTROL_PAUSE_MINUTES", "CONTROL_PARAMETER_PREFIX", "CONTROL_MAX_ATTEMPTS",
        "CONTROL_RELEASE_BUCKET", "CONTROL_RELEASE_PREFIX", "CONTROL_ALERT_TOPIC_ARN", "CONTROL_STACK_NAME",
    }
