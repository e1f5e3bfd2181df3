"""Settings: defaults, every validation rule and its message, environment overrides, the docs."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import get_args, get_type_hints

import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import (
    BOUNDS,
    CLOUD_PRESETS,
    SECTIONS,
    CredentialSettings,
    Settings,
    section_keys,
)
from monitor.config_load import (
    UnknownVariable,
    load_settings,
    load_settings_with_warnings,
    shard_from_hostname,
)
from monitor.config_parse import parse_settings
from monitor.emulator import EmulatorSettings, WorldSettings, running_emulator
from monitor.errors import ConfigError
from tests.daemon import Daemon, write_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "monitor.example.toml"
DEMO = ROOT / "config" / "demo.toml"
SUB = "11111111-2222-3333-4444-555555555555"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.RecoveryServices/vaults/v1"
LOOPBACK = {"arm_endpoint": "http://127.0.0.1:8443/", "allow_http_loopback": True}


def error_of(mapping: Mapping[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(mapping)
    return str(info.value)


DERIVED_DEFAULTS = {
    "azure.arm_endpoint",  # the three: from the chosen cloud's preset
    "azure.authority",
    "azure.token_scope",
    "discovery.subscriptions",  # () when discovery.vaults is given
}
"""The keys whose reader call in config_parse.py passes `default=`; the rest take the field's."""


def reader_calls() -> list[tuple[str, str, ast.Call]]:
    """Every call of a `SectionReader` method (config_reader.py) that reads a key in
    config_parse.py's `_parse_<section>` functions: the dotted key (`section.?` when not a
    literal), the method and the call."""
    tree = ast.parse((ROOT / "monitor" / "config_parse.py").read_text(encoding="utf-8"))
    reader_tree = ast.parse((ROOT / "monitor" / "config_reader.py").read_text(encoding="utf-8"))
    reader = next(
        n for n in reader_tree.body if isinstance(n, ast.ClassDef) and n.name == "SectionReader"
    )
    methods = {
        n.name for n in reader.body if isinstance(n, ast.FunctionDef) and n.name[0] != "_"
    } - {"path", "error", "field_default"}
    calls = []
    for func in tree.body:
        if not (isinstance(func, ast.FunctionDef) and func.name.startswith("_parse_")):
            continue
        section = func.name.removeprefix("_parse_")
        for node in ast.walk(func):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr in methods and isinstance(node.func.value, ast.Name):
                key = node.args[0]
                name = str(key.value) if isinstance(key, ast.Constant) else "?"
                calls.append((f"{section}.{name}", node.func.attr, node))
    return calls


class TestDefaults:
    def test_empty_mapping_gives_the_documented_defaults(self) -> None:
        """Every default named in the design holds."""
        s = parse_settings({})
        assert s == Settings()
        assert s.azure.cloud == "AzureCloud"
        assert s.azure.arm_endpoint == "https://management.azure.com/"
        assert s.azure.authority == "https://login.microsoftonline.com"
        assert s.azure.token_scope == "https://management.azure.com/.default"
        assert s.azure.credential == "default"
        assert s.discovery.subscriptions == ("*",)
        assert (s.poll.active_interval_s, s.poll.idle_interval_s) == (15, 60)
        assert (s.poll.lookback_s, s.poll.overlap_s, s.poll.max_concurrency) == (86400, 300, 256)
        assert (s.budget.read_fraction, s.budget.floor, s.budget.reads_per_s) == (0.5, 50, 25)
        assert (s.events.format, s.events.sink) == ("json", "stdout")
        assert s.state.path == Path(".state/monitor.sqlite")
        assert (s.ops.host, s.ops.port) == ("127.0.0.1", 9464)
        assert (s.shard.index, s.shard.count) == (None, 1)
        assert (s.log.level, s.log.format) == ("info", "auto")

    @pytest.mark.parametrize("cloud", sorted(CLOUD_PRESETS))
    def test_cloud_presets_set_endpoint_authority_and_scope(self, cloud: str) -> None:
        """Choosing a cloud switches all three endpoints together."""
        s = parse_settings({"azure": {"cloud": cloud}}).azure
        preset = CLOUD_PRESETS[s.cloud]
        assert (s.arm_endpoint, s.authority) == (preset.arm_endpoint, preset.authority)
        assert s.token_scope == preset.arm_endpoint + ".default"

    def test_every_default_is_written_once_on_its_field(self) -> None:
        """No reader call in config_parse.py passes a default, but the derived ones listed here."""
        calls = reader_calls()
        assert len(calls) > 40  # the walk found the readers
        extra = {key for key, method, call in calls if len(call.args) > 1 + (method == "choice")}
        assert not extra, f"positional default passed for {sorted(extra)}"
        given = {key for key, _, call in calls if any(k.arg == "default" for k in call.keywords)}
        assert given == DERIVED_DEFAULTS

    def test_us_government_preset(self) -> None:
        """The sovereign presets carry the endpoints of reference e.3."""
        s = parse_settings({"azure": {"cloud": "AzureUSGovernment"}}).azure
        assert s.arm_endpoint == "https://management.usgovcloudapi.net/"
        assert s.authority == "https://login.microsoftonline.us"
        assert s.token_scope == "https://management.usgovcloudapi.net/.default"

    def test_each_preset_value_can_be_overridden(self) -> None:
        """An explicit arm_endpoint keeps the cloud's audience; all three are overridable."""
        s = parse_settings(
            {
                "azure": {
                    "cloud": "AzureChinaCloud",
                    "arm_endpoint": "https://arm-proxy.example.com",
                    "authority": "https://login.example.com",
                }
            }
        ).azure
        assert s.arm_endpoint == "https://arm-proxy.example.com/"
        assert s.authority == "https://login.example.com"
        assert s.token_scope == "https://management.chinacloudapi.cn/.default"
        scoped = parse_settings({"azure": {"token_scope": "api://x/.default"}}).azure
        assert scoped.token_scope == "api://x/.default"

    def test_enums_are_case_insensitive_and_canonicalised(self) -> None:
        """'INFO' and 'azurecloud' are accepted and stored in their canonical spelling."""
        s = parse_settings({"log": {"level": "INFO"}, "azure": {"cloud": "azurecloud"}})
        assert (s.log.level, s.azure.cloud) == ("info", "AzureCloud")


class TestStructure:
    def test_unknown_section_suggests_the_closest(self) -> None:
        """A misspelt section names itself and the likely intent."""
        assert error_of({"pol": {}}) == "pol: unknown section; did you mean 'poll'?"

    def test_unknown_section_without_close_match_lists_all(self) -> None:
        """With nothing close, the known sections are listed."""
        assert error_of({"zzzz": {}}).startswith("zzzz: unknown section; known: azure, discovery")

    def test_unknown_key_suggests_the_closest(self) -> None:
        """A misspelt key names its full path and the likely intent."""
        assert (
            error_of({"poll": {"active_intervl_s": 1}})
            == "poll.active_intervl_s: unknown key; did you mean 'active_interval_s'?"
        )

    def test_section_must_be_a_table(self) -> None:
        """A scalar where a section belongs is a type error on the section."""
        assert error_of({"poll": 3}) == "poll: must be a table, got int 3"

    def test_request_timeout_lives_in_azure_not_poll(self) -> None:
        """poll.request_timeout_s does not exist; azure.request_timeout_s does."""
        assert error_of({"poll": {"request_timeout_s": 5}}).startswith(
            "poll.request_timeout_s: unknown key"
        )
        assert parse_settings({"azure": {"request_timeout_s": 5}}).azure.request_timeout_s == 5


