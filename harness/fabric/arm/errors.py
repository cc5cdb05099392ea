"""ARM's error answers: ``{"error": {"code", "message"}}`` with the status and headers ARM sends.

Codes and texts as Azure Resource Manager and the Compute/Network providers answer them (public sources):

- 401 ``AuthenticationFailed`` / ``InvalidAuthenticationToken`` / ``ExpiredAuthenticationToken`` /
  ``InvalidAuthenticationTokenTenant``, with ``WWW-Authenticate: Bearer authorization_uri=…, error="invalid_token",
  error_description=…``: https://learn.microsoft.com/en-us/troubleshoot/azure/azure-kubernetes/create-upgrade-delete/error-code-invalidauthenticationtokentenant
  and https://learn.microsoft.com/en-us/azure/azure-resource-manager/troubleshooting/common-deployment-errors
- 404 ``SubscriptionNotFound``, ``ResourceGroupNotFound``, ``ResourceNotFound`` (the aka.ms/ARMResourceNotFoundFix
  text), 400 ``MissingApiVersionParameter``, ``InvalidApiVersionParameter``, ``NoRegisteredProviderFound``:
  https://learn.microsoft.com/en-us/azure/azure-resource-manager/troubleshooting/error-not-found and
  https://learn.microsoft.com/en-us/azure/azure-resource-manager/troubleshooting/error-register-resource-provider
- 429 ``SubscriptionRequestsThrottled`` with ``Retry-After``:
  https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling
- 409 ``Conflict`` (a concurrent operation) and 500 ``InternalExecutionError``: Compute's
  https://learn.microsoft.com/en-us/troubleshoot/azure/virtual-machines/windows/error-messages
"""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    """An ARM error answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.target = target  # the parameter or property at fault, as Compute names it

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        return {"error": error}


def www_authenticate(authority: str, description: str) -> str:
    description = description.replace('"', "'")
    return f'Bearer authorization_uri="{authority}", error="invalid_token", error_description="{description}"'


def unauthenticated(authority: str, code: str, message: str) -> ArmError:
    return ArmError(401, code, message, {"WWW-Authenticate": www_authenticate(authority, message)})


MISSING_AUTHORIZATION = "Authentication failed. The 'Authorization' header is missing."
MALFORMED_AUTHORIZATION = "Authentication failed. The 'Authorization' header is not of the 'Bearer' scheme."
INVALID_TOKEN = "The access token is invalid."


def expired(expiry: str, now: str) -> str:
    return f"The access token expiry UTC time '{expiry}' is earlier than current UTC time '{now}'."


def wrong_tenant(issuer: str, tenant: str, authority: str) -> str:
    return (
        f"The access token is from the wrong issuer '{issuer}'. It must match the tenant "
        f"'https://sts.windows.net/{tenant}/' associated with this subscription. Please use the authority (URL) "
        f"'{authority}/{tenant}' to get the token. Note, if the subscription is transferred to another tenant "
        "there is no impact to the services, but information about new tenant could take time to propagate "
        "(up to an hour). If you just transferred your subscription and see this error message, please try back "
        "later."
    )


def subscription_not_found(subscription: str) -> ArmError:
    return ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")


def resource_group_not_found(group: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")


def resource_not_found(resource_type: str, name: str, group: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def not_found_entity() -> ArmError:
    """What Compute answers for a child it does not have (a scale-set VM instance id, an operation id)."""
    return ArmError(404, "NotFound", "The entity was not found in this Azure location.")


def missing_api_version() -> ArmError:
    return ArmError(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )


def invalid_api_version(version: str, supported: tuple[str, ...]) -> ArmError:
    return ArmError(
        400,
        "InvalidApiVersionParameter",
        f"The api-version '{version}' is invalid. The supported versions are '{','.join(supported)}'.",
    )


def no_registered_provider(version: str, resource_type: str, supported: tuple[str, ...], location: str) -> ArmError:
    return ArmError(
        400,
        "NoRegisteredProviderFound",
        f"No registered resource provider found for location '{location}' and API version '{version}' for type "
        f"'{resource_type}'. The supported api-versions are '{', '.join(supported)}'. The supported locations are "
        f"'{location}'.",
    )


def throttled(kind: str, subscription: str, retry_after: int) -> ArmError:
    return ArmError(
        429,
        "SubscriptionRequestsThrottled",
        f"Number of '{kind}' requests for subscription '{subscription}' actor 'fabric' exceeded. Please try again "
        f"after '{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
        {"Retry-After": str(retry_after)},
    )


def conflict() -> ArmError:
    return ArmError(
        409,
        "Conflict",
        "The request failed due to conflict with a concurrent request. To resolve it, please refer to "
        "https://aka.ms/activitylog to get more details on the conflicting requests.",
    )


def internal_error() -> ArmError:
    return ArmError(500, "InternalExecutionError", "An internal execution error occurred. Please retry later.")


def method_not_allowed(method: str) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The requested resource does not support http method '{method}'.")


def bad_request(message: str) -> ArmError:
    return ArmError(400, "BadRequest", message)


def inactive_instance(instance_id: str) -> ArmError:
    """An ``instanceIds`` entry the scale set does not have: Compute's answer, as quoted in public reports
    (https://github.com/Azure/azure-cli/issues/25476, https://github.com/microsoft/onefuzz/issues/2547)."""
    return ArmError(
        400,
        "InvalidParameter",
        f"The provided instanceId {instance_id} is not an active Virtual Machine Scale Set VM instanceId.",
        target="instanceIds",
    )


def missing_parameter(name: str) -> ArmError:
    """A required body parameter absent (Compute's wording for a null required parameter; best estimate for
    ``instanceIds`` of a delete, whose exact answer is not documented)."""
    return ArmError(400, "InvalidParameter", f"Required parameter '{name}' is missing (null).", target=name)


def property_change_not_allowed(path: str, why: str) -> ArmError:
    """A scale-set update changing what the fabric cannot change: Compute's ``PropertyChangeNotAllowed`` (409,
    ``Changing property '…' is not allowed.``), with the fabric's reason appended."""
    return ArmError(409, "PropertyChangeNotAllowed", f"Changing property '{path}' is not allowed. {why}", target=path)


def operation_not_allowed(message: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", message)
