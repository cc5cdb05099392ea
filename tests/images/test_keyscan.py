"""Which files the key-material scan reads: key-like names anywhere, small text files only where people leave
secrets (§4.5), nothing in the signed OS stores; Inventory.select/walk_under agree with a full walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.extraction import keyscan
from harness.readers.image.container import open_disk
from harness.readers.image.ntfs import Inventory, NtfsVolume
from harness.readers.image.partitions import read_partitions
from harness.testing import keymaterial as km
from harness.testing.images import ImageSpec, build_image, missing_tools

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()}")

PEM = km.pem_private_key_bytes()
FILES = {
    "inetpub/wwwroot/site.pfx": km.pfx_bytes(),  # key name: anywhere
    "Program Files/App/conf/server.KEY": PEM,  # key name, any case
    "Program Files/App/notes.txt": PEM,  # text file outside the secret places: not read
    "Users/alice/Desktop/creds.txt": PEM,  # secret place
    "Users/alice/AppData/Local/Temp/blob.txt": PEM,  # AppData: not a §4.5 place
    "Users/alice/id_ed25519": km.openssh_key_bytes(),  # profile folder itself + OpenSSH name
    "Users/bob/.ssh/deploy": PEM,  # .ssh
    "opt/tool/.ssh/config": "Host *",  # any .ssh folder
    "readme.txt": "hello",  # volume root
    "Windows/WinSxS/amd64_x/test.pem": PEM,  # signed OS store: skipped
    "Windows/Temp/dump.xml": "<x/>",
    "Windows/System32/big.txt": "x" * 100_000,
}


@pytest.fixture(scope="module")
def inventory(image_cache: Path) -> Inventory:
    path = build_image(ImageSpec(files=FILES), "raw", cache_dir=image_cache)
    disk = open_disk(path)
    table = read_partitions(disk)
    return NtfsVolume(table.source(disk, table.partitions[0])).inventory()


def test_candidates_follow_the_policy(inventory: Inventory) -> None:
    found = sorted(p for p, _ in keyscan.candidates(inventory))
    assert found == sorted(
        [
            "\\inetpub\\wwwroot\\site.pfx",
            "\\Program Files\\App\\conf\\server.KEY",
            "\\Users\\alice\\Desktop\\creds.txt",
            "\\Users\\alice\\id_ed25519",
            "\\Users\\bob\\.ssh\\deploy",
            "\\opt\\tool\\.ssh\\config",
            "\\readme.txt",
            "\\Windows\\Temp\\dump.xml",
        ]
    )


def test_candidates_agree_with_the_per_file_rule_over_a_full_walk(inventory: Inventory) -> None:
    walked = {p for p, e in inventory.walk() if keyscan.is_candidate(p, e)}
    assert {p for p, _ in keyscan.candidates(inventory)} == walked


def test_select_and_walk_under_match_walk(inventory: Inventory) -> None:
    everything = dict(inventory.walk())
    assert {p for p, _ in inventory.select(r"\.txt$")} == {p for p in everything if p.endswith(".txt")}
    under = {p for p, _ in inventory.walk_under("Users")}
    assert under == {p for p in everything if p.startswith("\\Users\\")}
    assert list(inventory.walk_under("readme.txt")) == [] and list(inventory.walk_under("nope")) == []
