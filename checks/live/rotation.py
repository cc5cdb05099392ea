"""Load-balancer rules (VMR800-VMR819): rotation through the VIP (VMR800-VMR806) and drain (VMR810-VMR813).

They judge :class:`harness.facts.live.rotation.RotationFacts` (stage ``rotation``) and ``DrainFacts``
(destructive stage ``drain``, run with ``--vmr-destructive``). The numbers come from the rotation
statistics module (each rule's "What it does" gives the bound it uses); the load-balancer semantics from
the Azure Load Balancer documentation (distribution modes, health probes).
Affinity and keep-alive pinning are reported as such (info/low), never as a broken rotation.
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.checks.live._naming import instance_label

from harness.docs_sources import refs
from harness.engine.artefact import DEPLOYMENT
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.live import stats
from harness.facts.live.platform import READY
from harness.facts.live.rotation import DrainFacts, EndpointRotation, RotationFacts
from harness.facts.live.subject import LiveFacts, present

KINDS = frozenset({DEPLOYMENT})
#: Spread judged only with at least this many answers per expected instance.
SPREAD_MIN_PER_INSTANCE = 10
#: Spread: a p-value below this *and* an instance below half its fair share is "badly skewed".
SPREAD_P_VALUE = 0.001
SPREAD_SHARE_FACTOR = 0.5
#: Connection errors: at or above this share of requests the finding is red.
ERROR_RATE_RED = 0.10


def _pct(c: float) -> str:
    text = f"{100 * c:.4f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _probed(subject: LiveFacts) -> tuple[EndpointRotation, ...]:
    facts: RotationFacts = present(subject.rotation, "rotation")
    probed = facts.probed
    if not probed:
        raise NotApplicable(facts.note or "the deployment has no load-balanced http/https/tcp input endpoint")
    return probed


def _evidence(ep: EndpointRotation, **extra: object) -> dict[str, str]:
    out = {
        "endpoint": ep.label,
        "vip": ep.where,
        "requests": str(ep.requests),
        "answered": str(ep.answered),
        "bound": str(ep.bound),
        "confidence": str(ep.confidence),
        "counts": ", ".join(f"{k}={v}" for k, v in sorted(ep.counts.items())) or "none",
        "errors": ep.errors.describe(),
    }
    out.update({k: str(v) for k, v in extra.items()})
    return out


class RotationInstanceUnseen(Rule):
    """A Ready instance never answered through the VIP within the bound.

    ## What it does
    For every load-balanced http/https/tcp input endpoint, the ``rotation`` probe opens a new TCP connection
    per request to ``VIP:port`` and identifies the instance that answered. It samples until every
    ReadyRole instance of the role has answered or the bound is reached: the smallest number of requests
    that sees all ``n`` instances with the target's ``rotation.confidence`` under an ideal 5-tuple hash
    (exact coupon-collector tail; n = 3 needs 15 requests for 99 %, 20 for 99.9 %). The rule reports
    each Ready instance that never answered (red), or answered only after the bound (amber: it is in
    rotation but gets much less than its share).

    ## Why is this bad?
    A Ready instance that gets no traffic is out of rotation: usually its load-balancer probe fails (the
    guest firewall blocks the probe or the endpoint port, the app does not listen on the local port, a
    custom ``LoadBalancerProbe`` path answers non-200) or it crashed. The service then runs on fewer
    instances than it pays for, and loses its redundancy.

    ## Example
    ```text
    WebVM/HttpIn: 20 answers from WebVM_IN_0 and WebVM_IN_2, none from WebVM_IN_1 (ReadyRole)
    ```

    ## Use instead
    Every ReadyRole instance answers through the VIP. Check the probe (its path returns 200 on every
    instance), the guest firewall rule for the endpoint's local port, and that the app listens on it.

    ## References
    - Azure Load Balancer distribution modes: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    """

    id = "VMR800"
    name = "rotation-instance-unseen"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation")
    references = refs("lb-distribution", "lb-health-probes")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for ep in _probed(subject):
            if not ep.expected or ep.affinity or (ep.answered and not ep.counts):
                continue  # nothing expected / affinity (VMR802) / nothing attributable (VMR805)
            for name in ep.expected:
                first = ep.first_seen.get(name)
                now = ep.status_now.get(name)
                status = f"; Get Deployment now says {now}" if now and now != READY else ""
                who = instance_label(subject, name)
                errors = (
                    f"; {ep.errors.total} connections through the VIP failed ({ep.errors.describe()})"
                    if ep.errors.total
                    else ""
                )
                if first is None:
                    message = (
                        f"{who} (ReadyRole) never answered through {ep.label} at {ep.where} in {ep.requests} "
                        f"requests ({ep.answered} answered, a new connection each; bound {ep.bound} for "
                        f"{_pct(ep.confidence)} confidence over {len(ep.expected)} Ready instances){status}{errors}"
                    )
                elif first > ep.bound:
                    message = (
                        f"{who} answered through {ep.label} at {ep.where} only at answer #{first}, after the "
                        f"bound of {ep.bound} for {_pct(ep.confidence)} confidence over {len(ep.expected)} Ready "
                        f"instances: it gets far less than its share of new connections{errors}"
                    )
                else:
                    continue
                # an instance that answered late is in rotation, with less than its share: amber
                severity = Severity.HIGH if first is None else Severity.MEDIUM
                yield self.finding(subject, ep.label, message, evidence=_evidence(ep, instance=name), severity=severity)


class RotationSpreadSkewed(Rule):
    """New connections through the VIP spread very unevenly over the Ready instances.

    ## What it does
    After every Ready instance has answered, the ``rotation`` probe keeps sampling up to 20 answers per
    instance. The rule compares the counts with a uniform spread (Pearson's χ², n − 1 degrees of freedom)
    and reports an endpoint when the p-value is below 0.001 *and* some instance got less than half its
    fair share. Endpoints with an unseen instance (VMR800) or affinity (VMR802) are left to those rules.

    ## Why is this bad?
    A 5-tuple hash spreads new connections evenly; a strong skew means an instance is intermittently out
    of rotation (a flapping probe), has a smaller weight, or the balancer is not hashing per connection.
    The starved instances carry little load while the others run hot, and rotation tests need many more
    requests (the message says how many with the observed shares).

    ## Example
    ```text
    WebVM/HttpIn: WebVM_IN_0=50, WebVM_IN_1=5, WebVM_IN_2=5 (χ² p < 1e-10)
    ```

    ## Use instead
    A spread consistent with a uniform hash, e.g. 21/19/20. Look for a flapping probe (probe interval and
    timeout too tight, a slow health path) on the starved instances.

    ## References
    - Azure Load Balancer distribution modes — five-tuple hash: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    """

    id = "VMR801"
    name = "rotation-spread-skewed"
    severity = Severity.MEDIUM
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation")
    references = refs("lb-distribution")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for ep in _probed(subject):
            n = len(ep.expected)
            if n < 2 or ep.affinity or ep.unseen or not ep.spread:
                continue
            total = sum(ep.counts.get(name, 0) for name in ep.expected)
            if total < SPREAD_MIN_PER_INSTANCE * n:
                continue
            sp = stats.spread(ep.counts, ep.expected)
            if sp.p_value is None or sp.p_value >= SPREAD_P_VALUE or sp.min_share >= SPREAD_SHARE_FACTOR / n:
                continue
            shares = [(ep.counts.get(name, 0) + 0.5) / (total + 0.5 * n) for name in ep.expected]
            needed = ""
            if n <= stats.MAX_WEIGHTED:
                try:
                    need = stats.samples_for_all_weighted(shares, ep.confidence)
                    needed = (
                        f"; with these shares seeing every instance at {_pct(ep.confidence)} takes {need} "
                        f"requests instead of {ep.bound}"
                    )
                except ValueError:
                    needed = ""
            starved = [name for name in ep.expected if ep.counts.get(name, 0) / total < SPREAD_SHARE_FACTOR / n]
            counts = ", ".join(f"{name}={ep.counts.get(name, 0)}" for name in ep.expected)
            message = (
                f"new connections through {ep.label} at {ep.where} spread unevenly over {n} Ready instances: "
                f"{counts} of {total} (max/min {sp.max_count}/{sp.min_count}, χ² = {sp.chi2:.1f}, "
                f"p = {sp.p_value:.2g} against a uniform spread); {', '.join(starved)} get less than half "
                f"their share{needed}"
            )
            yield self.finding(
                subject, ep.label, message, evidence=_evidence(ep, p_value=f"{sp.p_value:.3g}", chi2=f"{sp.chi2:.2f}")
            )


class RotationSourceIpAffinity(Rule):
    """Every new connection landed on one instance: source-IP affinity suspected (not a failure).

    ## What it does
    Reports an endpoint where requests from many distinct source ports (a new connection each, at least
    the bound) all reached one instance while several are Ready, without connection errors. Under a 5-tuple
    hash that is practically impossible (3 instances, 20 requests: p ≈ 1e-9); it is what source-IP
    (2-tuple) or source-IP-and-protocol (3-tuple) affinity does for a single client.

    ## Why is this bad?
    It is not, when intended (``loadBalancerDistribution="sourceIP"`` for session affinity): the finding
    says why rotation could not be verified from one client, instead of failing it. When not intended,
    the other instances may be out of rotation with a probe that fails: check them through their
    InstanceInputEndpoints.

    ## Example
    ```text
    WebVM/HttpIn: 60 new connections from 60 source ports, all answered by WebVM_IN_1 (3 Ready)
    ```

    ## Use instead
    Verify rotation from several client IPs, or each instance through its own endpoint; or use the default
    5-tuple distribution where no affinity is needed.

    ## References
    - Azure Load Balancer distribution modes — source IP affinity: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    """

    id = "VMR802"
    name = "rotation-source-ip-affinity"
    severity = Severity.LOW
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation", "affinity")
    references = refs("lb-distribution")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for ep in _probed(subject):
            if not ep.affinity:
                continue
            only = ", ".join(sorted(ep.counts)) or "one instance"
            ready = ", ".join(instance_label(subject, i) for i in ep.expected)
            fixed = ""
            if ep.fixed_port is not None and ep.fixed_port.instances:
                fixed = (
                    f"; {ep.fixed_port.answered} connections from one fixed source port also reached "
                    f"{', '.join(instance_label(subject, i) for i in ep.fixed_port.instances)}"
                )
            message = (
                f"source-IP affinity (2-/3-tuple) suspected on {ep.label} at {ep.where}: {ep.answered} new "
                f"connections from {ep.source_ports} distinct source ports all reached {only} while "
                f"{len(ep.expected)} instances are Ready ({ready}){fixed}. Rotation cannot be "
                "verified from one client; if no affinity is configured, the other instances may fail the "
                "load balancer's probe"
            )
            yield self.finding(subject, ep.label, message, evidence=_evidence(ep, affinity=ep.affinity))


class RotationKeepAlivePinned(Rule):
    """A keep-alive connection stays on one instance (expected; informational).

    ## What it does
    The ``rotation`` probe sends a few requests over one HTTP/1.1 keep-alive connection. When all of them
    reach one instance, the rule notes it: a layer-4 load balancer picks the instance per connection, so
    a client that reuses connections (browsers, HttpClient, connection pools) stays on one instance.

    ## Why is this bad?
    It is not: it is how the Azure load balancer works. The note explains why a client with keep-alive
    sees no rotation, and records that the harness judged rotation with a new connection per request.

    ## Example
    ```text
    WebVM/HttpIn: 5 requests over one keep-alive connection, all answered by WebVM_IN_0
    ```

    ## Use instead
    Nothing to change. To spread one client's load, open new connections (or use several clients).

    ## References
    - Azure Load Balancer distribution modes: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    - RFC 9112: HTTP/1.1 (persistent connections) — persistent connections: https://www.rfc-editor.org/rfc/rfc9112
    """

    id = "VMR803"
    name = "rotation-keep-alive-pinned"
    severity = Severity.INFO
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation", "keep-alive")
    references = refs("lb-distribution", "rfc9112")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for ep in _probed(subject):
            probe = ep.keep_alive
            if probe is None or not probe.pinned:
                continue
            pinned_to = instance_label(subject, probe.instances[0])
            message = (
                f"keep-alive pins a connection (expected): {probe.answered} requests over one keep-alive "
                f"connection to {ep.label} at {ep.where} were all answered by {pinned_to}; the load "
                "balancer picks an instance per connection, so rotation was judged with a new connection "
                "per request"
            )
            yield self.finding(subject, ep.label, message, evidence=_evidence(ep, keep_alive=probe.instances[0]))


class RotationConnectionErrors(Rule):
    """Connections through the VIP failed (refused, reset, timed out or TLS errors).

    ## What it does
    Counts the ``rotation`` probe's connections to ``VIP:port`` that gave no answer, by kind: refused,
    reset (or closed before any answer), timeout, TLS handshake failure, other. Red at 10 % of the requests
    or more, amber below.

    ## Why is this bad?
    Clients see these errors too. Resets or closes right after connecting usually mean the load balancer
    sent the connection to an instance that does not accept it (crashed app, port not listening, a probe
    that still says healthy); refusals mean nothing listens on the VIP port; timeouts point at the
    network path or an overloaded instance.

    ## Example
    ```text
    WebVM/HttpIn: 18 of 78 connections failed (18 reset)
    ```

    ## Use instead
    No connection errors through the VIP: every instance in rotation accepts and answers on the endpoint,
    and the probe takes an instance out before it stops answering.

    ## References
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    """

    id = "VMR804"
    name = "rotation-connection-errors"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation")
    references = refs("lb-health-probes")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for ep in _probed(subject):
            if not ep.errors.total:
                continue
            rate = ep.error_rate
            examples = f"; e.g. {ep.error_examples[0]}" if ep.error_examples else ""
            unseen = ", ".join(instance_label(subject, i) for i in ep.unseen)
            missing = f"; unseen Ready instances: {unseen}" if ep.unseen else ""
            cause = ""
            if ep.answered == 0 and ep.errors.refused == ep.errors.total:
                cause = (
                    f"; nothing accepts connections on {ep.vip}:{ep.port}: the load balancer is down or not listening"
                )
            message = (
                f"{ep.errors.total} of {ep.requests} connections through {ep.label} at {ep.where} failed "
                f"({ep.errors.describe()}; {100 * rate:.0f}%){cause}{missing}{examples}"
            )
            severity = Severity.HIGH if rate >= ERROR_RATE_RED else Severity.MEDIUM
            yield self.finding(subject, ep.label, message, evidence=_evidence(ep), severity=severity)


class RotationUnidentifiedAnswers(Rule):
    """Answers through the VIP could not be attributed to an instance.

    ## What it does
    Reports answers in which the target's ``identify`` settings found nothing (no ``header``, no
    ``body_regex`` match, no ``banner_regex`` match) or found a token that names no instance of the role.
    Red when no answer at all could be attributed (rotation cannot be judged), amber otherwise.

    ## Why is this bad?
    Without knowing which instance answered, the harness cannot tell a healthy rotation from one with an
    instance out; a token that is not an instance name (a host name, a build id) cannot be matched to the
    deployment's Ready instances.

    ## Example
    ```text
    identify: {header: X-Served-By}   # but the app sends no such header
    ```

    ## Use instead
    Make the app name the instance (``RoleEnvironment.CurrentRoleInstance.Id``) in a response header, the
    body, or a TCP banner, and point ``identify`` at it.

    ## References
    - Azure Load Balancer distribution modes: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    """

    id = "VMR805"
    name = "rotation-unidentified-answers"
    severity = Severity.MEDIUM
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation", "configuration")
    references = refs("lb-distribution")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        identify = present(subject.rotation, "rotation").identify or {}
        how = ", ".join(f"{k} {v!r}" for k, v in identify.items() if v) or "no identify settings"
        for ep in _probed(subject):
            bad = ep.unidentified + sum(ep.unknown.values())
            if not bad:
                continue
            parts = []
            if ep.unidentified:
                parts.append(f"{ep.unidentified} named no instance at all ({how})")
            if ep.unknown:
                tokens = ", ".join(f"{t!r}×{n}" for t, n in sorted(ep.unknown.items()))
                parts.append(
                    f"{sum(ep.unknown.values())} named something that is no instance of the deployment ({tokens})"
                )
            message = (
                f"{bad} of {ep.answered} answers through {ep.label} at {ep.where} could not be attributed to an "
                f"instance: {'; '.join(parts)}. Expected instance names: {', '.join(ep.expected) or 'none'}"
            )
            severity = Severity.HIGH if not ep.counts else Severity.MEDIUM
            yield self.finding(subject, ep.label, message, evidence=_evidence(ep), severity=severity)


class RotationEndpointNotProbed(Rule):
    """A load-balanced endpoint was not probed through the VIP: UDP, or no VIP known (informational).

    ## What it does
    Notes every load-balanced input endpoint the ``rotation`` probe skipped, with the reason: ``udp``
    endpoints (the probe needs a connection to attribute an answer to an instance, and the local fabric's
    load balancer, HAProxy 2.6, cannot proxy UDP at all), and endpoints for which Get Deployment gives no
    VIP or DNS name.

    ## Why is this bad?
    It is a gap in coverage, not a defect: nothing has checked that every instance receives that traffic.

    ## Example
    ```xml
    <InputEndpoint name="Dns" protocol="udp" port="53" />
    ```

    ## Use instead
    Check UDP services on each instance directly (InstanceInputEndpoint or in-guest checks), or from
    several clients with an application-level identification.

    ## References
    - Azure Load Balancer distribution modes: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    """

    id = "VMR806"
    name = "rotation-endpoint-not-probed"
    severity = Severity.INFO
    applies_to = KINDS
    requires = ("rotation",)
    tags = ("live", "load-balancer", "rotation", "coverage")
    references = refs("lb-distribution")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for ep in present(subject.rotation, "rotation").unprobed:
            message = f"{ep.protocol} endpoint {ep.label} (port {ep.port}) was not probed through the VIP: {ep.note}"
            yield self.finding(subject, ep.label, message, evidence={"endpoint": ep.label, "protocol": ep.protocol})


# ---- drain ------------------------------------------------------------------------------------------


def _drain(subject: LiveFacts, *, performed: bool = True) -> DrainFacts:
    facts: DrainFacts = present(subject.drain, "drain")
    if facts.instance is None:
        raise NotApplicable(facts.notes[0] if facts.notes else "no instance could be drained")
    if performed and facts.not_performed:
        raise NotApplicable(f"the instance was not taken out: {facts.not_performed} (see VMR813)")
    return facts


def _how(facts: DrainFacts) -> str:
    if facts.method == "hook":
        return "made Busy by the target's busy hook"
    if facts.method == "reboot":
        return "rebooted through the management API"
    return "taken out"


def _drain_evidence(facts: DrainFacts, **extra: object) -> dict[str, str]:
    out = {
        "endpoint": facts.label,
        "instance": facts.instance or "",
        "method": facts.method or "",
        "command": facts.command or "",
        "grace_seconds": f"{facts.grace_seconds:g}",
        "grace_source": facts.grace_source,
        "samples_after_grace": str(facts.samples_after_grace),
        "hits_after_grace": str(facts.hits_after_grace),
        "required_samples": str(facts.required_samples),
        "phases": "; ".join(f"{p.name}: {p.requests} req {p.counts}" for p in facts.phases),
    }
    out.update({k: str(v) for k, v in extra.items()})
    return out


class DrainedInstanceStillServed(Rule):
    """An instance taken out of Ready still received new connections after the probe grace period.

    ## What it does
    The destructive ``drain`` probe takes one Ready instance out (Busy through the target's
    ``rotation.busy_hook``, or a reboot through the management API), waits the probe grace period
    (``rotation.probe_grace_seconds``; the local fabric's ``removal_window_s``), then sends ``k`` new
    connections through the VIP, with k the smallest count where ``(1 − 1/n)^k ≤ 1 − confidence``
    (n = 3: 18 for 99.9 %). Any answer from the drained instance in that window is reported.

    ## Why is this bad?
    The platform promises that a Busy (or stopping) instance gets no new load-balancer connections; if it
    does, requests reach an instance that said it cannot serve them — during a deployment, a reboot or
    a reimage — and fail or see half-initialised state.

    ## Example
    ```text
    WebVM_IN_2 made Busy; 18 answers after the 3 s grace: 6 from WebVM_IN_2
    ```

    ## Use instead
    Instances out of Ready get nothing new after the probe notices: keep the default guest-agent probe
    (or make a custom ``LoadBalancerProbe`` fail while Busy), and do not set
    ``ignoreRoleInstanceStatus="true"`` on endpoints that must drain.

    ## References
    - Customize the lifecycle of a web or worker role in .NET (Cloud Services classic) — Busy means no traffic: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-lifecycle-dotnet
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    """

    id = "VMR810"
    name = "drained-instance-still-served"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("drain",)
    tags = ("live", "load-balancer", "drain", "destructive")
    references = refs("role-lifecycle", "lb-health-probes")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _drain(subject)
        who = instance_label(subject, facts.instance)
        if facts.hits_after_grace == 0:
            return
        n = len(facts.others) + 1
        status = f" (Get Deployment showed {facts.status_left})" if facts.status_left else ""
        message = (
            f"{who}, {_how(facts)}{status}, still answered {facts.hits_after_grace} of "
            f"{facts.samples_after_grace} new connections through {facts.label} at {facts.vip}:{facts.port} after "
            f"the {facts.grace_seconds:g} s probe grace period ({facts.grace_source}); an instance out of Ready must "
            f"get no new connections (k = {facts.required_samples} requests with no hit would show that with "
            f"{_pct(facts.confidence)} confidence over {n} instances)"
        )
        yield self.finding(subject, f"{facts.label} / {facts.instance}", message, evidence=_drain_evidence(facts))


class DrainedInstanceNotReturned(Rule):
    """The drained instance did not come back into rotation within the deadline.

    ## What it does
    After the ``drain`` probe releases the instance (the busy hook's hold expires, or the reboot
    completes), it waits for the deployment to be ready and sends new connections through the VIP until
    the instance answers again or ``timeouts.ready`` passes. The rule reports an instance that never
    answered again (with its Get Deployment status).

    ## Why is this bad?
    An instance that stays out after it is Ready again leaves the service with less capacity and no
    redundancy; usually its probe keeps failing (app not restarted, firewall rule lost on reboot).

    ## Example
    ```text
    WebVM_IN_2 released at t = 7 s; no answer from it in 60 s (ReadyRole)
    ```

    ## Use instead
    The instance answers through the VIP within seconds of being Ready again.

    ## References
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    - Customize the lifecycle of a web or worker role in .NET (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-lifecycle-dotnet
    """

    id = "VMR811"
    name = "drained-instance-not-returned"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("drain",)
    tags = ("live", "load-balancer", "drain", "destructive")
    references = refs("lb-health-probes", "role-lifecycle")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _drain(subject)
        who = instance_label(subject, facts.instance)
        if facts.returned is None:
            raise NotApplicable("the drain probe did not try to bring the instance back")
        if facts.returned:
            return
        after = next((p for p in facts.phases if p.name == "after"), None)
        sampled = f" ({after.requests} requests, answered by {after.counts or 'nobody'})" if after else ""
        if facts.ready_again is None:
            ready = "its status is unknown"
        elif facts.ready_again:
            ready = "Get Deployment shows it ReadyRole"
        else:
            ready = "Get Deployment does not show it ReadyRole"
        message = (
            f"{who}, {_how(facts)}, did not answer through {facts.label} at {facts.vip}:{facts.port} again "
            f"within {facts.return_deadline_s:g} s of its release{sampled}; {ready}"
        )
        yield self.finding(subject, f"{facts.label} / {facts.instance}", message, evidence=_drain_evidence(facts))


class DrainInconclusive(Rule):
    """Too few answers after the grace period to state that the drained instance left rotation.

    ## What it does
    With zero hits on the drained instance, the ``drain`` probe's confidence that it is out is
    ``1 − (1 − 1/n)^k`` for k answers after the grace period. The rule reports when fewer than the ``k``
    needed for the target's ``rotation.confidence`` were collected (the hold ran out, connections failed)
    or when the other Ready instances did not all answer in that window.

    ## Why is this bad?
    Zero hits in a handful of requests prove little (n = 3, 5 requests: 13 % chance of zero hits by luck);
    the drain check passed without the evidence it claims.

    ## Example
    ```text
    5 answers after the grace (18 needed for 99.9 %): stated confidence 86.8 %
    ```

    ## Use instead
    A longer hold (the busy hook's ``{seconds}``), a shorter ``probe_grace_seconds`` that still covers the
    probe, or fewer connection errors, so that ``k`` answers arrive while the instance is out.

    ## References
    - Azure Load Balancer distribution modes: https://learn.microsoft.com/en-us/azure/load-balancer/distribution-mode-concepts
    """

    id = "VMR812"
    name = "drain-inconclusive"
    severity = Severity.MEDIUM
    applies_to = KINDS
    requires = ("drain",)
    tags = ("live", "load-balancer", "drain", "destructive")
    references = refs("lb-distribution")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _drain(subject)
        who = instance_label(subject, facts.instance)
        if facts.hits_after_grace:
            return  # VMR810 says more
        missing = tuple(o for o in facts.others if o not in facts.others_seen_after_grace)
        if facts.samples_after_grace >= facts.required_samples and not missing:
            return
        parts = []
        if facts.samples_after_grace < facts.required_samples:
            parts.append(
                f"only {facts.samples_after_grace} answers after the {facts.grace_seconds:g} s grace period "
                f"({facts.required_samples} needed for {_pct(facts.confidence)}): stated confidence "
                f"{_pct(round(facts.stated_confidence, 6))}"
            )
        if missing:
            others = ", ".join(instance_label(subject, i) for i in missing)
            parts.append(f"the other Ready instances {others} did not answer in that window")
        if facts.errors_after_grace:
            parts.append(f"{facts.errors_after_grace} connections failed")
        message = f"cannot state that {who} ({_how(facts)}) left rotation on {facts.label}: " + "; ".join(parts)
        yield self.finding(subject, f"{facts.label} / {facts.instance}", message, evidence=_drain_evidence(facts))


class DrainNotPerformed(Rule):
    """The drain probe could not take an instance out (hook failed or the reboot was refused).

    ## What it does
    Reports a ``drain`` probe that picked an instance but could not take it out: the target's
    ``rotation.busy_hook`` exited non-zero (or could not be started), or the management API refused the
    reboot. The hook's output (masked) is attached.

    ## Why is this bad?
    The drain behaviour — the one that protects clients during reboots and deployments — went unchecked.

    ## Example
    ```yaml
    rotation: {busy_hook: "set-busy --instance {instance}"}   # exits 2: unknown option
    ```

    ## Use instead
    A hook that makes ``{instance}`` Busy for ``{seconds}`` seconds and exits 0, or no hook (the probe then
    reboots the instance through the management API).

    ## References
    - Customize the lifecycle of a web or worker role in .NET (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-lifecycle-dotnet
    """

    id = "VMR813"
    name = "drain-not-performed"
    severity = Severity.MEDIUM
    applies_to = KINDS
    requires = ("drain",)
    tags = ("live", "load-balancer", "drain", "destructive")
    references = refs("role-lifecycle")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        facts = _drain(subject, performed=False)
        who = instance_label(subject, facts.instance)
        if not facts.not_performed:
            return
        message = f"could not take {who} of {facts.label} out of rotation: {facts.not_performed}"
        yield self.finding(
            subject,
            f"{facts.label} / {facts.instance}",
            message,
            evidence=_drain_evidence(facts, hook_rc=facts.hook_rc, hook_output=facts.hook_output[-1000:]),
        )
