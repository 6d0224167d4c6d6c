"""The ``.edgepkg`` container: a zip archive read in memory, never extracted by path.

``write_bundle`` is the only writer (the packager calls it); ``read_bundle`` is the only
reader, and it trusts nothing in the archive until the manifest's hashes (and, when asked,
its signature) have been checked. See docs/bundle-format.md for the manifest fields.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import signing
from .errors import BundleError, SignatureError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL = "model.onnx"
GOLDEN = "golden.json"
REQUIREMENTS = "requirements.txt"
REQUIRED_FILES = (MODEL, GOLDEN, REQUIREMENTS)
OPTIONAL_PREFIXES = ("wheels/",)

# Fixed metadata so that the same content always gives the same archive bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_MODE = 0o100644 << 16


@dataclass(frozen=True, kw_only=True)
class BundleLimits:
    """Upper bounds a reader enforces before it trusts anything in an archive."""

    max_bundle_bytes: int = 1 << 30
    """Size of the ``.edgepkg`` file itself."""
    max_entry_bytes: int = 256 << 20
    """Uncompressed size of any single entry, declared or actual."""
    max_total_bytes: int = 768 << 20
    """Uncompressed size of all entries together."""
    max_entries: int = 10_000
    """Number of entries in the archive."""
    max_ratio: int = 200
    """Largest uncompressed/compressed ratio accepted for an entry over 1 MiB (zip bombs)."""
    max_model_bytes: int = 256 << 20
    """Uncompressed size of ``model.onnx``, declared or actual. onnxruntime keeps the graph
    and its weights in memory while the model is loaded, so this bounds what a validly
    signed bundle can make a device allocate for weights (tensors a graph creates at run
    time are not covered). Lower it on small devices; raise it (and ``max_entry_bytes``)
    for a larger model."""
    max_manifest_bytes: int = 16 << 20
    """Size of ``manifest.json``; read (and, with a key, verified) before it is parsed."""
    max_json_depth: int = 64
    """Deepest nesting of objects and arrays accepted in ``manifest.json`` and ``golden.json``
    (real ones nest about 5 levels); deeper JSON is refused instead of exhausting the stack."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BundleLimits.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class Bundle:
    """A bundle whose structure and hashes have been verified."""

    manifest: dict[str, Any]
    """The parsed manifest."""
    manifest_bytes: bytes
    """The exact bytes of ``manifest.json`` (what the signature covers)."""
    files: Mapping[str, bytes]
    """Every entry other than the manifest and its signature, by archive name."""
    sha256: str
    """sha256 of the whole ``.edgepkg`` file."""
    size: int
    """Size in bytes of the whole ``.edgepkg`` file."""
    signature: bytes | None = None
    """Raw signature bytes when the bundle is signed."""
    signature_verified: bool = False
    """True when the signature was checked against a public key and holds."""
    path: str | None = field(default=None)
    """Where the bundle was read from, when it came from a file."""


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, no NaN: one object, one byte string."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as exc:
        raise BundleError(f"manifest holds a value JSON cannot represent (NaN or infinity?): {exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(data: bytes) -> dict[str, Any]:
    """The manifest's ``files`` record for one entry."""
    return {"sha256": sha256_hex(data), "size": len(data)}


def write_bundle(
    path: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    files: Mapping[str, bytes],
    *,
    signing_key: signing.KeySource | None = None,
) -> Bundle:
    """Write a bundle and return it as a reader would see it.

    ``manifest`` is completed with ``format_version`` and the ``files`` table computed from
    ``files``; entries are written in a fixed order with fixed timestamps, so the same inputs
    always give byte-identical output. The file is written to a temporary name and renamed,
    so a crash never leaves a half-written bundle under the final name.
    """
    for name in files:
        _check_name(name)
    if missing := [n for n in REQUIRED_FILES if n not in files]:
        raise BundleError(f"cannot write a bundle without {', '.join(missing)}")
    full = dict(manifest)
    full["format_version"] = FORMAT_VERSION
    full["files"] = {name: file_entry(data) for name, data in sorted(files.items())}
    manifest_bytes = canonical_json(full)
    signature = signing.sign(manifest_bytes, signing_key) if signing_key is not None else None

    entries: list[tuple[str, bytes]] = [(MANIFEST, manifest_bytes)]
    if signature is not None:
        entries.append((SIGNATURE, signature))
    entries.extend(sorted(files.items()))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = _ZIP_MODE
            info.create_system = 3
            zf.writestr(info, data, compresslevel=6)
    payload = buffer.getvalue()

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    return Bundle(
        manifest=full,
        manifest_bytes=manifest_bytes,
        files=dict(files),
        sha256=sha256_hex(payload),
        size=len(payload),
        signature=signature,
        signature_verified=signature is not None,
        path=str(target),
    )


def read_bundle(
    source: str | os.PathLike[str] | bytes,
    *,
    public_key: signing.KeySource | None = None,
    require_signature: bool = False,
    limits: BundleLimits = BundleLimits(),
) -> Bundle:
    """Read and verify a bundle from a path or from its bytes.

    Checks, in order: archive size and readability; entry names (no ``..``, no absolute
    paths, no duplicates); declared sizes (``model.onnx`` against ``max_model_bytes``) and
    compression ratios; the signature over the raw manifest bytes (when ``public_key`` is
    given or ``require_signature`` is set), before the manifest is parsed; the manifest's
    JSON, nesting depth and format version; that the archive holds exactly the files the
    manifest lists, with matching size and sha256. Any failure raises ``BundleError`` (``SignatureError`` for the signature)
    naming the entry and what was expected.
    """
    path: str | None = None
    if isinstance(source, bytes):
        payload = source
    else:
        path = str(source)
        try:
            size = os.stat(path).st_size
            if size > limits.max_bundle_bytes:
                raise BundleError(f"bundle is {size} bytes, over the limit of {limits.max_bundle_bytes}")
            payload = Path(path).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read bundle {path!r}: {exc.strerror or exc}") from exc
    if len(payload) > limits.max_bundle_bytes:
        raise BundleError(f"bundle is {len(payload)} bytes, over the limit of {limits.max_bundle_bytes}")

    try:
        zf = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"not a zip archive ({exc}); expected an .edgepkg written by `edgepack build`") from exc

    with zf:
        infos = zf.infolist()
        _check_directory(infos, limits)
        names = {info.filename for info in infos}
        manifest_bytes = _read_entry(zf, MANIFEST, limits)

        # The signature is checked over the raw bytes BEFORE they are parsed: with a key,
        # nothing an attacker wrote reaches the JSON parser (or anything after it).
        signature = _read_entry(zf, SIGNATURE, limits) if SIGNATURE in names else None
        verified = False
        if require_signature and signature is None:
            raise SignatureError("bundle is not signed but a signature is required", entry=SIGNATURE)
        if public_key is not None:
            if signature is None:
                raise SignatureError("bundle is not signed but a public key was given to check it", entry=SIGNATURE)
            signing.verify(manifest_bytes, signature, public_key)
            verified = True
        elif require_signature:
            raise SignatureError("a signature is required but no public key was given to check it", entry=SIGNATURE)
        manifest = _parse_manifest(manifest_bytes, limits)

        declared: dict[str, Any] = manifest.get("files")
        if not isinstance(declared, dict):
            raise BundleError("expected a 'files' table of {name: {sha256, size}}", entry=MANIFEST)
        present = names - {MANIFEST, SIGNATURE}
        if missing := sorted(set(declared) - present):
            raise BundleError(f"listed in the manifest but missing from the archive: {', '.join(missing)}")
        if extra := sorted(present - set(declared)):
            raise BundleError(f"in the archive but not listed in the manifest: {', '.join(extra)}", entry=extra[0])
        for name in REQUIRED_FILES:
            if name not in declared:
                raise BundleError("required entry is missing", entry=name)

        files: dict[str, bytes] = {}
        for name in sorted(declared):
            expect = declared[name]
            if not isinstance(expect, dict) or not isinstance(expect.get("sha256"), str) or not isinstance(expect.get("size"), int):
                raise BundleError("manifest 'files' record must be {sha256: str, size: int}", entry=name)
            data = _read_entry(zf, name, limits)
            if len(data) != expect["size"]:
                raise BundleError(f"size is {len(data)} bytes, manifest says {expect['size']}", entry=name)
            digest = sha256_hex(data)
            if digest != expect["sha256"]:
                raise BundleError(f"sha256 is {digest}, manifest says {expect['sha256']}", entry=name)
            files[name] = data

    return Bundle(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        files=files,
        sha256=sha256_hex(payload),
        size=len(payload),
        signature=signature,
        signature_verified=verified,
        path=path,
    )


