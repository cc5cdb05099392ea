"""Azurite (blob service only) as the local fabric's storage account: the durable tier
(https://learn.microsoft.com/azure/storage/common/storage-use-azurite).

In memory (``--inMemoryPersistence``, which cannot be combined with ``--location``), telemetry off, bound to
127.0.0.1 on an allocated port, started with ``--skipApiVersionCheck`` so storage SDKs of any age on the
"Windows side" are accepted; our own Python client additionally pins :data:`API_VERSION`
(:data:`harness.facts.live.platform.STORAGE_API_VERSION`, which the live probes pin too), the newest
version Azurite 3.35 knows (azure-storage-blob 12.31 defaults to 2026-10-06, which Azurite rejects).
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.fabric.ports import LOOPBACK, allocate, is_listening
from harness.fabric.procs import stop_process
from harness.facts.live.platform import STORAGE_API_VERSION

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

__all__ = [
    "ACCOUNT_KEY",
    "ACCOUNT_NAME",
    "API_VERSION",
    "Azurite",
    "AzuriteError",
    "blob_client",
    "connection_string",
    "find_azurite",
]

ACCOUNT_NAME = "devstoreaccount1"
# The well-known, public Azurite/Storage Emulator development key (documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
API_VERSION = STORAGE_API_VERSION
REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = (
    "run `./dev setup` in the repository (it runs `npm install`, which provides node_modules/.bin/azurite-blob)"
)


class AzuriteError(RuntimeError):
    """Azurite is missing, failed to start or to stop."""


def find_azurite(explicit: str | os.PathLike[str] | None = None) -> str:
    """The ``azurite-blob`` executable: ``explicit``, ``$VMR_AZURITE``, the repo's node_modules, then PATH."""
    candidates: list[str] = []
    if explicit:
        candidates.append(str(explicit))
    if os.environ.get("VMR_AZURITE"):
        candidates.append(os.environ["VMR_AZURITE"])
    candidates += [
        str(REPO / "node_modules" / ".bin" / "azurite-blob"),
        str(Path.cwd() / "node_modules/.bin/azurite-blob"),
    ]
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise AzuriteError(f"azurite-blob not found (looked in {candidates[-2]} and on PATH): {INSTALL_HINT}")


def connection_string(port: int, host: str = LOOPBACK) -> str:
    """A connection string with an explicit BlobEndpoint (``UseDevelopmentStorage=true`` means port 10000)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};"
    )


def _tail(path: Path | None, n: int = 3000) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_bytes()[-n:].decode("utf-8", "replace")


def _http_ready(host: str, port: int) -> bool:
    """Any HTTP answer from the blob service (403 for an anonymous list is fine)."""
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", f"/{ACCOUNT_NAME}?comp=list", headers={"x-ms-version": API_VERSION})
        resp = conn.getresponse()
        resp.read()
        return 100 <= resp.status < 600
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Azurite:
    """One ``azurite-blob`` process (node) under our supervision."""

    def __init__(self, *, executable: str | os.PathLike[str] | None = None, host: str = LOOPBACK) -> None:
        self._exe = executable
        self.host = host
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self.startup_seconds: float | None = None
        self._state_dir: Path | None = None
        self._fixed_port = False  # the caller chose the port: never move it
        self._launched_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self._require_port()}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return connection_string(self._require_port(), self.host)

    def _require_port(self) -> int:
        if self.port is None:
            raise AzuriteError("Azurite is not started")
        return self.port

    def command(self, port: int) -> list[str]:
        return [
            find_azurite(self._exe),
            "--blobHost",
            self.host,
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--silent",
            "--skipApiVersionCheck",
        ]

    def start(
        self, state_dir: Path | str, *, port: int | None = None, timeout: float = 30.0, attempts: int = 3
    ) -> None:
        """Start in ``state_dir`` (its cwd; output to ``state_dir/log``) and wait until it answers HTTP.

        With no ``port`` one is allocated, and re-allocated when another process took it meanwhile.
        """
        self.launch(state_dir, port=port)
        self.wait_ready(timeout=timeout, attempts=attempts)

    def launch(self, state_dir: Path | str, *, port: int | None = None) -> None:
        """Start the process and return at once: node takes over a second to load Azurite, which the caller
        can spend on other work before :meth:`wait_ready`. ``port`` (allocated when None) is :attr:`port`
        from now on, unless :meth:`wait_ready` has to move an allocated port another process took."""
        if self.running:
            raise AzuriteError("Azurite is already running")
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._state_dir = state_dir
        self._log = state_dir / "log"
        self._fixed_port = port is not None
        self._spawn(port if port is not None else allocate()[0])

    def wait_ready(self, *, timeout: float = 30.0, attempts: int = 3) -> None:
        """Wait until the launched Azurite answers HTTP (AzuriteError with its log otherwise); an allocated
        port taken meanwhile (EADDRINUSE) is replaced by a new one, up to ``attempts`` launches in all."""
        if self._proc is None or self._state_dir is None:
            raise AzuriteError("Azurite is not launched")
        launches = 1 if self._fixed_port else attempts
        while True:
            error = self._wait_once(timeout)
            if error is None:
                return
            launches -= 1
            if "EADDRINUSE" not in error or launches <= 0:
                raise AzuriteError(error)
            self._spawn(allocate()[0])

    def _spawn(self, port: int) -> None:
        cmd = self.command(port)
        assert self._log is not None and self._state_dir is not None
        self._launched_at = time.monotonic()
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self._state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.port = port

    def _wait_once(self, timeout: float) -> str | None:
        assert self._proc is not None and self.port is not None
        t0, port = self._launched_at, self.port
        deadline = t0 + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self.port = None
                return f"azurite-blob exited with {code} during startup:\n{_tail(self._log)}"
            if is_listening(port, self.host) and _http_ready(self.host, port):
                self.startup_seconds = time.monotonic() - t0
                return None
            if time.monotonic() > deadline:
                self.stop()
                return f"Azurite not ready on {self.host}:{port} after {timeout:.0f}s:\n{_tail(self._log)}"
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` s (it closes in ~1 s), then SIGKILL."""
        proc = self._proc
        if proc is None:
            return
        try:
            if not stop_process(proc, timeout):
                raise subprocess.TimeoutExpired(proc.args, timeout)
        finally:
            self._proc = None

    def blob_client(self, *, api_version: str = API_VERSION) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, api_version=api_version)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def blob_client(conn_str: str, *, api_version: str = API_VERSION) -> BlobServiceClient:
    """A ``BlobServiceClient`` for a fabric's Azurite with the API version pinned to one Azurite accepts."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(conn_str, api_version=api_version)