class TestTypes:
    @pytest.mark.parametrize(
        ("mapping", "message"),
        [
            (
                {"poll": {"max_concurrency": True}},
                "poll.max_concurrency: must be an integer, got bool True",
            ),
            (
                {"poll": {"max_concurrency": 2.5}},
                "poll.max_concurrency: must be an integer, got float 2.5",
            ),
            (
                {"poll": {"active_interval_s": True}},
                "poll.active_interval_s: must be a number of seconds, got bool True",
            ),
            (
                {"poll": {"active_interval_s": "15"}},
                "poll.active_interval_s: must be a number of seconds, got str '15'",
            ),
            ({"poll": {"backfill": "yes"}}, "poll.backfill: must be true or false, got str 'yes'"),
            ({"poll": {"backfill": 1}}, "poll.backfill: must be true or false, got int 1"),
            (
                {"budget": {"read_fraction": "half"}},
                "budget.read_fraction: must be a number, got str 'half'",
            ),
            (
                {"discovery": {"subscriptions": SUB}},
                f"discovery.subscriptions: must be a list of strings, got str '{SUB}'",
            ),
            (
                {"discovery": {"include": [1]}},
                "discovery.include: must be a list of strings, got list",
            ),
            ({"azure": {"cloud": 1}}, "azure.cloud: must be a string, got int 1"),
            ({"ops": {"listen": 9464}}, "ops.listen: must be a string, got int 9464"),
            ({"shard": {"index": "0"}}, "shard.index: must be an integer, got str '0'"),
        ],
    )
    def test_wrong_type_names_key_and_type(
        self, mapping: Mapping[str, object], message: str
    ) -> None:
        """A value of the wrong type (bool is not an int) is refused with its key and type."""
        assert error_of(mapping) == message

    def test_integers_are_accepted_for_seconds(self) -> None:
        """Durations accept TOML integers and store floats."""
        assert parse_settings({"poll": {"lookback_s": 600}}).poll.lookback_s == 600.0

    def test_secret_values_are_never_echoed(self) -> None:
        """A mistyped secret is reported by type only."""
        message = error_of({"azure": {"client_secret": 12345678}})
        assert message == "azure.client_secret: must be a string, got int"
        assert "12345678" not in error_of({"azure": {"static_token": [12345678]}})

    def test_long_values_are_truncated(self) -> None:
        """Messages stay one short line."""
        assert len(error_of({"log": {"level": 7 * 10**80}})) < 100

    def test_empty_string_is_refused(self) -> None:
        """An empty text value is an error, not 'unset'."""
        assert error_of({"azure": {"tenant_id": " "}}) == "azure.tenant_id: must not be empty"


class TestRanges:
    @pytest.mark.parametrize(
        ("mapping", "message"),
        [
            ({"poll": {"active_interval_s": 0}}, "poll.active_interval_s: must be >= 1, got 0"),
            ({"poll": {"idle_interval_s": -1}}, "poll.idle_interval_s: must be >= 1, got -1"),
            ({"poll": {"lookback_s": 0}}, "poll.lookback_s: must be >= 60, got 0"),
            ({"poll": {"overlap_s": -0.5}}, "poll.overlap_s: must be >= 0, got -0.5"),
            ({"poll": {"max_concurrency": 0}}, "poll.max_concurrency: must be >= 1, got 0"),
            (
                {"poll": {"active_interval_s": 90}},
                "poll.active_interval_s: must be <= poll.idle_interval_s (60), got 90",
            ),
            (
                {"poll": {"lookback_s": float("inf")}},
                "poll.lookback_s: must be a finite number, got inf",
            ),
            (
                {"poll": {"lookback_s": float("nan")}},
                "poll.lookback_s: must be a finite number, got nan",
            ),
            ({"discovery": {"interval_s": 0}}, "discovery.interval_s: must be >= 1, got 0"),
            ({"azure": {"request_timeout_s": 0}}, "azure.request_timeout_s: must be >= 1, got 0"),
            ({"budget": {"read_fraction": 0}}, "budget.read_fraction: must be in (0, 1], got 0"),
            (
                {"budget": {"read_fraction": 1.5}},
                "budget.read_fraction: must be in (0, 1], got 1.5",
            ),
            ({"budget": {"floor": -1}}, "budget.floor: must be >= 0, got -1"),
            ({"budget": {"reads_per_s": 0}}, "budget.reads_per_s: must be >= 0.01, got 0"),
            ({"budget": {"bucket_size": 0}}, "budget.bucket_size: must be >= 1, got 0"),
            (
                {"budget": {"floor": 250}},
                "budget.floor: must be < budget.bucket_size (250), got 250",
            ),
            ({"shard": {"count": 0}}, "shard.count: must be >= 1, got 0"),
            ({"shard": {"index": -1}}, "shard.index: must be >= 0, got -1"),
            ({"shard": {"index": 2, "count": 2}}, "shard.index: must be < shard.count (2), got 2"),
        ],
    )
    def test_out_of_range_names_key_bound_and_value(
        self, mapping: Mapping[str, object], message: str
    ) -> None:
        """Every numeric bound is enforced with its key path first."""
        assert error_of(mapping) == message

    def test_boundaries_that_are_allowed(self) -> None:
        """read_fraction 1, floor 0, overlap 0, active == idle and the last shard all pass."""
        s = parse_settings(
            {
                "budget": {"read_fraction": 1, "floor": 0},
                "poll": {"overlap_s": 0, "active_interval_s": 30, "idle_interval_s": 30},
                "shard": {"index": 3, "count": 4},
            }
        )
        assert (s.budget.read_fraction, s.shard.index) == (1.0, 3)


