"""The emulator's token service: issues bearer tokens and maps each back to its principal.

Tokens are opaque to clients: `emu1.<payload>.<signature>`, HMAC-signed with a key made when the
emulator starts, so a token from another emulator run is rejected as invalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from monitor.emulator.tenancy import principal_name

STATIC_PRINCIPAL = "emulator-static-user"  # the principal of the emulator's long-lived token


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of checking a bearer token: a principal (the client id, with `@tenant` outside
    the issuer's own tenant: see tenancy.py), the audience it was issued for
    (the scope or resource asked for, `""` for minted tokens) and the tenant it was issued in,
    or ARM's 401 error code."""

    principal: str | None
    error_code: str | None = None
    error_message: str | None = None
    audience: str = ""
    tenant: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and checks tokens; each token names its tenant (`tenant_id` unless told)."""

    def __init__(self, tenant_id: str, key: bytes | None = None) -> None:
        self.tenant_id = tenant_id
        self._key = key or secrets.token_bytes(32)

    def issue(
        self, principal: str, *, expires_at: float, audience: str = "", tenant: str | None = None
    ) -> str:
        """A token for `principal` of `tenant` (default: `tenant_id`) valid until `expires_at`
        (epoch seconds)."""
        claims: dict[str, object] = {"p": principal, "exp": expires_at, "aud": audience}
        if tenant is not None and tenant != self.tenant_id:
            claims["tid"] = tenant
        payload = _b64(orjson.dumps(claims))
        sig = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:18])
        return f"emu1.{payload}.{sig}"

    def check(self, authorization: str | None, *, now: float) -> TokenCheck:
        """Check an `Authorization` header value against signature and expiry."""
        if not authorization:
            return TokenCheck(
                None,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return TokenCheck(
                None,
                "AuthenticationFailed",
                "Authentication failed. "
                "The 'Authorization' header is provided in an invalid format.",
            )
        parts = token.strip().split(".")
        invalid = TokenCheck(
            None,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )
        if len(parts) != 3 or parts[0] != "emu1":
            return invalid
        expected = _b64(hmac.new(self._key, parts[1].encode(), hashlib.sha256).digest()[:18])
        if not hmac.compare_digest(expected, parts[2]):
            return invalid
        try:
            claims = orjson.loads(_unb64(parts[1]))
            principal, expires_at = str(claims["p"]), float(claims["exp"])
            audience = str(claims.get("aud", ""))
            tenant = str(claims.get("tid", self.tenant_id))
        except (ValueError, KeyError, TypeError):
            return invalid
        if expires_at <= now:
            return TokenCheck(
                None,
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{_utc_text(expires_at)}' is earlier than "
                f"current UTC time '{_utc_text(now)}'.",
            )
        return TokenCheck(
            principal_name(principal, tenant, self.tenant_id), audience=audience, tenant=tenant
        )


def _utc_text(epoch: float) -> str:
    return f"{datetime.fromtimestamp(epoch, UTC):%m/%d/%Y %I:%M:%S %p}"
