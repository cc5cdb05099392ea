"""One emulated role instance: ``python -m harness.fabric.instance --config STATE/instances/<ID>/instance.json``.

Reads ``instance.json`` (written by ``Controller.instance_config``) and, all on ``host`` (127.0.0.1):

1. starts the WinRM listeners through ``harness.fabric.winrm.server.start_winrm(config["winrm"], config)``
   when that module is importable (otherwise logs one line and goes on without WinRM): first, so that WinRM
   is up once the controller sees the endpoint and agent ports listen and reports the instance started;
2. binds every input endpoint with the default app (``harness.fabric.app``), or, when ``app_command`` is set,
   binds none of them and starts the command instead (env ``VMR_INSTANCE_ID``, ``VMR_PORT_<ENDPOINT>``,
   ``VMR_DRIVE_C``/``VMR_DRIVE_E``, ``VMR_LOCAL_<NAME>``; cwd = the E: drive when it exists; own process
   group). The command is supervised, not restarted: once it exits the agent says ``down`` until the
   instance process is restarted;
3. binds the agent on ``agent_port`` (``harness.fabric.agent``: one line per connection, ``up ready``,
   ``drain`` or ``down``);
4. writes ``<config dir>/pid`` once every listener is up (its appearance means "started") and logs one
   ``up`` line to stderr.

Signals:

- ``SIGTERM`` / ``SIGINT``: close every listener, stop the app command (SIGTERM to its group, SIGKILL after
  3 s), remove the pid file, exit 0.
- ``SIGUSR1`` — the **crash fault**: the app "crashes". Default app: its endpoint listeners close and open
  connections are cut (clients get connection refused/reset); the agent keeps running and now answers
  ``down``. App command: its process group is SIGKILLed (same agent effect). There is no recovery short of
  restarting the instance process; a second SIGUSR1 does nothing.

Exit codes: 0 clean stop; 2 bad/missing config; 3 a listener could not be bound or its certificate could not
be loaded (one stderr line names the endpoint and port — the controller may allocate new ports and retry);
1 anything else at startup (e.g. WinRM failed to start).

Relative paths in the config are taken relative to the process's working directory; the controller
should write absolute ones.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 3


class StartupError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Instance:
    def __init__(self, config: dict[str, Any], config_path: Path) -> None:
        self.config = config
        self.id = str(config["id"])
        self.host = str(config.get("host") or "127.0.0.1")
        self.dir = config_path.parent
        self.status_file = Path(config.get("status_file") or self.dir / "status")
        self.pid_file = self.dir / "pid"
        self.app: Any = None
        self.agent: Any = None
        self.agent_thread: threading.Thread | None = None
        self.winrm: list[Any] = []
        self._wake_r = -1
        self._pending: list[int] = []
        self.crashed = False

    # ------------------------------------------------------------------ logging

    def log(self, msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {self.id}: {msg}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ startup

    def _install_signals(self) -> None:
        # A process-directed signal may land on any thread, and then the main thread is not woken from a
        # blocking wait. The C-level handler always writes the signal number to the wakeup fd, though:
        # the main thread blocks reading it and does the work itself.
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, lambda *_: None)

    def _next_signal(self) -> int:
        while not self._pending:
            wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
            self._pending.extend(signum for signum in os.read(self._wake_r, 64) if signum in wanted)
        return self._pending.pop(0)

    def start(self) -> None:
        from harness.fabric.agent import AgentServer
        from harness.fabric.app import CommandApp, DefaultApp, EndpointError

        # WinRM first: the lifecycle reports the instance started (then ReadyRole) once its endpoint and agent
        # ports listen, and a client told ReadyRole must find WinRM up
        self._start_winrm()
        endpoints = list(self.config.get("endpoints") or [])
        command = self.config.get("app_command")
        try:
            if command:
                if isinstance(command, str) or not all(isinstance(a, str) for a in command):
                    raise StartupError("app_command must be a list of strings", EXIT_CONFIG)
                drives = self.config.get("drives") or {}
                cwd = drives.get("E") if drives.get("E") and os.path.isdir(drives["E"]) else None
                self.app = CommandApp(list(command), CommandApp.environment(self.config), cwd, self._app_exited)
            else:
                # served-by / banner: the name the instance answers as (a scale-set VM: its computer name)
                self.app = DefaultApp(str(self.config.get("name") or self.id), self.host, endpoints, self.status_file)
                self.app.bind()
        except EndpointError as exc:
            raise StartupError(str(exc), EXIT_BIND) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StartupError(f"bad endpoint in config: {exc!r}", EXIT_CONFIG) from None

        try:
            agent_port = int(self.config["agent_port"])
        except (TypeError, ValueError):
            raise StartupError(f"bad agent_port {self.config['agent_port']!r}", EXIT_CONFIG) from None
        try:
            self.agent = AgentServer(self.host, agent_port, self.status_file, self._app_alive)
        except OSError as exc:
            raise StartupError(
                f"cannot bind agent on {self.host}:{agent_port}: {exc.strerror or exc}", EXIT_BIND
            ) from None

        if isinstance(self.app, DefaultApp):
            self.app.start()
        self.agent_thread = threading.Thread(
            target=self.agent.serve_forever, kwargs={"poll_interval": 0.2}, name="agent", daemon=True
        )
        self.agent_thread.start()
        if isinstance(self.app, CommandApp):
            try:
                self.app.start()
            except EndpointError as exc:
                raise StartupError(str(exc), EXIT_ERROR) from None
            shown = " ".join(list(command or [])).replace("\n", "\\n")
            shown = shown if len(shown) <= 160 else shown[:157] + "..."
            self.log(f"app_command started (pid {self.app.proc.pid}): {shown}")

        tmp = self.pid_file.with_name(f".pid.{os.getpid()}.tmp")
        tmp.write_text(f"{os.getpid()}\n", "ascii")
        os.replace(tmp, self.pid_file)

        served = "app_command" if command else ", ".join(f"{e['name']}={e['protocol']}:{e['port']}" for e in endpoints)
        self.log(f"up (pid {os.getpid()}): {served or 'no endpoints'}; agent:{agent_port}")

    def _start_winrm(self) -> None:
        section = self.config.get("winrm")
        if not section:
            return
        try:
            from harness.fabric.winrm.server import start_winrm  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            self.log(f"WinRM not started: {exc}")
            return
        try:
            self.winrm = list(start_winrm(section, self.config) or [])
        except OSError as exc:
            raise StartupError(
                f"cannot start WinRM ({section.get('https_port')}/{section.get('http_port')}): {exc.strerror or exc}",
                EXIT_BIND,
            ) from None
        except Exception as exc:
            raise StartupError(f"cannot start WinRM: {exc!r}", EXIT_ERROR) from None

    # ------------------------------------------------------------------ app state

    def _app_alive(self) -> bool:
        return not self.crashed and self.app is not None and self.app.alive()

    def _app_exited(self, code: int) -> None:
        self.log(f"app_command exited with code {code}; agent reports down until the instance restarts")

    # ------------------------------------------------------------------ run / stop

    def run(self) -> int:
        self._install_signals()
        try:
            self.start()
        except StartupError as exc:
            print(f"instance {self.id}: {exc}", file=sys.stderr, flush=True)
            self.shutdown(quiet=True)
            return exc.code
        while True:
            if self._next_signal() == signal.SIGUSR1:
                self.crash()
            else:
                self.shutdown()
                return EXIT_OK

    def crash(self) -> None:
        if self.crashed:
            return
        self.crashed = True
        self.log("crash fault (SIGUSR1): the app stops serving; agent reports down")
        if self.app is not None:
            self.app.crash()

    def shutdown(self, quiet: bool = False) -> None:
        from harness.fabric.app import CommandApp, stop_servers

        if not quiet:
            self.log("stopping")
        threads = []
        if self.agent is not None:
            agent, serving = self.agent, self.agent_thread is not None
            threads.append(threading.Thread(target=lambda: stop_servers([agent], serving=serving), daemon=True))
        for server in self.winrm:
            threads.append(threading.Thread(target=server.shutdown, daemon=True))
        if self.app is not None:
            threads.append(threading.Thread(target=self.app.stop, daemon=True))
        for t in threads:
            t.start()
        deadline = time.monotonic() + (6.0 if isinstance(self.app, CommandApp) else 2.0)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            if self.pid_file.read_text("ascii").strip() == str(os.getpid()):
                self.pid_file.unlink()
        except OSError:
            pass
        if not quiet:
            self.log("stopped")


def _load_config(path: Path) -> dict[str, Any]:
    import json

    try:
        config = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise StartupError(f"cannot read config {path}: {exc.strerror or exc}", EXIT_CONFIG) from None
    except ValueError as exc:
        raise StartupError(f"config {path} is not valid JSON: {exc}", EXIT_CONFIG) from None
    if not isinstance(config, dict):
        raise StartupError(f"config {path} is not a JSON object", EXIT_CONFIG)
    missing = [k for k in ("id", "agent_port") if k not in config]
    if missing:
        raise StartupError(f"config {path} lacks {', '.join(missing)}", EXIT_CONFIG)
    return config


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.fabric.instance", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="STATE/instances/<ID>/instance.json")
    args = parser.parse_args(argv)
    try:
        config = _load_config(args.config)
    except StartupError as exc:
        print(f"instance: {exc}", file=sys.stderr, flush=True)
        return exc.code
    return Instance(config, args.config).run()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # don't wait for stray non-daemon threads (e.g. a WinRM server's)
