"""Which Entra tenant each subscription belongs to, and which tenants may read it (Lighthouse).

A managed-service provider's estate spans tenants: each customer's subscriptions live in the
customer's tenant, and a token is issued for one tenant. ARM serves a subscription only to tokens of
its home tenant or of a tenant it is delegated to (Azure Lighthouse), and answers any other token
401 `InvalidAuthenticationTokenTenant`.

Rules:
- Tenant 0 is the world's own tenant (`WorldSettings.tenant_id`); tenants 1..N-1 have the fixed ids
  of `EXTRA_TENANT_IDS`, so every run with the same `--tenants` has the same ids.
- Subscription i, in the world's subscription order (creation order, added subscriptions last),
  belongs to tenant `i % N`. With N = 1 every subscription is tenant 0's, as before tenants
  existed.
- With Lighthouse every subscription of tenants 1..N-1 is delegated to tenant 0; without it no
  subscription is delegated.
- A principal is named by its client id in tenant 0 and by `client_id@tenant_id` in any other
  tenant (an application has one service principal per tenant, each with its own ARM budgets).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "EXTRA_TENANT_IDS",
    "MAX_TENANTS",
    "Tenancy",
    "principal_name",
    "split_principal",
]

MAX_TENANTS = 8
EXTRA_TENANT_IDS = tuple(f"00000000-0000-4000-8000-{k:012d}" for k in range(1, MAX_TENANTS))
"""The ids of tenants 1..7: `00000000-0000-4000-8000-00000000000k`."""


def principal_name(client_id: str, tenant_id: str, home_tenant: str) -> str:
    """The principal ARM counts a token of `client_id` in `tenant_id` against.

    `client_id` in the home tenant (tenant 0), `client_id@tenant_id` in any other.
    """
    return client_id if tenant_id == home_tenant else f"{client_id}@{tenant_id}"


def split_principal(principal: str, home_tenant: str) -> tuple[str, str]:
    """(client id, tenant id) of a principal named by `principal_name`."""
    client_id, sep, tenant = principal.rpartition("@")
    return (client_id, tenant) if sep else (principal, home_tenant)


class Tenancy:
    """The tenants of one emulator run and the home and delegations of each subscription.

    Args:
        home_tenant: tenant 0, the world's tenant id.
        count: how many tenants (1 to `MAX_TENANTS`).
        lighthouse: delegate every subscription of tenants 1..N-1 to tenant 0.
        subscriptions: the world's subscriptions by id, in creation order (read, never changed;
            subscriptions are only ever added to it).

    Raises:
        ValueError: `count` outside 1..`MAX_TENANTS`.
    """

    def __init__(
        self,
        home_tenant: str,
        count: int,
        lighthouse: bool,
        subscriptions: Mapping[str, object],
    ) -> None:
        if not 1 <= count <= MAX_TENANTS:
            raise ValueError(f"tenants must be between 1 and {MAX_TENANTS}, got {count}")
        self.tenant_ids: tuple[str, ...] = (home_tenant, *EXTRA_TENANT_IDS[: count - 1])
        self.lighthouse = lighthouse
        self._subscriptions = subscriptions
        self._home: dict[str, str] = {}  # lower-cased subscription id -> tenant id

    @property
    def home_tenant(self) -> str:
        """Tenant 0."""
        return self.tenant_ids[0]

    @property
    def single(self) -> bool:
        """One tenant: every token reads every subscription, as before tenants existed."""
        return len(self.tenant_ids) == 1

    def tenant(self, name: str) -> str | None:
        """The tenant id a token endpoint's path names (`organizations`: tenant 0), or None."""
        lowered = name.lower()
        if lowered == "organizations":
            return self.home_tenant
        return lowered if lowered in self.tenant_ids else None

    def _refresh(self) -> None:
        if len(self._home) != len(self._subscriptions):
            n = len(self.tenant_ids)
            self._home = {
                sub_id.lower(): self.tenant_ids[i % n]
                for i, sub_id in enumerate(self._subscriptions)
            }

    def home_of(self, subscription_id: str) -> str | None:
        """The tenant `subscription_id` lives in, or None for a subscription that does not exist."""
        self._refresh()
        return self._home.get(subscription_id.lower())

    def delegated_to(self, subscription_id: str) -> tuple[str, ...]:
        """The tenants `subscription_id` is delegated to (its `managedByTenants`)."""
        home = self.home_of(subscription_id)
        if self.lighthouse and home is not None and home != self.home_tenant:
            return (self.home_tenant,)
        return ()

    def may_read(self, tenant_id: str, subscription_id: str) -> bool:
        """Whether a token of `tenant_id` may read `subscription_id` (which must exist)."""
        if self.single:
            return True
        return self.home_of(subscription_id) == tenant_id or tenant_id in self.delegated_to(
            subscription_id
        )

    def visible(self, tenant_id: str) -> frozenset[str] | None:
        """The lower-cased subscription ids a token of `tenant_id` sees; None: every one."""
        if self.single:
            return None
        self._refresh()
        return frozenset(s for s in self._home if self.may_read(tenant_id, s))

    def as_json(self) -> dict[str, object]:
        """What `GET /_emulator/tenants` answers: each tenant's subscriptions and delegations."""
        self._refresh()
        rows = []
        for tenant_id in self.tenant_ids:
            subs = [s for s in self._subscriptions if self._home[s.lower()] == tenant_id]
            delegated = self.lighthouse and tenant_id != self.home_tenant
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "subscriptions": subs,
                    "delegated_to": [self.home_tenant] if delegated else [],
                }
            )
        return {"tenants": rows, "lighthouse": self.lighthouse}
