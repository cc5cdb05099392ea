"""Request bodies and the hosted-service / deployment operations of the Service Management API emulator.

Used by :mod:`harness.fabric.mgmt.server` when its lifecycle is the fabric's
:class:`~harness.fabric.deployments.HostedServices`. Resources under ``/<subscription-id>/services/hostedservices``
(the operations of the classic Service Management REST reference, whose error table is
https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee460801(v=azure.100); request bodies as
azure-servicemanagement-legacy 0.20.8 serialises them):

- ``GET`` (list), ``POST`` ``<CreateHostedService>`` → 201
- ``GET operations/isavailable/<name>`` → ``<AvailabilityResponse>``
- ``<svc>``: ``GET`` (``embed-detail``), ``PUT`` ``<UpdateHostedService>`` → 200, ``DELETE`` → 200 (409 while it
  has deployments), ``POST`` ``<Swap>`` → 202
- ``<svc>/deploymentslots/<slot>``: ``GET``, ``POST`` ``<CreateDeployment>`` → 202, ``DELETE`` → 202,
  ``POST ?comp=config`` ``<ChangeConfiguration>`` → 202, ``POST ?comp=status`` ``<UpdateDeploymentStatus>`` → 202
- ``<svc>/deployments/<name>``: the same but Create
- ``POST ?comp=upgrade`` ``<UpgradeDeployment>`` → 202, ``POST ?comp=walkupgradedomain`` ``<WalkUpgradeDomain>`` → 202
- ``.../roleinstances/?comp=delete`` ``<RoleInstances>`` → 202 (Delete Role Instances)
- ``.../roleinstances/<instance>?comp=reboot|reimage|rebuild`` → 202
- ``<svc>/certificates``: ``GET``, ``POST`` ``<CertificateFile>`` → 202; ``.../sha1-<thumbprint>``: ``GET``,
  ``DELETE`` → 202

Long operations answer 202 with ``x-ms-request-id`` = the operation (Get Operation Status: ``InProgress`` →
``Succeeded``/``Failed`` with the error's code and message). A second operation on a deployment while one
runs is the server's 409 ``ConflictError``. Bodies are parsed with defusedxml (no DTDs, entities or external
references); unparsable XML is Azure's 400 ``InvalidXmlRequest`` (ee460801).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from harness.fabric.deployments import (
    ApiProblem,
    Deployment,
    HostedService,
    HostedServices,
    bad_request,
    decode_base64_text,
    not_found,
)
from harness.fabric.mgmt import xml as mx

INVALID_XML_MESSAGE = "The request body's XML was invalid or not correctly specified."
MISSING_QUERY_MESSAGE = "A required query parameter was not specified for this request or was specified incorrectly."
V_ANY = "2009-10-01"  # Get/Create/Delete/Swap/Change Configuration/Update Status of a deployment
V_SERVICE = "2010-10-28"  # Create, Update and Delete Cloud Service, name availability
V_DELETE_INSTANCES = "2013-08-01"  # Delete Role Instances


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    request_id: str | None = None  # an operation's id (202) replaces the request's own
    name: str = ""  # the operation's name in List Subscription Operations (a change), "" for a read


def parse_body(body: bytes, root: str) -> Element:
    """The request's XML document, whose root element must be ``root`` (any namespace)."""
    if not body.strip():
        raise ApiProblem(400, "InvalidXmlRequest", INVALID_XML_MESSAGE)
    try:
        doc = DET.fromstring(body)
    except (DET.ParseError, DefusedXmlException, ValueError):
        raise ApiProblem(400, "InvalidXmlRequest", INVALID_XML_MESSAGE) from None
    if _local(doc.tag) != root:
        raise ApiProblem(400, "InvalidXmlRequest", INVALID_XML_MESSAGE)
    return doc


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def child_text(doc: Element, name: str, *, required: bool = False) -> str | None:
    for child in doc:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    if required:
        raise bad_request(f"The request body has no {name} element.")
    return None


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _label(doc: Element) -> str | None:
    raw = child_text(doc, "Label")
    return None if raw is None else decode_base64_text(raw, "label")


