"""The results as Markdown tables (readable in a terminal, and pasted as-is into the docs)."""

from __future__ import annotations

from .figures import Figure, Report, Target

SECTIONS = {
    "latency": "Single-row latency (lower is better; vs ref = time / bare onnxruntime time)",
    "throughput": "Batch throughput (higher is better; vs ref = time / bare onnxruntime time)",
    "cold_start": "Cold start, import to first prediction (vs ref = time / mlflow.pyfunc time)",
    "memory": "Peak RSS (vs ref = RSS / mlflow.pyfunc RSS)",
    "telemetry": "Telemetry (vs ref = time per record / ceiling's, or per prediction / without telemetry)",
    "footprint": "Footprint (vs ref = size / build venv size)",
    "serve": "edgepack serve, one row per request (round trip vs in-process; throughput of concurrent clients)",
    "build": "edgepack build of a small model, fresh processes (lower is better)",
    "fleet": "A fleet syncing at once into the collector (SQLite, PostgreSQL, two collectors), then the Parquet export",
    "rollout": "Rollout: 1,000 devices polling the home service every 10 s; publish until every polling device is active",
    "monitoring": "Home's drift report over stored records (folding into counts once per record; the report from counts)",
}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("rows/s", "records/s"):
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{suffix} {unit}"
        return f"{value:.0f} {unit}"
    if unit == "us":
        return f"{value:,.1f} µs" if abs(value) < 1000 else f"{value / 1000:,.2f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value:,.1f} MB" if abs(value) >= 1 else f"{value * 1024:,.1f} KB"
    return f"{value:.3g} {unit}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(figure: Figure) -> list[str]:
    if figure.ok:
        median = format_value(figure.median, figure.unit)
        p99 = format_value(figure.p99, figure.unit)
        ratio = f"{figure.ratio:.2f}x" if figure.ratio is not None else ""
        if figure.reference == figure.path:
            ratio = "ref"
    else:
        error = figure.error or "not measured"
        median = error if error.startswith("n/a") or error.startswith("skipped") else f"error: {error}"
        p99 = ratio = ""
    verdict = f"{figure.verdict} ({figure.target})" if figure.target else ""
    return [figure.model or "", figure.path, median, p99, ratio, str(figure.samples or ""), verdict]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    rows = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return lines


def _targets(targets: list[Target]) -> list[str]:
    rows = []
    for target in targets:
        value = "n/a" if target.value is None else (f"{target.value:.2f}x" if target.unit == "x" else format_value(target.value, target.unit))
        bound = f"{target.threshold:g}x" if target.unit == "x" else format_value(target.threshold, target.unit)
        rows.append([target.description, f"{target.comparison} {bound}", value, target.verdict, target.detail or ""])
    return _table(["target", "goal", "measured", "verdict", "from"], rows)


def render(report: Report) -> str:
    env = report.environment
    lines = [
        f"# edgepack benchmarks ({report.mode} mode)",
        "",
        f"{env.get('cpu_count')} CPUs, load average {env.get('loadavg_start')} at start / {env.get('loadavg_end')} at end; "
        f"Python {env.get('python')}; onnxruntime {env.get('versions', {}).get('onnxruntime')}, "
        f"mlflow {env.get('versions', {}).get('mlflow')}, scikit-learn {env.get('versions', {}).get('scikit-learn')}. "
        f"Run took {report.duration_s:.0f} s.",
        "",
    ]
    if probes := env.get("probe_ms"):
        # The same fixed workload before each phase (bench/probe.py): the machine's speed
        # through the run, so a slower figure can be told from a slower machine.
        lines += [
            "Machine probe (bench/probe.py, ms, larger is a slower machine) as each phase began: "
            + ", ".join(f"{name} {'/'.join(f'{ms:.1f}' for ms in timings)}" for name, timings in probes.items())
            + ".",
            "",
        ]
    header = ["model", "path", "median", "p99", "vs ref", "n", "target"]
    for section, title in SECTIONS.items():
        figures = [f for f in report.figures if f.section == section]
        if not figures:
            continue
        lines += [f"## {title}", ""]
        lines += _table(header, [_row(f) for f in figures])
        lines.append("")
    if report.targets:
        lines += ["## Targets", ""]
        lines += _targets(report.targets)
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""]
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    return "\n".join(lines)
