"""Shared fixtures: a throwaway CA, the TLS contexts made from it for client and emulator, and
a session that trusts it; and the order that starts the long real-time tests first under
pytest-xdist."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A CA that exists only for this test session."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server-side context whose certificate covers 127.0.0.1 and localhost."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="session")
def ca_pem_path(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CA certificate as a PEM file, for clients that take a CA bundle path."""
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def client_ssl_context(ca_pem_path: str) -> ssl.SSLContext:
    """A client-side context that trusts only the session CA (never the system store)."""
    return ssl.create_default_context(cafile=ca_pem_path)


@pytest.fixture
async def tls_http(client_ssl_context: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session that trusts only the session CA (for the emulator served over TLS)."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_ssl_context)
    ) as session:
        yield session


def _long_s(item: pytest.Item) -> float:
    mark = item.get_closest_marker("long")
    return 0.0 if mark is None else float(mark.kwargs.get("seconds", 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, put the `long` tests at the head of each worker's first block.

    The work-stealing scheduler first hands each of the N workers a contiguous block of the
    collection, sized `pending // workers left`; the long tests, which mostly wait, then start at
    once beside the CPU-bound ones instead of last. The order within a block is unchanged, and
    without xdist nothing moves.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    long = sorted((i for i in items if _long_s(i) > 0), key=_long_s, reverse=True)
    if workers < 2 or not long:
        return
    rest = iter([i for i in items if _long_s(i) == 0])
    order: list[pytest.Item] = []
    remaining = len(items)
    for worker in range(workers):
        size = remaining // (workers - worker)
        head = long[worker::workers]
        order += head
        order += [item for _, item in zip(range(size - len(head)), rest, strict=False)]
        remaining -= size
    order += list(rest)
    assert len(order) == len(items)
    items[:] = order
