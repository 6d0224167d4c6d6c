"""The runtime works where the build side cannot even be imported (a device install)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import builder

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("mlflow", "sklearn", "skl2onnx", "onnx", "pandas", "packager", "telemetry", "starlette", "uvicorn")

BLOCKER = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError(f'blocked on the device: {{name}}')
sys.meta_path.insert(0, Block())
"""


def _device(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=ROOT, capture_output=True, text=True)


def test_load_and_predict_without_build_side(fire: builder.Built, keys: tuple[Path, Path]) -> None:
    code = f"""
import json, runtime
model = runtime.load({str(fire.path)!r}, public_key={str(keys[1])!r}, require_signature=True)
one = model.predict({{"temp c": 25.0, "humidity_pct": None, "wind_kmh": 12.0, "region": "highlands", "vegetation": "grass"}})
batch = model.predict_batch({{"temp c": [25.0], "humidity_pct": [1.0], "wind_kmh": [3.0], "region": ["north"], "vegetation": ["grass"]}})
slot = runtime.ModelSlot({str(fire.path)!r})
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({BLOCKED!r}))
print(json.dumps({{"one": {{"prediction": one["prediction"], "flags": one["flags"]}},
                  "batch": batch["prediction"].tolist(), "heavy": heavy}}))
"""
    proc = _device(code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["one"]["flags"] == ["unseen_category:region"] and out["one"]["prediction"] in (0, 1)
    assert len(out["batch"]) == 1
    assert out["heavy"] == []


def test_device_commands_without_build_side(fire: builder.Built, keys: tuple[Path, Path]) -> None:
    verify = ["verify", str(fire.path), "--public-key", str(keys[1])]
    for argv in (verify, ["inspect", str(fire.path)]):
        proc = _device(f"sys.argv = ['edgepack'] + {argv!r}\nfrom edgepack.cli import main\nmain()\n")
        assert proc.returncode == 0, proc.stderr
    assert "OK fire-risk" in _device(f"sys.argv = ['edgepack'] + {verify!r}\nfrom edgepack.cli import main\nmain()\n").stdout


def test_import_runtime_does_not_load_onnxruntime() -> None:
    proc = _device("import runtime, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith(('onnxruntime', 'numpy')))))")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
