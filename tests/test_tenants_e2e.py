"""Several tenants in one process, end to end: two `[[azure.credentials]]` entries signing in to
the emulator's token endpoint as two principals of two tenants (azure-identity's
ClientSecretCredential over TLS), and one credential seeing a Lighthouse-delegated estate."""

from __future__ import annotations

import ssl
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
from prometheus_client.parser import text_string_to_metric_families

from monitor.emulator import Emulator, EmulatorSettings, WorldSettings, running_emulator
from tests.daemon import Daemon, ground_truth, is_terminal, judge, truth_id, write_config

CLIENT_A = "5f0e5c2a-1d3b-4c8e-9a7f-2b6d4e8f0a1c"
CLIENT_B = "7a1c9e3b-2d4f-4e6a-8b0c-1d3e5f7a9b2c"


def _entry(name: str, tenant_id: str, client_id: str, **keys: object) -> dict[str, object]:
    """A client-secret `[[azure.credentials]]` entry whose secret is in `<NAME>_SECRET`."""
    return {
        "name": name,
        "credential": "client_secret",
        "tenant_id": tenant_id,
        "client_id": client_id,
        "client_secret_env": f"{name.upper()}_SECRET",
        **keys,
    }


def _config(
    tmp_path: Path, emu: Emulator, ca_pem_path: str, credentials: list[dict[str, object]]
) -> Path:
    """A daemon's config signing in with `credentials` at the emulator's token endpoint."""
    return write_config(
        tmp_path / "monitor.toml",
        emu,
        tmp_path / "state.sqlite",
        active_interval_s=1,
        idle_interval_s=2,
        credentials=credentials,
        sections={
            "azure": {"arm_endpoint": emu.url + "/", "authority": emu.url, "ca_bundle": ca_pem_path}
        },
    )


async def _tenant_of(http: aiohttp.ClientSession, emu: Emulator) -> dict[str, str]:
    """Subscription id → its home tenant, from the emulator's ground truth."""
    tenants = await _get_json(http, f"{emu.url}/_emulator/tenants")
    return {sub.lower(): t["tenant_id"] for t in tenants["tenants"] for sub in t["subscriptions"]}


async def _get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, url
        return orjson.loads(await response.read())


async def _wait_terminal(
    daemon: Daemon, ssl_context: ssl.SSLContext, emu: Emulator, *, timeout_s: float = 60
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], datetime]:
    """Events and ground truth once every terminal transition up to a cut-off is emitted."""
    cutoff = datetime.now(UTC)
    with anyio.fail_after(timeout_s):
        while True:
            truth = await ground_truth(emu, ssl_context=ssl_context)
            events = daemon.read_events()
            missing, _, _ = judge(events, truth, cutoff=cutoff)
            wanted = {truth_id(r) for r in truth if is_terminal(r)}
            if wanted and not missing:
                return events, truth, cutoff
            await anyio.sleep(0.5)


def _arm_requests(text: str) -> Counter[tuple[str, str]]:
    """(subscription label, kind) → ARM requests, from a scrape."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "backup_monitor_arm_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[(sample.labels["subscription"], sample.labels["kind"])] += int(sample.value)
    return counts


async def test_two_credentials_two_tenants(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    ca_pem_path: str,
) -> None:
    """Each subscription is read with its own tenant's principal only (the emulator's reads per
    principal), each principal's tenant reads are budgeted apart (`tenant:<name>` scopes in the
    metrics), and every event carries its vault's tenant id; 0 missed, 0 duplicated."""
    settings = EmulatorSettings(
        tenants=2, world=WorldSettings(seed=41, subscriptions=4, vaults_per_subscription=2)
    )
    async with running_emulator(settings, ssl_context=server_ssl_context) as emu:
        secret = emu.arm.settings.client_secret
        t0, t1 = emu.tenant_ids[:2]
        credentials = [_entry("contoso", t0, CLIENT_A), _entry("fabrikam", t1, CLIENT_B)]
        config = _config(tmp_path, emu, ca_pem_path, credentials)
        env = {"CONTOSO_SECRET": secret, "FABRIKAM_SECRET": secret}
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log", env=env)
        connector = aiohttp.TCPConnector(ssl=client_ssl_context)
        async with aiohttp.ClientSession(connector=connector) as http:
            tenant_of = await _tenant_of(http, emu)
            assert sorted(set(tenant_of.values())) == sorted([t0, t1])
            try:
                daemon.start()
                events, truth, cutoff = await _wait_terminal(daemon, client_ssl_context, emu)
                ops = await daemon.ops_url()
                async with aiohttp.ClientSession() as plain, plain.get(f"{ops}/metrics") as r:
                    scrape = await r.text()
                reads = await _get_json(http, f"{emu.url}/_emulator/reads")
                assert await daemon.stop() == 0
            finally:
                daemon.kill_if_running()

    # Every event names its vault's tenant; both tenants' vaults emitted.
    assert events
    seen_tenants: Counter[str] = Counter()
    for event in events:
        vault = event["vault"]
        assert vault["tenant_id"] == tenant_of[vault["subscription_id"].lower()], vault
        seen_tenants[vault["tenant_id"]] += 1
    assert set(seen_tenants) == {t0, t1}
    missing, counts, invented = judge(events, truth, cutoff=cutoff)
    assert missing == set()
    assert [eid for eid, n in counts.items() if n > 1] == []
    assert invented == []

    # Each vault was read by its own tenant's principal and by no other.
    principal_of = {t0: CLIENT_A, t1: f"{CLIENT_B}@{t1}"}
    by_vault: dict[str, set[str]] = {}
    for row in reads["vaults"]:
        by_vault.setdefault(row["subscription_id"].lower(), set()).add(row["principal"])
    assert set(by_vault) == set(tenant_of)
    for sub, principals in by_vault.items():
        assert principals == {principal_of[tenant_of[sub]]}, (sub, principals)
    # No read of one tenant's subscription was refused for the other's token.
    stderr = (tmp_path / "stderr.log").read_text()
    assert "InvalidAuthenticationTokenTenant" not in stderr
    assert secret not in stderr

    # The tenant reads (the subscription lists) were budgeted per principal.
    requests = _arm_requests(scrape)
    assert requests[("tenant:contoso", "subscriptions_list")] >= 1
    assert requests[("tenant:fabrikam", "subscriptions_list")] >= 1
    assert requests[("tenant", "subscriptions_list")] == 0
    outside = {(r["principal"], r["scope"]) for r in reads["outside_vaults"]}
    assert (CLIENT_A, "tenant") in outside
    assert (f"{CLIENT_B}@{t1}", "tenant") in outside


