"""The import rules of DESIGN §3, enforced by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "monitor"

# Lower layers may not import higher ones; a module's rank must be >= every rank it imports.
RANKS = {
    "monitor.errors": 0,
    "monitor.core": 1,
    "monitor.config": 2,
    "monitor.clock": 2,
    "monitor.metrics": 2,
    "monitor.arm": 3,
    "monitor.credentials": 3,
    "monitor.pacing": 3,
    "monitor.store": 3,
    "monitor.sinks": 3,
    "monitor.logs": 3,
    "monitor.scheduler": 4,
    "monitor.ops": 5,
    "monitor.commands.exits": 5,
    "monitor.commands.console": 5,
    "monitor.commands.jobs_common": 5,
    "monitor.commands.common": 5,
    "monitor.commands.jobs_list": 6,
    "monitor.commands.jobs_show": 6,
    "monitor.commands.jobs_wait": 6,
    "monitor.commands.run": 6,
    "monitor.commands.emulator": 6,
    "monitor.commands.jobs": 7,
    "monitor.commands.demo": 7,
    "monitor.commands": 5,  # the package itself; its modules are ranked above
    "monitor.cli": 8,
    "monitor.entry": 9,  # installs signal handlers, then imports monitor.cli
    "monitor.__main__": 10,
}
CORE_FORBIDDEN = {"anyio", "aiohttp", "structlog", "sqlite3", "asyncio", "time", "os"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            base = module_name(path).split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            found.add(".".join([*base, node.module] if node.module else base))
    return found


def rank_of(module: str) -> int | None:
    for prefix, rank in RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_one_way(path: Path) -> None:
    """No module imports a module of a higher layer than its own."""
    name = module_name(path)
    own = rank_of(name)
    if own is None:
        return
    for imported in imported_modules(path):
        other = rank_of(imported)
        assert other is None or other <= own, f"{name} imports {imported}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if module_name(p).startswith("monitor.core")], ids=str
)
def test_core_is_sans_io(path: Path) -> None:
    """The core imports no I/O library, clock or environment."""
    for imported in imported_modules(path):
        assert imported.split(".")[0] not in CORE_FORBIDDEN, f"{path.name} imports {imported}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if module_name(p).startswith("monitor.emulator")], ids=str
)
def test_emulator_shares_no_parsing_with_the_client(path: Path) -> None:
    """The emulator never imports the client's parsers or ARM client, so wire bugs cannot hide."""
    for imported in imported_modules(path):
        assert not imported.startswith(("monitor.core", "monitor.arm")), imported


def test_errors_imports_nothing_from_monitor() -> None:
    """errors.py is the root of the graph."""
    assert not {m for m in imported_modules(PACKAGE / "errors.py") if m.startswith("monitor")}


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("__init__.py", {"__future__"}),
        ("__main__.py", {"__future__", "monitor.entry"}),
        ("entry.py", {"__future__", "os", "signal", "sys"}),
    ],
)
def test_the_entry_path_imports_nothing_heavy(module: str, allowed: set[str]) -> None:
    """Up to the signal handlers a process imports only the standard library's os, signal, sys."""
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    top_level = {alias.name for n in tree.body if isinstance(n, ast.Import) for alias in n.names}
    top_level |= {n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert top_level <= allowed, f"{module} imports {sorted(top_level - allowed)} at module level"
