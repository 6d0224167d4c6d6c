"""Install edgepack offline from the wheels inside an .edgepkg bundle.

Standard library only: it runs where edgepack is not installed yet (a fresh device, the
first stage of Dockerfile.edge). Nothing from the bundle is installed or run before its
signature holds: first ``manifest.sig`` is verified over the exact bytes of
``manifest.json`` against the public key given (Ed25519, with the system interpreter's
``cryptography`` when it has it, else with the RFC 8032 verification below; using the
bundle's own ``cryptography`` wheel for this would let a forged bundle vouch for itself),
then each wheel is checked against the sha256 and size the now trusted manifest lists,
then pip installs with ``--no-index``, so nothing is fetched from a network.

    python3 install_from_bundle.py model.edgepkg --public-key edge.pub [--platform manylinux_2_28_x86_64] [--python VENV/bin/python]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import platform as host_platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

WHEELS = "wheels"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# DER SubjectPublicKeyInfo of an Ed25519 key: this fixed prefix, then the 32 key bytes.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class InstallError(Exception):
    """The bundle has no usable wheels for this device, or cannot be trusted."""


# -- Ed25519 verification (RFC 8032, section 6), for interpreters without cryptography ----

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point_add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x = (a[1] - a[0]) * (b[1] - b[0]) % _P
    y = (a[1] + a[0]) * (b[1] + b[0]) % _P
    c = 2 * a[3] * b[3] * _D % _P
    d = 2 * a[2] * b[2] % _P
    e, f, g, h = y - x, d - c, d + c, y + x
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _point_mul(s: int, point: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    result = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = _point_add(result, point)
        point = _point_add(point, point)
        s >>= 1
    return result


def _point_equal(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % _P == 0 and (a[1] * b[2] - b[1] * a[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decompress(data: bytes) -> tuple[int, int, int, int] | None:
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_G_Y = 4 * pow(5, _P - 2, _P) % _P
_G = (_recover_x(_G_Y, 0), _G_Y, 1, _recover_x(_G_Y, 0) * _G_Y % _P)  # type: ignore[operator]


def ed25519_verify_rfc8032(public: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 Ed25519 verification in pure Python (slow, ~ms, and enough for one manifest)."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _L
    return _point_equal(_point_mul(s, _G), _point_add(r, _point_mul(h, a)))


def public_key_bytes(pem: bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 public key in PEM (SubjectPublicKeyInfo) form."""
    text = pem.decode("ascii", errors="replace")
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    if begin not in text or end not in text:
        raise InstallError("the public key is not a PEM public key (no BEGIN/END PUBLIC KEY lines); give the edge.pub of `edgepack keygen`")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise InstallError(f"the public key's PEM body is not base64: {exc}") from exc
    if len(der) != len(_ED25519_SPKI_PREFIX) + 32 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise InstallError("the public key is not an Ed25519 key; give the edge.pub of `edgepack keygen`")
    return der[len(_ED25519_SPKI_PREFIX) :]


