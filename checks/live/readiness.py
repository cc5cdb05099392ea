"""Readiness rules (VMR600-VMR609): the management API answers, the deployment is Running, every instance
reaches ReadyRole within the deadline (or is named with the failed status that stopped the wait), instance
counts match the configuration, and instances are spread over upgrade and fault domains.

They judge :class:`harness.facts.live.deployment.ReadinessFacts` (stage ``readiness``), except VMR600 which
reports why the ``deployment`` stage could not run at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from harness.checks.live._naming import instance_label

from harness.docs_sources import refs
from harness.engine.artefact import DEPLOYMENT
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.facts.live.deployment import FAILED, HEALTHY, RUNNING, InstanceReadiness
from harness.facts.live.subject import LiveFacts, present

LIVE = frozenset({DEPLOYMENT})


def _details(inst: InstanceReadiness) -> str:
    extra = []
    if inst.state_details:
        extra.append(f"details: {inst.state_details}")
    if inst.error_code:
        extra.append(f"error code {inst.error_code}")
    return f" ({'; '.join(extra)})" if extra else ""


class ManagementApiUnreachable(Rule):
    """The Service Management API could not be used, so the live deployment could not be checked.

    ## What it does
    Reports when the ``deployment`` stage could not run at all: the management endpoint refused or timed
    out, the TLS handshake or the management certificate was rejected, or Get Deployment found no
    deployment in the target's slot. Every other live rule is skipped with the same reason.

    ## Why is this bad?
    Without Get Deployment there is no instance list, no endpoint list and no configuration: nothing about
    the deployment is known, so a green run would mean nothing.

    ## Example
    ```yaml
    management:
      url: https://management.core.windows.net   # wrong port / expired management certificate
      slot: staging                              # nothing deployed to staging
    ```

    ## Use instead
    ```yaml
    management:
      url: https://management.core.windows.net:443
      slot: production
      certificate: {file: mgmt.pem}
      key: {file: secrets/mgmt.key}
    ```

    ## References
    - Cloud Services REST APIs (Service Management, classic): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/
    - Get Deployment (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    - Azure Resource Manager vs. classic deployment — the classic deployment model: https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/deployment-models
    """

    id = "VMR600"
    name = "management-api-unreachable"
    severity = Severity.CRITICAL
    applies_to = LIVE
    tags = ("live", "management")
    references = refs("sm-cloud-services-api", "sm-get-deployment", "arm-deployment-models")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        if subject.deployment is not None:
            return
        reason = subject.notes.get("deployment") or "no reason was recorded"
        yield self.finding(
            subject,
            "management",
            f"The Service Management API could not be used, so the deployment was not checked: {reason}",
            evidence={"reason": reason},
        )


class DeploymentNotRunning(Rule):
    """The deployment is not Running.

    ## What it does
    Reads the deployment status at the end of the readiness wait and reports anything but ``Running``
    (``Suspended``, ``RunningTransitioning`` at the deadline, ``Deploying`` …).

    ## Why is this bad?
    A suspended or still-transitioning deployment serves no traffic (or only part of it); the load
    balancer only routes to a Running deployment's ready instances.

    ## Example
    ```text
    Get Deployment: <Status>Suspended</Status>
    ```

    ## Use instead
    ```text
    Start the deployment (Update Deployment Status → Running) and wait for <Status>Running</Status>.
    ```

    ## References
    - Get Deployment (Service Management REST API) — Status: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR601"
    name = "deployment-not-running"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "readiness")
    references = refs("sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        r = present(subject.readiness, "readiness")
        if r.deployment_status == RUNNING:
            return
        when = "when the wait stopped early" if r.failed_fast else f"after waiting {r.elapsed:.1f} s"
        yield self.finding(
            subject,
            "deployment/status",
            f"The deployment status is {r.deployment_status or '(empty)'!r}, not Running, {when} "
            f"(deadline {r.deadline:g} s).",
            evidence={"status": r.deployment_status, "elapsed": f"{r.elapsed:.1f}"},
        )


class InstanceNotReadyByDeadline(Rule):
    """An instance did not reach ReadyRole within the readiness deadline.

    ## What it does
    Polls Get Deployment until every instance is ``ReadyRole`` or the ``timeouts.ready`` deadline passes,
    and reports each instance still in a transitional status at the deadline (``BusyRole``,
    ``StartingRole``, ``RoleStateUnknown`` …), naming the status.

    ## Why is this bad?
    Only ReadyRole instances are in the load balancer's rotation. An instance stuck in BusyRole (the role
    reports busy) or starting takes no traffic: the service runs below its configured capacity.

    ## Example
    ```text
    WebVM_IN_1  BusyRole   (after 120 s)
    ```

    ## Use instead
    ```text
    WebVM_IN_1  ReadyRole  (after 35 s)  — fix the start-up task or the health status the role reports
    ```

    ## References
    - Get Deployment (Service Management REST API) — InstanceStatus: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    - Customize the lifecycle of a web or worker role in .NET (Cloud Services classic) — Busy means no traffic: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-lifecycle-dotnet
    """

    id = "VMR602"
    name = "instance-not-ready-by-deadline"
    severity = Severity.HIGH
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "readiness")
    references = refs("sm-get-deployment", "role-lifecycle")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        r = present(subject.readiness, "readiness")
        if not r.deadline_passed:
            return
        for inst in r.instances:
            if inst.classification == HEALTHY or inst.classification == FAILED:
                continue
            seen = " (it was ReadyRole earlier, then left it)" if inst.ready_after is not None else ""
            yield self.finding(
                subject,
                f"instances/{inst.name}",
                f"Instance {instance_label(subject, inst.name)} of role {inst.role} is {inst.status}, not ReadyRole, "
                f"when the {r.deadline:g} s readiness deadline passed{seen}{_details(inst)}.",
                evidence={"instance": inst.name, "status": inst.status, "deadline": f"{r.deadline:g}"},
            )


