"""Endpoint rules (VMR610-VMR629): what the deployment's endpoints really do when probed.

Input endpoints on the VIP accept TCP and answer HTTP without a server error; https endpoints serve the
certificate the cscfg names (thumbprint), not expired or about to expire, with the service's host name;
every instance's own endpoint answers, and from that instance; internal endpoints answer from another
instance. They judge :class:`harness.facts.live.endpoints.EndpointFacts` (stage ``endpoints``).
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.checks.live._naming import instance_label

from harness.docs_sources import refs
from harness.engine.artefact import DEPLOYMENT
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.facts.live.endpoints import (
    BAD_RESPONSE,
    CLOSED,
    DIRECT,
    FAILED,
    HTTP_ERROR,
    INPUT,
    INSTANCE,
    INTERNAL,
    OK,
    REFUSED,
    RESET,
    TIMEOUT,
    TLS_ERROR,
    UNREACHABLE,
    EndpointCheck,
    EndpointFacts,
    is_local_address,
)
from harness.facts.live.subject import LiveFacts, present

LIVE = frozenset({DEPLOYMENT})
EXPIRY_WARNING_DAYS = 30
TCP_FAILURES = frozenset({REFUSED, RESET, TIMEOUT, UNREACHABLE})
HTTP_FAILURES = frozenset({HTTP_ERROR, BAD_RESPONSE, CLOSED, TIMEOUT})


def _evidence(check: EndpointCheck, **extra: str) -> dict[str, str]:
    out = {"endpoint": check.endpoint, "role": check.role, "address": check.address, "protocol": check.protocol}
    if check.instance:
        out["instance"] = check.instance
    if check.error_kind:
        out["error_kind"] = check.error_kind
    if check.total_seconds is not None:
        out["seconds"] = f"{check.total_seconds:.3f}"
    if check.attempts > 1:
        out["attempts"] = str(check.attempts)
    out.update(extra)
    return out


def _checks(subject: LiveFacts, *kinds: str) -> Iterator[EndpointCheck]:
    facts: EndpointFacts = present(subject.endpoints, "endpoints")
    for check in facts.checks:
        if check.kind in kinds:
            yield check


def _answered_by(check: EndpointCheck) -> str:
    """Behind a VIP, which instance answered (when the check is not already about one)."""
    return f", answered by {check.served_by}," if check.served_by and not check.instance else ""


def _tls_checks(subject: LiveFacts) -> Iterator[EndpointCheck]:
    """Checks with a TLS handshake, one per distinct certificate and endpoint: the per-instance sweep
    behind a VIP adds an instance's check only when it served another certificate than seen before."""
    seen: set[tuple[str, str, str | None]] = set()
    for c in _checks(subject, INPUT, INSTANCE, DIRECT):
        if c.tls is None:
            continue
        key = (c.kind, f"{c.role}/{c.endpoint}", c.tls.thumbprint)
        if c.kind == INPUT and c.instance is not None and key in seen:
            continue
        seen.add(key)
        yield c


