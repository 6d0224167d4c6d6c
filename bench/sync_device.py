"""The device side of the sync benchmark, in a process of its own, run as a script
(``python bench/sync_device.py DB URL TOKEN OPTIONS``): it imports telemetry and httpx
only, like ``edgepack sync`` or an application on a device (which has no pandas, mlflow
or scikit-learn), instead of the benchmark's process, whose heap of trained models and
libraries would make every full garbage collection the sync triggers cost it 100+ ms.

It syncs the buffer DB until ``pending() == 0`` and prints one JSON line: the seconds from
the first ``sync_once`` until then, the CPU seconds of this process meanwhile, the
seconds batches waited for their answers, and the records left."""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    db, url, token, options = argv
    import telemetry

    reports: list[object] = []
    with telemetry.Buffer(db, durability="process") as buffer:
        service = telemetry.SyncService(buffer, url, token=token, options=telemetry.SyncOptions(**json.loads(options)),
                                        on_batch=reports.append)
        count = buffer.pending()
        start, cpu = time.perf_counter(), time.process_time()
        # Generous bound: a service that sends nothing must not hang the benchmark.
        for _ in range(count + 10):
            service.sync_once()
            if buffer.pending() == 0:
                break
        elapsed, used = time.perf_counter() - start, time.process_time() - cpu
        left = buffer.pending()
        service.close()
    waited = sum(getattr(report, "seconds", 0.0) for report in reports)
    print(json.dumps({"seconds": elapsed, "cpu": used, "waiting": waited, "left": left}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