# Every bounded key, once just under its minimum and once just over its maximum.
BOUND_VIOLATIONS = [
    ("azure.request_timeout_s", 0.5, "must be >= 1, got 0.5"),
    ("azure.request_timeout_s", 601, "must be <= 600, got 601"),
    ("azure.max_list_pages", 0, "must be >= 1, got 0"),
    ("azure.max_list_pages", 100_001, "must be <= 100000, got 100001"),
    ("azure.max_list_bytes", 1_048_575, "must be >= 1048576, got 1048575"),
    ("azure.max_list_bytes", 4_294_967_297, "must be <= 4294967296, got 4294967297"),
    ("azure.max_response_bytes", 65_535, "must be >= 65536, got 65535"),
    ("azure.max_response_bytes", 1_073_741_825, "must be <= 1073741824, got 1073741825"),
    ("discovery.interval_s", 0.999, "must be >= 1, got 0.999"),
    ("discovery.interval_s", 86_401, "must be <= 86400, got 86401"),
    ("discovery.startup_timeout_s", -1, "must be >= 0, got -1"),
    ("discovery.startup_timeout_s", 86_400.5, "must be <= 86400, got 86400.5"),
    ("poll.active_interval_s", 1e-9, "must be >= 1, got 1e-09"),
    ("poll.active_interval_s", 86_401, "must be <= 86400, got 86401"),
    ("poll.idle_interval_s", 0.5, "must be >= 1, got 0.5"),
    ("poll.idle_interval_s", 1e300, "must be <= 86400, got 1e+300"),
    ("poll.lookback_s", 59.9, "must be >= 60, got 59.9"),
    ("poll.lookback_s", 2_592_001, "must be <= 2592000, got 2592001"),
    ("poll.overlap_s", -1e-9, "must be >= 0, got -1e-09"),
    ("poll.overlap_s", 86_401, "must be <= 86400, got 86401"),
    ("poll.max_concurrency", 0, "must be >= 1, got 0"),
    ("poll.max_concurrency", 4097, "must be <= 4096, got 4097"),
    ("poll.max_concurrency_per_subscription", 0, "must be >= 1, got 0"),
    ("poll.max_concurrency_per_subscription", 257, "must be <= 256, got 257"),
    ("poll.detail_retry_s", -0.5, "must be >= 0, got -0.5"),
    ("poll.detail_retry_s", 3601, "must be <= 3600, got 3601"),
    ("budget.floor", -1, "must be >= 0, got -1"),
    ("budget.floor", 100_000, "must be <= 99999, got 100000"),
    ("budget.reads_per_s", 0.001, "must be >= 0.01, got 0.001"),
    ("budget.reads_per_s", 1000.5, "must be <= 1000, got 1000.5"),
    ("budget.bucket_size", 0, "must be >= 1, got 0"),
    ("budget.bucket_size", 100_001, "must be <= 100000, got 100001"),
    ("budget.spare_fraction", -0.1, "must be >= 0, got -0.1"),
    ("budget.spare_fraction", 0.95, "must be <= 0.9, got 0.95"),
    ("budget.spare_polls_per_s", -1, "must be >= 0, got -1"),
    ("budget.spare_polls_per_s", 100_001, "must be <= 100000, got 100001"),
    ("backup_vaults.resource_graph_refresh_s", 0.5, "must be >= 1, got 0.5"),
    ("backup_vaults.resource_graph_refresh_s", 3601, "must be <= 3600, got 3601"),
    ("backup_vaults.resource_graph_margin_s", -1, "must be >= 0, got -1"),
    ("backup_vaults.resource_graph_margin_s", 86_401, "must be <= 86400, got 86401"),
    ("backup_vaults.backstop_interval_s", 59, "must be >= 60, got 59"),
    ("backup_vaults.backstop_interval_s", 604_801, "must be <= 604800, got 604801"),
    ("backup_vaults.subscriptions_per_query", 0, "must be >= 1, got 0"),
    ("backup_vaults.subscriptions_per_query", 1001, "must be <= 1000, got 1001"),
    ("protection.items_interval_s", 59, "must be >= 60, got 59"),
    ("protection.items_interval_s", 86401, "must be <= 86400, got 86401"),
    ("protection.policies_interval_s", 59, "must be >= 60, got 59"),
    ("protection.policies_interval_s", 604801, "must be <= 604800, got 604801"),
    ("protection.grace_s", -1, "must be >= 0, got -1"),
    ("protection.grace_s", 604801, "must be <= 604800, got 604801"),
    ("protection.grace_fraction", 0.001, "must be >= 0.01, got 0.001"),
    ("protection.grace_fraction", 11, "must be <= 10, got 11"),
    ("protection.early_s", -1, "must be >= 0, got -1"),
    ("protection.early_s", 86401, "must be <= 86400, got 86401"),
    ("protection.long_running_after_s", -1, "must be >= 0, got -1"),
    ("protection.long_running_after_s", 2592001, "must be <= 2592000, got 2592001"),
    ("protection.long_running_factor", -1, "must be >= 0, got -1"),
    ("protection.long_running_factor", 1001, "must be <= 1000, got 1001"),
    ("protection.long_running_min_samples", 0, "must be >= 1, got 0"),
    ("protection.long_running_min_samples", 1001, "must be <= 1000, got 1001"),
    ("protection.max_concurrency", 0, "must be >= 1, got 0"),
    ("protection.max_concurrency", 257, "must be <= 256, got 257"),
    ("clock.speed", 0.5, "must be >= 1, got 0.5"),
    ("clock.speed", 100001, "must be <= 100000, got 100001"),
    ("clock.anchor", -1, "must be >= 0, got -1"),
    ("clock.anchor", 1e11 + 1, "must be <= 100000000000, got 100000000001"),
    ("shard.index", -1, "must be >= 0, got -1"),
    ("shard.index", 1024, "must be <= 1023, got 1024"),
    ("shard.count", 0, "must be >= 1, got 0"),
    ("shard.count", 1025, "must be <= 1024, got 1025"),
    ("outbox.max_age_s", 59, "must be >= 60, got 59"),
    ("outbox.max_age_s", 7_776_001, "must be <= 7776000, got 7776001"),
    ("outbox.max_bytes", 1_048_575, "must be >= 1048576, got 1048575"),
    ("outbox.max_bytes", 68_719_476_737, "must be <= 68719476736, got 68719476737"),
]

# The other keys a bounded key is compared with, set so that only its own bounds can refuse it.
PARTNERS: Mapping[str, Mapping[str, object]] = {
    "poll.active_interval_s": {"idle_interval_s": 86_400},
    "poll.idle_interval_s": {"active_interval_s": 1},
    "budget.floor": {"bucket_size": 100_000},
    "budget.bucket_size": {"floor": 0},
    "shard.index": {"count": 1024},
    "clock.speed": {"start": "2026-10-30T00:00:00Z", "anchor": 1_800_000_000},
    "clock.anchor": {"speed": 2, "start": "2026-10-30T00:00:00Z"},
}


def with_value(path: str, value: object) -> dict[str, dict[str, object]]:
    """A mapping that sets `path` to `value`, and its partners so that they cannot object."""
    section, key = path.split(".")
    return {section: {**PARTNERS.get(path, {}), key: value}}


def is_integer_key(path: str) -> bool:
    section, key = path.split(".")
    hint = get_type_hints(SECTIONS[section])[key]
    return float not in (hint, *get_args(hint))


class TestBounds:
    @pytest.mark.parametrize(("path", "value", "problem"), BOUND_VIOLATIONS)
    def test_each_bound_refuses_with_one_line(self, path: str, value: float, problem: str) -> None:
        """A value just past either bound names the key, the bound and the value."""
        assert error_of(with_value(path, value)) == f"{path}: {problem}"

    def test_the_table_covers_both_bounds_of_every_bounded_key(self) -> None:
        """BOUND_VIOLATIONS has a low and a high row for every key of BOUNDS, and nothing else."""
        rows = {(path, ">=" in problem) for path, _, problem in BOUND_VIOLATIONS}
        assert rows == {(path, low) for path in BOUNDS for low in (True, False)}

    def test_every_duration_and_count_is_bounded(self) -> None:
        """Every int key, and every float key but read_fraction (in (0, 1]), has bounds."""
        numeric = {
            f"{name}.{f.name}"
            for name, cls in SECTIONS.items()
            for f, hint in ((f, get_type_hints(cls)[f.name]) for f in dataclasses.fields(cls))
            if {int, float} & {hint, *get_args(hint)}
        }
        assert numeric - set(BOUNDS) == {"budget.read_fraction"}
        assert set(BOUNDS) <= numeric

    def test_defaults_are_inside_their_bounds(self) -> None:
        """No default is refused by its own bounds."""
        defaults = Settings()
        for path, (low, high) in BOUNDS.items():
            section, key = path.split(".")
            value = getattr(getattr(defaults, section), key)
            assert value is None or low <= value <= high, path

    def test_both_bounds_are_allowed(self) -> None:
        """The bounds themselves are inside (inclusive)."""
        for path, (low, high) in BOUNDS.items():
            for value in (low, high):
                section, key = path.split(".")
                parsed = parse_settings(with_value(path, value))
                assert getattr(getattr(parsed, section), key) == value, path

    def test_huge_integer_is_shown_short(self) -> None:
        """A 31-digit count is refused in one short line."""
        assert error_of({"poll": {"max_concurrency": 10**30}}) == (
            "poll.max_concurrency: must be <= 4096, got 1.000e+30"
        )

    def test_the_example_states_every_bound(self) -> None:
        """config/monitor.example.toml writes `# MIN .. MAX` after every bounded key."""
        stated: dict[str, tuple[float, float]] = {}
        section = ""
        for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
            if header := re.fullmatch(r"\[(\w+)\]", line.strip()):
                section = header.group(1)
            elif row := re.match(r"#? ?(\w+) = [^#]*# ([\d.]+) \.\. ([\d.]+)\b", line):
                stated[f"{section}.{row[1]}"] = (float(row[2]), float(row[3]))
        assert stated == {path: (float(low), float(high)) for path, (low, high) in BOUNDS.items()}