class VipEndpointRefusesTcp(Rule):
    """An input endpoint on the VIP does not accept TCP connections.

    ## What it does
    Connects to every load-balanced input endpoint (VIP:public port) with the connect timeout, retrying
    refused and reset connections a few times, and reports the endpoints that refuse, reset, time out, or
    (tcp endpoints) accept and close at once without a byte — the load balancer has no live backend.

    ## Why is this bad?
    Clients cannot reach the service on that endpoint at all: no instance is in rotation for it, the
    load balancer rule is missing, or the role does not listen on its local port.

    ## Example
    ```text
    HttpIn 203.0.113.7:80 → connection refused (3 attempts)
    ```

    ## Use instead
    ```text
    HttpIn 203.0.113.7:80 → connected in 12 ms, HTTP 200 from WebVM_IN_1
    ```

    ## References
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    - Get Deployment (Service Management REST API) — InputEndpointList: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR610"
    name = "vip-endpoint-refuses-tcp"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints")
    references = refs("lb-health-probes", "sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _checks(subject, INPUT):
            if c.status != FAILED:
                continue
            closed_tcp = c.error_kind == CLOSED and c.protocol == "tcp"
            if (c.error_kind in TCP_FAILURES and not c.connected) or closed_tcp:
                yield self.finding(
                    subject,
                    c.location,
                    f"Input endpoint {c.endpoint!r} of role {c.role} at {c.address} does not accept TCP: {c.error}",
                    evidence=_evidence(c),
                )


class HttpEndpointError(Rule):
    """An http/https input endpoint answers with a server error, or not with HTTP at all.

    ## What it does
    Sends ``GET /`` (a new connection, ``Connection: close``) to every http and https input endpoint
    and reports a 5xx status, an answer that is not HTTP, a connection closed without an answer, or no
    answer within the read timeout.

    ## Why is this bad?
    The endpoint is reachable but the application behind it is failing: users get errors, and the load
    balancer's default guest-agent probe does not notice (it asks the agent, not the application).

    ## Example
    ```text
    GET http://203.0.113.7/ → 503 Service Unavailable
    ```

    ## Use instead
    ```text
    GET http://203.0.113.7/ → 200 OK (or a 3xx/4xx the application means to send)
    ```

    ## References
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    - Azure Cloud Services (classic) Definition LoadBalancerProbe Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-loadbalancerprobe
    - RFC 9110: HTTP Semantics: https://www.rfc-editor.org/rfc/rfc9110
    """

    id = "VMR611"
    name = "http-endpoint-error"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "http")
    references = refs("lb-health-probes", "csdef-lb-probe", "rfc9110")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _checks(subject, INPUT):
            if c.status != FAILED or c.protocol not in ("http", "https") or not c.connected:
                continue
            if c.error_kind not in HTTP_FAILURES:
                continue
            served = f" (served by {c.served_by})" if c.served_by else ""
            yield self.finding(
                subject,
                c.location,
                f"{c.protocol.upper()} input endpoint {c.endpoint!r} of role {c.role} at {c.address}: "
                f"{c.error}{served}.",
                evidence=_evidence(c, http_status=str(c.http_status or "")),
            )


class TlsThumbprintMismatch(Rule):
    """An https endpoint serves a certificate other than the one the cscfg names.

    ## What it does
    Takes the SHA-1 thumbprint of the certificate served in the TLS handshake and compares it with the
    thumbprint the deployment's ServiceConfiguration gives the endpoint's certificate (the csdef
    endpoint's ``certificate`` name; without a csdef, every certificate of the role). Thumbprints are
    not secrets: the message shows both.

    ## Why is this bad?
    The instances serve a stale or wrong certificate (an old image binding, a certificate installed by
    hand): after a renewal in the cscfg, clients still see the old one, and it may expire unnoticed.

    ## Example
    ```text
    served 1B2C…9F, cscfg SSL = 4CF7…98
    ```

    ## Use instead
    ```text
    served 4CF7…98 = cscfg SSL 4CF7…98 (bind the certificate the configuration deploys)
    ```

    ## References
    - Configure TLS for an application in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-ssl-certificate-portal
    - Get Deployment (Service Management REST API) — Configuration: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR612"
    name = "tls-thumbprint-mismatch"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "certificates")
    references = refs("cloud-services-ssl", "sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _tls_checks(subject):
            if c.tls is None or c.tls.thumbprint_matches is not False:
                continue
            expected = ", ".join(c.tls.expected_thumbprints)
            if c.tls.expected_source == "csdef":
                what = f"the cscfg thumbprint of certificate {c.tls.certificate_name!r}: {expected}"
            else:
                what = f"any cscfg certificate thumbprint of role {c.role} (no csdef given): {expected}"
            yield self.finding(
                subject,
                c.location,
                f"{c.label}{_answered_by(c)} serves certificate {c.tls.thumbprint} ({c.tls.subject}), not {what}.",
                evidence=_evidence(c, served=c.tls.thumbprint or "", expected=expected),
            )


class TlsCertificateExpiry(Rule):
    """An https endpoint serves a certificate that has expired or expires within 30 days.

    ## What it does
    Reads notAfter of the served certificate and reports it when fewer than 30 days are left (medium)
    or it has already expired (high).

    ## Why is this bad?
    Browsers and clients refuse an expired certificate: the endpoint is effectively down for them.
    Renewing a Cloud Service certificate takes an upload and a configuration change, so it needs notice.

    ## Example
    ```text
    CN=www.contoso.com notAfter 2024-03-01 (12 days left)
    ```

    ## Use instead
    ```text
    Upload the renewed certificate, update its thumbprint in the cscfg, and check again.
    ```

    ## References
    - RFC 5280: Internet X.509 PKI Certificate and CRL Profile — certificate validity: https://www.rfc-editor.org/rfc/rfc5280
    - Configure TLS for an application in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-ssl-certificate-portal
    """

    id = "VMR613"
    name = "tls-certificate-expiry"
    severity = Severity.MEDIUM
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "certificates")
    references = refs("rfc5280", "cloud-services-ssl")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _tls_checks(subject):
            if c.tls is None or c.tls.days_left is None or c.tls.days_left >= EXPIRY_WARNING_DAYS:
                continue
            expired = c.tls.days_left < 0
            state = (
                f"expired {abs(c.tls.days_left):.0f} day(s) ago"
                if expired
                else f"expires in {c.tls.days_left:.0f} day(s)"
            )
            yield self.finding(
                subject,
                c.location,
                f"{c.label} serves certificate {c.tls.thumbprint} ({c.tls.subject}) that {state} "
                f"(notAfter {c.tls.not_after}).",
                evidence=_evidence(c, thumbprint=c.tls.thumbprint or "", not_after=c.tls.not_after or ""),
                severity=Severity.HIGH if expired else None,
            )


