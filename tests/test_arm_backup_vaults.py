"""ArmClient on Backup vaults (Microsoft.DataProtection), over TLS against the emulator.

The vault list, a vault read, the whole unfiltered job list across pages, a window of it cut on
the client, and single job reads with their errors and sub-tasks; the api-version each call
sends; a bad item skipped without failing the list.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from monitor.core.dataprotection import job_status
from monitor.core.vaults import VaultKind, parse_vault_id
from monitor.emulator import PROFILES, EmulatorSettings, WorldSettings
from monitor.emulator.backup_vaults import BackupVault
from tests.test_arm import PAGE_SIZE, Harness, harness

SETTINGS = EmulatorSettings(
    world=WorldSettings(
        seed=8,
        subscriptions=1,
        vaults_per_subscription=2,
        backup_vaults_per_subscription=3,
        profile=dataclasses.replace(PROFILES["demo"], history_s=900.0),
    ),
    page_size=PAGE_SIZE,
    vault_page_size=2,
)


@pytest.fixture(name="h")
async def _h(ca_pem_path: str, server_ssl_context: ssl.SSLContext) -> AsyncIterator[Harness]:
    async with harness(ca_pem_path, server_ssl_context, settings=SETTINGS) as h:
        yield h


def busiest(h: Harness) -> BackupVault:
    return max(h.emu.world.backup_vaults.vaults.values(), key=lambda v: len(v.jobs))


def api_versions(h: Harness) -> set[str]:
    return {parse_qs(urlsplit(url).query)["api-version"][0] for url, _ in h.sent}


async def test_list_vaults_of_each_kind(h: Harness) -> None:
    """`list_vaults(sub, BACKUP_VAULT)` pages through the Backup vaults alone, with their kind
    and location, on the Data Protection api-version; the default kind lists the others."""
    sub = next(iter(h.emu.world.subscriptions.values()))
    with anyio.fail_after(5):
        backup = await h.client.list_vaults(sub.id, VaultKind.BACKUP_VAULT)
        recovery = await h.client.list_vaults(sub.id)
    world = h.emu.world.backup_vaults.by_subscription[sub.id.lower()]
    assert {(v.key, v.location, v.kind) for v in backup} == {
        (v.key, v.location, VaultKind.BACKUP_VAULT) for v in world
    }
    assert {v.kind for v in recovery} == {VaultKind.RECOVERY_SERVICES}
    assert len(recovery) == 2
    assert "2025-09-01" in api_versions(h)


async def test_get_backup_vault(h: Harness) -> None:
    """A Backup vault read by its id (any casing) learns its location and keeps its kind."""
    world = busiest(h)
    with anyio.fail_after(5):
        vault = await h.client.get_vault(world.id.replace("backupVaults", "BACKUPVAULTS"))
    assert (vault.key, vault.location, vault.kind) == (
        world.key,
        world.location,
        VaultKind.BACKUP_VAULT,
    )


async def test_every_job_of_a_backup_vault_across_pages(h: Harness) -> None:
    """`list_all_jobs` reads the whole history, page after page; `list_jobs` cuts it to the
    window on the client; `get_job` reads one job of either vocabulary, with its details."""
    world = busiest(h)
    vault = parse_vault_id(world.id)
    assert len(world.jobs) > PAGE_SIZE * 2
    with anyio.fail_after(10):
        every = await h.client.list_all_jobs(vault)
    assert [j.name for j in every] == [j.name for j in world.jobs]
    for got, want in zip(every, world.jobs, strict=True):
        assert got.status == job_status(want.status)
        assert got.datasource_type == want.instance.datasource.type
        assert got.backup_instance == want.instance.friendly_name
    pages = len(h.sent)
    assert pages == -(-len(world.jobs) // PAGE_SIZE)
    middle = world.jobs[len(world.jobs) // 2].start_at
    with anyio.fail_after(10):
        windowed = await h.client.list_jobs(vault, middle, middle + timedelta(hours=1))
    assert [j.name for j in windowed] == [j.name for j in world.jobs if j.start_at >= middle]
    assert len(h.sent) == 2 * pages  # the window costs the whole history too
    failed = next(
        j for v in h.emu.world.backup_vaults.vaults.values() for j in v.jobs if j.status == "Failed"
    )
    with anyio.fail_after(5):
        details = await h.client.get_job(parse_vault_id(failed.vault.id), failed.name)
    assert details.job.name == failed.name
    assert details.job.status == job_status(failed.status)
    assert details.errors
    assert details.errors[0].code
    assert api_versions(h) == {"2025-09-01"}


async def test_list_all_jobs_refuses_a_recovery_services_vault(h: Harness) -> None:
    """A Recovery Services list needs its window: asking for everything is a caller's bug."""
    world = next(v for v in h.emu.world.vaults.values() if not v.deleted)
    with pytest.raises(ValueError, match="not a Backup vault"):
        await h.client.list_all_jobs(parse_vault_id(world.id))
    assert h.sent == []
