from __future__ import annotations
import httpx, uuid
def test_smoke(collector):
    r = httpx.post(f"{collector.url}/v1/batches", headers={"Authorization": f"Bearer {collector.token}"}, json={"batch_id": "b", "records": [{"id": str(uuid.uuid4()), "ts": 1.0, "model": "m", "version": "1", "bundle_sha256": "a"*64, "inputs": {}, "outputs": {}, "flags": []}]})
    assert r.json() == {"accepted": 1, "duplicates": 0}
    collector.restart()
    assert collector.stats()["records"] == 1
    assert len(collector.records()) == 1
