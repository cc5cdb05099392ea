"""The ARM face of a running fabric: what ``fabric up --api vmss`` adds to the controller.

It makes the identity (tenant id, application client id; the client secret in ``STATE/secrets/arm-client-secret``
and the token-signing key in ``STATE/secrets/arm-signing-key.pem``, both 0600; the key is made in a thread while
the instances start), picks a port and serves :class:`~harness.fabric.arm.server.ArmServer` in the controller
process with the management API's server certificate (same CA, same loopback names). ``describe()`` is the
``arm`` section of ``fabric.json`` (no secret in it).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.fabric.arm import query, throttle
from harness.fabric.arm.resources import Names
from harness.fabric.arm.server import ArmServer
from harness.fabric.arm.tokens import Issuer
from harness.fabric.layout import write_text_atomic
from harness.fabric.ports import allocate

CLIENT_SECRET = "arm-client-secret"
SIGNING_KEY = "arm-signing-key.pem"
_OS_IMAGE = re.compile(r"<OsImage\s+href\s*=\s*\"([^\"]+)\"")


def image_name(cscfg_text: str, image: str | None) -> str:
    """The image the scale set runs: ``--image`` or the VM role's ``<OsImage href>``, without ``.vhd``."""
    name = Path(image).name if image else None
    if name is None:
        found = _OS_IMAGE.search(cscfg_text or "")
        name = found.group(1) if found else "vmrole-image"
    name = re.sub(r"(?i)\.vhdx?$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:80] or "vmrole-image"


def group_name(service_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._()-]", "-", service_name)[:90] or "vmrole"


def load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    return key


class ArmFace:
    def __init__(self, controller: Any, *, subscription: str, image: str | None = None) -> None:
        self.c = controller
        self.subscription = subscription
        self.image = image
        self.server: ArmServer | None = None
        # an RSA key takes seconds on a loaded machine: made while the instances start, not after
        self._key: list[rsa.RSAPrivateKey] = []
        self._keygen = threading.Thread(target=self._make_key, name="arm-signing-key", daemon=True)
        self._keygen.start()

    def _make_key(self) -> None:
        self._key.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def start(self) -> None:
        from harness.fabric import certs

        c = self.c
        secrets_dir: Path = c.layout.secrets
        client_secret = secrets.token_urlsafe(32)
        write_text_atomic(secrets_dir / CLIENT_SECRET, client_secret)
        os.chmod(secrets_dir / CLIENT_SECRET, 0o600)
        self._keygen.join()
        key = self._key[0] if self._key else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_path = secrets_dir / SIGNING_KEY
        write_text_atomic(key_path, pem.decode("ascii"))
        os.chmod(key_path, 0o600)
        # the management API's server certificate (same CA, same loopback names): no second key to make
        existing = getattr(c, "mgmt_server_cert", None)
        cert, cert_key = existing or certs.issue_server_cert(
            c.ca, ["localhost", "127.0.0.1"], c.layout.certs / "arm-server"
        )
        issuer = Issuer(str(uuid.uuid4()), str(uuid.uuid4()), client_secret, key)
        names = Names(
            subscription=self.subscription,
            group=group_name(c.spec.service_name),
            image=image_name(c.spec.cscfg_text, self.image),
        )
        (port,) = allocate(1)
        self.server = ArmServer(
            c,
            names=names,
            issuer=issuer,
            cert=str(cert),
            key=str(cert_key),
            port=port,
            faults=getattr(c, "mgmt_faults", None),
            throttle=throttle.parse(os.environ.get(throttle.ENV)),
            page_size=query.page_size(os.environ.get(query.PAGE_SIZE_ENV)),
        )
        self.server.start()

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def instance_for(self, name: str) -> str | None:
        """The fabric's instance id of a scale-set VM named by its computer name (any case), else None: fault
        commands take the names the live suites know the VMs by."""
        from harness.fabric.arm.resources import computer_name

        for inst in self.c.spec.instances:
            if computer_name(inst.role, inst.index) == name.lower():
                return str(inst.id)
        return None

    def describe(self) -> dict[str, Any]:
        if self.server is None:
            return {}
        info = self.server.describe()
        info["ca"] = str(self.c.layout.certs / "ca.pem")
        info["client_secret_file"] = str(self.c.layout.secrets / CLIENT_SECRET)
        info["image"] = self.server.names.image
        return info
