"""The drift report as terminal text (``edgepack report`` without ``--json``)."""

from __future__ import annotations

import time
from typing import Any


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _test(entry: dict[str, Any]) -> str:
    if entry.get("test") is None:
        return "-"
    if entry.get("p_value") is not None:
        return f"{entry['test']} p={entry['p_value']:.3g}"
    return f"{entry['test']} d={entry['distance']:.3f}"


def render(report: dict[str, Any]) -> str:
    since = report.get("since")
    window = "all time" if since is None else "since " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(since))
    scope = f", device {report['device']}" if report.get("device") else ""
    out = [f"model {report['model']}: {report['status']} ({window}{scope})"]
    for version in report["versions"]:
        out.append("")
        out.append(f"version {version['version']} ({version['task']}): {version['status']}, {version['records']} records")
        if version["unmonitored_records"]:
            out.append(f"  {version['unmonitored_records']} records (all time) of bundles with no stored manifest are not in this report")
        for sha, bundle in version["bundles"].items():
            out.append(f"  bundle {sha[:12]}: {bundle['records']} records, baseline of {bundle['reference_rows']} rows")
            if bundle.get("baseline_source") == "synthesized":
                out.append("  (this bundle was built without --reference-data: its baseline comes from synthesized rows, "
                           "so drift against it says little)")
            rows = []
            for name, f in bundle["features"].items():
                rows.append([name, f["kind"] or "-", str(f["count"]), _num(f["psi"]), _test(f), _num(f["missing_rate"]), f["status"]])
            p = bundle["prediction"]
            if p is not None:
                rows.append(["(prediction)", p["kind"] or "-", str(p["count"]), _num(p["psi"]), _test(p), _num(p["missing_rate"]), p["status"]])
            out += ["  " + line for line in _table(["feature", "kind", "n", "psi", "test", "missing", "status"], rows)]
            if bundle["flags"]:
                flag_rows = [[flag, str(e["count"]), _num(e["rate"], 4), e["status"]] for flag, e in bundle["flags"].items()]
                out += ["  " + line for line in _table(["flag", "records", "rate", "status"], flag_rows)]
            else:
                out.append("  no guardrail flags")
        metrics = version["live"]
        overall = metrics.get("overall") or {}
        if metrics.get("labeled"):
            shown = ", ".join(f"{k} {_num(v)}" for k, v in overall.items() if k != "count")
            out.append(f"  live ({metrics['labeled']} labeled): {shown}")
        else:
            out.append("  live: no labeled records in the window")
    return "\n".join(out) + "\n"
