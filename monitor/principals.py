"""Who signs in for which subscription: one principal per `[[azure.credentials]]` entry (or the
single credential of `[azure]`), each with its own token cache and its own budget scopes."""

# Rules:
# - A subscription has one principal for the life of the process: the first entry, in file
#   order, that names it in its `subscriptions` or lists it (`claim`). Every read of that
#   subscription carries that principal's token; ARM counts reads per principal and
#   subscription, so the subscription's budget is that principal's.
# - Tenant-scoped reads (the subscription list) and Resource Graph queries are counted by ARM per
#   principal: with several principals their budget scopes carry the entry's name
#   (`tenant:<name>`, `resource-graph:<name>`); with one they stay `tenant` and `resource-graph`.
# - Secrets stay in the credentials: a principal's repr names the entry only.

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from monitor.core.ids import is_guid
from monitor.credentials import TokenCache, build_credential, credential_secrets
from monitor.errors import StartupError
from monitor.pacing import RESOURCE_GRAPH_SCOPE, TENANT_SCOPE

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from monitor.clock import Clock
    from monitor.config import AzureSettings, CredentialSettings

__all__ = ["Principal", "Principals", "open_principals"]

log = structlog.get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class Principal:
    """One credential the process signs in with.

    Attributes:
        name: the entry's name ('default' for `[azure]`'s own credential).
        tokens: its token cache (None only for a principal that sends nothing: a test's
            source, a discovery plan).
        subscriptions: the subscriptions it watches, or ('*',): every one it lists.
        credential: the credential behind `tokens` (sinks that sign in with the ARM
            credential use the first principal's).
        tenant_id: the tenant it signs in to as configured (GUID or domain; None: not set).
    """

    name: str
    tokens: TokenCache | None = None
    credential: AsyncTokenCredential | None = None
    subscriptions: tuple[str, ...] = ("*",)
    tenant_id: str | None = None

    @property
    def lists(self) -> bool:
        """Whether it watches every subscription it lists (`subscriptions = ['*']`)."""
        return self.subscriptions == ("*",)

    def __repr__(self) -> str:
        return f"Principal(name={self.name!r}, subscriptions={len(self.subscriptions)})"


