"""What an emulator run is made of: the world, throttle and fault settings, paging and tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.emulator.faults import FaultSettings
from monitor.emulator.ingestion import IngestionSettings
from monitor.emulator.resource_graph import ResourceGraphSettings
from monitor.emulator.throttle import ThrottleSettings
from monitor.emulator.world import WorldSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorSettings:
    """Everything an emulator run is made of.

    Attributes:
        page_size: jobs per `backupJobs` page.
        vault_page_size: vaults per vault-list page (ARM pages these at 200).
        token_lifetime_s: lifetime of tokens from the token and managed-identity endpoints.
        client_secret: the secret every client id must present at the token endpoint.
        identity_header: the `X-IDENTITY-HEADER` value the managed-identity endpoint expects.
        operation_retry_after_s: `Retry-After` on trigger-backup 202s (the real service says 60).
        fault_seed: seed of the fault stream (the world has its own).
        ingestion: the Logs Ingestion endpoint: its rules, audience, limit and 429 faults.
        resource_graph: the Resource Graph endpoint's staleness and per-principal quota.
        protected_items_limit: protected-item reads per subscription per
            `protected_items_window_s` world seconds before Recovery Services answers 429
            `ResourceRequestsThrottled` (0, the default: no such limit).
        tenants: how many Entra tenants the estate spans (1 to 8): subscription i belongs to
            tenant i % tenants (tenancy.py names them); 1, the default, is a one-tenant estate.
        lighthouse: delegate every subscription of tenants 1..N-1 to tenant 0 (Azure
            Lighthouse), so that tenant 0's tokens read them all.
    """

    world: WorldSettings = field(default_factory=WorldSettings)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    page_size: int = 20
    vault_page_size: int = 200
    token_lifetime_s: float = 3600.0
    client_secret: str = field(default="emulator-secret", repr=False)
    identity_header: str = field(default="emulator-identity-header", repr=False)
    operation_retry_after_s: int = 60
    fault_seed: int = 7
    ingestion: IngestionSettings = field(default_factory=IngestionSettings)
    resource_graph: ResourceGraphSettings = field(default_factory=ResourceGraphSettings)
    protected_items_limit: int = 0
    protected_items_window_s: float = 300.0
    tenants: int = 1
    lighthouse: bool = False