@st.composite
def inside(draw: st.DrawFn) -> tuple[str, float]:
    path = draw(st.sampled_from(sorted(BOUNDS)))
    low, high = BOUNDS[path]
    if is_integer_key(path):
        return path, draw(st.integers(int(low), int(high)))
    return path, draw(st.integers(math.ceil(low), int(high)) | st.floats(low, high))


@st.composite
def outside(draw: st.DrawFn) -> tuple[str, float]:
    path = draw(st.sampled_from(sorted(BOUNDS)))
    low, high = BOUNDS[path]
    if is_integer_key(path):
        return path, draw(
            st.integers(max_value=int(low) - 1) | st.integers(min_value=int(high) + 1)
        )
    return path, draw(
        st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False)
        | st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False)
        | st.integers(min_value=-(10**300), max_value=math.ceil(low) - 1)
        | st.integers(min_value=int(high) + 1, max_value=10**300)
    )


@settings(max_examples=300, deadline=None)
@given(inside())
def test_any_value_inside_the_bounds_parses(case: tuple[str, float]) -> None:
    """A finite value within a key's bounds is taken as given."""
    path, value = case
    section, key = path.split(".")
    assert getattr(getattr(parse_settings(with_value(path, value)), section), key) == value


@settings(max_examples=300, deadline=None)
@given(outside())
def test_any_value_outside_the_bounds_is_refused(case: tuple[str, float]) -> None:
    """A finite value beyond a key's bounds raises ConfigError naming that key and the bound."""
    path, value = case
    with pytest.raises(ConfigError) as info:
        parse_settings(with_value(path, value))
    assert info.value.key == path
    assert re.fullmatch(r"must be [<>]= [\d.]+, got \S+", info.value.problem)


class TestEnums:
    @pytest.mark.parametrize(
        ("mapping", "message"),
        [
            (
                {"azure": {"cloud": "AzureGermanCloud"}},
                "azure.cloud: must be one of 'AzureCloud', 'AzureUSGovernment', 'AzureChinaCloud', "
                "got 'AzureGermanCloud'; did you mean 'AzureCloud'?",
            ),
            (
                {"azure": {"credential": "msi"}},
                "azure.credential: must be one of 'default', 'managed_identity', "
                "'workload_identity', 'client_secret', 'azure_cli', 'static', got 'msi'",
            ),
            (
                {"events": {"format": "cloudevent"}},
                "events.format: must be one of 'json', 'cloudevents', got 'cloudevent'; "
                "did you mean 'cloudevents'?",
            ),
            (
                {"log": {"level": "warn"}},
                "log.level: must be one of 'debug', 'info', 'warning', 'error', got 'warn'; "
                "did you mean 'warning'?",
            ),
            (
                {"log": {"format": "text"}},
                "log.format: must be one of 'auto', 'json', 'console', got 'text'",
            ),
            (
                {"poll": {"details_when_budget_binds": "none"}},
                "poll.details_when_budget_binds: must be one of 'all', 'not_succeeded', got 'none'",
            ),
        ],
    )
    def test_bad_enum_lists_choices(self, mapping: Mapping[str, object], message: str) -> None:
        """An unknown option names the key, the choices and the closest one."""
        assert error_of(mapping) == message


class TestEndpoints:
    @pytest.mark.parametrize(
        ("arm", "message"),
        [
            ("management.azure.com", "must be an absolute http(s) URL, got 'management.azure.com'"),
            (
                "ftp://management.azure.com/",
                "must be an absolute http(s) URL, got 'ftp://management.azure.com/'",
            ),
            ("https://:443/", "must be an absolute http(s) URL, got 'https://:443/'"),
            (
                "https://h:99999/",
                "must be an absolute http(s) URL, got 'https://h:99999/' "
                "(Port out of range 0-65535)",
            ),
            ("https://u:p@management.azure.com/", "must not contain user info"),
            (
                "https://management.azure.com/?x=1",
                "must not have a query or fragment, got 'https://management.azure.com/?x=1'",
            ),
            (
                "http://management.azure.com/",
                "plain http is only allowed to a loopback host, got 'http://management.azure.com/'",
            ),
        ],
    )
    def test_bad_arm_endpoint(self, arm: str, message: str) -> None:
        """arm_endpoint must be an absolute https URL (http only to loopback)."""
        assert error_of({"azure": {"arm_endpoint": arm}}) == f"azure.arm_endpoint: {message}"

    def test_http_loopback_needs_the_switch(self) -> None:
        """http to loopback is refused until allow_http_loopback = true."""
        assert error_of({"azure": {"arm_endpoint": "http://127.0.0.1:8443/"}}) == (
            "azure.arm_endpoint: plain http requires azure.allow_http_loopback = true, "
            "got 'http://127.0.0.1:8443/'"
        )

    @pytest.mark.parametrize(
        "arm", ["http://127.0.0.1:1/", "http://127.9.9.9/", "http://[::1]:80/", "http://LOCALHOST"]
    )
    def test_http_loopback_hosts_allowed_when_switched_on(self, arm: str) -> None:
        """127.0.0.0/8, ::1 and localhost count as loopback; a '/' is appended if missing."""
        s = parse_settings({"azure": {"arm_endpoint": arm, "allow_http_loopback": True}}).azure
        assert s.arm_endpoint.startswith(arm)
        assert s.arm_endpoint.endswith("/")

    def test_http_to_a_non_loopback_host_is_refused_even_when_switched_on(self) -> None:
        """allow_http_loopback does not open plain http to the network."""
        message = error_of(
            {"azure": {"arm_endpoint": "http://10.0.0.1/", "allow_http_loopback": True}}
        )
        assert message.startswith(
            "azure.arm_endpoint: plain http is only allowed to a loopback host"
        )

    def test_authority_follows_the_same_rules(self) -> None:
        """The Entra authority may not be plain http to the network either."""
        assert error_of({"azure": {"authority": "http://login.example.com"}}).startswith(
            "azure.authority: plain http is only allowed to a loopback host"
        )

    def test_api_version_shape(self) -> None:
        """api versions look like dates, optionally -preview."""
        assert error_of({"azure": {"api_version": "latest"}}) == (
            "azure.api_version: must look like 2025-08-01 or 2025-08-01-preview, got 'latest'"
        )
        assert parse_settings({"azure": {"api_version": "2024-04-30-preview"}})


