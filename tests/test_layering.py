"""The import rules of DESIGN §3, enforced by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "monitor"

# DESIGN §3: errors ← core ← {config, clock, metrics} ← {arm, store, sinks} ← scheduler ← ops ← cli.
# A module may import only modules of a rank <= its own, and every module of monitor/ must have
# a rank: test_imports_flow_one_way fails for one without. A key "a.b" ranks that module alone;
# a key "a.b.*" ranks the package a.b and every module under it. An exact key wins over a
# package key, and a longer package key over a shorter one. A new module adds one line here.
RANKS = {
    "monitor": 0,  # the package's __init__: the version only
    "monitor.errors": 0,
    # Beside the graph: the emulator may import nothing of the client but rank 0, and
    # test_emulator_shares_no_parsing_with_the_client names the rule itself.
    "monitor.emulator.*": 0,
    "monitor.core.*": 1,
    "monitor.config": 2,  # the settings dataclasses; the three below import it
    "monitor.config_reader": 2,
    "monitor.config_parse": 2,
    "monitor.config_load": 2,
    "monitor.config_fields": 2,  # units and field metadata, shared by the settings
    "monitor.config_sinks": 2,  # [outbox] and [[sinks]] settings
    "monitor.clock": 2,
    "monitor.outbox": 2,  # the outbox's records and the OutboxSink contract
    "monitor.sink_filter": 2,
    "monitor.config_parse_sinks": 2,
    "monitor.events": 2,  # the event codec: imports config (EventFormat), core and errors
    "monitor.health": 2,
    "monitor.metrics": 2,
    "monitor.arm": 3,  # ArmClient; imports the arm_* modules below (3)
    "monitor.arm_answers": 3,
    "monitor.arm_http": 3,
    "monitor.arm_observer": 3,
    "monitor.arm_paging": 3,
    "monitor.arm_quiet_pages": 3,  # a job list's answer that repeats the last quiet one
    "monitor.credentials": 3,
    "monitor.pacing": 3,
    "monitor.principals": 3,  # a TokenCache per credential; ArmClient reads it
    "monitor.checkpoints": 3,
    "monitor.state_lock": 3,
    "monitor.store": 3,  # the SQLite store: imports monitor.checkpoints and monitor.state_lock
    "monitor.sinks": 3,
    "monitor.sink_http": 3,
    "monitor.store_outbox": 3,
    "monitor.sinks_alertmanager": 3,  # imports sink_http and config_sinks
    "monitor.sinks_azure_logs": 3,  # the Logs Ingestion sink: imports sink_http (3)
    "monitor.sink_formats": 2,  # the webhook sink's bodies: pure, over events and outbox records
    "monitor.sinks_webhook": 3,
    "monitor.discovery": 3,  # its source is a Protocol, not monitor.arm; the scheduler (4) uses it
    "monitor.job_sources": 3,  # the JobSource of both kinds: ARM, Resource Graph, the backstop
    "monitor.logs": 3,
    "monitor.item_memory": 2,  # what the item watcher keeps of a vault between rounds, packed
    "monitor.item_watcher": 3,  # protected items and policies on a slow cadence, their events
    "monitor.poller": 4,  # one poll of one vault; monitor.scheduler drives it
    "monitor.scheduler": 4,
    "monitor.delivery": 4,  # one worker per sink, from the outbox, with its cursor
    "monitor.sink_factory": 4,  # builds and opens the configured sinks
    "monitor.ops": 5,
    "monitor.commands.exits": 5,
    "monitor.commands.console": 5,
    "monitor.commands.jobs_common": 5,
    "monitor.commands.common": 5,
    "monitor.commands.check_config": 5,  # check-config's report, text or json
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
    """The rank RANKS gives `module`, or None (a module outside monitor/, or one not ranked)."""
    if module in RANKS:
        return RANKS[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        rank = RANKS.get(".".join(parts[:end]) + ".*")
        if rank is not None:
            return rank
    return None


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_rank_names_a_module() -> None:
    """No entry of RANKS is left over from a module that has gone."""
    names = {module_name(p) for p in MODULES}
    covered = {
        key
        for key in RANKS
        if key in names or (key.endswith(".*") and key.removesuffix(".*") in names)
    }
    assert set(RANKS) - covered == set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_one_way(path: Path) -> None:
    """Every module has a rank, and imports no module of a higher rank than its own."""
    name = module_name(path)
    own = rank_of(name)
    assert own is not None, f"{name} has no rank: add it to RANKS (DESIGN §3)"
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
