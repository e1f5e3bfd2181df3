"""The foreign origin: a second server counting the bearer tokens sent to it (it should get none).

A `foreign_next_link` fault points a page's nextLink here; a client that follows it with its token
shows up in `tokens_received`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(slots=True)
class ForeignOrigin:
    """What the foreign origin saw: every request, and how many carried a bearer token."""

    requests: int = 0
    tokens_received: int = 0
    url: str = ""


def build_foreign_app(foreign: ForeignOrigin) -> web.Application:
    """A server on another origin that counts the bearer tokens sent to it (it should get none)."""

    async def anything(request: web.Request) -> web.Response:
        foreign.requests += 1
        if request.headers.get("Authorization"):
            foreign.tokens_received += 1
        return web.json_response({"value": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app
