"""deploy/k8s: every Kustomize overlay renders offline (`kubectl kustomize`), every object it
renders is valid against the Kubernetes API schemas (kubernetes-validate, strict), and the
deployment holds what operate.md promises: two or more replicas with /ready and /health
probes, a disruption budget, network policies, resources and a locked-down security context
on every container, secrets only from the Key Vault CSI mount, the witness as a Deployment of
its own, and a migration Job, all running the image's own `ica` commands."""

from __future__ import annotations

import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from azdev_ica.settings import SECRETS_DIR_ENV, Settings
from tests.deploy.conftest import DEPLOY, DOCKERFILE, tool
from tests.deploy.dockerfile import read_stages

K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
# AKS's oldest supported minor release we aim at, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.utils.latest_version())
CUSTOM_KINDS = {("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass")}
KNOWN_VARIABLES = {f"ICA_{name.upper()}" for name in Settings.model_fields} | {SECRETS_DIR_ENV}


def render(path: Any) -> list[dict[str, Any]]:
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in docs
        if doc["kind"] in ("Deployment", "Job")
    ]


def test_the_overlays_are_there():
    assert {"aks-production", "aks-witness", "dev"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_kubernetes(rendered, overlay):
    for doc in rendered[overlay]:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except SchemaNotFoundError:
                # A custom resource: no schema in the API's, checked by hand below.
                assert (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS, doc["kind"]


def test_validation_can_fail(rendered):
    deployment = objects(rendered["aks-production"], "Deployment")["ica"]
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", ["aks-production", "dev"])
def test_ica_runs_replicated_probed_and_protected(rendered, overlay):
    docs = rendered[overlay]
    deployment = objects(docs, "Deployment")["ica"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = deployment["spec"]["template"]["spec"]
    (ica,) = spec["containers"]
    assert ica["args"] == read_stages(DOCKERFILE)[-1].exec_form("CMD")
    assert ica["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert ica["livenessProbe"]["httpGet"]["path"] == "/health"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budgets = [
        pdb
        for pdb in objects(docs, "PodDisruptionBudget").values()
        if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1
    assert budgets[0]["spec"]["maxUnavailable"] == 1
    # A policy admits ingress to ICA's pods (only from the ingress controller's namespace).
    (ingress,) = [
        p
        for p in objects(docs, "NetworkPolicy").values()
        if "Ingress" in p["spec"]["policyTypes"]
        and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
        and p["spec"]["podSelector"].get("matchLabels")
    ]
    (source,) = ingress["spec"]["ingress"][0]["from"]
    assert set(source) == {"namespaceSelector"}
    (job,) = objects(docs, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down_and_sized(rendered, overlay):
    for name, spec in pod_specs(rendered[overlay]):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = (name, container["name"])
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"]["memory"], where
            # Settings come from the ConfigMap and the secrets mount, never inline values.
            assert "env" not in container, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_ones_ica_knows(rendered, overlay):
    for config in objects(rendered[overlay], "ConfigMap").values():
        if config["metadata"]["name"].startswith("ica-settings"):
            unknown = set(config["data"]) - KNOWN_VARIABLES
            assert not unknown, unknown
            # The ledger key is read from the copy the init container made (mode 0600).
            assert config["data"]["ICA_LEDGER_KEY_FILE"].startswith("/var/run/ica-keys/")


def test_production_secrets_come_from_key_vault(rendered):
    docs = rendered["aks-production"]
    classes = objects(docs, "SecretProviderClass")
    for _, spec in pod_specs(docs):
        (secrets,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
        assert secrets["csi"]["driver"] == "secrets-store.csi.k8s.io"
        assert secrets["csi"]["readOnly"] is True
        provider = classes[secrets["csi"]["volumeAttributes"]["secretProviderClass"]]
        assert provider["spec"]["provider"] == "azure"
        parameters = provider["spec"]["parameters"]
        assert parameters["keyvaultName"] == "ica-prod-kv"
        assert parameters["usePodIdentity"] == "false"
        aliases = {
            yaml.safe_load(item)["objectAlias"]
            for item in yaml.safe_load(parameters["objects"])["array"]
        }
        # Files named like the settings they hold (ICA_SECRETS_DIR), and the ledger key.
        assert aliases == {"ica_database_url", "ica_secret_key", "ica_ledger_key"}
        assert {a.upper() for a in aliases} - {"ICA_LEDGER_KEY"} <= KNOWN_VARIABLES
    # The pods read the vault as the workload identity.
    template = objects(docs, "Deployment")["ica"]["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    account = objects(docs, "ServiceAccount")["ica"]
    assert (
        account["metadata"]["annotations"]["azure.workload.identity/client-id"]
        == (provider["spec"]["parameters"]["clientID"])
    )


def test_the_witness_is_a_deployment_of_its_own_elsewhere_in_production(rendered):
    assert "ica-witness" not in objects(rendered["aks-production"], "Deployment")
    witness = objects(rendered["aks-witness"], "Deployment")["ica-witness"]
    assert "ica" not in objects(rendered["aks-witness"], "Deployment")
    (container,) = witness["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["witness", "serve"]
    assert witness["spec"]["strategy"]["type"] == "Recreate"
    assert witness["metadata"]["namespace"] == "ica-witness"
    # The dev overlay runs both side by side.
    assert {"ica", "ica-witness"} <= set(objects(rendered["dev"], "Deployment"))
