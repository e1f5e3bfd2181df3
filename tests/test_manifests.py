"""config/k8s/ is valid as Kubernetes reads it: built-in kinds against the API's own schemas
(kubernetes-validate, strict, offline), the Prometheus Operator's kinds against their CRDs'
schemas (tests/crds/), and the kustomization builds every resource (`kubectl kustomize`)."""

from __future__ import annotations

import json
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.binaries import find_binary

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "config" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
CRDS = Path(__file__).resolve().parent / "crds"
# The newest schemas kubernetes-validate ships (kubernetes_validate.utils.latest_version()).
KUBERNETES_VERSION = "1.37.0"
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.json",
}
KUBECTL_TIMEOUT_S = 120


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


def resources() -> list[dict[str, Any]]:
    """Every resource of config/k8s/ as written (the kustomization's namespace not applied)."""
    return [doc for path in manifest_files() for doc in documents(path.read_text("utf-8"))]


def resource_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def is_custom(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES


def strict(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that lists its properties and
    does not keep unknown fields: the API server prunes such a field silently, so a misspelt key
    would never take effect; here it is an error, as kubernetes-validate --strict does."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CRDS / CUSTOM_RESOURCES[api_version, kind]).read_text("utf-8"))
    return jsonschema.Draft202012Validator(strict(schema))


def validate(doc: dict[str, Any]) -> None:
    """Validate one resource; raises jsonschema.ValidationError (kubernetes-validate's is one)."""
    if is_custom(doc):
        crd_validator(doc["apiVersion"], doc["kind"]).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(name="offline")
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or name lookup during the test is an error: the schemas are local."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network used during manifest validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


class TestManifests:
    def test_every_manifest_is_in_the_kustomization(self) -> None:
        """`kubectl apply -k config/k8s/` applies every file of the folder, and only those."""
        listed = yaml.safe_load(KUSTOMIZATION.read_text("utf-8"))["resources"]
        assert sorted(listed) == [p.name for p in manifest_files()]

    def test_the_kinds_are_the_expected_ones(self) -> None:
        """The folder's resources, so that a new one is validated on purpose."""
        assert sorted(resource_id(doc) for doc in resources()) == [
            "Namespace/backup-monitor",
            "PrometheusRule/backup-monitor",
            "Service/backup-monitor",
            "Service/backup-monitor-metrics",
            "ServiceAccount/backup-monitor",
            "ServiceMonitor/backup-monitor",
            "StatefulSet/backup-monitor",
        ]

    @pytest.mark.usefixtures("offline")
    @pytest.mark.parametrize("doc", resources(), ids=resource_id)
    def test_valid(self, doc: dict[str, Any]) -> None:
        """Strict validation against the Kubernetes API's schema, or the CRD's for the
        Prometheus Operator's kinds (an unknown kind fails: kubernetes-validate has no schema)."""
        validate(doc)

    @pytest.mark.usefixtures("offline")
    def test_kubernetes_validate_is_the_expected_version(self) -> None:
        """The Kubernetes version asked for is the newest the installed package ships."""
        assert kubernetes_validate.utils.latest_version() == KUBERNETES_VERSION

    @pytest.mark.usefixtures("offline")
    @pytest.mark.parametrize(
        ("kind", "path", "value"),
        [
            ("StatefulSet", ("spec", "replica"), 2),  # misspelt: pruned by the API server
            ("Service", ("spec", "ports", 0, "port"), "9464"),  # a string where an int goes
            ("ServiceMonitor", ("spec", "endpoints", 0, "intervall"), "30s"),
            ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "30 seconds"),
            ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "for"), "5 minutes"),
            ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "severity"), "critical"),
        ],
    )
    def test_a_wrong_manifest_is_refused(
        self, kind: str, path: tuple[str | int, ...], value: object
    ) -> None:
        """The validation is not vacuous: a misspelt field or a wrong value fails it."""
        (doc,) = [d for d in resources() if d["kind"] == kind and "clusterIP" not in d["spec"]][:1]
        doc = json.loads(json.dumps(doc))
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(doc)

    def test_kustomize_builds_every_resource(self, tmp_path: Path) -> None:
        """`kubectl kustomize config/k8s` names every resource, each in the kustomization's
        namespace (the Namespace aside), and what it builds validates as the sources do."""
        kubectl = find_binary("kubectl", package="kubernetes-client")
        done = subprocess.run(
            [kubectl, "kustomize", str(K8S)],
            capture_output=True,
            text=True,
            check=False,
            timeout=KUBECTL_TIMEOUT_S,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert done.returncode == 0, done.stderr
        built = documents(done.stdout)
        assert sorted(map(resource_id, built)) == sorted(map(resource_id, resources()))
        namespace = yaml.safe_load(KUSTOMIZATION.read_text("utf-8"))["namespace"]
        for doc in built:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, resource_id(doc)
            validate(doc)
