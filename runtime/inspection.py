"""A bundle described for people (``edgepack inspect``) and for scripts (``--json``)."""

from __future__ import annotations

from typing import Any

from .bundle import Bundle


def describe(bundle: Bundle) -> dict[str, Any]:
    """The facts a person checks before shipping a bundle, plus the full manifest."""
    manifest = bundle.manifest
    model = manifest.get("model", {})
    files = manifest.get("files", {})
    wheels: dict[str, list[str]] = {}
    for name in files:
        if name.startswith("wheels/"):
            parts = name.split("/")
            platform = parts[1] if len(parts) > 2 else "(none)"
            wheels.setdefault(platform, []).append(parts[-1])
    return {
        "path": bundle.path,
        "sha256": bundle.sha256,
        "size": bundle.size,
        "signed": bundle.signature is not None,
        "signature_verified": bundle.signature_verified,
        "format_version": manifest.get("format_version"),
        "edgepack_version": manifest.get("edgepack_version"),
        "model": model,
        "inputs": manifest.get("inputs", []),
        "onnx_inputs": manifest.get("onnx_inputs", []),
        "outputs": manifest.get("outputs", {}),
        "onnx": manifest.get("onnx", {}),
        "parity": manifest.get("parity", {}),
        "files": {name: entry for name, entry in sorted(files.items())},
        "files_total_size": sum(int(e.get("size", 0)) for e in files.values()),
        "wheels": {platform: sorted(names) for platform, names in sorted(wheels.items())},
        "manifest": manifest,
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def render(info: dict[str, Any]) -> str:
    """``describe()`` as aligned text."""
    model = info["model"]
    resolved = model.get("resolved") or {}
    lines = [
        f"bundle     {info['path'] or '(bytes)'}",
        f"size       {_size(info['size'])}   sha256 {info['sha256']}",
        "signed     " + ("yes, signature verified" if info["signature_verified"] else "yes (not verified here: edgepack verify --public-key PEM)")
        if info["signed"]
        else "signed     no",
        f"model      {model.get('name')} version {model.get('version')}  ({model.get('flavor')}, {model.get('estimator')})",
        f"resolved   {model.get('requested_uri')} -> {resolved.get('kind')} {resolved.get('value')!r} -> version {model.get('version')}",
        f"registry   {model.get('registry_uri')}   run {model.get('run_id')}",
        "",
        "inputs",
    ]
    rows = [("name", "dtype", "kind", "null", "packed as", "range / categories")]
    for f in info["inputs"]:
        if f.get("categories") is not None:
            cats = f["categories"]
            detail = ", ".join(map(str, cats[:6])) + (f", ... ({len(cats)})" if len(cats) > 6 else "")
        elif f.get("range") is not None:
            detail = f"{f['range'][0]:g} .. {f['range'][1]:g}"
        else:
            detail = "-"
        packed = f"{f.get('onnx_input')}[{f.get('slot')}]"
        encoding = f.get("encoding")
        if isinstance(encoding, dict) and isinstance(f.get("slot"), int) and isinstance(encoding.get("categories"), list):
            # Encoded by the runtime (runtime/encodings.py): the slots it fills.
            packed = f"{f.get('onnx_input')}[{f['slot']}:{f['slot'] + len(encoding['categories'])}] {encoding.get('kind')}"
        rows.append((str(f.get("name")), str(f.get("dtype")), str(f.get("kind")), "yes" if f.get("nullable") else "no", packed, detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    out = info["outputs"]
    lines += ["", "outputs"]
    if out.get("task") == "classification":
        lines.append(f"  classification, classes {out.get('classes')} (label {out.get('label')!r}, probabilities {out.get('probabilities')!r})")
    else:
        lines.append(f"  regression, output {out.get('prediction')!r}, training target range {out.get('target_range')}")
    parity = info["parity"]
    if parity:
        tol = parity.get("tolerance") or {}
        lines += [
            "",
            "parity",
            f"  {parity.get('rows')} rows ({parity.get('rows_with_missing')} with missing values), label agreement "
            f"{parity.get('label_agreement')}, max abs diff {parity.get('max_abs_diff')}, max rel diff {parity.get('max_rel_diff')}",
            f"  tolerance abs {tol.get('abs')} rel {tol.get('rel')}, precision {parity.get('precision')}, "
            f"onnxruntime {parity.get('onnxruntime')}",
        ]
    onnx = info["onnx"]
    if onnx:
        lines.append(f"  onnx opsets {onnx.get('opsets')}, ir {onnx.get('ir_version')}, producers {onnx.get('producers')}")
    lines += ["", f"files ({len(info['files'])}, {_size(info['files_total_size'])} uncompressed)"]
    for name, entry in info["files"].items():
        lines.append(f"  {name}  {_size(int(entry.get('size', 0)))}  sha256 {str(entry.get('sha256'))[:16]}")
    if info["wheels"]:
        lines.append("wheels")
        for platform, names in info["wheels"].items():
            lines.append(f"  {platform}: {len(names)} wheels")
    return "\n".join(lines)