class InstanceFailedStatus(Rule):
    """An instance is in a failed status (CyclingRole, FailedStartingRole, UnresponsiveRole …).

    ## What it does
    Stops the readiness wait as soon as an instance reports a status that waiting will not fix
    (``CyclingRole``, ``FailedStartingRole``, ``FailedStartingVM``, ``UnresponsiveRole``,
    ``ProvisioningFailed``, or ``StoppedVM`` while no operation holds the deployment) and names it.

    ## Why is this bad?
    The platform has given up on the instance, or the role keeps crashing after start: it will not come
    into rotation by itself, and every check after it would only time out.

    ## Example
    ```text
    WebVM_IN_0  CyclingRole   (the role host exits during OnStart)
    ```

    ## Use instead
    ```text
    WebVM_IN_0  ReadyRole     — fix the start-up failure (event log, role host log), redeploy or reimage
    ```

    ## References
    - Get Deployment (Service Management REST API) — InstanceStatus: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR603"
    name = "instance-failed-status"
    severity = Severity.CRITICAL
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "readiness")
    references = refs("sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        r = present(subject.readiness, "readiness")
        for inst in r.by_classification(FAILED):
            yield self.finding(
                subject,
                f"instances/{inst.name}",
                f"Instance {instance_label(subject, inst.name)} of role {inst.role} is in the failed status "
                f"{inst.status}{_details(inst)}; "
                f"the readiness wait stopped after {r.elapsed:.1f} s instead of waiting for the deadline.",
                evidence={"instance": inst.name, "status": inst.status},
            )


def _domain_spread(rule: Rule, subject: LiveFacts, attr: str, what: str) -> Iterator[Finding]:
    r = present(subject.readiness, "readiness")
    by_role: dict[str, list[InstanceReadiness]] = defaultdict(list)
    for inst in r.instances:
        by_role[inst.role].append(inst)
    for role, instances in by_role.items():
        values = {i.upgrade_domain if attr == "upgrade_domain" else i.fault_domain for i in instances}
        if len(instances) < 2 or None in values or len(values) > 1:
            continue
        domain = next(iter(values))
        yield rule.finding(
            subject,
            f"roles/{role}/{attr}",
            f"All {len(instances)} instances of role {role} "
            f"({', '.join(instance_label(subject, i.name) for i in instances)}) are in "
            f"{what} {domain}: one {what} event takes the whole role down.",
            evidence={"role": role, what: str(domain)},
        )


class UpgradeDomainSpread(Rule):
    """Every instance of a role is in the same upgrade domain.

    ## What it does
    For each role with at least two instances, reports when all of them share one
    ``InstanceUpgradeDomain``.

    ## Why is this bad?
    Upgrades and guest OS updates walk one upgrade domain at a time. With all instances in one domain,
    an update stops all of them at once: the role is down during every upgrade.

    ## Example
    ```text
    WebVM_IN_0 UD 0, WebVM_IN_1 UD 0
    ```

    ## Use instead
    ```text
    WebVM_IN_0 UD 0, WebVM_IN_1 UD 1   (upgradeDomainCount ≥ 2 in the csdef, ≥ 2 instances)
    ```

    ## References
    - How to update a Cloud Service (classic): upgrade domains and fault domains — upgrade domains: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-update-azure-service
    - Get Deployment (Service Management REST API) — InstanceUpgradeDomain: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR604"
    name = "upgrade-domain-spread"
    severity = Severity.MEDIUM
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "availability")
    references = refs("cloud-services-update", "sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        yield from _domain_spread(self, subject, "upgrade_domain", "upgrade domain")


class FaultDomainSpread(Rule):
    """Every instance of a role is in the same fault domain.

    ## What it does
    For each role with at least two instances, reports when all of them share one
    ``InstanceFaultDomain``.

    ## Why is this bad?
    A fault domain shares a rack, power and network switch: one hardware failure takes every instance of
    the role down together, which two instances are meant to prevent.

    ## Example
    ```text
    WebVM_IN_0 FD 0, WebVM_IN_1 FD 0
    ```

    ## Use instead
    ```text
    WebVM_IN_0 FD 0, WebVM_IN_1 FD 1
    ```

    ## References
    - How to update a Cloud Service (classic): upgrade domains and fault domains — fault domains: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-update-azure-service
    - Get Deployment (Service Management REST API) — InstanceFaultDomain: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    """

    id = "VMR605"
    name = "fault-domain-spread"
    severity = Severity.MEDIUM
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "availability")
    references = refs("cloud-services-update", "sm-get-deployment")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        yield from _domain_spread(self, subject, "fault_domain", "fault domain")