@dataclass(slots=True)
class Principals:
    """Every principal, in file order, and which one reads each subscription.

    Args:
        members: the principals (at least one); the first is the default, used for a
            subscription no entry claims (a vault listed by id in `[discovery] vaults`).
    """

    members: Sequence[Principal]
    _owners: dict[str, Principal] = field(default_factory=dict)
    _tenants: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("Principals needs at least one principal")
        for principal in self.members:
            for sub in principal.subscriptions:
                if sub != "*":
                    self._owners.setdefault(sub.lower(), principal)

    @classmethod
    def single(cls, tokens: TokenCache | None = None) -> Principals:
        """One principal, 'default', watching what `[discovery]` selects."""
        return cls([Principal(name="default", tokens=tokens)])

    async def sign_in(self) -> None:
        """Get a first token of every principal, in order. One whose credential fails is
        logged (`principal.sign_in_failed`, naming its entry) and left to fail its own reads,
        retried with each: the other principals' subscriptions are watched as usual.

        Raises:
            StartupError: every credential failed (with one, its own error; the message names
                each entry with several).
        """
        failed: list[StartupError] = []
        signed: list[str] = []
        for principal in self.members:
            if principal.tokens is None:
                continue
            try:
                await principal.tokens.token()
            except StartupError as exc:
                if len(self.members) == 1:
                    raise
                failed.append(exc)
                log.error("principal.sign_in_failed", principal=principal.name, error=str(exc))
            else:
                signed.append(principal.name)
        if len(failed) == len(self.members):
            raise StartupError("no credential could sign in: " + "; ".join(map(str, failed)))
        if len(self.members) > 1:
            log.info("principals.signed_in", principals=signed, failed=len(failed))

    def __iter__(self) -> Iterator[Principal]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def default(self) -> Principal:
        """The first principal."""
        return self.members[0]

    def named(self, name: str) -> Principal:
        """The principal of entry `name` (any casing).

        Raises:
            KeyError: no entry has that name.
        """
        for principal in self.members:
            if principal.name.lower() == name.lower():
                return principal
        raise KeyError(name)

    def of_subscription(self, subscription_id: str) -> Principal:
        """The principal that reads `subscription_id`: its claimant, else the default."""
        return self._owners.get(subscription_id.lower(), self.default)

    def claim(self, subscription_id: str, principal: Principal, tenant_id: str | None) -> bool:
        """`principal` listed `subscription_id` (home tenant `tenant_id`): it reads the
        subscription unless another principal claimed it first. Returns True when it is (or
        now becomes) `principal`'s. The tenant is kept whoever owns the subscription."""
        sub = subscription_id.lower()
        self.learn_tenant(sub, tenant_id)
        owner = self._owners.setdefault(sub, principal)
        if owner is not principal and principal.lists:
            log.debug(
                "principal.subscription_shared",
                subscription=sub,
                owner=owner.name,
                also=principal.name,
            )
        return owner is principal

    def learn_tenant(self, subscription_id: str, tenant_id: str | None) -> None:
        """A subscription list gave `subscription_id`'s home tenant (None: it gave none)."""
        if tenant_id is not None:
            self._tenants[subscription_id.lower()] = tenant_id.lower()

    def tenant_of(self, subscription_id: str) -> str | None:
        """The subscription's home tenant: as its principal's subscription list gave it, else
        the owner's configured tenant when that is a GUID; None when neither is known."""
        sub = subscription_id.lower()
        found = self._tenants.get(sub)
        if found is not None:
            return found
        configured = self.of_subscription(sub).tenant_id
        return configured.lower() if is_guid(configured) else None

    def knows_tenant(self, subscription_id: str) -> bool:
        """Whether a subscription list gave the subscription's tenant."""
        return subscription_id.lower() in self._tenants

    def tenant_scope(self, principal: Principal) -> str:
        """The budget scope of `principal`'s tenant-level reads."""
        return self._scope(TENANT_SCOPE, principal)

    def graph_scope(self, principal: Principal) -> str:
        """The budget scope of `principal`'s Resource Graph queries."""
        return self._scope(RESOURCE_GRAPH_SCOPE, principal)

    def _scope(self, base: str, principal: Principal) -> str:
        return base if len(self.members) == 1 else f"{base}:{principal.name}"

    def principal_for(self, scope: str) -> Principal:
        """The principal a request of budget `scope` is sent as: a subscription's, the one a
        `tenant:`/`resource-graph:` scope names, or the default.

        Raises:
            KeyError: the scope names no principal.
        """
        base, _, name = scope.partition(":")
        if name:
            return self.named(name)
        if base in (TENANT_SCOPE, RESOURCE_GRAPH_SCOPE):
            return self.default
        return self.of_subscription(base)


def open_principals(
    azure: AzureSettings,
    stack: AsyncExitStack,
    clock: Clock,
    environ: Mapping[str, str] = os.environ,
) -> Principals:
    """Build every credential of `azure.principals`, each with its token cache; does no I/O
    (`Principals.sign_in` gets the first tokens). The credentials are closed when `stack`
    closes.

    Raises:
        StartupError: a credential cannot be built, or the environment variable an entry's
            `client_secret_env` names is unset or empty; the message names the entry (with
            several) and never holds a secret.
    """
    members: list[Principal] = []
    for entry in azure.principals:
        where = _where(azure, entry.name)
        settings = azure.signing_in(_with_secret(entry, environ, where))
        try:
            credential = build_credential(settings)
        except StartupError as exc:
            raise StartupError(f"{where}{exc}") from exc
        stack.push_async_callback(credential.close)
        members.append(
            Principal(
                name=entry.name,
                tokens=TokenCache(
                    credential,
                    azure.token_scope,
                    clock,
                    secrets=credential_secrets(settings),
                    # Every message of the cache (at start and at each refresh) names the entry.
                    name=f"{where}{type(credential).__name__}" if where else None,
                ),
                credential=credential,
                subscriptions=entry.subscriptions,
                tenant_id=entry.tenant_id,
            )
        )
    return Principals(members)


def _where(azure: AzureSettings, name: str) -> str:
    """How an error names the credential: not at all with one, by its entry with several."""
    return f"azure.credentials[{name}]: " if azure.credentials else ""


def _with_secret(
    entry: CredentialSettings, environ: Mapping[str, str], where: str
) -> CredentialSettings:
    if entry.client_secret_env is None:
        return entry
    secret = environ.get(entry.client_secret_env, "")
    if not secret:
        raise StartupError(
            f"{where}client_secret_env names {entry.client_secret_env}, which is unset or empty"
        )
    return dataclasses.replace(entry, client_secret=secret)
