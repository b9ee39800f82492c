"""deploy/kubernetes/: every manifest is valid against the Kubernetes schemas (strict: no
unknown fields), the kustomization lists what exists, and the manifests agree with the code:
probes on the ports the settings open, the image's user, the drain time, documented
variables only, secrets by reference."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.readme import documented_settings
from threadchat.commands.worker import GRACEFUL_SHUTDOWN

ROOT = Path(__file__).parent.parent
FOLDER = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still in support by the big clouds, and the newest schemas we have.
VERSIONS = ["1.31.0", "1.37.0"]


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(FOLDER.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_name(kind: str, name: str) -> dict:
    [doc] = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(deployment: str) -> dict:
    [only] = by_name("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def env_value(spec: dict, name: str) -> str | None:
    values = {e["name"]: e.get("value") for e in spec.get("env", [])}
    return values.get(name)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version):
    docs = documents()
    kinds = {doc["kind"] for _, doc in docs}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Namespace",
    } <= kinds
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {err.message}")


def test_an_invalid_manifest_is_caught():
    """The validator has teeth: a misspelt field fails."""
    deployment = by_name("Deployment", "threadchat-worker")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example():
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert present - listed == {"hpa-example.yaml"}
    assert listed <= present
    [image] = kustomization["images"]
    assert image["name"] == container("threadchat-worker")["image"] == "threadchat"
    version = kustomization["labels"][0]["pairs"]["app.kubernetes.io/version"]
    assert version == image["newTag"]  # the build id the worker reports is the image's tag


def test_probes_ports_and_users_agree_with_the_image_and_the_settings():
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"^USER (\d+)", dockerfile, re.M)[1])
    worker, bot = container("threadchat-worker"), container("threadchat-bot")
    ports = {
        spec["name"]: {p["name"]: p["containerPort"] for p in spec["ports"]}
        for spec in (worker, bot)
    }
    assert int(env_value(worker, "WORKER_HEALTH_PORT")) == ports["worker"]["health"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert int(env_value(bot, "PORT")) == ports["bot"]["http"]
    assert bot["readinessProbe"]["httpGet"]["path"] == "/healthz"
    config = by_name("ConfigMap", "threadchat-config")["data"]
    assert int(config["METRICS_PORT"]) == ports["worker"]["metrics"] == ports["bot"]["metrics"]
    for name in ("threadchat-worker", "threadchat-bot"):
        pod = by_name("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"]
    worker_pod = by_name("Deployment", "threadchat-worker")["spec"]["template"]["spec"]
    assert worker_pod["terminationGracePeriodSeconds"] > GRACEFUL_SHUTDOWN.total_seconds()
    # Only the worker's account may assume the Bedrock role.
    assert (
        "eks.amazonaws.com/role-arn"
        in by_name("ServiceAccount", worker_pod["serviceAccountName"])["metadata"]["annotations"]
    )
    bot_account = by_name("ServiceAccount", "threadchat-bot")
    assert "annotations" not in bot_account["metadata"]


def test_selectors_of_the_service_budgets_and_autoscaler_find_their_pods():
    labels = {
        name: by_name("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        for name in ("threadchat-worker", "threadchat-bot")
    }

    def selects(selector: dict) -> set[str]:
        return {n for n, pod in labels.items() if selector.items() <= pod.items()}

    assert selects(by_name("Service", "threadchat-bot")["spec"]["selector"]) == {"threadchat-bot"}
    for name in labels:
        budget = by_name("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]
        assert selects(budget) == {name}
    target = by_name("HorizontalPodAutoscaler", "threadchat-worker")["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == "threadchat-worker"


def test_variables_are_documented_and_secrets_come_by_reference():
    documented = documented_settings()
    config = by_name("ConfigMap", "threadchat-config")["data"]
    names = set(config)
    secrets = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "THREADCHAT_ENCRYPTION_KEY",
               "THREADCHAT_CODEC_TOKEN", "TEMPORAL_API_KEY"}  # fmt: skip
    for deployment in ("threadchat-worker", "threadchat-bot"):
        for variable in container(deployment)["env"]:
            names.add(variable["name"])
            if variable["name"] in secrets:
                assert "secretKeyRef" in variable.get("valueFrom", {}), variable
    assert names - set(documented) == set(), "undocumented variables in the manifests"
    assert not set(config) & secrets, "a secret in the ConfigMap"
    assert not any(doc["kind"] == "Secret" for _, doc in documents())