class InstanceCountMismatch(Rule):
    """A role runs a different number of instances than its configuration asks for.

    ## What it does
    Compares the number of instances of each role in Get Deployment with ``Instances/@count`` of the
    deployment's own ServiceConfiguration.

    ## Why is this bad?
    Missing instances mean less capacity and less redundancy than planned (a failed scale operation, an
    instance deleted by hand); extra ones mean a configuration that no longer describes the deployment.

    ## Example
    ```xml
    <Role name="WebVM"><Instances count="3" /></Role>   <!-- Get Deployment lists 2 WebVM instances -->
    ```

    ## Use instead
    ```text
    Scale the role back to its configured count (or update the configuration to the intended count).
    ```

    ## References
    - Get Deployment (Service Management REST API) — RoleInstanceList: https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment
    - Azure Cloud Services (classic) Config Role Schema — Instances: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR606"
    name = "instance-count-mismatch"
    severity = Severity.MEDIUM
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "readiness")
    references = refs("sm-get-deployment", "cscfg-role")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        r = present(subject.readiness, "readiness")
        actual: dict[str, int] = defaultdict(int)
        for inst in r.instances:
            actual[inst.role] += 1
        for role, expected in r.expected_counts:
            if actual.get(role, 0) != expected:
                yield self.finding(
                    subject,
                    f"roles/{role}/instances",
                    f"Role {role} runs {actual.get(role, 0)} instance(s), but the deployment's configuration "
                    f"asks for {expected}.",
                    evidence={"role": role, "running": str(actual.get(role, 0)), "configured": str(expected)},
                )


class ManagementApiFlaky(Rule):
    """The management API failed some polls while waiting for readiness.

    ## What it does
    Reports Get Deployment polls that failed (after their own retries) during the readiness wait, while
    the first call and the wait as a whole succeeded.

    ## Why is this bad?
    Deployment automation (scripts, this harness, CI) depends on the management API; intermittent 5xx
    answers or timeouts make every operation slower and less predictable, and may point at a throttled
    subscription or a misbehaving proxy.

    ## Example
    ```text
    poll 7: Get Deployment: 503 ServerBusy after 3 attempts
    ```

    ## Use instead
    ```text
    Every poll answered 200 (check proxies, throttling and the management endpoint's health).
    ```

    ## References
    - Cloud Services REST APIs (Service Management, classic): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/
    - RFC 9110: HTTP Semantics — server errors (5xx): https://www.rfc-editor.org/rfc/rfc9110
    """

    id = "VMR607"
    name = "management-api-flaky"
    severity = Severity.LOW
    applies_to = LIVE
    requires = ("readiness",)
    tags = ("live", "management")
    references = refs("sm-cloud-services-api", "rfc9110")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        r = present(subject.readiness, "readiness")
        if not r.poll_errors:
            return
        yield self.finding(
            subject,
            "management/polls",
            f"{len(r.poll_errors)} of {r.polls} Get Deployment polls failed during the readiness wait; "
            f"the first: {r.poll_errors[0]}",
            evidence={"failed_polls": str(len(r.poll_errors)), "polls": str(r.polls)},
        )
