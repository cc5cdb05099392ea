"""``vmrole fabric up | status | down | fault``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.fabric.client import Fabric, FabricError, down, up
from harness.fabric.faults import KINDS
from harness.fabric.layout import DEFAULT_STATE, Layout


def add_parser(sub: argparse._SubParsersAction) -> None:
    fabric = sub.add_parser("fabric", help="run a deployment locally: instances, HAProxy, management API, WinRM")
    fsub = fabric.add_subparsers(dest="fabric_command", required=True)

    up_p = fsub.add_parser("up", help="start a local deployment (default: the bundled sample VM-role service)")
    up_p.add_argument("--package", help="a .cspkg to deploy")
    up_p.add_argument("--csdef", help="the ServiceDefinition .csdef (with --cscfg)")
    up_p.add_argument("--cscfg", help="the ServiceConfiguration .cscfg")
    up_p.add_argument("--image-dir", help="a folder used as every instance's initial OS drive (C:)")
    up_p.add_argument("--step-seconds", type=float, default=0.3, help="how long each lifecycle status lasts")
    up_p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C brings everything down")
    up_p.add_argument(
        "--api",
        choices=("classic", "vmss"),
        default="classic",
        help="vmss: also serve the deployment as a VM scale set over ARM (harness/fabric/arm)",
    )
    up_p.add_argument("--template", help="an ARM template (scale set + load balancer) instead of --csdef/--cscfg")
    up_p.add_argument("--image", help="the image the scale set runs, e.g. web.vhd (its name in the ARM resources)")

    for name, text in (("status", "describe the running deployment"), ("down", "stop it and everything it started")):
        p = fsub.add_parser(name, help=text)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print fabric.json as the controller sees it")

    fault = fsub.add_parser("fault", help="inject a fault for a while (rolled back automatically)")
    fault.add_argument("kind", choices=(*KINDS, "clear"))
    fault.add_argument("--target", help="instance id, e.g. WebVM_IN_1 (with --api vmss also a VM's computer name)")
    fault.add_argument("--seconds", type=float, default=30.0)
    fault.add_argument("--delay-ms", type=int, default=0, help="for winrm-slow")
    for p in fsub.choices.values():
        p.add_argument("--state", default=str(DEFAULT_STATE), help="state directory (default .vmrole/fabric)")


def run(ns: argparse.Namespace) -> int:
    state = Path(ns.state)
    try:
        if ns.fabric_command == "up":
            return _up(ns, state)
        if ns.fabric_command == "down":
            report = down(state)
            for pid in report.gone:
                print(
                    f"vmrole fabric: the recorded process (pid {pid}) is gone; "
                    "that pid is not signalled (it may belong to another process now)"
                )
            left = f"; still listening: {report.ports_still_open}" if report.ports_still_open else ""
            killed = f" ({len(report.killed)} killed)" if report.killed else ""
            print(f"vmrole fabric: stopped {len(report.stopped)} processes{killed}{left}")
            return 1 if report.ports_still_open else 0
        fabric = _running(state)
        if ns.fabric_command == "status":
            data = fabric.refresh()
            if ns.json:
                json.dump(data, sys.stdout, indent=2)
                sys.stdout.write("\n")
            else:
                sys.stdout.write(describe(data))
            return 0
        if ns.kind == "clear":
            fabric.clear_faults()
            print("vmrole fabric: all faults rolled back")
            return 0
        fault = fabric.inject(ns.kind, ns.target, ns.seconds, ns.delay_ms)
        where = fault["target"] or "the deployment"
        print(f"vmrole fabric: fault {fault['id']} {fault['kind']} on {where} for {ns.seconds:g} s")
        return 0
    except FabricError as exc:
        print(f"vmrole fabric: {exc}", file=sys.stderr)
        return 1


def _running(state: Path) -> Fabric:
    layout = Layout(state.resolve())
    if not layout.fabric_json.exists():
        raise FabricError(f"no fabric in {layout.root} (start one with `vmrole fabric up`)")
    fabric = Fabric(layout)
    if fabric.data.get("state") != "ready":
        raise FabricError(f"the fabric in {layout.root} is {fabric.data.get('state')}")
    return fabric


def _up(ns: argparse.Namespace, state: Path) -> int:
    try:
        fabric = up(
            state,
            csdef=Path(ns.csdef) if ns.csdef else None,
            cscfg=Path(ns.cscfg) if ns.cscfg else None,
            package=Path(ns.package) if ns.package else None,
            image_dir=Path(ns.image_dir) if ns.image_dir else None,
            step_seconds=ns.step_seconds,
            tied=ns.foreground,  # in the background the fabric outlives this command
            api=ns.api,
            template=Path(ns.template) if ns.template else None,
            image=ns.image,
        )
    except KeyboardInterrupt:  # up() has already stopped whatever it had started
        print("vmrole fabric: interrupted while starting; everything started was stopped", file=sys.stderr)
        return 130
    sys.stdout.write(describe(fabric.data))
    if not ns.foreground:
        print(f"vmrole fabric: running in the background; `vmrole fabric down --state {state}` stops it")
        return 0
    import signal

    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # delivered to sigwait, not as an exception
    print("vmrole fabric: Ctrl-C stops the deployment", flush=True)
    try:
        signal.sigwait(stop_signals)
    finally:
        report = down(state)
        print(f"vmrole fabric: stopped {len(report.stopped)} processes")
    return 0


def describe(data: dict) -> str:
    lines = [
        f"deployment {data['deployment_name']} of {data['service_name']} ({data['slot']}): {data['state']}",
        f"  management API  https://127.0.0.1:{data['management']['https_port']}/{data['subscription_id']}"
        " (mutual TLS)",
        f"  blob storage    http://127.0.0.1:{data['azurite'].get('blob_port')}/devstoreaccount1",
    ]
    vip = data.get("vip") or "127.0.0.1"
    lines.append(f"  VIP             {vip} (this deployment's own loopback address)")
    for ep in data["input_endpoints"]:
        scheme = {"http": "http://", "https": "https://"}.get(ep["protocol"], f"{ep['protocol']}://")
        where = f"{scheme}{vip}:{ep['public_port']}"
        declared = "declared port" if ep["public_port"] == ep["declared_port"] else "FALLBACK from declared port"
        lines.append(f"  {ep['role']}/{ep['name']:<10} {where}  ({declared} {ep['declared_port']})")
    for inst in data["instances"]:
        winrm = inst["winrm"]
        lines.append(
            f"  {inst['id']:<16} {inst.get('status', '?'):<16} pid {inst.get('pid')}  agent {inst['agent_port']}"
            f"  winrm https {winrm['https_port']} / http {winrm['http_port']}"
        )
        public = inst.get("instance_endpoints") or {}
        if public:
            shown = ", ".join(f"{name} {vip}:{port}" for name, port in public.items())
            lines.append(f"  {'':<16} instance endpoints: {shown}")
    for fb in data.get("port_fallbacks", []):
        declared = fb["declared"] if fb["declared"] is not None else "(none)"
        lines.append(f"  port fallback   {fb['where']}: declared {declared} -> {vip}:{fb['actual']} ({fb['reason']})")
    arm = data.get("arm") or {}
    if arm:
        lines.append(f"  ARM endpoint    {arm['endpoint']} (subscription {arm['subscription_id']})")
        lines.append(f"  resource group  {arm['resource_group']}: scale sets {', '.join(arm['scale_sets'])}")
        lines.append(f"  token endpoint  {arm['token_endpoint']} (client {arm['client_id']}, secret in secrets/)")
    for fault in data.get("faults", []):
        lines.append(f"  fault {fault['id']} {fault['kind']} on {fault['target']} ({fault['remaining']} s left)")
    for note in data.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"
