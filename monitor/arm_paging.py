"""Reading an ARM list call: following nextLinks within azure.max_list_pages and max_list_bytes."""

# Rules:
# - A nextLink is followed exactly as ARM wrote it (a relative one resolves on the page it came
#   from), and only through the `get` it is given, which checks its origin before sending.
# - A list stops, with ArmLimitExceeded naming the setting, before it would read more pages or
#   bytes than the caps allow; a nextLink that repeats an earlier page stops it too.
# - An item a page parser skipped is logged, never fatal.

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import structlog
from yarl import URL

from monitor.arm_answers import Reply, shape_error
from monitor.arm_http import BodyCap
from monitor.config import AzureSettings
from monitor.errors import ArmLimitExceeded, ArmTransportError, ParseError

__all__ = ["GetPage", "Page", "read_pages"]

log = structlog.get_logger(__name__)


class Page(Protocol):
    """What a page parser returns: the items it skipped and the page's nextLink."""

    @property
    def skipped(self) -> tuple[ParseError, ...]:
        """The items skipped as malformed, each a ParseError naming its JSON path."""
        ...

    @property
    def next_link(self) -> str | None:
        """The page's nextLink verbatim, or None on the last page."""
        ...


P = TypeVar("P", bound=Page)

GetPage = Callable[[URL, URL | None, BodyCap], Awaitable[Reply]]
"""GET one page: `(url, referrer, cap)`, `referrer` being the page whose nextLink it is."""


async def read_pages(
    get: GetPage,
    url: URL,
    parse: Callable[[object], P],
    *,
    azure: AzureSettings,
    response_cap: BodyCap,
    skipped_event: str,
    context: Mapping[str, str],
) -> list[P]:
    """Every page from `url` on, parsed; follows nextLink until there is none.

    Each item a parser skipped is logged as `skipped_event` with `context`, the page number
    and the item's JSON path. Each page may have `response_cap` bytes, or what is left of
    `azure.max_list_bytes` when that is less.

    Raises:
        ArmLimitExceeded: the call would read more than `azure.max_list_pages` pages or
            `azure.max_list_bytes` bytes (nothing more is requested or read).
        ArmTransportError: a page is not what `parse` reads, or a nextLink repeats a page.
    """
    first = url
    pages: list[P] = []
    read = 0
    seen = {str(url)}
    referrer: URL | None = None
    while True:
        body_cap = _list_cap(azure, response_cap, first, read, pages)
        reply = await get(url, referrer, body_cap)
        read += reply.size
        try:
            page = parse(reply.payload)
        except ParseError as exc:
            raise shape_error(reply, "a list page", exc) from exc
        for skipped in page.skipped:
            log.warning(
                skipped_event,
                **context,
                page=len(pages),
                path=skipped.path,
                problem=skipped.problem,
            )
        pages.append(page)
        if not page.next_link:
            return pages
        for cap, limit, used, what in (
            ("max_list_pages", azure.max_list_pages, len(pages), f"{len(pages)} pages"),
            ("max_list_bytes", azure.max_list_bytes, read, f"{read} bytes"),
        ):
            if used >= limit:
                over = "" if cap == "max_list_pages" else f" over {len(pages)} pages"
                raise ArmLimitExceeded(
                    f"stopped paging GET {first}: {what} read{over}, the cap azure.{cap} "
                    f"(ARM still sent a nextLink)",
                    url=str(url),
                    cap=f"azure.{cap}",
                    limit=limit,
                    status=reply.status,
                    request_id=reply.request_id,
                    correlation_id=reply.correlation_id,
                )
        referrer, url = url, _next_url(url, page.next_link)
        if str(url) in seen:
            raise ArmTransportError(
                f"ARM's nextLink repeats an earlier page; stopped paging (GET {referrer})",
                url=str(url),
                status=reply.status,
                request_id=reply.request_id,
                correlation_id=reply.correlation_id,
            )
        seen.add(str(url))


def _list_cap(
    azure: AzureSettings, response_cap: BodyCap, first: URL, read: int, pages: Sequence[object]
) -> BodyCap:
    """The cap on the next page of a list call that has read `read` bytes so far."""
    left = azure.max_list_bytes - read
    if left >= response_cap.allowed:
        return response_cap
    return BodyCap(
        allowed=left,
        key="azure.max_list_bytes",
        setting=azure.max_list_bytes,
        listing=first,
        read=read,
        pages=len(pages),
    )


def _next_url(current: URL, next_link: str) -> URL:
    """The URL of a nextLink, exactly as ARM wrote it (relative links resolve on `current`)."""
    link = URL(next_link, encoded=True)
    return link if link.is_absolute() else current.join(link)