async def test_one_credential_sees_a_lighthouse_estate(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    ca_pem_path: str,
) -> None:
    """With Azure Lighthouse the managing tenant's one credential lists and reads every
    customer's subscription; each event's tenant id is the customer's (the subscription's home
    tenant), not the managing one."""
    settings = EmulatorSettings(
        tenants=3,
        lighthouse=True,
        world=WorldSettings(seed=43, subscriptions=3, vaults_per_subscription=2),
    )
    async with running_emulator(settings, ssl_context=server_ssl_context) as emu:
        config = _config(tmp_path, emu, ca_pem_path, [_entry("msp", emu.tenant_ids[0], CLIENT_A)])
        env = {"MSP_SECRET": emu.arm.settings.client_secret}
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log", env=env)
        connector = aiohttp.TCPConnector(ssl=client_ssl_context)
        async with aiohttp.ClientSession(connector=connector) as http:
            tenant_of = await _tenant_of(http, emu)
            try:
                daemon.start()
                events, _, _ = await _wait_terminal(daemon, client_ssl_context, emu)
                assert await daemon.stop() == 0
            finally:
                daemon.kill_if_running()
    assert {e["vault"]["tenant_id"] for e in events} == set(emu.tenant_ids[:3])
    for event in events:
        vault = event["vault"]
        assert vault["tenant_id"] == tenant_of[vault["subscription_id"].lower()]


async def test_one_credential_failing_stops_no_other_tenant(
    tmp_path: Path,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    ca_pem_path: str,
) -> None:
    """A customer's credential that cannot sign in (a wrong secret) is logged, naming its
    entry and not the secret; the other tenant's vaults are watched and their events emitted."""
    settings = EmulatorSettings(
        tenants=2, world=WorldSettings(seed=47, subscriptions=2, vaults_per_subscription=2)
    )
    async with running_emulator(settings, ssl_context=server_ssl_context) as emu:
        t0, t1 = emu.tenant_ids[:2]
        credentials = [_entry("contoso", t0, CLIENT_A), _entry("fabrikam", t1, CLIENT_B)]
        config = _config(tmp_path, emu, ca_pem_path, credentials)
        wrong = "not-the-secret-0123456789"
        env = {"CONTOSO_SECRET": emu.arm.settings.client_secret, "FABRIKAM_SECRET": wrong}
        daemon = Daemon(config, tmp_path / "events.jsonl", tmp_path / "stderr.log", env=env)
        try:
            daemon.start()
            with anyio.fail_after(30):
                while not [e for e in daemon.read_events() if e["vault"]["tenant_id"] == t0]:
                    assert daemon.process is not None
                    assert daemon.process.poll() is None, daemon.read_logs()[-3:]
                    await anyio.sleep(0.25)
            assert await daemon.stop() == 0
        finally:
            daemon.kill_if_running()
    logs = daemon.read_logs()
    (failed,) = [r for r in logs if r.get("event") == "principal.sign_in_failed"]
    assert failed["principal"] == "fabrikam"
    assert "AADSTS7000215" in failed["error"]
    assert {e["vault"]["tenant_id"] for e in daemon.read_events()} == {t0}
    assert wrong not in (tmp_path / "stderr.log").read_text()
