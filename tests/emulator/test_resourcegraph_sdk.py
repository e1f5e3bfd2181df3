"""The emulator's Resource Graph endpoint as Microsoft's own Resource Graph SDK sees it.

`azure-mgmt-resourcegraph` (api-version 2021-03-01 by default) sends the monitor's query, pages
through every row with `$skipToken`, and deserialises `resultTruncated` and the rows; its errors
come back as `HttpResponseError`s with ARG's codes. Pointed at the emulator as
tests/emulator/test_dataprotection_sdk.py points the Data Protection SDK: HTTPS with the test CA,
azure-identity's ClientSecretCredential against the emulator's token endpoint.
"""

from __future__ import annotations

import dataclasses
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import anyio
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resourcegraph.aio import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, ResultFormat

from monitor.emulator import (
    PROFILES,
    EmulatorSettings,
    ThrottleSettings,
    WorldSettings,
    running_emulator,
)
from monitor.emulator.backup_vaults import job_json
from monitor.emulator.clock import ManualClock
from monitor.emulator.resource_graph import ResourceGraphSettings
from tests.emulator.sdk import emulator_credential

APP_CLIENT_ID = "resourcegraph-fidelity-app"
TOP = 6

SETTINGS = EmulatorSettings(
    world=WorldSettings(
        seed=2,
        subscriptions=2,
        vaults_per_subscription=1,
        backup_vaults_per_subscription=2,
        backup_vault_history_jobs=5,
        profile=dataclasses.replace(PROFILES["demo"], history_s=360.0),
    ),
    throttle=ThrottleSettings(reads_bucket=100_000, reads_per_s=10_000.0),
    resource_graph=ResourceGraphSettings(quota=1000),
)


def monitor_query(since: datetime) -> str:
    return f"""RecoveryServicesResources
        | where type =~ 'microsoft.dataprotection/backupvaults/backupjobs'
        | where todatetime(properties.startTime) >= datetime({since:%Y-%m-%dT%H:%M:%S.%f}Z)
        | project id, name, type, properties
        | order by id asc"""


@pytest.mark.parametrize("api_version", ["2021-03-01", "2022-10-01", "2024-04-01"])
async def test_sdk_pages_through_every_backup_vault_job(
    server_ssl_context: ssl.SSLContext, ca_pem_path: str, api_version: str
) -> None:
    """The official async client reads every page; the rows equal the world's jobs."""
    clock = ManualClock(datetime.now(UTC))
    async with (
        running_emulator(SETTINGS, ssl_context=server_ssl_context, clock=clock) as emu,
        emulator_credential(emu, APP_CLIENT_ID, ca_pem_path) as credential,
        ResourceGraphClient(
            credential, base_url=emu.url, connection_verify=ca_pem_path, api_version=api_version
        ) as client,
    ):
        world = emu.world
        sub = next(iter(world.subscriptions))
        since = clock.utcnow() - timedelta(days=14)
        expected = {
            job.name: job
            for vault in world.backup_vaults.by_subscription[sub.lower()]
            for job in vault.jobs
        }
        names: list[str] = []
        token: str | None = None
        pages = 0
        with anyio.fail_after(20):
            while True:
                response = await client.resources(
                    QueryRequest(
                        subscriptions=[sub],
                        query=monitor_query(since),
                        options=QueryRequestOptions(
                            top=TOP, skip_token=token, result_format=ResultFormat.OBJECT_ARRAY
                        ),
                    )
                )
                pages += 1
                assert response.result_truncated == "false"
                assert response.total_records == len(expected)
                # The SDK types `data` as a mapping (JSON), but an objectArray is a list.
                rows = cast(list[dict[str, Any]], response.data)
                assert isinstance(rows, list)
                assert response.count == len(rows) <= TOP
                for row in rows:
                    job = expected[row["name"]]
                    assert row["type"] == "microsoft.dataprotection/backupvaults/backupjobs"
                    assert (
                        row["properties"]
                        == job_json(job, clock.utcnow(), details=False)["properties"]
                    )
                    names.append(row["name"])
                token = response.skip_token
                if token is None:
                    break
        assert sorted(names) == sorted(expected)
        assert len(names) == len(set(names))
        assert pages == -(-len(expected) // TOP)
        with pytest.raises(HttpResponseError) as caught:
            await client.resources(QueryRequest(query="Resources | take 5"))
        assert caught.value.status_code == 400
        assert caught.value.error is not None
        assert caught.value.error.code == "BadRequest"
