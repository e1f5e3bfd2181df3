"""A vault's job list that ARM answers with the bytes of its last quiet answer: not decoded.

The steady poll of an idle Recovery Services vault lists the same jobs as last time, each
ended with the status the poll step knows (`core.jobs.KnownEnded`): ARM sends the same bytes,
and decoding and parsing them (`orjson`, then each item against the known table) yields no
job at all. `QuietPages` remembers, per vault, the SHA-1 of such an answer (one page of at
least one item, no nextLink, no job parsed, no item skipped) and the `KnownEnded` it was parsed
with (a page of no items is not kept: it costs nothing to decode). The next
listing whose first answer has the same digest and is parsed with an equal `KnownEnded`
would yield no job either, so that answer reads as an empty page, undecoded.

An equal `KnownEnded` is the same knowledge: the poll step passes `JobTable.ended_status`, a
bound method of an immutable table (replaced, never changed, when a poll changes something),
and bound methods are equal only when bound to the same object. A listing with any other
outcome (a job parsed, an item skipped, a second page, an error) forgets the vault's entry.

Each entry is ~250 bytes, and keeps the vault's known table alive; the scheduler forgets a
vault's entry when it stops watching the vault (`QuietPages.forget`, through
`ArmClient.forget_vault`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import anyio
from yarl import URL

from monitor.arm_answers import Reply, decode_reply
from monitor.arm_http import Answer
from monitor.core.jobs import JobsPage, KnownEnded

__all__ = ["QuietListing", "QuietPages"]

_EMPTY_PAGE: dict[str, object] = {"value": []}
"""What a quiet answer reads as: no items, no nextLink (never changed by the parsers)."""


class _Quiet(NamedTuple):
    digest: bytes
    known: KnownEnded


def body_digest(body: bytes) -> bytes:
    """The SHA-1 of an answer's body: which bytes it was (not a security check: an answer
    that collides with the last one would have to be built for it)."""
    return hashlib.sha1(body, usedforsecurity=False).digest()


class QuietPages:
    """The last quiet answer of each vault's job list, by vault key (see the module)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, _Quiet] = {}

    def __len__(self) -> int:
        return len(self._last)

    def listing(
        self, vault_key: str, known: KnownEnded, deep_json: anyio.CapacityLimiter
    ) -> QuietListing:
        """One listing of `vault_key` parsed with `known`: its `decode` reads the answers, its
        `finished` records how the listing went. The vault's entry is taken out until then."""
        return QuietListing(self, vault_key, known, self._last.pop(vault_key, None), deep_json)

    def forget(self, vault_key: str) -> None:
        """The vault is no longer watched: its entry goes (nothing if it has none)."""
        self._last.pop(vault_key, None)

    def remember(self, vault_key: str, quiet: _Quiet) -> None:
        """`quiet` is the vault's last quiet answer (`QuietListing.finished`)."""
        self._last[vault_key] = quiet


class QuietListing:
    """One listing's answers, read as `QuietPages` says (made by `QuietPages.listing`)."""

    __slots__ = (
        "_body",
        "_book",
        "_deep_json",
        "_digest",
        "_known",
        "_last",
        "_vault_key",
        "quiet",
    )

    def __init__(
        self,
        book: QuietPages,
        vault_key: str,
        known: KnownEnded,
        last: _Quiet | None,
        deep_json: anyio.CapacityLimiter,
    ) -> None:
        self._book, self._vault_key, self._known = book, vault_key, known
        self._last, self._deep_json = last, deep_json
        self._body: bytes | None = None  # the first answer's; its digest is taken when needed
        self._digest: bytes | None = None
        self.quiet = False  # the first answer was the vault's last quiet one (read as empty)

    async def decode(self, url: URL, answer: Answer) -> Reply:
        """`arm_answers.decode_reply` of a 2xx answer; the listing's first answer, when it is
        the vault's last quiet one parsed with an equal `known`, reads as an empty page."""
        if self._body is not None:  # a later page
            return await decode_reply(url, answer, self._deep_json)
        self._body = body = answer.body
        last = self._last
        if last is None:
            return await decode_reply(url, answer, self._deep_json)
        self._digest = digest = body_digest(body)
        if last.digest == digest and last.known == self._known:
            self.quiet = True
            headers = answer.headers
            return Reply(
                payload=_EMPTY_PAGE,
                url=url,
                status=answer.status,
                request_id=headers.get("x-ms-request-id"),
                correlation_id=headers.get("x-ms-correlation-request-id"),
                size=len(body),
            )
        return await decode_reply(url, answer, self._deep_json)

    def finished(self, pages: Sequence[JobsPage]) -> None:
        """The listing read `pages`: one page that left every job out and skipped no item is
        the vault's quiet answer from now on; anything else leaves the vault without one. A
        page with no item at all is not kept: it decodes at no cost."""
        if self._body is None or len(pages) != 1:
            return
        page = pages[0]
        if self.quiet or (
            page.unchanged and not page.jobs and not page.skipped and page.next_link is None
        ):
            digest = self._digest or body_digest(self._body)
            self._book.remember(self._vault_key, _Quiet(digest, self._known))