def signature_holds(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:  # the system interpreter of a slim base image has no cryptography
        return ed25519_verify_rfc8032(public, message, signature)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verified_manifest(zf: zipfile.ZipFile, public_key_pem: bytes | None) -> dict:
    """The manifest, parsed only after its signature held (or, with no key, unverified)."""
    names = zf.namelist()
    if names.count(MANIFEST) != 1:
        raise InstallError(f"the bundle must hold exactly one {MANIFEST}")
    manifest_bytes = zf.read(MANIFEST)
    if public_key_pem is not None:
        if names.count(SIGNATURE) != 1:
            raise InstallError(f"the bundle is not signed ({SIGNATURE} missing); nothing from it is installed")
        if not signature_holds(public_key_bytes(public_key_pem), manifest_bytes, zf.read(SIGNATURE)):
            raise InstallError(
                f"{SIGNATURE} does not verify {MANIFEST} against the public key: the bundle was changed after "
                "signing, or signed with another key; nothing from it is installed"
            )
    manifest = json.loads(manifest_bytes)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise InstallError(f"{MANIFEST} has no 'files' table")
    return manifest


def bundle_platforms(manifest: dict) -> dict[str, list[str]]:
    """``{platform: [wheel entry names]}`` from the manifest's ``files`` table."""
    found: dict[str, list[str]] = {}
    for name in manifest.get("files", {}):
        parts = PurePosixPath(name).parts
        if len(parts) == 3 and parts[0] == WHEELS and parts[2].endswith(".whl"):
            found.setdefault(parts[1], []).append(name)
    return found


def choose_platform(available: list[str], wanted: str | None) -> str:
    if not available:
        raise InstallError("the bundle holds no wheels; rebuild it with `edgepack build ... --with-deps PLATFORM`")
    if wanted:
        if wanted not in available:
            raise InstallError(f"the bundle has no wheels for platform {wanted!r}; it has: {', '.join(sorted(available))}")
        return wanted
    arch = host_platform.machine().lower()
    libc = "musllinux" if host_platform.libc_ver()[0] != "glibc" else "manylinux"
    matching = [p for p in available if p.endswith("_" + arch) and p.startswith(libc)]
    if len(matching) == 1:
        return matching[0]
    raise InstallError(
        f"cannot tell which of the bundle's platforms ({', '.join(sorted(available))}) fits this "
        f"{libc} {arch} device; pass --platform"
    )


def extract_wheels(bundle: Path, platform: str | None, dest: Path, public_key_pem: bytes | None) -> tuple[str, list[Path], bytes]:
    """Write the chosen platform's wheels to ``dest`` after checking the signature, then each
    wheel against the manifest."""
    with zipfile.ZipFile(bundle) as zf:
        manifest = verified_manifest(zf, public_key_pem)
        files = manifest["files"]
        platforms = bundle_platforms(manifest)
        chosen = choose_platform(list(platforms), platform)
        written = []
        for name in sorted(platforms[chosen]):
            data = zf.read(name)
            expect = files[name]
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != expect.get("size") or digest != expect.get("sha256"):
                raise InstallError(f"{name}: sha256 {digest} / {len(data)} bytes does not match the manifest; the bundle was altered")
            target = dest / PurePosixPath(name).name
            target.write_bytes(data)
            written.append(target)
        requirements = zf.read("requirements.txt") if "requirements.txt" in files else b""
        if requirements and hashlib.sha256(requirements).hexdigest() != files["requirements.txt"].get("sha256"):
            raise InstallError("requirements.txt does not match the manifest; the bundle was altered")
    return chosen, written, requirements


def install(bundle: Path, *, platform: str | None, python: str, public_key_pem: bytes | None) -> str:
    with tempfile.TemporaryDirectory(prefix="edgepack-wheels-") as tmp:
        work = Path(tmp)
        chosen, _, requirements = extract_wheels(bundle, platform, work, public_key_pem)
        constraints = work / "constraints.txt"
        constraints.write_bytes(requirements)
        subprocess.run(
            [python, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--find-links", str(work), "--constraint", str(constraints), "edgepack"],
            check=True,
        )  # fmt: skip
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the .edgepkg built with --with-deps")
    parser.add_argument("--platform", default=None, help="the wheels/<platform> to install (default: the one that fits this device)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (of a venv) to install into")
    parser.add_argument("--public-key", type=Path, help="Ed25519 public key (PEM) the manifest must be signed with")
    parser.add_argument("--allow-unsigned", action="store_true", help="install without checking authenticity (never for a device image)")
    args = parser.parse_args(argv)
    if args.public_key is None and not args.allow_unsigned:
        print("install_from_bundle: give --public-key PEM (the key the bundle is signed with); "
              "nothing from an unverified bundle is installed", file=sys.stderr)  # fmt: skip
        return 2
    try:
        pem = args.public_key.read_bytes() if args.public_key is not None else None
        chosen = install(args.bundle, platform=args.platform or None, python=args.python, public_key_pem=pem)
    except (InstallError, OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        print(f"install_from_bundle: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"install_from_bundle: pip failed with exit code {exc.returncode}", file=sys.stderr)
        return 3
    checked = "signature verified" if args.public_key is not None else "signature NOT checked"
    print(f"install_from_bundle: installed edgepack for {chosen} from {args.bundle} ({checked})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