class TestCredentials:
    def test_static_is_refused_towards_a_non_loopback_endpoint(self) -> None:
        """A fixed token never travels to real ARM; the error names azure.credential."""
        message = error_of({"azure": {"credential": "static", "static_token": "t"}})
        assert message == (
            "azure.credential: 'static' is refused unless azure.arm_endpoint is a loopback host, "
            "got 'management.azure.com'"
        )

    def test_static_refused_even_over_https_to_the_network(self) -> None:
        """It is the host that matters, not the scheme."""
        azure = {"credential": "static", "static_token": "t", "arm_endpoint": "https://10.1.1.1/"}
        assert error_of({"azure": azure}).startswith("azure.credential: 'static' is refused")

    def test_static_requires_a_token(self) -> None:
        """credential = 'static' without static_token names the missing key."""
        message = error_of({"azure": {"credential": "static", **LOOPBACK}})
        assert message == "azure.static_token: required when azure.credential = 'static'"

    def test_static_on_loopback_is_accepted_and_hidden(self) -> None:
        """A valid static setup parses, and its token is kept out of repr."""
        s = parse_settings(
            {"azure": {"credential": "static", "static_token": "s3cr3t", **LOOPBACK}}
        )
        assert s.azure.static_token == "s3cr3t"
        assert "s3cr3t" not in repr(s)

    @pytest.mark.parametrize("missing", ["tenant_id", "client_id", "client_secret"])
    def test_client_secret_requires_all_three(self, missing: str) -> None:
        """client_secret needs tenant_id, client_id and client_secret; a missing one is named."""
        azure: dict[str, object] = {
            "credential": "client_secret",
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": SUB,
            "client_secret": "pw",
        }
        del azure[missing]
        assert error_of({"azure": azure}) == (
            f"azure.{missing}: required when azure.credential = 'client_secret'"
        )

    def test_ids_are_validated(self) -> None:
        """client_id must be a GUID; tenant_id a GUID or a domain."""
        assert (
            error_of({"azure": {"client_id": "app"}})
            == "azure.client_id: must be a GUID, got 'app'"
        )
        assert error_of({"azure": {"tenant_id": "not a tenant"}}) == (
            "azure.tenant_id: must be a GUID or a domain name, got 'not a tenant'"
        )

    def test_ca_bundle_is_a_path(self) -> None:
        """ca_bundle becomes a Path; its existence is checked where it is used."""
        assert parse_settings({"azure": {"ca_bundle": "/x/ca.pem"}}).azure.ca_bundle == Path(
            "/x/ca.pem"
        )


class TestDiscovery:
    def test_vault_ids_any_casing(self) -> None:
        """Vault ids are validated case-insensitively and kept as written (minus a trailing '/')."""
        odd = VAULT.replace("/subscriptions/", "/Subscriptions/").replace(
            "Microsoft.RecoveryServices", "microsoft.recoveryservices"
        )
        s = parse_settings({"discovery": {"vaults": [VAULT, odd + "/"]}}).discovery
        assert s.vaults == (VAULT, odd)

    @pytest.mark.parametrize(
        "bad",
        [
            "v1",
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v",
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/x",
        ],
    )
    def test_bad_vault_id_shape(self, bad: str) -> None:
        """Anything that is not a vault id of either kind is refused, with its index."""
        assert error_of({"discovery": {"vaults": [VAULT, bad]}}) == (
            "discovery.vaults[1]: must look like /subscriptions/<id>/resourceGroups/<rg>/providers/"
            "Microsoft.RecoveryServices/vaults/<name> or .../providers/Microsoft.DataProtection/"
            f"backupVaults/<name>, got {bad!r}"
        )

    def test_backup_vault_ids_are_vaults(self) -> None:
        """A Backup vault id is watched like a Recovery Services one, in any casing."""
        bv = f"/subscriptions/{SUB}/resourceGroups/rg/providers/microsoft.dataprotection"
        bv += "/BACKUPVAULTS/b"
        assert parse_settings({"discovery": {"vaults": [VAULT, bv]}}).discovery.vaults == (
            VAULT,
            bv,
        )

    @pytest.mark.parametrize(
        ("kinds", "problem"),
        [
            (
                ["backup_vaults"],
                "vault_kinds[0]: must be one of 'recovery_services', "
                "'backup_vault', got 'backup_vaults'; did you mean 'backup_vault'?",
            ),
            ([], "vault_kinds: must name at least one of 'recovery_services', 'backup_vault'"),
            (["backup_vault", "backup_vault"], "vault_kinds: names a kind twice"),
        ],
    )
    def test_vault_kinds_are_checked(self, kinds: list[str], problem: str) -> None:
        """`vault_kinds` takes the two kinds, each at most once, and at least one."""
        assert error_of({"discovery": {"vault_kinds": kinds}}).startswith(f"discovery.{problem}")

    def test_vault_kinds_default_to_both(self) -> None:
        """Both kinds are searched for unless the configuration says otherwise."""
        assert parse_settings({}).discovery.vault_kinds == ("recovery_services", "backup_vault")

    @pytest.mark.parametrize(
        ("name", "problem"),
        [
            ("..", "vault name is a dot segment: '..'"),
            ("v?x", "vault name holds '?' (U+003F), which a path segment cannot hold: 'v?x'"),
            ("v%2F", "vault name holds '%' (U+0025), which a path segment cannot hold: 'v%2F'"),
        ],
    )
    def test_vault_names_must_be_one_safe_path_segment(self, name: str, problem: str) -> None:
        """A configured vault's names are checked as those ARM lists: each one safe segment."""
        bad = VAULT.rsplit("/", 1)[0] + "/" + name
        assert error_of({"discovery": {"vaults": [bad]}}) == f"discovery.vaults[0]: {problem}"

    def test_vault_subscription_must_be_a_guid(self) -> None:
        """The subscription segment of a vault id is a GUID."""
        bad = VAULT.replace(SUB, "sub-1")
        assert error_of({"discovery": {"vaults": [bad]}}) == (
            "discovery.vaults[0]: subscription must be a GUID, got 'sub-1'"
        )

    def test_listing_vaults_alone_watches_only_them(self) -> None:
        """subscriptions defaults to [] when vaults is given, ['*'] otherwise."""
        assert parse_settings({"discovery": {"vaults": [VAULT]}}).discovery.subscriptions == ()
        both = {"vaults": [VAULT], "subscriptions": ["*"]}
        assert parse_settings({"discovery": both}).discovery.subscriptions == ("*",)

    def test_subscriptions_are_guids_lower_cased(self) -> None:
        """Subscription ids are checked and normalised."""
        s = parse_settings({"discovery": {"subscriptions": [SUB.upper()]}}).discovery
        assert s.subscriptions == (SUB,)
        assert error_of({"discovery": {"subscriptions": [SUB, "prod"]}}) == (
            "discovery.subscriptions[1]: must be a subscription GUID or '*', got 'prod'"
        )

    def test_star_must_stand_alone(self) -> None:
        """'*' mixed with ids is ambiguous."""
        assert error_of({"discovery": {"subscriptions": ["*", SUB]}}) == (
            "discovery.subscriptions: '*' (all visible subscriptions) must be the only entry"
        )

    def test_nothing_to_watch(self) -> None:
        """No subscriptions and no vaults is an error."""
        assert error_of({"discovery": {"subscriptions": []}}) == (
            "discovery.subscriptions: nothing to watch: empty, and discovery.vaults is empty"
        )

    def test_globs(self) -> None:
        """include and exclude keep their patterns; empty patterns are refused."""
        s = parse_settings({"discovery": {"include": ["prod-*"], "exclude": ["*-test"]}}).discovery
        assert (s.include, s.exclude) == (("prod-*",), ("*-test",))
        assert (
            error_of({"discovery": {"exclude": [""]}}) == "discovery.exclude[0]: must not be empty"
        )


class TestOther:
    @pytest.mark.parametrize(
        ("listen", "host", "port"),
        [
            ("127.0.0.1:9464", "127.0.0.1", 9464),
            ("0.0.0.0:0", "0.0.0.0", 0),
            ("[::1]:9464", "::1", 9464),
            ("localhost:80", "localhost", 80),
        ],
    )
    def test_listen_forms(self, listen: str, host: str, port: int) -> None:
        """host:port and [ipv6]:port are split into host and port."""
        ops = parse_settings({"ops": {"listen": listen}}).ops
        assert (ops.host, ops.port) == (host, port)

    @pytest.mark.parametrize(
        ("listen", "problem"),
        [
            ("9464", "must be host:port or [ipv6]:port, got '9464'"),
            ("::1:9464", "must be host:port or [ipv6]:port, got '::1:9464'"),
            ("[::g]:1", "'::g' is not an IPv6 address"),
            ("host:70000", "port must be in 0..65535, got 70000"),
            ("bad_host:1", "'bad_host' is not a host name or IPv4 address"),
        ],
    )
    def test_bad_listen(self, listen: str, problem: str) -> None:
        """A malformed listen address names the problem."""
        assert error_of({"ops": {"listen": listen}}) == f"ops.listen: {problem}"

    def test_sink_and_state_paths(self) -> None:
        """'stdout' and ':memory:' stay literal; anything else is a Path."""
        s = parse_settings({"events": {"sink": "/var/log/e.jsonl"}, "state": {"path": ":memory:"}})
        assert (s.events.sink, s.state.path) == (Path("/var/log/e.jsonl"), ":memory:")

    @pytest.mark.parametrize(
        ("name", "index"),
        [
            ("backup-monitor-0", 0),
            ("backup-monitor-12", 12),
            ("m-3.m.ns.svc.cluster.local", 3),
            ("backup-monitor", None),
            ("monitor-", None),
            ("", None),
            ("host-1a", None),
        ],
    )
    def test_shard_from_hostname(self, name: str, index: int | None) -> None:
        """The trailing -<n> of a StatefulSet pod name is its ordinal."""
        assert shard_from_hostname(name) == index