class Router:
    """The operations above over ``services``; ``accept`` checks verb and version, ``url`` is the service URL."""

    def __init__(self, services: HostedServices, certificate_url: Callable[[str, str], str]) -> None:
        self.services = services
        self._certificate_url = certificate_url  # (service, thumbprint) -> the certificate's resource URL

    def hosted_services(
        self,
        rest: list[str],
        method: str,
        query: dict[str, str],
        body: bytes,
        accept: Callable[[str, str, str], None],
        render: Callable[[HostedService, bool, str], str],
        instance_op: Callable[[Deployment, str, dict[str, str]], str],
    ) -> Reply:
        """``rest``: the path after ``services/hostedservices``."""
        if not rest:
            if method == "POST":
                accept(method, "POST", V_SERVICE)
                return self._create_service(body)
            accept(method, "GET", V_ANY)
            with self.services.lock:
                services = list(self.services.services.values())
            return Reply(200, mx.hosted_services_body([render(s, False, "") for s in services]))
        if len(rest) == 3 and [p.lower() for p in rest[:2]] == ["operations", "isavailable"]:
            accept(method, "GET", V_SERVICE)
            available, reason = self.services.name_available(rest[2])
            return Reply(200, mx.availability_body(available, reason))
        svc = self.services.service(rest[0])
        if len(rest) == 1:
            if method == "PUT":
                accept(method, "PUT", V_SERVICE)
                doc = parse_body(body, "UpdateHostedService")
                self.services.update_service(svc.name, _label(doc), child_text(doc, "Description"))
                return Reply(200, name="UpdateHostedService")
            if method == "DELETE":
                accept(method, "DELETE", V_SERVICE)
                self.services.delete_service(svc.name)
                return Reply(200, name="DeleteHostedService")
            if method == "POST":
                accept(method, "POST", V_ANY)
                doc = parse_body(body, "Swap")
                source = child_text(doc, "SourceDeployment", required=True) or ""
                rid = self.services.swap(svc.name, child_text(doc, "Production"), source)
                return Reply(202, request_id=rid, name="SwapDeployment")
            accept(method, "GET", V_ANY)
            embed = query.get("embed-detail", "false").lower() == "true"
            return Reply(200, render(svc, embed, mx.ROOT_ATTRS).encode("utf-8"))
        kind = rest[1].lower()
        if kind == "certificates" and len(rest) in (2, 3):
            return self._certificates(svc, rest[2:], method, body, accept)
        if kind not in ("deploymentslots", "deployments") or len(rest) < 3:
            raise not_found("The requested resource does not exist.")
        slot, name = (rest[2], None) if kind == "deploymentslots" else (None, rest[2])
        if len(rest) == 3:
            return self._deployment(svc, slot, name, method, query, body, accept)
        if len(rest) == 4 and rest[3].lower() == "roleinstances":
            accept(method, "POST", V_DELETE_INSTANCES)
            if query.get("comp", "").lower() != "delete":
                raise ApiProblem(400, "MissingOrInvalidRequiredQueryParameter", MISSING_QUERY_MESSAGE)
            doc = parse_body(body, "RoleInstances")
            names = [(c.text or "").strip() for c in doc if _local(c.tag) == "Name"]
            rid = self.services.delete_role_instances(svc.name, slot=slot, name=name, names=names)
            return Reply(202, request_id=rid, name="DeleteRoleInstances")
        if len(rest) == 5 and rest[3].lower() == "roleinstances":
            accept(method, "POST", V_ANY)
            dep = self.services.find(svc.name, slot=slot, name=name)
            verb = query.get("comp", "").capitalize()
            return Reply(202, request_id=instance_op(dep, rest[4], query), name=f"{verb}DeploymentRoleInstance")
        raise not_found("The requested resource does not exist.")

    def _create_service(self, body: bytes) -> Reply:
        doc = parse_body(body, "CreateHostedService")
        name = child_text(doc, "ServiceName", required=True) or ""
        if not name or len(name) > 63 or not all(c.isascii() and (c.isalnum() or c == "-") for c in name):
            raise bad_request(f"The hosted service name '{name}' is not valid.")
        label = _label(doc)
        if label is None:
            raise bad_request("The request body has no Label element.")
        location = child_text(doc, "Location") or child_text(doc, "AffinityGroup") or ""
        self.services.create_service(name, label, child_text(doc, "Description") or "", location)
        return Reply(201, name="CreateHostedService")

    def _certificates(
        self,
        svc: HostedService,
        rest: list[str],
        method: str,
        body: bytes,
        accept: Callable[[str, str, str], None],
    ) -> Reply:
        """List/Add Service Certificate(s) on ``<svc>/certificates``, Get/Delete on ``.../<algorithm>-<thumbprint>``."""
        if not rest:
            if method == "POST":
                accept(method, "POST", V_ANY)
                doc = parse_body(body, "CertificateFile")
                rid = self.services.add_certificate(
                    svc.name,
                    child_text(doc, "Data", required=True) or "",
                    child_text(doc, "CertificateFormat", required=True) or "",
                    child_text(doc, "Password") or "",
                )
                return Reply(202, request_id=rid, name="AddCertificate")
            accept(method, "GET", V_ANY)
            with self.services.lock:
                held = sorted(svc.certificates.items())
            return Reply(200, mx.certificates_body(self._certificate_url, svc.name, held))
        algorithm, dash, thumbprint = rest[0].partition("-")
        if not dash:
            raise not_found("The specified certificate does not exist.")
        if method == "DELETE":
            accept(method, "DELETE", V_ANY)
            rid = self.services.delete_certificate(svc.name, algorithm, thumbprint)
            return Reply(202, request_id=rid, name="DeleteCertificate")
        accept(method, "GET", V_ANY)
        return Reply(200, mx.certificate_body(self.services.certificate(svc.name, algorithm, thumbprint)))

    def _deployment(
        self,
        svc: HostedService,
        slot: str | None,
        name: str | None,
        method: str,
        query: dict[str, str],
        body: bytes,
        accept: Callable[[str, str, str], None],
    ) -> Reply:
        comp = query.get("comp", "").lower()
        if method == "POST" and comp == "config":
            accept(method, "POST", V_ANY)
            doc = parse_body(body, "ChangeConfiguration")
            encoded = child_text(doc, "Configuration", required=True) or ""
            rid = self.services.change_configuration(svc.name, slot=slot, name=name, encoded=encoded)
            return Reply(202, request_id=rid, name="ChangeDeploymentConfiguration")
        if method == "POST" and comp == "status":
            accept(method, "POST", V_ANY)
            doc = parse_body(body, "UpdateDeploymentStatus")
            dep = self.services.find(svc.name, slot=slot, name=name)
            rid = self.services.update_status(svc.name, dep.name, child_text(doc, "Status", required=True) or "")
            return Reply(202, request_id=rid, name="UpdateDeploymentStatus")
        if method == "POST" and comp == "upgrade":
            accept(method, "POST", V_ANY)
            doc = parse_body(body, "UpgradeDeployment")
            rid = self.services.upgrade_deployment(
                svc.name,
                slot=slot,
                name=name,
                mode=child_text(doc, "Mode", required=True) or "",
                package_url=child_text(doc, "PackageUrl", required=True) or "",
                encoded_configuration=child_text(doc, "Configuration", required=True) or "",
                label=_label(doc),
                role=child_text(doc, "RoleToUpgrade") or None,
            )
            return Reply(202, request_id=rid, name="UpgradeDeployment")
        if method == "POST" and comp == "walkupgradedomain":
            accept(method, "POST", V_ANY)
            doc = parse_body(body, "WalkUpgradeDomain")
            domain = child_text(doc, "UpgradeDomain", required=True) or ""
            rid = self.services.walk_upgrade_domain(svc.name, slot=slot, name=name, domain=domain)
            return Reply(202, request_id=rid, name="WalkUpgradeDomain")
        if method == "POST" and slot is not None and not comp:
            accept(method, "POST", V_ANY)
            doc = parse_body(body, "CreateDeployment")
            rid = self.services.create_deployment(
                svc.name,
                slot,
                name=child_text(doc, "Name", required=True) or "",
                package_url=child_text(doc, "PackageUrl", required=True) or "",
                label=_label(doc) or "",
                encoded_configuration=child_text(doc, "Configuration", required=True) or "",
                start=_bool(child_text(doc, "StartDeployment")),
            )
            return Reply(202, request_id=rid, name="CreateDeployment")
        if method == "POST" and comp:
            raise ApiProblem(400, "MissingOrInvalidRequiredQueryParameter", MISSING_QUERY_MESSAGE)
        if method == "DELETE":
            accept(method, "DELETE", V_ANY)
            rid = self.services.delete_deployment(svc.name, slot=slot, name=name)
            return Reply(202, request_id=rid, name="DeleteDeployment")
        accept(method, "GET", V_ANY)
        dep = self.services.find(svc.name, slot=slot, name=name)
        view = dep.view()
        up = dep.upgrade
        upgrade = (up.mode, up.state, up.domain) if up is not None else None
        body_out = mx.deployment_body(
            view, locked=dep.locked, created=dep.created, modified=dep.modified, upgrade=upgrade
        )
        return Reply(200, body_out)
