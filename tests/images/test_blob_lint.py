"""Images in blob storage (issue 13, item 1): read in place from a local Azurite, same facts and findings as the
file on disk for fixed VHD, dynamic VHD and VHDX uploaded as page blobs and as block blobs (https SAS and azure://
with an account key); a missing blob (404), an expired SAS (403), a blob rewritten mid-read (412) and a server that
never answers each give one finding naming the URL without its token, in bounded time; no token in any output.
The range reader's cache, coalescing, read-ahead and retries are checked against an in-memory transport."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.engine.artefact import IMAGE, Artefact
from harness.engine.catalogue import all_rules
from harness.engine.evaluate import evaluate
from harness.extraction.extract import extract
from harness.facts.image import VMROLE, ImageSubject
from harness.readers.errors import Unreadable
from harness.readers.image import blob
from harness.readers.image.blob import BlobRef, BlobSource, HttpTransport, Properties, _Transient, parse_blob_url
from harness.testing import keymaterial as km
from harness.testing.hivewriter import dword, sz
from harness.testing.images import build_image, missing_tools
from harness.testing.windows import FIREWALL_POLICY, WINLOGON, windows_server_2008r2_vmrole

REPO = Path(__file__).resolve().parents[2]
FW = f"ControlSet001\\{FIREWALL_POLICY}"
BAD = windows_server_2008r2_vmrole().with_changes(
    files={"Users/Administrator/.ssh/id_rsa": km.pem_private_key_bytes()},
    hives={
        "SOFTWARE": {WINLOGON: {"DefaultPassword": sz("Hunter2!x")}},
        "SYSTEM": {f"{FW}\\PublicProfile": {"EnableFirewall": dword(0)}},
    },
)
IMAGE_RULES = [r for r in all_rules() if IMAGE in r.applies_to]

needs_images = pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()}")


# ---- the range reader on an in-memory transport (no server) ----------------------------------------------------


class MemoryTransport:
    def __init__(self, data: bytes, failures: int = 0) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []
        self.failures = failures

    def properties(self) -> Properties:
        return Properties(len(self.data), '"0x1"', "PageBlob")

    def get(self, offset: int, length: int, etag: str) -> bytes:
        if self.failures:
            self.failures -= 1
            raise _Transient("503 ServerBusy")
        self.calls.append((offset, length))
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


REF = BlobRef("https", "acct", "c", "d.vhd", "https://acct.blob.core.windows.net/c/d.vhd")


def test_reads_are_exact_cached_bounded_and_coalesced() -> None:
    rng = random.Random(7)
    data = rng.randbytes(9 * blob.BLOCK + 12345)
    transport = MemoryTransport(data)
    source = BlobSource(REF, transport, cache_bytes=3 * blob.BLOCK)
    for _ in range(400):
        off = rng.randrange(0, len(data) + 10)
        n = rng.choice([1, 511, 4096, blob.BLOCK, 2 * blob.BLOCK + 3])
        assert source.read_at(off, n) == data[off : off + n]
        assert len(source._cache) <= 3
    with pytest.raises(Unreadable):
        source.read_at(-1, 4)
    # one read spanning four uncached blocks is one request for exactly those blocks
    fresh = MemoryTransport(data)
    source = BlobSource(REF, fresh)
    assert source.read_at(blob.BLOCK - 10, 3 * blob.BLOCK) == data[blob.BLOCK - 10 : 4 * blob.BLOCK - 10]
    assert fresh.calls == [(0, 4 * blob.BLOCK)]
    source.close()
    with pytest.raises(Unreadable, match="read after close"):
        source.read_at(6 * blob.BLOCK, 10)


def test_a_sequential_scan_reads_ahead_in_few_requests() -> None:
    data = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    transport = MemoryTransport(data)
    source = BlobSource(REF, transport)
    chunk = 16 * 1024
    for off in range(0, len(data), chunk):
        assert source.read_at(off, chunk) == data[off : off + chunk]
    assert source.bytes_fetched == len(data)  # nothing fetched twice, nothing past the end
    # without read-ahead: one request per block (64 here); with it, about one per MAX_READ_AHEAD
    assert len(transport.calls) <= len(data) // blob.MAX_READ_AHEAD + 4, transport.calls
    assert max(n for _, n in transport.calls) == blob.MAX_READ_AHEAD + blob.BLOCK  # the missed block + read-ahead


def test_transient_errors_are_retried_with_backoff_then_reported() -> None:
    slept: list[float] = []
    transport = MemoryTransport(b"x" * 5000, failures=2)
    source = BlobSource(REF, transport, sleep=slept.append)
    assert source.read_at(0, 10) == b"x" * 10
    assert slept == [blob.BACKOFF, 2 * blob.BACKOFF] and source.requests == 1 + 3
    transport.failures = blob.ATTEMPTS
    source._cache.clear()
    with pytest.raises(Unreadable, match=r"https://acct.blob.core.windows.net/c/d.vhd: Get Blob .*503 ServerBusy"):
        source.read_at(0, 10)


def test_urls_parse_without_showing_the_query() -> None:
    ref = parse_blob_url("https://acct.blob.core.windows.net/images/dir/web.vhd?sv=1&sig=SECRET")
    assert (ref.account, ref.container, ref.blob, ref.name) == ("acct", "images", "dir/web.vhd", "web.vhd")
    assert ref.label == "https://acct.blob.core.windows.net/images/dir/web.vhd" and ref.query == "sv=1&sig=SECRET"
    ref = parse_blob_url("http://127.0.0.1:10000/devstoreaccount1/images/web.vhd?{env:X}")
    assert (ref.account, ref.container, ref.blob, ref.query) == ("devstoreaccount1", "images", "web.vhd", "{env:X}")
    assert parse_blob_url("azure://acct/images/web.vhd").label == "azure://acct/images/web.vhd"
    for bad in ("https://acct.blob.core.windows.net/images", "azure://acct/", "ftp://x/y/z"):
        with pytest.raises(ValueError) as info:
            parse_blob_url(bad + "?sig=SECRET")
        assert "SECRET" not in str(info.value)


# ---- against Azurite --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from harness.fabric.azurite import Azurite, AzuriteError, find_azurite

    try:
        find_azurite()
    except AzuriteError as exc:
        pytest.skip(str(exc))
    server = Azurite()
    server.start(tmp_path_factory.mktemp("azurite"))
    try:
        server.blob_client().create_container("images")
        yield server
    finally:
        server.stop()


def sas_for(name: str, *, expiry: dt.timedelta = dt.timedelta(hours=1)) -> str:
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    from harness.fabric.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    return generate_blob_sas(
        ACCOUNT_NAME,
        "images",
        name,
        account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions(read=True),
        expiry=dt.datetime.now(dt.UTC) + expiry,
        start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
    )


def upload(azurite: Any, path: Path, name: str, blob_type: str) -> str:
    client = azurite.blob_client().get_blob_client("images", name)
    data = path.read_bytes()
    if blob_type == "PageBlob":
        data += bytes(-len(data) % 512)
        client.create_page_blob(len(data))
        for off in range(0, len(data), 4 * 1024 * 1024):
            chunk = data[off : off + 4 * 1024 * 1024]
            if chunk.strip(b"\0"):
                client.upload_page(chunk, offset=off, length=len(chunk))
    else:
        client.upload_blob(data, blob_type="BlockBlob", overwrite=True)
    return f"{azurite.blob_endpoint}/images/{name}"


def findings(path: Path, facts: Any) -> set[tuple[str, str, str]]:
    subject = ImageSubject(Artefact.from_path(path, IMAGE), facts, VMROLE, "test")
    return {(f.rule_id, f.location, f.message) for r in IMAGE_RULES for f in evaluate(r, subject).findings}


def comparable(facts: Any) -> Any:
    container = dataclasses.replace(facts.container, path="")
    return dataclasses.replace(facts, container=container, stats={})


#: Azure stores a fixed VHD as a page blob; the others are block blobs there. Every pairing is read the same way.
PAIRINGS = [
    ("vhd-fixed", "PageBlob"),
    ("vhd-dynamic", "BlockBlob"),
    ("vhdx", "BlockBlob"),
    pytest.param("vhd-fixed", "BlockBlob", marks=pytest.mark.slow),
    pytest.param("vhd-dynamic", "PageBlob", marks=pytest.mark.slow),
    pytest.param("vhdx", "PageBlob", marks=pytest.mark.slow),
]


@needs_images
@pytest.mark.parametrize(("fmt", "blob_type"), PAIRINGS)
def test_blob_facts_and_findings_equal_the_local_files(
    azurite: Any, image_cache: Path, fmt: str, blob_type: str
) -> None:
    path = build_image(BAD, fmt, cache_dir=image_cache)
    name = f"{blob_type}/{path.name}"  # the same file name: findings quote it
    url = upload(azurite, path, name, blob_type)
    placeholder = blob.register(parse_blob_url(url), sas_for(name))
    local, remote = extract(path), extract(placeholder)
    assert comparable(remote) == comparable(local)
    assert findings(placeholder, remote) == findings(path, local)
    assert {"VMR211", "VMR310", "VMR403"} <= {f[0] for f in findings(path, local)}  # something to agree on
    assert remote.stats["bytes fetched"] >= remote.stats["bytes read"] > 0 and remote.stats["requests"] >= 2
    assert remote.stats["bytes read"] == local.stats["bytes read"]


@needs_images
def test_azure_scheme_with_an_account_key(azurite: Any, image_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.fabric.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    path = build_image(BAD, "vhd-dynamic", cache_dir=image_cache)
    upload(azurite, path, "sdk.vhd", "BlockBlob")
    monkeypatch.setenv(blob.ENDPOINT_ENV, azurite.blob_endpoint.replace(ACCOUNT_NAME, "{account}"))
    placeholder = blob.register(parse_blob_url(f"azure://{ACCOUNT_NAME}/images/sdk.vhd"), "", ACCOUNT_KEY)
    assert comparable(extract(placeholder)) == comparable(extract(path))
    missing = blob.register(parse_blob_url(f"azure://{ACCOUNT_NAME}/images/none.vhd"), "", ACCOUNT_KEY)
    with pytest.raises(Unreadable, match=r"azure://devstoreaccount1/images/none.vhd: .*404"):
        extract(missing)


def test_a_blob_rewritten_mid_read_is_reported_not_mixed(azurite: Any, tmp_path: Path) -> None:
    original = tmp_path / "rewritten.vhd"
    original.write_bytes(random.Random(3).randbytes(3 * 1024 * 1024))
    url = upload(azurite, original, "rewritten.vhd", "BlockBlob")
    source = blob.open_blob(parse_blob_url(url), sas_for("rewritten.vhd"))
    first = source.read_at(0, 4096)
    assert first == original.read_bytes()[:4096]
    client = azurite.blob_client().get_blob_client("images", "rewritten.vhd")
    client.upload_blob(b"\1" * source.size, blob_type="BlockBlob", overwrite=True)
    assert source.read_at(0, 4096) == first  # cached: the version being read
    with pytest.raises(Unreadable) as info:
        source.read_at(source.size - 4096, 4096)
    assert "412" in info.value.problem and "changed while it was being read" in info.value.problem
    assert info.value.problem.startswith(url + ": ")


def stalling_server() -> tuple[socket.socket, int]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


def scan_for(token: str, texts: list[str], folder: Path) -> list[str]:
    needles = {token, token[:16]}
    hits = [f"output {i}" for i, t in enumerate(texts) if any(n in t for n in needles)]
    for p in folder.rglob("*"):
        if p.is_file() and any(n.encode() in p.read_bytes() for n in needles):
            hits.append(str(p))
    return hits


def vmrole(args: list[str], env: dict[str, str], cwd: Path, allure: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "lint", *args, *([] if allure else ["--no-allure"])],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


@needs_images
@pytest.mark.slow  # two `vmrole lint` runs, ~10 s
def test_vmrole_lint_of_a_blob_matches_the_file_and_shows_no_token(
    azurite: Any, image_cache: Path, tmp_path: Path
) -> None:
    path = build_image(BAD, "vhd-fixed", cache_dir=image_cache)
    url = upload(azurite, path, "cli.vhd", "PageBlob")
    sas = sas_for("cli.vhd")
    signature = sas.split("sig=", 1)[1].split("&", 1)[0]
    env = {"VMR_TEST_SAS": sas}
    local = vmrole([str(path), "--report-dir", str(tmp_path / "local")], env, tmp_path)
    remote = vmrole(
        ["--image", url + "?{env:VMR_TEST_SAS}", "-vv", "--report-dir", str(tmp_path / "blob")], env, tmp_path
    )
    assert local.returncode == remote.returncode == 1, remote.stdout + remote.stderr

    def json_findings(folder: Path) -> list[tuple[str, str, str, str]]:
        data = json.loads((folder / "vmrole.json").read_text("utf-8"))
        return sorted((f["rule_id"], f["location"], f["message"], f["severity"]) for f in data["findings"])

    assert json_findings(tmp_path / "blob") == json_findings(tmp_path / "local")
    report = json.loads((tmp_path / "blob" / "vmrole.json").read_text("utf-8"))
    assert [a["identity"] for a in report["artefacts"]] == [url]
    read = report["artefacts"][0]["read"]
    assert read["bytes_fetched"] >= read["bytes_read"] > 0 and read["requests"] >= 2
    from harness.reports import jsonreport

    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(report, jsonreport.schema())
    assert "requests)" in remote.stdout and "fetched" in remote.stdout  # bytes fetched and requests, per image
    assert scan_for(signature, [remote.stdout, remote.stderr], tmp_path / "blob") == []


@needs_images
def test_missing_expired_and_stalled_blobs_are_findings_in_bounded_time(
    azurite: Any, image_cache: Path, tmp_path: Path
) -> None:
    path = build_image(BAD, "vhd-dynamic", cache_dir=image_cache)
    url = upload(azurite, path, "expired.vhd", "BlockBlob")
    expired = sas_for("expired.vhd", expiry=dt.timedelta(minutes=-5))
    valid = sas_for("nothing-here.vhd")
    server, port = stalling_server()
    stalled = f"http://127.0.0.1:{port}/devstoreaccount1/images/stalled.vhd"
    missing = f"{azurite.blob_endpoint}/images/nothing-here.vhd"
    env = {"VMR_EXPIRED": expired, "VMR_VALID": valid, "VMROLE_BLOB_SAS": valid, blob.TIMEOUT_ENV: "0.5"}
    started = time.monotonic()
    try:
        done = vmrole(
            [
                *("--image", url + "?{env:VMR_EXPIRED}"),
                *("--image", missing + "?{env:VMR_VALID}"),
                *("--image", stalled),  # VMROLE_BLOB_SAS from the environment
                *("--report-dir", str(tmp_path / "r"), "-vv"),
            ],
            env,
            tmp_path,
            allure=True,  # allure results are scanned for the tokens too
        )
    finally:
        server.close()
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert elapsed < 60
    report = json.loads((tmp_path / "r" / "vmrole.json").read_text("utf-8"))
    by_artefact = {f["artefact"]: f for f in report["findings"]}
    assert set(by_artefact) == {url, missing, stalled}
    assert all(f["rule_id"] == "VMR001" for f in report["findings"]) and len(report["findings"]) == 3
    assert "403" in by_artefact[url]["message"] and "SAS token is expired" in by_artefact[url]["message"]
    assert "404" in by_artefact[missing]["message"] and "no such blob" in by_artefact[missing]["message"]
    assert "no answer within 0.5 s" in by_artefact[stalled]["message"]
    for f in report["findings"]:
        assert f["artefact"] in f["message"]  # the finding names the URL (without its query)
    assert "Traceback" not in done.stdout + done.stderr
    assert any((tmp_path / "r" / "allure-results").iterdir())
    for token in (expired, valid):
        signature = token.split("sig=", 1)[1].split("&", 1)[0]
        assert scan_for(signature, [done.stdout, done.stderr], tmp_path / "r") == []


def test_a_missing_secret_reference_is_a_usage_error_without_the_query(tmp_path: Path) -> None:
    done = vmrole(
        [
            "--image",
            "https://acct.blob.core.windows.net/c/web.vhd?{env:VMR_NOT_SET_ANYWHERE}",
            "--report-dir",
            str(tmp_path),
        ],
        {},
        tmp_path,
    )
    assert done.returncode == 4
    assert "environment variable VMR_NOT_SET_ANYWHERE is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_http_transport_error_text_never_quotes_the_url_query() -> None:
    # nothing listens on this port: requests' own exception text would quote the URL with its query
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ref = parse_blob_url(f"http://127.0.0.1:{port}/devstoreaccount1/c/x.vhd")
    with pytest.raises(Unreadable) as info:
        BlobSource(ref, HttpTransport(ref, "sv=1&sig=TOPSECRETSIG", timeout=0.5), sleep=lambda s: None)
    assert "TOPSECRETSIG" not in str(info.value) and "connection failed" in info.value.problem


def test_sas_references_resolve_as_target_secrets_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.plugin.blobimages import display_of, placeholder

    def sas_of(path: Path) -> str:
        return blob._REGISTERED[os.path.realpath(path)][1]

    secret_file = tmp_path / "web.sas"
    secret_file.write_text("?sv=1&sig=FROMFILE\n", "utf-8")
    from_file = placeholder(f"https://acct.blob.core.windows.net/c/a.vhd?{{file:{secret_file}}}")
    assert sas_of(from_file) == "sv=1&sig=FROMFILE"
    assert display_of(from_file) == "https://acct.blob.core.windows.net/c/a.vhd" and from_file.name == "a.vhd"
    assert "FROMFILE" not in from_file.read_text("utf-8")  # the placeholder holds the label only
    monkeypatch.setenv("VMR_SAS_FOR_TEST", "sv=2&sig=FROMENVREF")
    assert sas_of(placeholder("https://acct.blob.core.windows.net/c/b.vhd?{env:VMR_SAS_FOR_TEST}")).endswith("REF")
    monkeypatch.setenv(blob.SAS_ENV, "sv=3&sig=FROMDEFAULT")
    assert sas_of(placeholder("https://acct.blob.core.windows.net/c/c.vhd")) == "sv=3&sig=FROMDEFAULT"
    assert sas_of(placeholder("https://acct.blob.core.windows.net/c/d.vhd?sv=4&sig=LITERAL")) == "sv=4&sig=LITERAL"
    assert {"sv=1&sig=FROMFILE", "sv=4&sig=LITERAL"} <= set(blob.registered_secrets())
    with pytest.raises(pytest.UsageError, match=r"cannot read secret file .*missing.sas") as info:
        placeholder(f"https://acct.blob.core.windows.net/c/e.vhd?{{file:{tmp_path / 'missing.sas'}}}")
    assert "sig=" not in str(info.value)


class _OddServer:
    """A local HTTP server standing in for a broken blob endpoint: the first ``busy`` requests get 503, then HEAD
    answers like Get Blob Properties and GET sends the whole blob with 200, ignoring x-ms-range."""

    def __init__(self, body: bytes, busy: int, get_etag: str = '"0x8D"') -> None:
        import http.server

        outer = self
        self.busy = busy
        self.seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                outer.seen.append(self.command)
                if outer.busy:
                    outer.busy -= 1
                    self.send_response(503)
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"0x8D"' if self.command == "HEAD" else get_etag)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_GET(self) -> None:
                self._answer(True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/devstoreaccount1/c/odd.vhd"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_busy_answers_are_retried_and_a_server_ignoring_the_range_is_refused() -> None:
    server = _OddServer(bytes(4 * blob.BLOCK), busy=2)
    try:
        ref = parse_blob_url(server.url + "?sv=1&sig=ODDSECRET")
        source = BlobSource(ref, HttpTransport(ref, ref.query), sleep=lambda s: None)
        assert source.size == 4 * blob.BLOCK and server.seen == ["HEAD", "HEAD", "HEAD"]
        with pytest.raises(Unreadable, match="ignored the range") as info:
            source.read_at(0, 512)
        assert "ODDSECRET" not in str(info.value) and info.value.problem.startswith(server.url + ": ")
    finally:
        server.close()


def test_an_answer_from_another_version_is_refused_even_if_if_match_was_ignored() -> None:
    server = _OddServer(bytes(blob.BLOCK), busy=0, get_etag='"0x9E"')
    try:
        ref = parse_blob_url(server.url)
        source = BlobSource(ref, HttpTransport(ref), sleep=lambda s: None)
        with pytest.raises(Unreadable, match="changed while it was being read") as info:
            source.read_at(0, 512)
        assert server.seen == ["HEAD", "GET"]  # refused at once, not retried
        assert info.value.problem.startswith(server.url + ": ")
    finally:
        server.close()