TENANT_A = "aaaaaaaa-0000-4000-8000-000000000001"
SUB_B = "bbbbbbbb-0000-4000-8000-000000000002"


def entry(name: str = "contoso", **keys: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": name,
        "credential": "client_secret",
        "tenant_id": TENANT_A,
        "client_id": SUB,
        "client_secret_env": "CONTOSO_SECRET",
    }
    return {k: v for k, v in {**base, **keys}.items() if v is not None}


class TestSeveralCredentials:
    def test_entries_parse_in_order_with_their_subscriptions(self) -> None:
        """Each [[azure.credentials]] entry keeps its keys; principals lists them in order,
        and a config without entries has one principal named 'default'."""
        s = parse_settings(
            {"azure": {"credentials": [entry(), entry("fabrikam", subscriptions=[SUB_B.upper()])]}}
        )
        assert [p.name for p in s.azure.principals] == ["contoso", "fabrikam"]
        assert s.azure.principals[0].subscriptions == ("*",)
        assert s.azure.principals[1].subscriptions == (SUB_B,)
        assert s.azure.principals[0].client_secret_env == "CONTOSO_SECRET"
        (single,) = parse_settings({}).azure.principals
        assert (single.name, single.credential, single.subscriptions) == (
            "default",
            "default",
            ("*",),
        )

    def test_signing_in_takes_the_entrys_keys(self) -> None:
        """The settings a credential is built from are [azure]'s with the entry's keys."""
        s = parse_settings(
            {"azure": {"credentials": [entry(client_secret="pw", client_secret_env=None)]}}
        )
        azure = s.azure.signing_in(s.azure.principals[0])
        assert (azure.credential, azure.tenant_id, azure.client_id) == (
            "client_secret",
            TENANT_A,
            SUB,
        )
        assert azure.client_secret == "pw"
        assert azure.credentials == ()

    @pytest.mark.parametrize(
        ("entries", "message"),
        [
            ("x", "azure.credentials: must be an array of tables ([[azure.credentials]] entries)"),
            (
                [{"credential": "static"}],
                "azure.credentials[0].name: required: every entry is named (in logs, metrics, "
                "errors)",
            ),
            (
                [entry("a b")],
                "azure.credentials[0].name: must be 1-32 letters, digits, '-' or '_', starting "
                "alike, got 'a b'",
            ),
            (
                [entry(), entry()],
                "azure.credentials[1].name: 'contoso' is the name of an earlier entry",
            ),
            (
                [entry(), entry("CONTOSO")],
                "azure.credentials[1].name: 'CONTOSO' is the name of an earlier entry",
            ),
            (
                [entry(secret="x")],
                "azure.credentials[0].secret: unknown key; did you mean 'client_secret'?",
            ),
            (
                [entry(client_secret_env=None)],
                "azure.credentials[0].client_secret: required (or client_secret_env) when "
                "azure.credentials[0].credential = 'client_secret'",
            ),
            (
                [entry(client_secret="pw")],
                "azure.credentials[0].client_secret_env: set client_secret or client_secret_env, "
                "not both",
            ),
            (
                [entry(client_secret_env="1BAD")],
                "azure.credentials[0].client_secret_env: must be an environment variable name, "
                "got '1BAD'",
            ),
            (
                [entry(tenant_id=None)],
                "azure.credentials[0].tenant_id: required when azure.credentials[0].credential = "
                "'client_secret'",
            ),
            (
                [entry(credential="static", static_token="t")],
                "azure.credentials[0].credential: 'static' is refused unless azure.arm_endpoint is "
                "a loopback host, got 'management.azure.com'",
            ),
            (
                [entry(subscriptions=[])],
                "azure.credentials[0].subscriptions: must name at least one subscription, or be "
                "['*']",
            ),
            (
                [entry(subscriptions=["*", SUB_B])],
                "azure.credentials[0].subscriptions: '*' (every subscription it lists) must be "
                "alone",
            ),
            (
                [entry(subscriptions=["sub-1"])],
                "azure.credentials[0].subscriptions[0]: must be a subscription GUID or '*', got "
                "'sub-1'",
            ),
            (
                [entry(subscriptions=[SUB_B]), entry("b", subscriptions=[SUB_B.upper()])],
                f"azure.credentials[1].subscriptions[0]: {SUB_B.upper()} is watched by entry "
                "'contoso' already",
            ),
        ],
    )
    def test_bad_entries_are_named(self, entries: object, message: str) -> None:
        """Every mistake in an entry names the entry's index and key."""
        assert error_of({"azure": {"credentials": entries}}) == message

    @pytest.mark.parametrize("key", ["credential", "tenant_id", "client_id", "client_secret"])
    def test_azure_credential_keys_are_refused_beside_entries(self, key: str) -> None:
        """[azure]'s own credential keys and entries together are ambiguous: refused, named."""
        value = {"credential": "default", "tenant_id": TENANT_A, "client_id": SUB}.get(key, "pw")
        message = error_of({"azure": {key: value, "credentials": [entry()]}})
        assert (
            message == f"azure.{key}: set it in each [[azure.credentials]] entry, not beside them"
        )

    def test_redacted_hides_every_entrys_secret(self) -> None:
        """The start-up line's settings hide an entry's secret and are JSON-ready."""
        s = parse_settings(
            {"azure": {"credentials": [entry(client_secret="Zm9vYmFy", client_secret_env=None)]}}
        )
        out = s.redacted()
        (shown,) = out["azure"]["credentials"]
        assert shown["client_secret"] == "***"
        assert shown["name"] == "contoso"
        assert "Zm9vYmFy" not in repr(out)
        assert json.loads(json.dumps(out)) == out


class TestRedacted:
    def test_secrets_are_starred_and_the_rest_is_plain(self) -> None:
        """redacted() hides set secrets, shows unset ones as None, and is JSON-ready."""
        azure = {"credential": "static", "static_token": "Zm9vYmFy", **LOOPBACK}
        out = parse_settings({"azure": azure}).redacted()
        assert out["azure"]["static_token"] == "***"
        assert out["azure"]["client_secret"] is None
        assert out["state"]["path"] == ".state/monitor.sqlite"
        assert out["discovery"]["subscriptions"] == ["*"]
        assert "Zm9vYmFy" not in repr(out)
        assert set(out) == {*SECTIONS, "sinks"}
        assert json.loads(json.dumps(out)) == out


