"""Azurite (blob) under our supervision: start, real SDK round trip, clean stop."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from harness.fabric import azurite as azurite_mod
from harness.fabric.azurite import ACCOUNT_NAME, API_VERSION, Azurite, AzuriteError, find_azurite
from harness.fabric.ports import is_listening


def _have_azurite() -> bool:
    try:
        find_azurite()
    except AzuriteError:
        return False
    return shutil.which("node") is not None


def test_missing_azurite_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(azurite_mod, "REPO", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMR_AZURITE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AzuriteError, match=r"\./dev setup"):
        find_azurite()
    with pytest.raises(AzuriteError, match=r"\./dev setup"):
        Azurite().start(tmp_path / "az")


def test_connection_string_has_explicit_blob_endpoint():
    cs = azurite_mod.connection_string(12345)
    assert cs.startswith("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8")
    assert cs.endswith(f"BlobEndpoint=http://127.0.0.1:12345/{ACCOUNT_NAME};")
    assert "UseDevelopmentStorage" not in cs


@pytest.mark.skipif(not _have_azurite(), reason="azurite-blob not installed (./dev setup)")
def test_start_blob_round_trip_and_clean_stop(tmp_path):
    az = Azurite()
    try:
        az.start(tmp_path / "azurite", timeout=30)
        assert az.running and az.pid and az.port
        assert az.startup_seconds is not None and az.startup_seconds < 15  # measured 1.3-3.1 s on this machine
        assert f"BlobEndpoint=http://127.0.0.1:{az.port}/devstoreaccount1;" in az.connection_string

        client = az.blob_client()
        assert client.api_version == API_VERSION
        container = client.create_container("markers")
        container.upload_blob("WebVM_IN_0/reimage", b"before-reimage\n", metadata={"instance": "WebVM_IN_0"})
        blob = container.get_blob_client("WebVM_IN_0/reimage")
        assert blob.download_blob().readall() == b"before-reimage\n"
        assert blob.get_blob_properties().metadata == {"instance": "WebVM_IN_0"}
        assert [b.name for b in container.list_blobs()] == ["WebVM_IN_0/reimage"]
        # module-level helper on the plain connection string behaves the same
        other = azurite_mod.blob_client(az.connection_string)
        assert other.get_container_client("markers").get_blob_client("WebVM_IN_0/reimage").exists()
        # in memory and telemetry off: nothing persisted in the state dir but the log
        assert sorted(p.name for p in (tmp_path / "azurite").iterdir()) == ["log"]
    finally:
        pid, port = az.pid, az.port
        az.stop()
    assert not az.running and az.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not is_listening(port)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    az.stop()  # idempotent
