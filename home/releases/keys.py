"""The repository's TUF signing keys: one Ed25519 key per top-level role, as PEM files.

``RELEASES/keys/<role>.pem`` holds the PKCS#8 private key (owner-only). Root is the
trust anchor (devices are provisioned with ``1.root.json``, which lists the public keys
of all four roles): keep ``root.pem`` offline once the repository exists and bring it
back only to rotate a key. ``targets.pem`` signs releases (it is needed by ``release
publish|promote|halt|rollback``); ``snapshot.pem`` and ``timestamp.pem`` are online keys
that re-sign the repository's state and freshness.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner

from .errors import KeyFileError

ROLES = ("root", "targets", "snapshot", "timestamp")


def key_path(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"{role}.pem"


def generate(keys_dir: Path, role: str) -> CryptoSigner:
    """A new Ed25519 key for ``role``, written to ``keys_dir/<role>.pem`` (0600, never overwritten)."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = key_path(keys_dir, role)
    tmp = path.with_suffix(".pem.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return CryptoSigner(private)


def load(keys_dir: Path, role: str) -> CryptoSigner:
    """The signer of ``role``; ``KeyFileError`` naming the file when it is missing or not Ed25519."""
    path = key_path(keys_dir, role)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        where = "it is kept offline: bring it back for this step" if role == "root" else "was the repository created here?"
        raise KeyFileError(f"the {role} key {path} is missing ({where})") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the {role} key {path}: {exc.strerror or exc}") from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key ({exc})") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(private).__name__}; the {role} key must be Ed25519")
    return CryptoSigner(private)