class TestLoad:
    def test_missing_file_names_the_path(self, tmp_path: Path) -> None:
        """A config file that does not exist is a ConfigError keyed by its path."""
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            load_settings(path, {})
        assert str(info.value) == f"{path}: config file not found"

    def test_invalid_toml_names_the_path(self, tmp_path: Path) -> None:
        """A syntax error names the file and tomllib's line and column."""
        path = tmp_path / "bad.toml"
        path.write_text("[poll\n")
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: invalid TOML: .*line 1"):
            load_settings(path, {})

    def test_directory_and_binary_files(self, tmp_path: Path) -> None:
        """A directory or a non-UTF-8 file is reported, not crashed on."""
        with pytest.raises(ConfigError, match="is a directory"):
            load_settings(tmp_path, {})
        path = tmp_path / "bin.toml"
        path.write_bytes(b"\xff\xfe")
        with pytest.raises(ConfigError, match="not UTF-8"):
            load_settings(path, {})

    def test_no_file_means_defaults(self) -> None:
        """path=None uses defaults and the environment only."""
        assert load_settings(None, {}) == Settings()

    def test_example_parses_to_the_defaults(self) -> None:
        """config/monitor.example.toml documents the true defaults."""
        assert load_settings(EXAMPLE, {}) == Settings()

    def test_example_documents_every_field(self) -> None:
        """Every key of every section appears in the example (set or commented), in its section."""
        seen: set[str] = set()
        section = ""
        for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
            if header := re.fullmatch(r"#? ?\[+([\w.]+)\]+", line.strip()):
                section = header.group(1)
            elif (key := re.match(r"#? ?(\w+) = ", line)) and not section.startswith("sinks"):
                seen.add(f"{section}.{key.group(1)}")
        expected = {
            f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
        }
        expected |= {f"azure.credentials.{f.name}" for f in dataclasses.fields(CredentialSettings)}
        assert seen == expected
        assert [*SECTIONS, "sinks"] == [f.name for f in dataclasses.fields(Settings)]
        assert all(section_keys(name) for name in SECTIONS)

    def test_demo_config_is_valid(self) -> None:
        """config/demo.toml parses: static credential on loopback, in-memory state."""
        s = load_settings(DEMO, {})
        assert s.azure.credential == "static"
        assert s.azure.arm_endpoint == "http://127.0.0.1:8443/"
        assert s.state.path == ":memory:"
        assert (s.poll.active_interval_s, s.poll.idle_interval_s, s.poll.lookback_s) == (5, 15, 600)


class TestEnvironment:
    def test_scalar_override(self, tmp_path: Path) -> None:
        """BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S overrides the file, parsed as TOML."""
        path = tmp_path / "m.toml"
        path.write_text("[poll]\nactive_interval_s = 20\n")
        env = {
            "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S": "10",
            "BACKUP_MONITOR_POLL__BACKFILL": "false",
            "BACKUP_MONITOR_BUDGET__READ_FRACTION": "0.25",
            "BACKUP_MONITOR_SHARD__INDEX": "0",
            "UNRELATED": "x",
        }
        s = load_settings(path, env)
        assert (s.poll.active_interval_s, s.poll.backfill) == (10, False)
        assert (s.budget.read_fraction, s.shard.index) == (0.25, 0)

    def test_text_values_are_taken_verbatim(self) -> None:
        """Text keys are never TOML-parsed, so a date-like api version stays a string."""
        env = {
            "BACKUP_MONITOR_AZURE__API_VERSION": "2024-04-01",
            "BACKUP_MONITOR_EVENTS__SINK": "/tmp/events.jsonl",
            "BACKUP_MONITOR_OPS__LISTEN": "0.0.0.0:9464",
            "BACKUP_MONITOR_AZURE__CLIENT_SECRET": 'p"w=1,2',
        }
        s = load_settings(None, env)
        assert s.azure.api_version == "2024-04-01"
        assert s.events.sink == Path("/tmp/events.jsonl")
        assert s.ops.listen == "0.0.0.0:9464"
        assert s.azure.client_secret == 'p"w=1,2'

    def test_lists_comma_separated_or_toml(self) -> None:
        """List keys accept 'a,b', a single value, or a TOML array."""
        other = SUB.replace("1", "9")
        s = load_settings(None, {"BACKUP_MONITOR_DISCOVERY__SUBSCRIPTIONS": f"{SUB}, {other}"})
        assert s.discovery.subscriptions == (SUB, other)
        s = load_settings(None, {"BACKUP_MONITOR_DISCOVERY__SUBSCRIPTIONS": "*"})
        assert s.discovery.subscriptions == ("*",)
        s = load_settings(None, {"BACKUP_MONITOR_DISCOVERY__EXCLUDE": '["a,b", "c"]'})
        assert s.discovery.exclude == ("a,b", "c")

    def test_bad_override_names_key_and_variable(self) -> None:
        """A bad value from the environment names the key path and the variable."""
        with pytest.raises(ConfigError) as info:
            load_settings(None, {"BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S": "0"})
        assert str(info.value) == (
            "poll.active_interval_s: must be >= 1, got 0 "
            "(set by BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S)"
        )
        with pytest.raises(ConfigError) as info:
            load_settings(None, {"BACKUP_MONITOR_POLL__MAX_CONCURRENCY": "lots"})
        assert str(info.value).startswith(
            "poll.max_concurrency: must be an integer, got str 'lots'"
        )

    @pytest.mark.parametrize(
        "var",
        [
            "BACKUP_MONITOR_POLL_ACTIVE",  # one underscore, and the key cut short
            "BACKUP_MONITOR_POLL_ACTIVE_INTERVAL_S",  # one underscore
            "BACKUP_MONITOR_POLL__ACTIV_INTERVAL_S",  # a misspelt key
            "BACKUP_MONITOR_POLL__ACTIVE_INTERVL_S",
            "BACKUP_MONITOR_POL__ACTIVE_INTERVAL_S",  # an unknown section
            "BACKUP_MONITOR_SCHEDULE__ACTIVE_INTERVAL_S",
        ],
    )
    def test_a_variable_naming_no_setting_is_a_warning(self, var: str) -> None:
        """A typo is not applied, not an error: one warning with the variable it likely meant."""
        loaded = load_settings_with_warnings(None, {var: "5", "UNRELATED": "x"})
        assert loaded.settings == Settings()
        assert loaded.unknown_variables == (
            UnknownVariable(variable=var, suggestion="BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S"),
        )
        assert str(loaded.unknown_variables[0]) == (
            f"{var}: names no setting, ignored; "
            "did you mean BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S?"
        )
        assert load_settings(None, {var: "5"}) == Settings()

    def test_a_variable_like_no_setting_gets_no_suggestion(self) -> None:
        """With nothing close, the warning says what the names look like."""
        (unknown,) = load_settings_with_warnings(
            None, {"BACKUP_MONITOR_CONFIG": "/etc/m.toml"}
        ).unknown_variables
        assert unknown == UnknownVariable(variable="BACKUP_MONITOR_CONFIG", suggestion=None)
        assert str(unknown) == (
            "BACKUP_MONITOR_CONFIG: names no setting, ignored; "
            "settings are BACKUP_MONITOR_<SECTION>__<KEY>"
        )

    def test_a_typo_beside_the_real_variable_changes_nothing(self) -> None:
        """The valid override applies; each typo is reported once, in name order."""
        loaded = load_settings_with_warnings(
            None,
            {
                "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S": "10",
                "BACKUP_MONITOR_POLL_ACTIVE_INTERVAL_S": "99999",
                "BACKUP_MONITOR_LOG_LEVEL": "debug",
            },
        )
        assert (loaded.settings.poll.active_interval_s, loaded.settings.log.level) == (10, "info")
        assert [(u.variable, u.suggestion) for u in loaded.unknown_variables] == [
            ("BACKUP_MONITOR_LOG_LEVEL", "BACKUP_MONITOR_LOG__LEVEL"),
            ("BACKUP_MONITOR_POLL_ACTIVE_INTERVAL_S", "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S"),
        ]

    @pytest.mark.parametrize("case", [str.upper, str.lower])
    def test_every_setting_variable_is_known(self, case: Callable[[str], str]) -> None:
        """The variable of every key of every section applies and gives no warning."""
        unset = {"tenant_id": SUB, "client_id": SUB, "client_secret": "s", "static_token": "t"}
        unset |= {"ca_bundle": "ca.pem", "index": "0"}
        unset |= {"start": "2026-10-30T00:00:00Z", "anchor": "1800000000"}
        environ = {}
        for name, table in Settings().redacted().items():
            if not isinstance(table, dict):
                continue  # [[sinks]]: an array of tables, not settable from the environment
            for key, default in table.items():
                if isinstance(default, bool):
                    text = str(default).lower()
                elif isinstance(default, list):
                    text = ",".join(default)
                else:
                    text = unset.get(key, str(default))
                environ[f"BACKUP_MONITOR_{case(name)}__{case(key)}"] = text
        assert len(environ) == sum(len(section_keys(name)) for name in SECTIONS)
        loaded = load_settings_with_warnings(None, environ)
        assert loaded.unknown_variables == ()
        assert (loaded.settings.azure.tenant_id, loaded.settings.shard.index) == (SUB, 0)

    def test_other_variables_are_not_warned_about(self) -> None:
        """Valid overrides and variables without the exact prefix give no warning."""
        env = {
            "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S": "10",
            "BACKUP_MONITOR_AZURE__API_VERSION": "2024-04-01",
            "backup_monitor_poll_active": "1",
            "BACKUP_MONITORING": "1",
            "HOSTNAME": "monitor-0",
        }
        assert load_settings_with_warnings(None, env).unknown_variables == ()

    @pytest.mark.parametrize(
        "var", ["BACKUP_MONITOR_POLL__", "BACKUP_MONITOR___X", "BACKUP_MONITOR_A__B__C"]
    )
    def test_malformed_variable_names(self, var: str) -> None:
        """A prefixed variable with a malformed SECTION__KEY is named in the error."""
        with pytest.raises(ConfigError) as info:
            load_settings(None, {var: "1"})
        assert str(info.value) == f"{var}: expected BACKUP_MONITOR_<SECTION>__<KEY>"

    def test_prefixed_variables_without_double_underscore_are_not_errors(self) -> None:
        """The CLI reads no BACKUP_MONITOR_* variable of its own: such a name is only warned of."""
        assert load_settings(None, {"BACKUP_MONITOR_CONFIG": "/etc/m.toml"}) == Settings()

    def test_file_section_that_is_not_a_table_is_still_reported(self, tmp_path: Path) -> None:
        """An override does not mask the file's own type error."""
        path = tmp_path / "m.toml"
        path.write_text("poll = 1\n")
        with pytest.raises(ConfigError, match=r"^poll: must be a table, got int 1$"):
            load_settings(path, {"BACKUP_MONITOR_POLL__BACKFILL": "true"})