class TlsHostnameMismatch(Rule):
    """An https endpoint's certificate does not name the service's host name.

    ## What it does
    Compares the served certificate's subject alternative names (or its CN when there is no SAN) with
    the host name of the deployment's URL (``<service>.cloudapp.net``), wildcards included. It is low
    severity, and only informational when the VIP is a loopback or private address (a local fabric or a
    test network, where the public name cannot be expected to match).

    ## Why is this bad?
    Clients that connect by the service's name reject the certificate. It is often intended (clients use
    a custom domain that CNAMEs to cloudapp.net), so this is a report, not a failure.

    ## Example
    ```text
    host contoso.cloudapp.net, certificate names: www.fabrikam.com
    ```

    ## Use instead
    ```text
    A certificate whose SAN lists the name clients use (www.contoso.com, and the CNAME target if used).
    ```

    ## References
    - RFC 6125: Representation and Verification of Domain-Based Application Service Identity (TLS): https://www.rfc-editor.org/rfc/rfc6125
    """

    id = "VMR614"
    name = "tls-hostname-mismatch"
    severity = Severity.LOW
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "certificates")
    references = refs("rfc6125")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _tls_checks(subject):
            if c.tls is None or c.tls.hostname_matches is not False:
                continue
            local = is_local_address(c.host)
            names = ", ".join(c.tls.names) or "(none)"
            tail = " (the VIP is a local address, so a mismatch is expected here)" if local else ""
            yield self.finding(
                subject,
                c.location,
                f"{c.label} serves a certificate for {names}, which does not cover the service's host name "
                f"{c.tls.host_name!r}{tail}.",
                evidence=_evidence(c, host_name=c.tls.host_name, names=names),
                severity=Severity.INFO if local else None,
            )


class TlsHandshakeFailed(Rule):
    """An https endpoint accepts TCP but the TLS handshake fails.

    ## What it does
    Reports https input endpoints where the TCP connection succeeds but the TLS handshake does not
    (protocol error, no certificate, no answer within the read timeout), with the handshake error.

    ## Why is this bad?
    No https client can use the endpoint: the instance has no certificate bound to the port, or speaks
    plain HTTP where https is declared.

    ## Example
    ```text
    HttpsIn 203.0.113.7:443 → TLS handshake failed: WRONG_VERSION_NUMBER (plain HTTP on 443)
    ```

    ## Use instead
    ```text
    Bind the certificate named in the csdef endpoint to the local port (netsh http add sslcert …).
    ```

    ## References
    - RFC 8446: The Transport Layer Security (TLS) Protocol Version 1.3: https://www.rfc-editor.org/rfc/rfc8446
    - Configure TLS for an application in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-ssl-certificate-portal
    """

    id = "VMR615"
    name = "tls-handshake-failed"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "certificates")
    references = refs("rfc8446", "cloud-services-ssl")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _checks(subject, INPUT):
            if c.status == FAILED and c.error_kind == TLS_ERROR:
                yield self.finding(
                    subject,
                    c.location,
                    f"https input endpoint {c.endpoint!r} of role {c.role} at {c.address} accepts TCP but: {c.error}",
                    evidence=_evidence(c),
                )


