"""The log queries in the docs name the pod label and the container the shipped manifests give
the daemon (config/k8s/statefulset.yaml): a query that names another finds nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATEFULSET = ROOT / "config" / "k8s" / "statefulset.yaml"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def manifest() -> tuple[str, list[str]]:
    """The pod template's `app.kubernetes.io/name` and its containers' names."""
    text = STATEFULSET.read_text(encoding="utf-8")
    template = text[text.index("  template:") :]
    (app,) = set(re.findall(r"app\.kubernetes\.io/name:\s*(\S+)", template))
    containers = template[template.index("containers:") :]
    names = re.findall(r"^\s*-\s+name:\s*(\S+)", containers.split("volumes:")[0], re.M)
    return app, names[:1]  # the first item of `containers:` (env, ports... come after it)


def test_the_manifest_is_read() -> None:
    assert manifest() == ("backup-job-monitor", ["monitor"])


def test_kql_names_the_container_of_the_manifest() -> None:
    _, containers = manifest()
    found = [
        (doc.name, name)
        for doc in DOCS
        for name in re.findall(r'ContainerName\s*==\s*"([^"]+)"', doc.read_text(encoding="utf-8"))
    ]
    assert found, "no KQL query names a container"
    assert [f for f in found if f[1] not in containers] == []


def test_logql_selectors_name_the_labels_of_the_manifest() -> None:
    app, containers = manifest()
    selectors = [
        (doc.name, selector)
        for doc in DOCS
        for selector in re.findall(r"\{([a-z_]+=[^}]*)\}", doc.read_text(encoding="utf-8"))
        if "app=" in selector or "container=" in selector
    ]
    assert selectors, "no LogQL selector"
    for doc, selector in selectors:
        labels = dict(re.findall(r'([a-z_]+)="([^"]*)"', selector))
        assert labels.get("app", app) == app, (doc, selector)
        assert labels.get("container", containers[0]) in containers, (doc, selector)