def _check_name(name: str) -> None:
    pure = PurePosixPath(name)
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or ".." in pure.parts
        or (len(name) > 1 and name[1] == ":")
        or name.endswith("/")
    ):
        raise BundleError("unsafe entry name (absolute, '..', backslash or directory); expected a relative file path", entry=name)
    allowed = name in (MANIFEST, SIGNATURE, *REQUIRED_FILES) or name.startswith(OPTIONAL_PREFIXES)
    if not allowed:
        raise BundleError(
            f"unknown entry; a bundle holds only {MANIFEST}, {SIGNATURE}, {', '.join(REQUIRED_FILES)} and wheels/*",
            entry=name,
        )


def _check_directory(infos: list[zipfile.ZipInfo], limits: BundleLimits) -> None:
    if len(infos) > limits.max_entries:
        raise BundleError(f"archive has {len(infos)} entries, over the limit of {limits.max_entries}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        _check_name(name)
        if name in seen:
            raise BundleError("duplicate entry name; each name may appear once", entry=name)
        seen.add(name)
        if name == MODEL and info.file_size > limits.max_model_bytes:
            raise BundleError(_model_too_big(info.file_size, limits), entry=name)
        if info.file_size > limits.max_entry_bytes:
            raise BundleError(
                f"declared uncompressed size {info.file_size} bytes is over the per-entry limit of {limits.max_entry_bytes}",
                entry=name,
            )
        if info.file_size > (1 << 20) and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise BundleError(
                f"compression ratio {info.file_size // max(info.compress_size, 1)}:1 is over the limit of {limits.max_ratio}:1",
                entry=name,
            )
        total += info.file_size
    if total > limits.max_total_bytes:
        raise BundleError(f"declared uncompressed total {total} bytes is over the limit of {limits.max_total_bytes}")
    if MANIFEST not in seen:
        raise BundleError("required entry is missing; expected a bundle written by `edgepack build`", entry=MANIFEST)


def _model_too_big(size: int, limits: BundleLimits) -> str:
    return (
        f"model is {size} bytes uncompressed, over the limit of {limits.max_model_bytes} "
        f"(BundleLimits.max_model_bytes); if this device has the memory for it, load with "
        f"runtime.load(..., limits=BundleLimits(max_model_bytes=...))"
    )


def _entry_limit(name: str, limits: BundleLimits) -> int:
    if name == MANIFEST:
        return min(limits.max_entry_bytes, limits.max_manifest_bytes)
    if name == MODEL:
        return min(limits.max_entry_bytes, limits.max_model_bytes)
    return limits.max_entry_bytes


def _read_entry(zf: zipfile.ZipFile, name: str, limits: BundleLimits) -> bytes:
    info = zf.getinfo(name)
    limit = _entry_limit(name, limits)
    if info.file_size > limit:
        raise BundleError(
            _model_too_big(info.file_size, limits)
            if name == MODEL
            else f"declared uncompressed size {info.file_size} bytes is over the limit of {limit}",
            entry=name,
        )
    try:
        with zf.open(info) as fh:
            # Never trust the declared size: read at most one byte past the limit.
            data = fh.read(min(info.file_size, limit) + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        # zlib.error: corrupt deflate data; RuntimeError: encrypted entries.
        raise BundleError(f"cannot decompress ({exc}); the archive is damaged", entry=name) from exc
    if len(data) > info.file_size:
        raise BundleError(f"holds more data than its declared size of {info.file_size} bytes", entry=name)
    return data


def parse_json(data: bytes, *, entry: str, max_depth: int, error: type[BundleError] = BundleError) -> Any:
    """Parse one JSON entry of a bundle; any failure is ``error`` naming ``entry``.

    json.loads recurses once per level of nesting (RecursionError past ~1000 levels) and
    refuses integers over 4300 digits with a plain ValueError, so those are caught here
    too; then the nesting depth is checked without recursion, so that nothing downstream
    (repr, json.dumps, the schema parser) can be driven into the stack limit either.
    """
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"not valid JSON: {exc}", entry=entry) from exc
    except RecursionError as exc:
        raise error(f"JSON nested too deeply to parse (limit {max_depth} levels)", entry=entry) from exc
    depth = _depth(value)
    if depth > max_depth:
        raise error(f"JSON nested {depth} levels deep, over the limit of {max_depth} (BundleLimits.max_json_depth)", entry=entry)
    return value


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _parse_manifest(data: bytes, limits: BundleLimits) -> dict[str, Any]:
    manifest = parse_json(data, entry=MANIFEST, max_depth=limits.max_json_depth)
    if not isinstance(manifest, dict):
        raise BundleError("expected a JSON object", entry=MANIFEST)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"unknown format_version {version!r}; this edgepack reads format_version {FORMAT_VERSION} "
            "(upgrade edgepack on the device, or rebuild the bundle with a matching edgepack)",
            entry=MANIFEST,
        )
    return manifest
