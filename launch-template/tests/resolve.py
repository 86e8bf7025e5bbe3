"""Resolves the intrinsic functions of launch-template/template.json for one
set of parameter values, so that the IAM policies can be read as IAM sees
them (by parliament and by the tag-condition checks).

Only the functions the template uses in its policies are known (Ref, Fn::Sub,
Fn::GetAtt, Fn::Select, Fn::Split, Fn::If, Fn::Equals, Fn::Not); any other
one is an error naming it, so a template change cannot slip past the checks
unread. Hand-written because the checks need a few lines, not a CloudFormation
engine: cfn-lint validates the template itself, and the emulator deploys it.
"""

import json
import re
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "template.json"

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "mondoo-scanner",
    "AWS::URLSuffix": "amazonaws.com",
}

NO_VALUE = object()


def load():
    return json.loads(TEMPLATE.read_text())


def parameters(template, **overrides):
    """The parameter values: defaults, made-up values for the required ones, overrides."""
    made_up = {
        "ReleaseBucket": "mondoo-releases",
        "ReportDestination": "https://reports.example.com/ingest",
        "VpcId": "vpc-0123456789abcdef0",
        "SubnetIds": "subnet-0123456789abcdef0",
    }
    values = {}
    for name, spec in template["Parameters"].items():
        if name in overrides:
            values[name] = overrides[name]
        elif "Default" in spec:
            values[name] = str(spec["Default"])
        elif name in made_up:
            values[name] = made_up[name]
        else:
            raise KeyError(f"parameter {name} has no default and no made-up value in resolve.py")
    return values


# What CloudFormation would return for the resources the policies name, in
# the shapes AWS uses (so that parliament checks real-looking ARNs).
FAKES = {
    ("JobQueue", "Arn"): "arn:{AWS::Partition}:sqs:{AWS::Region}:{AWS::AccountId}:{AWS::StackName}-JobQueue-1A2B3C",
    ("JobQueue", "Ref"): "https://sqs.{AWS::Region}.amazonaws.com/{AWS::AccountId}/{AWS::StackName}-JobQueue-1A2B3C",
    ("AlertTopic", "Ref"): "arn:{AWS::Partition}:sns:{AWS::Region}:{AWS::AccountId}:{AWS::StackName}-AlertTopic-1A2B3C",
}


def fake(values, resource, attribute):
    shape = FAKES.get((resource, attribute))
    if shape is None:
        return f"<{resource}.{attribute}>"
    return re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], shape)


class Resolver:
    def __init__(self, template, values):
        self.template = template
        self.values = dict(PSEUDO, **values)
        self.conditions = {}

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        if name in self.template["Resources"]:
            return fake(self.values, name, "Ref")
        raise KeyError(f"Ref to unknown name {name}")

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = self.resolve(self.template["Conditions"][name])
        return self.conditions[name]

    def sub(self, text, extra):
        def one(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return extra[name]
            if "." in name:
                resource, attribute = name.split(".", 1)
                return fake(self.values, resource, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                text, extra = arg
                return self.sub(text, {k: self.resolve(v) for k, v in extra.items()})
            if key == "Fn::GetAtt":
                return fake(self.values, arg[0], arg[1])
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = arg
                return self.resolve(text).split(separator)
            if key == "Fn::If":
                name, then, otherwise = arg
                return self.resolve(then if self.condition(name) else otherwise)
            if key == "Fn::Equals":
                left, right = (self.resolve(side) for side in arg)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key.startswith("Fn::"):
                raise ValueError(f"resolve.py does not know {key}")
        out = {}
        for key, value in node.items():
            value = self.resolve(value)
            if value is not NO_VALUE:
                out[key] = value
        return out


def role_policies(template, values):
    """{role logical id: [resolved policy documents]} for every AWS::IAM::Role."""
    resolver = Resolver(template, values)
    roles = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            props = resource["Properties"]
            roles[name] = [resolver.resolve(p["PolicyDocument"]) for p in props.get("Policies", [])]
    return roles
