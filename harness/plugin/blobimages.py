"""``--vmr-image URL``: an image in Azure blob storage, linted in place (harness.readers.image.blob reads it).

The SAS token is a secret: named by reference in the URL's query (``?{env:NAME}``, ``?{file:PATH}``), taken from
the environment (``VMROLE_BLOB_SAS``) when the URL has no query, or (discouraged: it shows in the process list)
written literally. References resolve as a target file's secrets do (harness.live.target: ``SecretRef`` and
``Target.secret``), here at start-up: a missing variable or file is a usage error naming the URL without its query.
The resolved value goes to the reader's in-process registry and to the run's maskers, never to a file or a report.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, cast

import pytest

from harness.readers.image import blob

_REF = re.compile(r"^\{\s*(env|file)\s*:\s*(.+?)\s*\}$")


def placeholder(value: str) -> Path:
    """The placeholder path the pipeline collects for the blob image ``value``; UsageError when the URL or its
    secret reference is bad (the message never quotes the query)."""
    try:
        ref = blob.parse_blob_url(value)
    except ValueError as exc:
        raise pytest.UsageError(f"--vmr-image: {exc}") from None
    try:
        return _register(ref)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def register_url(value: str) -> Path:
    """:func:`placeholder` for the Python API (:func:`harness.lint.lint`): ValueError instead of UsageError."""
    return _register(blob.parse_blob_url(value))


def _register(ref: blob.BlobRef) -> Path:
    sas = _sas(ref)
    key = os.environ.get(blob.KEY_ENV, "") if ref.scheme == "azure" and not sas else ""
    return blob.register(ref, sas, key)


def _sas(ref: blob.BlobRef) -> str:
    from harness.live.errors import TargetError
    from harness.live.target import SecretRef, Target

    query = ref.query.strip()
    if not query:
        return os.environ.get(blob.SAS_ENV, "").strip().lstrip("?")
    found = _REF.match(query)
    if found is None:
        return query  # a literal token
    kind, name = found.groups()
    secret_ref = SecretRef(env=name) if kind == "env" else SecretRef(file=Path(os.path.expanduser(name)).resolve())
    # Target.secret only names its owner (``path``) in its messages: the image's URL without query here.
    owner = cast(Any, _Owner(f"--vmr-image {ref.label}"))
    try:
        return Target.secret(owner, secret_ref).strip().lstrip("?")
    except TargetError as exc:
        raise ValueError(str(exc)) from None


class _Owner:
    def __init__(self, path: str) -> None:
        self.path = path


def display_of(path: Path) -> str | None:
    """The URL (without query) a collected placeholder stands for, or None for an ordinary file."""
    return blob.registered_label(path)
