"""Bearer tokens the fabric issues and checks: the identity side of the ARM face.

The fabric is its own tenant: an RS256 signing key, one application (client id + secret, the secret under
``STATE/secrets/``) and two endpoints on the ARM server's port that MSAL (and so azure-identity's
``ClientSecretCredential``) uses when pointed at the fabric as its authority host with instance discovery off:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (OpenID Connect discovery) and
  ``GET /{tenant}/discovery/v2.0/keys`` (JWKS);
- ``POST /{tenant}/oauth2/v2.0/token`` with ``grant_type=client_credentials`` (RFC 6749 §4.4), answering
  ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}`` or an OAuth2 error
  (``invalid_client`` 401, ``unsupported_grant_type``/``invalid_request``/``invalid_scope`` 400) with the AADSTS
  texts Entra ID uses (https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes).

Access tokens carry Entra's v1 claims for ARM (``aud`` https://management.azure.com/, ``iss``
https://sts.windows.net/{tenant}/, ``tid``, ``appid``, ``oid``, ``iat``/``nbf``/``exp``); ARM rejects an
expired one, one from another tenant, and any other it cannot verify (``errors.py``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.fabric.arm import errors

AUDIENCES = ("https://management.azure.com/", "https://management.azure.com", "https://management.core.windows.net/")
SCOPES = {f"{a.rstrip('/')}/.default" for a in AUDIENCES} | {f"{a}/.default" for a in AUDIENCES}
LIFETIME = 3599  # seconds, as Entra's default access-token lifetime (60-90 min; the fabric takes the low end)
KEY_ID = "vmrole-fabric-1"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description, "error_codes": []}


@dataclass(frozen=True)
class Principal:
    app_id: str
    tenant: str


class Issuer:
    """Issues and verifies the fabric's tokens. ``authority`` is ``https://127.0.0.1:<port>``."""

    def __init__(self, tenant: str, client_id: str, client_secret: str, key: rsa.RSAPrivateKey | None = None) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self._secret = client_secret.encode("utf-8")
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.authority = ""

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant}/"

    # ---- OpenID discovery --------------------------------------------------------------------
    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        base = f"{self.authority}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "tenant_region_scope": "local",
        }

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": KEY_ID, "n": _b64(numbers.n), "e": _b64(numbers.e)}]}

    # ---- token endpoint ------------------------------------------------------------------------
    def token_response(self, tenant: str, form: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str:
            values = form.get(name) or [""]
            return values[0]

        grant = one("grant_type")
        if not grant:
            raise OAuthError(
                400,
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            raise OAuthError(
                400, "unsupported_grant_type", f"AADSTS70003: The app requested an unsupported grant type '{grant}'."
            )
        if tenant != self.tenant:
            raise OAuthError(
                400,
                "invalid_request",
                f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                "signing into the correct cloud.",
            )
        client_id = one("client_id")
        if client_id != self.client_id:
            raise OAuthError(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant}'.",
            )
        if not hmac.compare_digest(one("client_secret").encode("utf-8"), self._secret):
            raise OAuthError(
                401,
                "invalid_client",
                f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the "
                f"client secret value, not the client secret ID, for a secret added to app '{self.client_id}'.",
            )
        scopes = one("scope").split()
        if not scopes or any(s not in SCOPES for s in scopes):
            raise OAuthError(
                400,
                "invalid_scope",
                f"AADSTS1002012: The provided value for scope {one('scope')} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        token = self.issue()
        return {"token_type": "Bearer", "expires_in": LIFETIME, "ext_expires_in": LIFETIME, "access_token": token}

    def issue(self, *, lifetime: float = LIFETIME, tenant: str | None = None, now: float | None = None) -> str:
        now = time.time() if now is None else now
        tid = tenant or self.tenant
        claims = {
            "aud": AUDIENCES[0],
            "iss": f"https://sts.windows.net/{tid}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime),
            "appid": self.client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tid}/{self.client_id}")),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tid}/{self.client_id}")),
            "tid": tid,
            "ver": "1.0",
        }
        return jwt.encode(claims, cast(Any, self.key), algorithm="RS256", headers={"kid": KEY_ID, "typ": "JWT"})

    # ---- ARM's check ------------------------------------------------------------------------
    def verify(self, authorization: str | None) -> Principal:
        """The caller of an ARM request, or the :class:`errors.ArmError` (401) ARM answers."""
        authority = f"{self.authority}/{self.tenant}"
        if not authorization:
            raise errors.unauthenticated(authority, "AuthenticationFailed", errors.MISSING_AUTHORIZATION)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.unauthenticated(authority, "AuthenticationFailed", errors.MALFORMED_AUTHORIZATION)
        try:
            claims = jwt.decode(
                token.strip(),
                cast(Any, self.key.public_key()),
                algorithms=["RS256"],
                audience=list(AUDIENCES),
                options={"require": ["exp", "iss", "aud", "tid"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            raise errors.unauthenticated(authority, "InvalidAuthenticationToken", errors.INVALID_TOKEN) from None
        now = time.time()
        if claims["exp"] <= now:
            message = errors.expired(_utc(claims["exp"]), _utc(now))
            raise errors.unauthenticated(authority, "ExpiredAuthenticationToken", message)
        if claims["tid"] != self.tenant or claims["iss"] != self.issuer:
            message = errors.wrong_tenant(str(claims["iss"]), self.tenant, self.authority)
            raise errors.unauthenticated(authority, "InvalidAuthenticationTokenTenant", message)
        return Principal(app_id=str(claims.get("appid", "")), tenant=str(claims["tid"]))
