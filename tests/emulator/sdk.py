"""What the official SDK clients need to talk to the emulator: azure-identity's async
ClientSecretCredential against the emulator's own token endpoint, trusting the test CA."""

from __future__ import annotations

from azure.identity.aio import ClientSecretCredential

from monitor.emulator import Emulator


def emulator_credential(emu: Emulator, client_id: str, ca_pem_path: str) -> ClientSecretCredential:
    """A credential whose tokens come from `emu` (its tenant, its secret), over TLS to it."""
    return ClientSecretCredential(
        emu.tenant_id,
        client_id,
        emu.arm.settings.client_secret,
        authority=emu.url,
        connection_verify=ca_pem_path,
    )
