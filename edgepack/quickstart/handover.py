"""What the quickstart leaves behind, and the commands that continue from its folder.

The same commands are README.md's "From registry to device" flow, run verbatim in CI
(tests/test_docs.py), and tests/test_quickstart.py checks that every command printed
here appears there: the hand-over cannot drift from the README.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

MODEL_URI = "models:/fire-risk@champion"
REFERENCE_CSV = "reference.csv"
ROWS_CSV = "rows.csv"
ENDPOINT = "http://127.0.0.1:8787"

FILES: tuple[tuple[str, str], ...] = (
    ("registry", "mlflow.db (tracking URI sqlite:///mlflow.db), artifacts in mlartifacts/"),
    ("signing keys", "keys/edge.pem (private, keep it secret), keys/edge.pub (public, for devices)"),
    ("bundle", "dist/fire-risk.edgepkg (signed with keys/edge.pem)"),
    ("reference rows", f"{REFERENCE_CSV} (this season's training rows, for --reference-data)"),
    ("device rows", f"{ROWS_CSV} (rows to predict, one with a region never seen in training)"),
    ("device buffer", "predictions.db (telemetry; delivered records are deleted from it)"),
    ("device tokens", "tokens.json (sha256 of each device token, for the collector)"),
    ("collector", "collector.db (the records it stored), collector.log"),
    ("promotions", "history.db and the registry's edgepack-promotions runs (edgepack history fire-risk)"),
    ("releases", "releases/ (the TUF release repository the collector served, with its keys), device-store/ (the device's model store)"),
)
"""(what, where) of everything the quickstart writes into its folder."""

NEXT: tuple[str, ...] = (
    "edgepack keygen release-keys/",
    f"edgepack build {MODEL_URI} -o release/fire-risk.edgepkg --tracking-uri sqlite:///mlflow.db "
    f"--reference-data {REFERENCE_CSV} --sign-key release-keys/edge.pem",
    "edgepack verify release/fire-risk.edgepkg --public-key release-keys/edge.pub",
    f"edgepack predict release/fire-risk.edgepkg --public-key release-keys/edge.pub --input {ROWS_CSV} --buffer predictions.db",
    "edgepack token add kiosk-17 --tokens tokens.json > device.token",
    "edgepack collector --db records.db --tokens tokens.json --port 8787 2> collector.log &",
    f"edgepack sync --once --wait 30 --db predictions.db --endpoint {ENDPOINT} --token-file device.token",
    f"edgepack stats --endpoint {ENDPOINT} --token-file device.token",
    "kill %1",
)
"""The commands that continue from the quickstart's folder, exactly as README.md shows them."""


def activate_hint() -> str | None:
    """``source .../activate`` when the running edgepack's venv is not on PATH, else None."""
    if sys.prefix == sys.base_prefix:
        return None
    script = Path(sys.prefix) / "bin" / "edgepack"
    found = shutil.which("edgepack")
    if found is not None and os.path.realpath(found) == os.path.realpath(script):
        return None
    return f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"


def render(directory: Path) -> list[str]:
    """The report's closing section: where everything went, and what to run next."""
    lines = [f"Files in {directory}"]
    width = max(len(what) for what, _ in FILES)
    lines += [f"  {what:<{width}}  {where}" for what, where in FILES]
    lines.append("Next: continue from this folder (README.md, \"From registry to device\"):")
    hint = activate_hint()
    if hint is not None:
        lines.append(f"  {hint}")
    lines.append(f"  cd {shlex.quote(str(directory))}")
    lines += [f"  {command}" for command in NEXT]
    return lines
