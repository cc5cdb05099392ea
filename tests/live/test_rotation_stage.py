"""The rotation and drain stages against a real local fabric (HAProxy VIP, 3 WebVM instances)."""

from __future__ import annotations

import shlex
import shutil
import socketserver
import sys
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from harness.checks.live import rotation as rules

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.facts.live import stats
from harness.live import sampling
from harness.live.context import LiveContext
from harness.live.probes import drain as drain_stage
from harness.live.probes import rotation as rotation_stage
from harness.live.subject import LiveSubject

pytestmark = pytest.mark.xdist_group("fabric-live-b")

WEB = ("WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2")


@pytest.fixture(scope="module")
def fabric(tmp_path_factory):
    from harness.fabric.client import up

    fab = up(tmp_path_factory.mktemp("f"), step_seconds=0.1)
    try:
        yield fab
    finally:
        report = fab.down()
        assert not report.ports_still_open


def _target(fabric, busy_hook: str | None = "default"):
    from harness.live.target import target_for_fabric

    target = target_for_fabric(fabric)
    if busy_hook == "default":  # the CLI of this interpreter: `vmrole` need not be on PATH
        state = shlex.quote(str(fabric.layout.root))
        busy_hook = (
            f"{shlex.quote(sys.executable)} -m harness.cli fabric fault busy --state {state} "
            "--target {instance} --seconds {seconds}"
        )
    return replace(target, rotation=replace(target.rotation, busy_hook=busy_hook))


def _ctx(target) -> LiveContext:
    ctx = LiveContext(target, destructive=True)
    readiness = ctx.wait_ready()
    assert readiness.ready, readiness.history_text()
    return ctx


@pytest.fixture
def ctx(fabric):
    ctx = _ctx(_target(fabric))
    yield ctx
    ctx.close()


def artefact(ctx) -> Artefact:
    return Artefact(kind=DEPLOYMENT, identity=ctx.target.path.name, path=ctx.target.path, display="local-fabric")


def run_rules(subject, *classes):
    return [f for cls in classes for f in cls().check(subject)]


def test_healthy_rotation_sees_every_ready_instance_within_the_bound(ctx):
    subject = LiveSubject(artefact(ctx), ctx)
    facts = subject.rotation
    assert facts is not None, subject.notes.get("rotation")
    bound = stats.samples_for_all(3, 0.999)
    by_name = {e.endpoint: e for e in facts.endpoints}
    assert set(by_name) == {"HttpIn", "HttpsIn"}
    for ep in by_name.values():
        assert ep.expected == WEB and set(ep.seen) == set(WEB) and ep.unseen == ()
        assert ep.bound == bound and ep.requests_to_all is not None and ep.requests_to_all <= bound
        assert ep.errors.total == 0 and ep.affinity is None
        assert ep.identification == {"header": ep.answered} and ep.source_ports == ep.answered
        assert ep.keep_alive is not None and ep.keep_alive.pinned  # one connection, one instance
        assert ep.fixed_port is not None and ep.fixed_port.pinned  # hash src_port: one port, one instance
    quiet = run_rules(
        subject,
        rules.RotationInstanceUnseen,
        rules.RotationSpreadSkewed,
        rules.RotationSourceIpAffinity,
        rules.RotationConnectionErrors,
        rules.RotationUnidentifiedAnswers,
    )
    assert quiet == []
    assert {f.rule_id for f in run_rules(subject, rules.RotationKeepAlivePinned)} == {"VMR803"}
    chart = ctx.charts["lb-spread"]
    assert chart["bound"] == bound and set(chart["instances"]) == set(WEB) and chart["requests"] >= 3
    assert "WebVM_IN_0" in ctx.evidence_texts["lb-samples"]


def test_busy_hook_drains_the_instance_and_it_returns(ctx):
    facts = drain_stage.run(ctx)
    k = stats.samples_to_reject(1 / 3, 0.999)
    assert facts.not_performed is None, facts.hook_output
    assert facts.method == "hook" and facts.hook_rc == 0 and facts.instance in WEB
    assert facts.grace_source.startswith("fabric.json")
    assert facts.required_samples == k and facts.samples_after_grace >= k
    assert facts.hits_after_grace == 0 and set(facts.others_seen_after_grace) == set(facts.others)
    assert facts.stated_confidence >= 0.999 and facts.status_left == "BusyRole"
    assert facts.returned and facts.ready_again and facts.return_seconds is not None
    assert [p.name for p in facts.phases] == ["before", "draining", "drained", "after"]
    subject = SimpleNamespace(artefact=artefact(ctx), drain=facts)
    drain_rules = (
        rules.DrainedInstanceStillServed,
        rules.DrainedInstanceNotReturned,
        rules.DrainInconclusive,
        rules.DrainNotPerformed,
    )
    assert run_rules(subject, *drain_rules) == []
    phases = ctx.charts["lb-spread"]["phases"]
    assert phases[2]["name"] == "drained" and facts.instance not in phases[2]["counts"]


