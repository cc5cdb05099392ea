"""Shared by the ARM tests: the real clients pointed at a fabric's ARM face, and tokens made with its key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from harness.fabric.arm.face import SIGNING_KEY, load_key
from harness.fabric.arm.tokens import Issuer
from harness.fabric.client import Fabric

TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "arm" / "scaleset.azuredeploy.json"


def arm(fabric: Fabric) -> dict[str, Any]:
    return dict(fabric.data["arm"])


def secret(fabric: Fabric) -> str:
    return Path(arm(fabric)["client_secret_file"]).read_text("utf-8").strip()


def credential(fabric: Fabric, **kwargs: Any) -> Any:
    """azure-identity's ClientSecretCredential with the fabric as its authority host (the real MSAL path)."""
    from azure.identity import ClientSecretCredential

    a = arm(fabric)
    return ClientSecretCredential(
        a["tenant_id"],
        a["client_id"],
        kwargs.pop("client_secret", None) or secret(fabric),
        authority=a["authority"],
        disable_instance_discovery=True,
        connection_verify=a["ca"],
        **kwargs,
    )


def compute(fabric: Fabric, cred: Any = None, **kwargs: Any) -> Any:
    from azure.mgmt.compute import ComputeManagementClient

    a = arm(fabric)
    return ComputeManagementClient(
        cred or credential(fabric), a["subscription_id"], base_url=a["endpoint"], connection_verify=a["ca"], **kwargs
    )


def network(fabric: Fabric, cred: Any = None, **kwargs: Any) -> Any:
    from azure.mgmt.network import NetworkManagementClient

    a = arm(fabric)
    return NetworkManagementClient(
        cred or credential(fabric), a["subscription_id"], base_url=a["endpoint"], connection_verify=a["ca"], **kwargs
    )


class StaticToken:
    """A TokenCredential that hands out one given token (expired, foreign …) as a client would send it."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(self.token, int(time.time()) + 3600)


def forged(fabric: Fabric, *, lifetime: float = 3600, tenant: str | None = None) -> str:
    """A token signed with the fabric's own key: only its lifetime or tenant is wrong."""
    a = arm(fabric)
    key = load_key(Path(fabric.layout.secrets) / SIGNING_KEY)
    return Issuer(a["tenant_id"], a["client_id"], "unused", key).issue(lifetime=lifetime, tenant=tenant)
