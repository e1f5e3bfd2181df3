"""A vault's job list answered with the bytes of its last quiet answer is not decoded again
(`monitor.arm_quiet_pages`), and reads as a full parse reads it: the property over any run of
answers and known tables, and ArmClient against a loopback ARM over TLS."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from anyio import CapacityLimiter
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from monitor.arm_http import Answer
from monitor.arm_quiet_pages import QuietPages
from monitor.core.diff import JobSnapshot, JobTable
from monitor.core.jobs import JobKey, JobsPage, JobStatus, listed_jobs, parse_jobs_page
from monitor.core.vaults import parse_vault_id
from tests.core import payloads as p
from tests.hostile_arm import HostileArm, job_item
from tests.test_arm_limits import client, hostile, last_day, vault

VAULT = parse_vault_id(p.VAULT_ID)
URL_ = URL("https://management.azure.com/x")
NAMES = [f"5afe0000-0000-4000-8000-00000000000{i}" for i in range(4)]
STATUSES = ["Completed", "Failed", "InProgress"]
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def answer(body: bytes) -> Answer:
    return Answer(200, NO_HEADERS, body, None)


def reparse_as(full: JobsPage) -> Callable[[int], JobsPage]:
    return lambda _: full


def job_key(name: str) -> JobKey:
    return JobKey(vault_key=VAULT.key, job_name=name.lower())


_bodies = st.lists(
    st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(STATUSES)), max_size=4),
    min_size=1,
    max_size=3,
)
_tables = st.lists(
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from(STATUSES), max_size=4),
    min_size=1,
    max_size=3,
)


class TestQuietListing:
    @settings(max_examples=300)
    @given(
        _bodies,
        _tables,
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=12),
    )
    async def test_a_run_of_listings_reads_as_full_parses_read(
        self,
        bodies: list[list[tuple[str, str]]],
        tables: list[dict[str, str]],
        steps: list[tuple[int, int]],
    ) -> None:
        """Whatever answers repeat and whatever tables they are parsed with, each listing
        through `QuietPages` lists the jobs a full decode and parse lists."""
        raw = [
            orjson.dumps(p.page(*(p.job_item(n, status=s) for n, s in items))) for items in bodies
        ]
        known = [
            JobTable(
                JobSnapshot(key=job_key(name), status=JobStatus.of(status), start_at=None)
                for name, status in table.items()
            ).ended_status
            for table in tables
        ]
        book = QuietPages()
        for body_index, table_index in steps:
            body = raw[body_index % len(raw)]
            ended = known[table_index % len(known)]
            listing = book.listing(VAULT.key, ended, CapacityLimiter(1))
            reply = await listing.decode(URL_, answer(body))
            page = parse_jobs_page(reply.payload, VAULT, ended)
            listing.finished([page])
            full = parse_jobs_page(orjson.loads(body), VAULT)
            fast = parse_jobs_page(orjson.loads(body), VAULT, ended)
            got, want = (listed_jobs([one], reparse_as(full)) for one in (page, fast))
            assert got == want
            assert reply.size == len(body)

    async def test_only_a_repeat_with_the_same_table_is_left_undecoded(self) -> None:
        done = p.job_item(NAMES[0], status="Completed")
        body = orjson.dumps(p.page(done))
        table = JobTable([JobSnapshot(key=job_key(NAMES[0]), status=JobStatus.of("Completed"))])
        book = QuietPages()
        seen = []
        for ended in (table.ended_status, table.ended_status, JobTable().ended_status):
            listing = book.listing(VAULT.key, ended, CapacityLimiter(1))
            reply = await listing.decode(URL_, answer(body))
            page = parse_jobs_page(reply.payload, VAULT, ended)
            listing.finished([page])
            seen.append((listing.quiet, [j.name for j in page.jobs]))
        # The first answer is decoded (nothing to compare with); the second repeats it with
        # the same table; the third comes with a table that does not know the job.
        assert seen == [(False, []), (True, []), (False, [NAMES[0]])]
        assert len(book) == 0  # the third listing parsed a job: the vault has no quiet answer

    async def test_a_forgotten_vault_has_its_next_answer_decoded(self) -> None:
        """`forget` (the vault is no longer watched) drops its entry: the same answer is
        decoded again, then kept again; forgetting a vault with no entry does nothing."""
        body = orjson.dumps(p.page(p.job_item(NAMES[0], status="Completed")))
        table = JobTable([JobSnapshot(key=job_key(NAMES[0]), status=JobStatus.of("Completed"))])
        book = QuietPages()
        seen = []
        for forget_first in (False, False, True, False):
            if forget_first:
                book.forget(VAULT.key)
                assert len(book) == 0
            listing = book.listing(VAULT.key, table.ended_status, CapacityLimiter(1))
            reply = await listing.decode(URL_, answer(body))
            listing.finished([parse_jobs_page(reply.payload, VAULT, table.ended_status)])
            seen.append(listing.quiet)
        assert seen == [False, True, False, True]
        book.forget("/subscriptions/other")
        assert len(book) == 1

    async def test_an_answer_of_no_items_is_not_kept(self) -> None:
        table = JobTable()
        book = QuietPages()
        listing = book.listing(VAULT.key, table.ended_status, CapacityLimiter(1))
        reply = await listing.decode(URL_, answer(orjson.dumps(p.page())))
        listing.finished([parse_jobs_page(reply.payload, VAULT, table.ended_status)])
        assert len(book) == 0

    async def test_a_listing_of_two_pages_is_never_quiet(self) -> None:
        table = JobTable()
        book = QuietPages()
        body = orjson.dumps(p.page())
        for _ in range(2):
            listing = book.listing(VAULT.key, table.ended_status, CapacityLimiter(1))
            first = await listing.decode(URL_, answer(body))
            second = await listing.decode(URL_, answer(body))
            pages = [parse_jobs_page(r.payload, VAULT) for r in (first, second)]
            listing.finished(pages)
            assert not listing.quiet
        assert len(book) == 0


# ---------------------------------------------------------------------------- over TLS


class TestArmClientQuietAnswers:
    async def test_a_repeated_answer_lists_nothing_until_the_vault_changes(
        self, server_ssl_context: ssl.SSLContext, ca_pem_path: str
    ) -> None:
        """ArmClient against a loopback ARM: the steady poll's repeated answer is not decoded,
        a change in the vault's list is seen on the next poll, and so is a job the caller's
        table no longer knows although ARM's bytes are the same."""
        items: list[Any] = [
            job_item("quiet", f"0000000{i}-0000-4000-8000-000000000000", age_s=600 + i)
            for i in range(3)
        ]

        async def pager(arm: HostileArm, request: web.Request, page: int) -> web.StreamResponse:
            return web.Response(
                body=orjson.dumps({"value": items}), content_type="application/json"
            )

        start, end = last_day()
        async with (
            hostile({"quiet": pager}, server_ssl_context) as arm,
            client(arm, ca_pem_path) as arm_client,
        ):
            first = await arm_client.list_jobs(vault("quiet"), start, end)
            table = JobTable(JobSnapshot.of(job) for job in first)
            polls = [
                await arm_client.list_jobs(vault("quiet"), start, end, known=table.ended_status)
                for _ in range(3)
            ]
            assert polls == [[], [], []]
            assert len(arm_client._quiet_pages) == 1  # what the polls left
            arm_client.forget_vault(vault("quiet").key)  # as the scheduler does on a drop
            assert len(arm_client._quiet_pages) == 0
            items[1] = {**items[1], "properties": {**items[1]["properties"], "status": "Failed"}}
            changed = await arm_client.list_jobs(
                vault("quiet"), start, end, known=table.ended_status
            )
            assert [(j.name, str(j.status)) for j in changed] == [(first[1].name, "Failed")]
            assert len(arm_client._quiet_pages) == 0
            table = table.replaced(JobSnapshot.of(job) for job in changed)
            assert (
                await arm_client.list_jobs(vault("quiet"), start, end, known=table.ended_status)
                == []
            )
            forgot = table.replaced((), [first[0].key])
            again = await arm_client.list_jobs(
                vault("quiet"), start, end, known=forgot.ended_status
            )
            assert [j.name for j in again] == [first[0].name]
            assert arm.requests["quiet"] == 7