# -- as a process --------------------------------------------------------------------------

SMALL_ESTATE = EmulatorSettings(
    world=WorldSettings(seed=5, subscriptions=1, vaults_per_subscription=2)
)


def unknown_variable_rows(stderr: bytes) -> list[dict[str, object]]:
    rows = [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
    return [r for r in rows if r.get("event") == "config.unknown_variable"]


async def test_check_config_warns_of_a_misspelt_variable_and_passes(tmp_path: Path) -> None:
    """`check-config` with BACKUP_MONITOR_POLL_ACTIVE set: one warning line on stderr, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_MONITOR_")}
    env["BACKUP_MONITOR_POLL_ACTIVE"] = "1"
    async with running_emulator(SMALL_ESTATE) as emu:
        config = write_config(tmp_path / "monitor.toml", emu, tmp_path / "state.sqlite")
        command = [sys.executable, "-m", "monitor", "check-config", "--config", str(config)]
        with anyio.fail_after(60):
            result = await anyio.run_process(command, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert "configuration is valid" in result.stdout.decode()
    (row,) = unknown_variable_rows(result.stderr)
    assert (row["level"], row["variable"], row["suggestion"]) == (
        "warning",
        "BACKUP_MONITOR_POLL_ACTIVE",
        "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S",
    )
    assert result.stderr.count(b"BACKUP_MONITOR_POLL_ACTIVE") == 1


async def test_jobs_list_warns_of_a_misspelt_variable_and_answers(tmp_path: Path) -> None:
    """`jobs list` with BACKUP_MONITOR_POLL_ACTIVE set: the same one warning, and its answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_MONITOR_")}
    env["BACKUP_MONITOR_POLL_ACTIVE"] = "1"
    async with running_emulator(SMALL_ESTATE) as emu:
        config = write_config(tmp_path / "monitor.toml", emu, tmp_path / "state.sqlite")
        command = [sys.executable, "-m", "monitor", "jobs", "list", "--config", str(config)]
        with anyio.fail_after(60):
            result = await anyio.run_process(command, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout  # the table of jobs
    (row,) = unknown_variable_rows(result.stderr)
    assert row["suggestion"] == "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S"


async def test_the_daemon_starts_despite_a_misspelt_variable(tmp_path: Path) -> None:
    """`run` with a misspelt key in a variable warns once, before it starts, and runs."""
    async with running_emulator(SMALL_ESTATE) as emu:
        config = write_config(tmp_path / "monitor.toml", emu, tmp_path / "state.sqlite")
        daemon = Daemon(
            config,
            tmp_path / "events.jsonl",
            tmp_path / "stderr.log",
            env={"BACKUP_MONITOR_POLL__ACTIV_INTERVAL_S": "1"},
        )
        daemon.start()
        try:
            await daemon.wait_for_log("scheduler.started", timeout_s=30)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
    events = [row.get("event") for row in daemon.read_logs()]
    assert events.count("config.unknown_variable") == 1
    assert events.index("config.unknown_variable") < events.index("scheduler.started")
    (row,) = unknown_variable_rows(daemon.logs.read_bytes())
    assert (row["variable"], row["suggestion"]) == (
        "BACKUP_MONITOR_POLL__ACTIV_INTERVAL_S",
        "BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S",
    )


# -- property tests -------------------------------------------------------------------------

ALL_KEYS = sorted({f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)})
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["*", SUB, VAULT, "static", "http://127.0.0.1:1/", "[::1]:0", ":memory:"])
    | st.datetimes()
    | st.dates()
)


def _nested(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


junk = st.recursive(scalars, _nested, max_leaves=10)
tables = st.dictionaries(st.sampled_from(ALL_KEYS) | st.text(max_size=12), junk, max_size=6)
mappings = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)) | st.text(max_size=10), tables | junk, max_size=5
)


@settings(max_examples=400, deadline=None)
@given(mappings)
def test_any_mapping_parses_or_raises_config_error(mapping: dict[str, object]) -> None:
    """Random junk never escapes as anything but ConfigError."""
    key = problem = "ok"
    try:
        parse_settings(mapping)
    except ConfigError as exc:
        key, problem = exc.key, exc.problem
    assert key
    assert problem
    assert "\n" not in key + problem


env_names = st.builds(
    lambda s, k: f"BACKUP_MONITOR_{s}__{k}".upper(),
    st.sampled_from(sorted(SECTIONS)) | st.text("abc_", max_size=5),
    st.sampled_from(ALL_KEYS) | st.text("abc_", max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(env_names, st.text(max_size=40), max_size=4))
def test_any_environment_loads_or_raises_config_error(environ: dict[str, str]) -> None:
    """Random override values never escape as anything but ConfigError."""
    key = problem = "ok"
    try:
        load_settings(None, environ)
    except ConfigError as exc:
        key, problem = exc.key, exc.problem
    assert key
    assert problem
