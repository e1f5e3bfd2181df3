"""ArmClient's caps on pages, bytes and nesting, against a hostile loopback ARM over TLS."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from monitor.arm import ArmClient
from monitor.arm_http import make_ssl_context, open_session
from monitor.checkpoints import MemoryCheckpointStore
from monitor.clock import SystemClock
from monitor.config import AzureSettings, BudgetSettings
from monitor.config_parse import parse_settings
from monitor.core.vaults import VaultRef, parse_vault_id
from monitor.credentials import StaticTokenCredential, TokenCache
from monitor.errors import ArmLimitExceeded, ArmTransportError
from monitor.pacing import BudgetBook
from monitor.scheduler import PollScheduler
from tests.hostile_arm import (
    TOKEN,
    HostileArm,
    Pager,
    deep_page,
    endless,
    huge,
    job_item,
    listing,
    running_hostile_arm,
    vault_id,
)
from tests.test_credentials import SCOPE
from tests.test_scheduler import ListSink, one_sink, run_until

MIB = 1024 * 1024


@asynccontextmanager
async def hostile(
    pagers: dict[str, Pager], server_ssl_context: ssl.SSLContext
) -> AsyncIterator[HostileArm]:
    async with running_hostile_arm(pagers, ssl_context=server_ssl_context) as arm:
        yield arm


@asynccontextmanager
async def client(arm: HostileArm, ca_pem_path: str, **azure: Any) -> AsyncIterator[ArmClient]:
    """An ArmClient on `arm`, trusting the test CA, with `azure` overriding the settings."""
    settings = AzureSettings(
        arm_endpoint=arm.url + "/",
        credential="static",
        static_token=TOKEN,
        ca_bundle=Path(ca_pem_path),
        request_timeout_s=10.0,
        **azure,
    )
    clock = SystemClock()
    async with open_session(settings, make_ssl_context(settings.ca_bundle)) as session:
        yield ArmClient(
            session=session,
            tokens=TokenCache(StaticTokenCredential(TOKEN), SCOPE, clock),
            azure=settings,
            budgets=BudgetBook(BudgetSettings(), clock=clock, rng=random.Random(1)),
            clock=clock,
            rng=random.Random(2),
        )


def vault(name: str) -> VaultRef:
    return parse_vault_id(vault_id(name), location="westeurope")


def last_day() -> tuple[datetime, datetime]:
    end = datetime.now(UTC).replace(microsecond=0)
    return end - timedelta(days=1), end


class TestPageCap:
    async def test_a_next_link_that_changes_on_every_page_stops_at_the_cap(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """An endless nextLink fails after exactly max_list_pages requests, naming the cap."""
        async with (
            hostile({"endless": endless()}, server_ssl_context) as arm,
            client(arm, ca_pem_path, max_list_pages=7) as arm_client,
        ):
            with anyio.fail_after(20), pytest.raises(ArmLimitExceeded) as caught:
                await arm_client.list_jobs(vault("endless"), *last_day())
        assert arm.requests["endless"] == 7
        assert caught.value.cap == "azure.max_list_pages"
        assert caught.value.limit == 7
        assert "7 pages read, the cap azure.max_list_pages" in str(caught.value)
        assert isinstance(caught.value, ArmTransportError), "retried with backoff, like a 5xx"

    async def test_the_vault_poll_fails_while_another_vault_is_polled_and_emits(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """The scheduler logs poll.failed for the endless vault; the other vault still emits."""
        failed = "0000000f-0000-4000-8000-000000000000"
        pagers = {
            "endless": endless(),
            "good": listing(lambda name: [job_item(name, failed, status="Failed")]),
        }
        async with hostile(pagers, server_ssl_context) as arm:
            settings = parse_settings(
                {
                    "azure": {
                        "arm_endpoint": arm.url + "/",
                        "credential": "static",
                        "static_token": TOKEN,
                        "ca_bundle": ca_pem_path,
                        "max_list_pages": 3,
                    },
                    "discovery": {"vaults": [vault_id("endless"), vault_id("good")]},
                    "poll": {"active_interval_s": 1, "idle_interval_s": 1},
                }
            )
            clock = SystemClock()
            async with open_session(
                settings.azure, make_ssl_context(settings.azure.ca_bundle)
            ) as session:
                budgets = BudgetBook(settings.budget, clock=clock, rng=random.Random(1))
                source = ArmClient(
                    session=session,
                    tokens=TokenCache(StaticTokenCredential(TOKEN), SCOPE, clock),
                    azure=settings.azure,
                    budgets=budgets,
                    clock=clock,
                    rng=random.Random(2),
                )
                sink, store = ListSink(), MemoryCheckpointStore()
                scheduler = PollScheduler(
                    source=source,
                    rates=budgets,
                    store=store,
                    delivery=one_sink(store, sink, settings),
                    clock=clock,
                    settings=settings,
                    rng=random.Random(3),
                )

                def poll_failures() -> list[MutableMapping[str, Any]]:
                    return [e for e in logs if e["event"] == "poll.failed"]

                with capture_logs() as logs:
                    await run_until(
                        scheduler,
                        lambda: sink.events and poll_failures() and arm.requests["good"] >= 2,
                        timeout_s=20,
                    )
        assert sink.statuses(failed) == [(None, "Failed")]
        (failure, *_) = poll_failures()
        assert failure["vault"] == "endless"
        assert "3 pages read, the cap azure.max_list_pages" in failure["error"]
        assert {e["vault"] for e in poll_failures()} == {"endless"}
        assert all(e["job"]["id"] == failed for e in sink.events)


class TestResponseCap:
    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
    async def test_a_body_past_the_cap_is_not_read_to_its_end(
        self, declared: bool, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """A 64 MiB answer against a 256 KiB cap fails naming it; most of it is never sent."""
        total = 64 * MIB
        async with (
            hostile({"huge": huge(total, declared=declared)}, server_ssl_context) as arm,
            client(arm, ca_pem_path, max_response_bytes=256 * 1024) as arm_client,
        ):
            with anyio.fail_after(20), pytest.raises(ArmLimitExceeded) as caught:
                await arm_client.list_jobs(vault("huge"), *last_day())
            with anyio.fail_after(20):
                await arm.done["huge"].wait()
        error = caught.value
        assert error.cap == "azure.max_response_bytes"
        assert error.status == 200
        assert "the cap azure.max_response_bytes (262144 bytes)" in str(error)
        if declared:
            assert f"its Content-Length is {total} bytes" in str(error)
        else:
            assert "bytes read so far" in str(error)
        # The client stopped reading and closed the connection: what the server could write is
        # what the socket buffers and the client's read buffer took, a few MiB at most.
        assert arm.sent["huge"] < total // 4

    async def test_a_compressed_body_is_capped_by_its_decoded_size(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """A small gzip body that inflates to 32 MiB fails at the 256 KiB cap while inflating."""
        pagers = {"bomb": huge(32 * MIB, declared=True, compressed=True)}
        async with (
            hostile(pagers, server_ssl_context) as arm,
            client(arm, ca_pem_path, max_response_bytes=256 * 1024) as arm_client,
        ):
            with anyio.fail_after(20), pytest.raises(ArmLimitExceeded) as caught:
                await arm_client.list_jobs(vault("bomb"), *last_day())
        assert caught.value.cap == "azure.max_response_bytes"
        assert "bytes read so far" in str(caught.value)


class TestListBytesCap:
    async def test_the_list_stops_when_its_pages_pass_the_cap(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """300 KB pages against a 1 MiB list cap: the 4th page is refused, naming the cap."""
        async with (
            hostile({"padded": endless(pad_bytes=300_000)}, server_ssl_context) as arm,
            client(
                arm, ca_pem_path, max_list_bytes=MIB, max_response_bytes=512 * 1024
            ) as arm_client,
        ):
            with anyio.fail_after(20), pytest.raises(ArmLimitExceeded) as caught:
                await arm_client.list_jobs(vault("padded"), *last_day())
        error = caught.value
        assert arm.requests["padded"] == 4
        assert error.cap == "azure.max_list_bytes"
        assert error.limit == MIB
        assert "page 4" in str(error)
        assert "takes the list past the cap azure.max_list_bytes (1048576 bytes" in str(error)
        assert "over 3 pages before it" in str(error)

    async def test_pages_within_both_caps_are_all_read(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """Pages that fit the caps are followed until the page cap, as without caps."""
        async with (
            hostile({"padded": endless(pad_bytes=100_000)}, server_ssl_context) as arm,
            client(arm, ca_pem_path, max_list_bytes=MIB, max_list_pages=5) as arm_client,
        ):
            with anyio.fail_after(20), pytest.raises(ArmLimitExceeded) as caught:
                await arm_client.list_jobs(vault("padded"), *last_day())
        assert caught.value.cap == "azure.max_list_pages"
        assert arm.requests["padded"] == 5


class TestDeepJson:
    async def test_a_100000_deep_item_leaves_the_valid_jobs_of_its_page(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """The page decodes: the jobs parse, the deep value is null, each is logged by path."""
        async with (
            hostile({"deep": deep_page(100_000)}, server_ssl_context) as arm,
            client(arm, ca_pem_path) as arm_client,
        ):
            with capture_logs() as logs, anyio.fail_after(20):
                jobs = await arm_client.list_jobs(vault("deep"), *last_day())
        assert [j.name[:8] for j in jobs] == ["00000001", "00000002", "00000004"]
        bag = jobs[1].properties["extendedInfo"]
        assert isinstance(bag, dict)
        (too_deep,) = [e for e in logs if e["event"] == "arm.json_too_deep"]
        assert too_deep["replaced"] == 2
        first, second = too_deep["paths"]
        assert first.startswith("value[1].properties.extendedInfo.propertyBag.x.x.")
        assert second.startswith("value[2].properties.x.x.")
        assert "/vaults/deep/backupJobs" in too_deep["url"]
        (skipped,) = [e for e in logs if e["event"] == "arm.job_skipped"]
        assert skipped["path"] == "value[2].properties.status"
        assert skipped["vault"] == vault("deep").id
