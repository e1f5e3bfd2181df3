"""Shared fixtures: a throwaway CA and the TLS contexts made from it, for client and emulator."""

from __future__ import annotations

import ssl

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
