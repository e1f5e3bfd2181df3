"""Which vaults this process watches: listing, include/exclude, shard ownership, start-up retry.

Used by the scheduler (`run`), by `check-config` and by `jobs list`. It reads ARM through the
`VaultSource` protocol below, not through `monitor.arm`, and never reaches into the scheduler:
what a failed listing keeps is passed in as `known`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from monitor.clock import Clock
from monitor.config import Settings
from monitor.core.cadence import backoff_s
from monitor.core.shard import owner
from monitor.core.vaults import SubscriptionRef, VaultKind, VaultRef, parse_vault_id
from monitor.errors import (
    TRANSIENT_ARM_ERRORS,
    ArmError,
    ArmForbidden,
    ArmNotFound,
    StartupError,
)
from monitor.principals import Principal, Principals

log = structlog.get_logger("monitor.scheduler")

DISCOVERY_BACKOFF_CAP_S = 60.0  # a discovery that missed something retries at least this often
UNREGISTERED_CODES = frozenset(
    {"missingsubscriptionregistration", "subscriptionnotregistered", "noregisteredproviderfound"}
)
"""ARM's error codes for a resource provider the subscription has not registered: it holds no
vault of that kind (a subscription never used for Backup vaults has not registered
Microsoft.DataProtection)."""


class VaultSource(Protocol):
    """The ARM reads discovery makes (`monitor.arm.ArmClient` is one)."""

    @property
    def principals(self) -> Principals: ...

    async def list_subscriptions(
        self, principal: Principal | None = None
    ) -> list[SubscriptionRef]: ...

    async def list_vaults(
        self, subscription_id: str, kind: VaultKind = VaultKind.RECOVERY_SERVICES
    ) -> list[VaultRef]: ...

    async def get_vault(self, vault_id: str) -> VaultRef: ...


@dataclass(frozen=True, slots=True)
class Discovery:
    """What one discovery found, and the ARM calls that failed along the way."""

    vaults: list[VaultRef]
    reached: bool  # some discovery call got an answer from ARM (even a 404 or 403)
    failures: tuple[ArmError, ...] = ()

    @property
    def retry_soon(self) -> bool:
        """A call failed in a way that may pass: worth trying again before the interval."""
        return any(isinstance(exc, TRANSIENT_ARM_ERRORS) for exc in self.failures)


class VaultDiscovery:
    """Finds every vault the configuration selects for this shard: in each subscription, the
    vaults of each kind `[discovery] vault_kinds` names, and the vaults listed by id.

    Args:
        source: the ARM reads (the ARM client).
        settings: the parsed configuration (`[discovery]` and `[shard]`).
        clock: time and sleep, for the start-up retry.
        rng: jitter for that retry's backoff.
    """

    def __init__(
        self, source: VaultSource, settings: Settings, clock: Clock, rng: random.Random
    ) -> None:
        self._source, self._settings, self._clock, self._rng = source, settings, clock, rng
        self._unregistered: set[tuple[str, VaultKind]] = set()  # logged once each
        self._tenants_listed: set[str] = set()  # principals that listed only to learn tenants

    async def discover_once(self) -> list[VaultRef]:
        """Every vault the configuration selects, as a first start would find them (one try).

        Raises:
            StartupError: no discovery call reached ARM.
        """
        found = await self.discover({}, first=True)
        if not found.reached:
            raise unreachable(found)
        return found.vaults

    async def first(self) -> Discovery:
        """Discover until some call reaches ARM; transient failures are retried with backoff.

        Raises:
            StartupError: a failure that will not pass by itself (401, 403, a foreign origin),
                or `discovery.startup_timeout_s` spent on transient ones.
        """
        limit_s = self._settings.discovery.startup_timeout_s
        began = self._clock.monotonic()
        attempt = 0
        while True:
            found = await self.discover({}, first=True)
            if found.reached:
                return found
            attempt += 1
            elapsed_s = self._clock.monotonic() - began
            delay_s = self.backoff_s(attempt - 1)
            if not found.retry_soon or elapsed_s + delay_s > limit_s:
                error = unreachable(found)
                if found.retry_soon:
                    error = StartupError(
                        f"{error}; gave up after {attempt} attempts in {elapsed_s:.0f} s "
                        f"(discovery.startup_timeout_s = {limit_s:g})"
                    )
                raise error
            log.warning(
                "discovery.retrying",
                attempt=attempt,
                retry_in_s=round(delay_s, 1),
                error=str(found.failures[-1]),
            )
            await self._clock.sleep(delay_s)

    def backoff_s(self, misses: int) -> float:
        """Seconds to wait after `misses` discoveries in a row missed something (jittered)."""
        return backoff_s(misses, cap_s=DISCOVERY_BACKOFF_CAP_S) * self._rng.uniform(0.5, 1.0)

    async def discover(self, known: Mapping[str, VaultRef], *, first: bool) -> Discovery:
        """Every vault the configuration asks for; what fails keeps what `known` had.

        Args:
            known: the vaults watched now, by `VaultRef.key`; a vault or subscription whose
                read fails keeps these.
            first: the first discovery: a failed subscription listing with no explicit vaults
                ends it unreached instead of keeping `known`.
        """
        d = self._settings.discovery
        found: dict[str, VaultRef] = {}
        failures: list[ArmError] = []
        vault_ids = [v for v in d.vaults if self._owns(parse_vault_id(v).subscription_id)]
        # A shard that owns none of the listed vaults or subscriptions has nothing to reach.
        reached = not vault_ids and not [s for s in d.subscriptions if s == "*" or self._owns(s)]
        for vault_id in vault_ids:
            try:
                vault = await self._source.get_vault(vault_id)
                reached = True
            except ArmNotFound:
                log.warning("discovery.vault_not_found", vault_id=vault_id)
                reached = True
                continue
            except ArmForbidden:
                reached = True
                vault = parse_vault_id(vault_id)  # polls will report the 403 per vault
            except ArmError as exc:
                failures.append(exc)
                log.warning("discovery.vault_failed", vault_id=vault_id, error=str(exc))
                vault = known.get(vault_id.lower()) or parse_vault_id(vault_id)
            found[vault.key] = vault
        listed, subscriptions = await self._subscriptions(known, failures)
        reached = reached or listed
        if subscriptions is None:
            if first and not d.vaults:
                return Discovery(vaults=[], reached=False, failures=tuple(failures))
            subscriptions = []
        subscriptions = [s for s in subscriptions if self._owns(s)]
        kinds = [VaultKind(k) for k in d.vault_kinds]
        for sub in subscriptions:
            for kind in kinds:
                try:
                    vaults = await self._source.list_vaults(sub, kind)
                    reached = True
                except ArmError as exc:
                    if provider_not_registered(exc):
                        reached = True
                        if (sub, kind) not in self._unregistered:
                            self._unregistered.add((sub, kind))
                            log.info(
                                "discovery.provider_not_registered",
                                subscription=sub,
                                vault_kind=kind.value,
                                namespace=kind.namespace,
                                code=exc.code,
                            )
                        continue
                    failures.append(exc)
                    log.warning(
                        "discovery.subscription_failed",
                        subscription=sub,
                        vault_kind=kind.value,
                        error=str(exc),
                    )
                    vaults = [
                        v
                        for v in known.values()
                        if _same(v.subscription_id, sub) and v.kind is kind
                    ]
                for vault in vaults:
                    found.setdefault(vault.key, vault)
        principals = self._source.principals
        return Discovery(
            vaults=[
                _with_tenant(v, principals.tenant_of(v.subscription_id))
                for v in found.values()
                if self._included(v)
            ],
            reached=reached,
            failures=tuple(failures),
        )

    async def _subscriptions(
        self, known: Mapping[str, VaultRef], failures: list[ArmError]
    ) -> tuple[bool, list[str] | None]:
        """Whether a subscription list answered, and the subscriptions to search for vaults
        (lower-cased, each once), each claimed by the principal that reads it.

        A principal lists its subscriptions at every discovery when that decides what it
        watches (`subscriptions = ['*']`, with `[discovery] subscriptions = ['*']` or several
        principals); otherwise once, and only to learn the tenants of the subscriptions it
        watches, a failure then costing nothing but the tenant. A listing that fails keeps
        the subscriptions of `known` that principal reads; when every such listing failed and
        nothing else is to be searched, the list is None.
        """
        d = self._settings.discovery
        principals = self._source.principals
        every = tuple(d.subscriptions) == ("*",)
        several = len(principals) > 1
        chosen: dict[str, None] = {}
        answered = deciding = failed = 0
        for principal in principals:
            explicit = [s for s in principal.subscriptions if s != "*"]
            decides = principal.lists and (every or several)
            candidates = explicit or ([] if decides else list(d.subscriptions))
            learn = not decides and principal.name not in self._tenants_listed
            learn = learn and any(not principals.knows_tenant(s) for s in candidates)
            if decides or learn:
                deciding += decides
                try:
                    listed = await self._source.list_subscriptions(principal)
                    answered += 1
                except ArmError as exc:
                    context = {"principal": principal.name} if several else {}
                    if not decides:
                        log.info("discovery.tenants_unknown", error=str(exc), **context)
                        self._tenants_listed.add(principal.name)
                    else:
                        failed += 1
                        failures.append(exc)
                        log.warning("discovery.subscriptions_failed", error=str(exc), **context)
                        candidates = sorted(
                            {
                                v.subscription_id.lower()
                                for v in known.values()
                                if principals.of_subscription(v.subscription_id) is principal
                            }
                        )
                else:
                    if decides:
                        candidates = [
                            s.id for s in listed if principals.claim(s.id, principal, s.tenant_id)
                        ]
                    else:
                        self._tenants_listed.add(principal.name)
                        for ref in listed:
                            principals.learn_tenant(ref.id, ref.tenant_id)
            for sub in candidates:
                if every or sub in d.subscriptions:
                    chosen.setdefault(sub.lower())
        if deciding and failed == deciding and not chosen:
            return answered > 0, None
        return answered > 0, list(chosen)

    def _owns(self, subscription_id: str) -> bool:
        """Whether this shard owns the subscription (DESIGN §11: rendezvous hashing)."""
        shard = self._settings.shard
        return shard.count == 1 or owner(subscription_id, shard.count) == (shard.index or 0)

    def _included(self, vault: VaultRef) -> bool:
        d = self._settings.discovery

        def hit(patterns: Iterable[str]) -> bool:
            return any(
                fnmatch.fnmatch(vault.name.lower(), p.lower())
                or fnmatch.fnmatch(vault.key, p.lower())
                for p in patterns
            )

        return (not d.include or hit(d.include)) and not hit(d.exclude)


def _with_tenant(vault: VaultRef, tenant_id: str | None) -> VaultRef:
    if vault.tenant_id == tenant_id:
        return vault
    return dataclasses.replace(vault, tenant_id=tenant_id)


def provider_not_registered(exc: ArmError) -> bool:
    """Whether a vault listing failed because the subscription has not registered the vault
    kind's resource provider: it holds no vaults of that kind."""
    return (exc.code or "").lower() in UNREGISTERED_CODES


def unreachable(found: Discovery) -> StartupError:
    """Why no discovery call reached ARM, naming the last failure."""
    last = f": {found.failures[-1]}" if found.failures else ""
    return StartupError(f"ARM unreachable: no discovery call succeeded{last}")


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


__all__ = [
    "DISCOVERY_BACKOFF_CAP_S",
    "Discovery",
    "VaultDiscovery",
    "VaultSource",
    "provider_not_registered",
    "unreachable",
]
