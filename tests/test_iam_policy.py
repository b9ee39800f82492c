"""deploy/iam-policy.json grants exactly what the product's code calls on AWS.

The code is read, not trusted to a list: every boto3 client it creates names a service, the
service's botocore model names its operations, and every operation the code refers to (as a
client method, `converse`, `converse_stream`, ...) needs the IAM actions AWS documents for it.
A new call (say `bedrock-agent-runtime` `retrieve`) fails here until the policy has it."""

import ast
import json
from pathlib import Path

import botocore.session
from botocore import xform_name

from threadchat.config import DEFAULT_MODEL_ID

ROOT = Path(__file__).parent.parent
PRODUCT = ("activities", "bot", "threadchat", "workflows")  # what the image ships
POLICY = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())

# IAM actions per API operation, as the Bedrock user guide's "actions, resources and condition
# keys" lists them. Converse and ConverseStream are authorised as InvokeModel and
# InvokeModelWithResponseStream; a guardrailConfig in them needs ApplyGuardrail as well.
ACTIONS = {
    ("bedrock-runtime", "Converse"): {"bedrock:InvokeModel"},
    ("bedrock-runtime", "ConverseStream"): {"bedrock:InvokeModelWithResponseStream"},
    ("bedrock-runtime", "InvokeModel"): {"bedrock:InvokeModel"},
    ("bedrock-runtime", "InvokeModelWithResponseStream"): {"bedrock:InvokeModelWithResponseStream"},
    ("bedrock-runtime", "ApplyGuardrail"): {"bedrock:ApplyGuardrail"},
    ("bedrock-runtime", "CountTokens"): {"bedrock:CountTokens"},
    ("bedrock-agent-runtime", "Retrieve"): {"bedrock:Retrieve"},
    ("bedrock-agent-runtime", "RetrieveAndGenerate"): {
        "bedrock:RetrieveAndGenerate",
        "bedrock:Retrieve",
        "bedrock:InvokeModel",
    },
}


def product_trees() -> list[tuple[Path, ast.AST]]:
    files = [path for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py"))]
    return [(path, ast.parse(path.read_text(), str(path))) for path in files]


def aws_calls() -> tuple[set[tuple[str, str]], bool]:
    """(service, operation) pairs the code refers to, and whether it sends guardrailConfig."""
    trees = product_trees()
    services = {
        node.args[0].value
        for _, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "client")
            # activities.bedrock.aws_client(service, …), which every AWS client is made by
            or (isinstance(node.func, ast.Name) and node.func.id == "aws_client")
        )
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    session = botocore.session.get_session()
    by_method = {
        xform_name(operation): (service, operation)
        for service in services
        for operation in session.get_service_model(service).operation_names
    }
    calls = {
        by_method[node.attr]
        for _, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in by_method
    }
    guardrail = any(
        isinstance(node, ast.Constant) and node.value == "guardrailConfig"
        for _, tree in trees
        for node in ast.walk(tree)
    )
    return calls, guardrail


def granted() -> dict[str, set[str]]:
    """Each action the policy allows, with the resources it allows it on."""
    resources: dict[str, set[str]] = {}
    for statement in POLICY["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            resources.setdefault(action, set()).update(statement["Resource"])
    return resources


def test_the_policy_allows_every_aws_operation_the_code_calls_and_nothing_else():
    calls, guardrail = aws_calls()
    # The scan must see what we know is there, or it proves nothing.
    assert {("bedrock-runtime", "Converse"), ("bedrock-runtime", "ConverseStream")} <= calls
    unknown = calls - set(ACTIONS)
    assert not unknown, f"add these operations' IAM actions to ACTIONS and the policy: {unknown}"
    needed = set().union(*(ACTIONS[call] for call in calls))
    if guardrail:
        needed.add("bedrock:ApplyGuardrail")
    allowed = set(granted())
    assert needed - allowed == set(), "the worker would get AccessDenied"
    assert allowed - needed == set(), "the policy grants more than the code uses"
    assert not any("*" in action for action in allowed)


def test_the_policy_names_the_default_model_its_profile_and_the_guardrail():
    resources = granted()
    geography, model = DEFAULT_MODEL_ID.split(".", 1)  # us.anthropic... routes to anthropic...
    for action in ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"):
        arns = resources[action]
        assert any(arn.endswith(f":inference-profile/{DEFAULT_MODEL_ID}") for arn in arns)
        regions = {arn.split(":")[3] for arn in arns if arn.endswith(f"foundation-model/{model}")}
        assert len(regions) >= 2 and all(r.startswith(f"{geography}-") for r in regions), regions
    assert all(":guardrail/" in arn for arn in resources["bedrock:ApplyGuardrail"])
    # Foundation models only through a profile: a direct call to one is refused.
    [direct] = [s for s in POLICY["Statement"] if "foundation-model" in str(s["Resource"])]
    assert "bedrock:InferenceProfileArn" in json.dumps(direct["Condition"])
