"""Ed25519 keys and signatures over the exact bytes of ``manifest.json``.

cryptography is imported on first use: a device that loads unsigned bundles never pays
for it at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_KEY_NAME = "edge.pem"
PUBLIC_KEY_NAME = "edge.pub"

KeySource = str | os.PathLike[str] | bytes


def _pem_bytes(source: KeySource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc


def load_private_key(source: KeySource) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file path or PEM bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _pem_bytes(source, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            f"expected an Ed25519 private key, got {type(key).__name__}; create one with `edgepack keygen DIR`"
        )
    return key


def load_public_key(source: KeySource) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file path or PEM bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _pem_bytes(source, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(
            f"expected an Ed25519 public key, got {type(key).__name__}; create one with `edgepack keygen DIR`"
        )
    return key


def sign(data: bytes, private_key: KeySource | Ed25519PrivateKey) -> bytes:
    """Return the 64-byte Ed25519 signature of ``data``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    return key.sign(data)


def verify(data: bytes, signature: bytes, public_key: KeySource | Ed25519PublicKey) -> None:
    """Raise ``SignatureError`` unless ``signature`` is a valid signature of ``data``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise SignatureError(
            "signature does not match manifest.json for this public key "
            "(the bundle was changed after signing, or was signed with another key)",
            entry="manifest.sig",
        ) from exc


def generate_keypair(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair as ``edge.pem`` (private, mode 0600) and ``edge.pub``.

    Refuses to overwrite an existing private key: losing it strands every deployed device.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    if private_path.exists():
        raise SignatureError(f"{private_path} already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path
