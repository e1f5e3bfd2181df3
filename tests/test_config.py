"""Settings: defaults, every validation rule and its message, environment overrides, the docs."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import (
    CLOUD_PRESETS,
    SECTIONS,
    Settings,
    load_settings,
    parse_settings,
    section_keys,
    shard_from_hostname,
)
from monitor.errors import ConfigError

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
            ({"poll": {"active_interval_s": 0}}, "poll.active_interval_s: must be > 0, got 0"),
            ({"poll": {"idle_interval_s": -1}}, "poll.idle_interval_s: must be > 0, got -1"),
            ({"poll": {"lookback_s": 0}}, "poll.lookback_s: must be > 0, got 0"),
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
            ({"discovery": {"interval_s": 0}}, "discovery.interval_s: must be > 0, got 0"),
            ({"azure": {"request_timeout_s": 0}}, "azure.request_timeout_s: must be > 0, got 0"),
            ({"budget": {"read_fraction": 0}}, "budget.read_fraction: must be in (0, 1], got 0"),
            (
                {"budget": {"read_fraction": 1.5}},
                "budget.read_fraction: must be in (0, 1], got 1.5",
            ),
            ({"budget": {"floor": -1}}, "budget.floor: must be >= 0, got -1"),
            ({"budget": {"reads_per_s": 0}}, "budget.reads_per_s: must be > 0, got 0"),
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
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v",
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/x",
        ],
    )
    def test_bad_vault_id_shape(self, bad: str) -> None:
        """Anything that is not a Recovery Services vault id is refused, with its index."""
        assert error_of({"discovery": {"vaults": [VAULT, bad]}}) == (
            "discovery.vaults[1]: must look like /subscriptions/<id>/resourceGroups/<rg>/providers/"
            f"Microsoft.RecoveryServices/vaults/<name>, got {bad!r}"
        )

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
        assert set(out) == set(SECTIONS)
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
            if header := re.fullmatch(r"\[(\w+)\]", line.strip()):
                section = header.group(1)
            elif key := re.match(r"#? ?(\w+) = ", line):
                seen.add(f"{section}.{key.group(1)}")
        expected = {
            f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
        }
        assert seen == expected
        assert list(SECTIONS) == [f.name for f in dataclasses.fields(Settings)]
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
            "poll.active_interval_s: must be > 0, got 0 "
            "(set by BACKUP_MONITOR_POLL__ACTIVE_INTERVAL_S)"
        )
        with pytest.raises(ConfigError) as info:
            load_settings(None, {"BACKUP_MONITOR_POLL__MAX_CONCURRENCY": "lots"})
        assert str(info.value).startswith(
            "poll.max_concurrency: must be an integer, got str 'lots'"
        )

    def test_unknown_names_in_the_environment(self) -> None:
        """Misspelt sections and keys from the environment are caught like the file's."""
        with pytest.raises(ConfigError) as info:
            load_settings(None, {"BACKUP_MONITOR_POL__ACTIVE_INTERVAL_S": "10"})
        assert str(info.value) == (
            "pol: unknown section; did you mean 'poll'? "
            "(set by BACKUP_MONITOR_POL__ACTIVE_INTERVAL_S)"
        )
        with pytest.raises(ConfigError, match=r"^poll\.active_intervl_s: unknown key"):
            load_settings(None, {"BACKUP_MONITOR_POLL__ACTIVE_INTERVL_S": "10"})

    @pytest.mark.parametrize(
        "var", ["BACKUP_MONITOR_POLL__", "BACKUP_MONITOR___X", "BACKUP_MONITOR_A__B__C"]
    )
    def test_malformed_variable_names(self, var: str) -> None:
        """A prefixed variable with a malformed SECTION__KEY is named in the error."""
        with pytest.raises(ConfigError) as info:
            load_settings(None, {var: "1"})
        assert str(info.value) == f"{var}: expected BACKUP_MONITOR_<SECTION>__<KEY>"

    def test_prefixed_variables_without_double_underscore_are_left_alone(self) -> None:
        """BACKUP_MONITOR_CONFIG and friends belong to the CLI."""
        assert load_settings(None, {"BACKUP_MONITOR_CONFIG": "/etc/m.toml"}) == Settings()

    def test_file_section_that_is_not_a_table_is_still_reported(self, tmp_path: Path) -> None:
        """An override does not mask the file's own type error."""
        path = tmp_path / "m.toml"
        path.write_text("poll = 1\n")
        with pytest.raises(ConfigError, match=r"^poll: must be a table, got int 1$"):
            load_settings(path, {"BACKUP_MONITOR_POLL__BACKFILL": "true"})


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
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
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