def test_a_failing_hook_is_reported_not_raised(fabric):
    ctx = _ctx(_target(fabric, f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)' {{instance}}"))
    try:
        facts = drain_stage.run(ctx)
    finally:
        ctx.close()
    assert facts.hook_rc == 3 and facts.not_performed and facts.returned is None
    (finding,) = run_rules(SimpleNamespace(artefact=artefact(ctx), drain=facts), rules.DrainNotPerformed)
    assert finding.rule_id == "VMR813" and "exited 3" in finding.message


def test_without_a_hook_the_instance_is_rebooted_through_the_management_api(fabric):
    ctx = _ctx(_target(fabric, None))
    try:
        facts = drain_stage.run(ctx)
    finally:
        ctx.close()
    assert facts.method == "reboot" and facts.operation_id and facts.not_performed is None
    assert facts.status_left in ("StoppingRole", "StoppedVM", "StartingVM", "BusyRole")
    assert facts.hits_after_grace == 0  # only samples sent while it was still shown out count
    assert facts.returned and facts.ready_again


def test_killed_backend_shows_up_as_errors_and_an_unseen_instance(ctx, fabric):
    ctx.deployment()  # as the readiness stage left it: every instance Ready
    fabric.inject("kill-backend", "WebVM_IN_1", 60)
    try:
        facts = rotation_stage.run(ctx)
    finally:
        fabric.clear_faults()  # restarts the instance
    http = next(e for e in facts.endpoints if e.endpoint == "HttpIn")
    assert "WebVM_IN_1" in http.unseen and "WebVM_IN_1" not in http.counts
    assert set(http.seen) == {"WebVM_IN_0", "WebVM_IN_2"}
    subject = SimpleNamespace(artefact=artefact(ctx), rotation=facts)
    red = [f for f in run_rules(subject, rules.RotationInstanceUnseen) if f.location == "WebVM/HttpIn"]
    assert len(red) == 1 and "WebVM_IN_1" in red[0].message and red[0].severity.label == "high"
    if http.errors.total:  # connections the LB sent to the dead instance before its probe noticed
        errors = [f for f in run_rules(subject, rules.RotationConnectionErrors) if f.location == "WebVM/HttpIn"]
        assert errors and "reset" in errors[0].message
    # the fault's rollback brings it back
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ctx.wait_ready().ready:
        pass
    assert ctx.wait_ready().ready


# ---- the probe on its own: a TCP banner endpoint and protocol detection (no fabric) --------------------


class _Banner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(f"VMROLE Tcp_IN_{self.server.next_id()} Raw\r\n".encode())


class _Http(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = b"served-by Tcp_IN_0\n"
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.count = 0

    def next_id(self) -> int:
        self.count += 1
        return self.count % 2


@pytest.fixture
def serve():
    servers = []

    def start(handler):
        server = _Server(handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_tcp_banner_identifies_the_instance_and_protocols_are_detected(serve):
    banner, http = serve(_Banner), serve(_Http)
    settings = sampling.default_settings()  # X-Served-By, served-by, VMROLE
    ep = sampling.InputEndpoint("Tcp", "Raw", "tcp", banner, "127.0.0.1")
    facts, _ = rotation_stage.sample_endpoint(ep, ("Tcp_IN_0", "Tcp_IN_1"), settings, spread_per_instance=5)
    assert set(facts.seen) == {"Tcp_IN_0", "Tcp_IN_1"} and facts.identification == {"banner": facts.answered}
    assert facts.keep_alive is None and facts.errors.total == 0
    assert sampling.detect_protocol("127.0.0.1", banner, settings) == "tcp"
    assert sampling.detect_protocol("127.0.0.1", http, settings) == "http"
    web = sampling.InputEndpoint("Tcp", "Web", "tcp", http, "127.0.0.1", detect=True)
    facts, _ = rotation_stage.sample_endpoint(web, ("Tcp_IN_0",), settings, spread_per_instance=3)
    assert facts.protocol == "http" and facts.identification == {"body": facts.answered} and "as http" in facts.note


def test_hook_argv_substitutes_inside_arguments_only():
    argv = drain_stage.hook_argv("set-busy --target {instance} --for={seconds}s 'a b'", "Web IN;rm", 7.0)
    assert argv == ["set-busy", "--target", "Web IN;rm", "--for=7s", "a b"]
    cli = drain_stage.hook_argv("vmrole fabric fault busy --target {instance}", "X", 1)
    if shutil.which("vmrole") is None:
        assert cli[:3] == [sys.executable, "-m", "harness.cli"] and cli[-1] == "X"