class InstanceEndpointUnreachable(Rule):
    """An instance's own endpoint (InstanceInputEndpoint, or its direct address) does not answer.

    ## What it does
    Probes each instance's InstanceInputEndpoint on the VIP (its own public port, mapped 1:1 to that
    instance) — and its direct address when the target says it is reachable — and reports the instances
    where the connection is refused, reset, times out, closes without a byte, or answers an HTTP 5xx.

    ## Why is this bad?
    The VIP may still answer through the other instances, hiding that this one is down: remote
    management (WinRM, RDP) and per-instance diagnostics through that endpoint fail, and the instance is
    likely not serving its share of traffic either.

    ## Example
    ```text
    Direct of WebVM_IN_1 at 203.0.113.7:10001 → connected, then closed without a byte
    ```

    ## Use instead
    ```text
    Direct of WebVM_IN_1 at 203.0.113.7:10001 → banner "… WebVM_IN_1 …"
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InstanceInputEndpoint: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Get Deployment (Service Management REST API) — InstanceEndpoints: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR616"
    name = "instance-endpoint-unreachable"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints")
    references = refs("csdef-webrole", "sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _checks(subject, INSTANCE, DIRECT):
            if c.status != FAILED:
                continue
            yield self.finding(
                subject,
                c.location,
                f"Instance {instance_label(subject, c.instance)} does not answer on its {c.kind} endpoint "
                f"{c.endpoint!r} ({c.protocol}) at {c.address}: {c.error}",
                evidence=_evidence(c),
            )


class InternalEndpointUnreachable(Rule):
    """An internal endpoint does not accept connections from another instance.

    ## What it does
    From inside another instance (over WinRM) opens a TCP connection to each instance's internal
    endpoint (its IP address and the csdef's fixed port) and reports refused or timed-out connections.
    Checks the guest could not run are skipped, not reported.

    ## Why is this bad?
    Roles talk to each other over internal endpoints; a blocked or closed one breaks that traffic
    (the guest firewall lacks the rule, the service does not listen, or a NetworkTrafficRules entry
    forbids the caller).

    ## Example
    ```text
    from WebVM_IN_0: Indexer_IN_1 10.0.0.5:9000 → connection refused
    ```

    ## Use instead
    ```text
    from WebVM_IN_0: Indexer_IN_1 10.0.0.5:9000 → connected
    ```

    ## References
    - Communication for roles in Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-enable-communication-role-instances
    - Azure Cloud Services (classic) Definition NetworkTrafficRules Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-networktrafficrules
    """

    id = "VMR617"
    name = "internal-endpoint-unreachable"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "internal")
    references = refs("cloud-services-internal-endpoints", "csdef-network-traffic-rules")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _checks(subject, INTERNAL):
            if c.status != FAILED:
                continue
            yield self.finding(
                subject,
                c.location,
                f"Internal endpoint {c.endpoint!r} of instance {instance_label(subject, c.instance)} ({c.address}) "
                f"is unreachable from instance {instance_label(subject, c.from_instance)}: {c.error}",
                evidence=_evidence(c, from_instance=c.from_instance or ""),
            )


class InstanceEndpointWrongInstance(Rule):
    """An instance's own endpoint is answered by a different instance.

    ## What it does
    When the answer on an instance's InstanceInputEndpoint (or direct address) identifies the instance
    that served it (``identify`` in the target: header, body or banner), reports an answer from another
    instance.

    ## Why is this bad?
    An InstanceInputEndpoint maps one public port to one instance. Answers from another instance mean the
    port mapping is wrong: remote management and diagnostics reach the wrong machine.

    ## Example
    ```text
    WinRM of WebVM_IN_1 (port 10101) → served by WebVM_IN_0
    ```

    ## Use instead
    ```text
    WinRM of WebVM_IN_1 (port 10101) → served by WebVM_IN_1
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InstanceInputEndpoint: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Get Deployment (Service Management REST API) — InstanceEndpoints: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR618"
    name = "instance-endpoint-wrong-instance"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints")
    references = refs("csdef-webrole", "sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _checks(subject, INSTANCE, DIRECT):
            if c.status != OK or not c.served_by or not c.instance or c.served_by == c.instance:
                continue
            yield self.finding(
                subject,
                c.location,
                f"{c.label} was answered by instance {c.served_by}, not by {instance_label(subject, c.instance)}.",
                evidence=_evidence(c, served_by=c.served_by),
            )


class TlsThumbprintUnverifiable(Rule):
    """An https endpoint's certificate cannot be compared with the configuration.

    ## What it does
    Reports https endpoints whose served certificate has no cscfg thumbprint to be compared with: the
    endpoint's certificate has no entry in the role's ``Certificates`` of the deployment's configuration,
    or the configuration could not be read.

    ## Why is this bad?
    Nothing ties the served certificate to the deployment: a stale or foreign certificate would go
    unnoticed until a client complains.

    ## Example
    ```xml
    <InputEndpoint name="HttpsIn" protocol="https" port="443" certificate="SSL" />
    <!-- cscfg: no <Certificate name="SSL" thumbprint="…"/> in the role -->
    ```

    ## Use instead
    ```xml
    <Certificate name="SSL" thumbprint="4CF78D149A067F24FC77BF1F0665077285027C98" thumbprintAlgorithm="sha1" />
    ```

    ## References
    - Configure TLS for an application in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-ssl-certificate-portal
    - Azure Cloud Services (classic) Config Role Schema — Certificates: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR619"
    name = "tls-thumbprint-unverifiable"
    severity = Severity.LOW
    applies_to = LIVE
    requires = ("endpoints",)
    tags = ("live", "endpoints", "certificates")
    references = refs("cloud-services-ssl", "cscfg-role")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for c in _tls_checks(subject):
            if c.tls is None or not c.tls.thumbprint or c.tls.expected_thumbprints:
                continue
            why = c.note or "no cscfg thumbprint is known for it"
            yield self.finding(
                subject,
                c.location,
                f"{c.label} serves certificate {c.tls.thumbprint}, which cannot be checked: {why}.",
                evidence=_evidence(c, served=c.tls.thumbprint),
            )
