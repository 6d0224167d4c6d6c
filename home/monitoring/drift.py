"""Drift of one feature (or of the prediction) from live counts against its baseline.

Measures, all from counts (see ``aggregate``), with scipy doing the statistics:

- **PSI** on the baseline's own bins (numbers: its histogram edges plus one bin below and
  one above; categories: its categories plus one "unseen" bin), empty bins smoothed to
  ``PSI_EPSILON`` so a bin the baseline never saw counts instead of dividing by zero.
- **A test fit for the sample size**, after Evidently's defaults: when the smaller of the
  two samples (baseline rows, live values) has at most ``SMALL_SAMPLE`` values, the
  chi-square test of homogeneity (``scipy.stats.chi2_contingency``) on the same bins,
  drift when p < ``P_VALUE``. Evidently uses KS for small numeric samples; KS needs the raw
  reference values, which a manifest does not carry (only its histogram), and on binned
  values chi-square is the test that fits. Above that size, a distance, drift when it is
  at least ``DISTANCE``: the Wasserstein distance (``scipy.stats.wasserstein_distance`` on
  bin midpoints) divided by the baseline's standard deviation for numbers, and the
  Jensen-Shannon distance (``scipy.spatial.distance.jensenshannon``, base 2) for categories.
- **Missing-value rate**, live against the baseline's.

Status: ``alert`` when PSI >= ``PSI_ALERT``, or the test finds drift and PSI >= ``PSI_WARN``;
``warn`` when PSI >= ``PSI_WARN`` or the test finds drift; else ``ok``. Missing rate raises
the status to ``warn``/``alert`` when it grew by ``MISSING_WARN``/``MISSING_ALERT`` (absolute).
Fewer than ``MIN_LIVE`` live values give ``low_data``: too few to say anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PSI_WARN = 0.1
PSI_ALERT = 0.25
PSI_EPSILON = 1e-4
P_VALUE = 0.05
DISTANCE = 0.1
SMALL_SAMPLE = 1000
MISSING_WARN = 0.05
MISSING_ALERT = 0.20
MIN_LIVE = 30
FLAG_WARN = 0.01
FLAG_ALERT = 0.05
STATUSES = ("no_data", "low_data", "ok", "warn", "alert")
"""From best to worst; ``worst`` picks the last of these."""


def worst(*statuses: str) -> str:
    ranked = [s for s in statuses if s in STATUSES]
    return max(ranked, key=STATUSES.index) if ranked else "no_data"


def psi(expected: Any, actual: Any) -> float:
    """Population stability index of two count vectors over the same bins."""
    import numpy as np

    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e = np.clip(e / e.sum(), PSI_EPSILON, None)
    a = np.clip(a / a.sum(), PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _chi_square(expected: Any, actual: Any) -> float:
    import numpy as np
    from scipy.stats import chi2_contingency

    table = np.vstack([expected, actual]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def _status(psi_value: float, drifted: bool) -> str:
    if psi_value >= PSI_ALERT or (drifted and psi_value >= PSI_WARN):
        return "alert"
    if psi_value >= PSI_WARN or drifted:
        return "warn"
    return "ok"


def _missing_status(live_rate: float, base_rate: float) -> str:
    grown = live_rate - base_rate
    return "alert" if grown >= MISSING_ALERT else "warn" if grown >= MISSING_WARN else "ok"


def numeric(baseline: Mapping[str, Any], live: Mapping[tuple[str, str], int], *, rows: int | None) -> dict[str, Any]:
    """Drift of a numeric value: ``baseline`` has ``edges``/``counts``/``missing``/``std``."""
    import numpy as np
    from scipy.stats import wasserstein_distance

    edges = np.asarray(baseline.get("edges") or [], dtype=np.float64)
    base_counts = np.asarray(baseline.get("counts") or [], dtype=np.float64)
    k = len(base_counts)
    live_bins = np.zeros(k + 2)
    for (kind, label), n in live.items():
        if kind == "b" and label.isdigit() and int(label) < k + 2:
            live_bins[int(label)] += n
    expected = np.concatenate([[0.0], base_counts, [0.0]])
    present = int(live_bins.sum())
    out = _common(baseline, live, present, rows)
    out["bins"] = {"edges": edges.tolist(), "baseline": base_counts.astype(int).tolist(), "live": live_bins.astype(int).tolist()}
    if present == 0 or expected.sum() == 0:
        return out
    value = psi(expected, live_bins)
    base_n = int(expected.sum())
    if min(base_n, present) <= SMALL_SAMPLE:
        p = _chi_square(expected, live_bins)
        test = {"test": "chi_square", "p_value": p, "drifted": p < P_VALUE, "threshold": P_VALUE}
    else:
        width = float(edges[-1] - edges[0]) / k if k else 1.0
        # Values outside the baseline's range sit one bin width beyond its edge: the
        # distance is then a lower bound of the true one, which is enough to alert.
        mids = np.concatenate([[edges[0] - width / 2], (edges[:-1] + edges[1:]) / 2, [edges[-1] + width / 2]])
        scale = float(baseline.get("std") or 0.0) or (width or 1.0)
        distance = float(wasserstein_distance(mids, mids, expected, live_bins)) / scale
        test = {"test": "wasserstein_norm", "distance": distance, "drifted": distance >= DISTANCE, "threshold": DISTANCE}
    out.update(psi=value, **test)
    out["drift_status"] = _status(value, test["drifted"]) if present >= MIN_LIVE else "low_data"
    out["status"] = worst(out["drift_status"], out["missing_status"])
    return out


def categorical(
    baseline: Mapping[str, Any], live: Mapping[tuple[str, str], int], *, rows: int | None
) -> dict[str, Any]:
    """Drift of a categorical value: ``baseline`` has ``frequencies`` (category -> share) and ``missing``."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    frequencies = baseline.get("frequencies") or {}
    known = sorted(set(frequencies) | {label for kind, label in live if kind == "c"})
    base_present = (rows or 0) - int(baseline.get("missing") or 0)
    scale = base_present if base_present > 0 else 1000
    expected = np.asarray([frequencies.get(c, 0.0) * scale for c in known] + [0.0])
    actual = np.asarray([live.get(("c", c), 0) for c in known] + [live.get(("u", ""), 0)], dtype=np.float64)
    present = int(actual.sum())
    out = _common(baseline, live, present, rows)
    out["categories"] = {"names": known + ["(unseen)"], "baseline": (expected / max(expected.sum(), 1)).tolist(),
                         "live": (actual / max(actual.sum(), 1)).tolist()}
    if present == 0 or expected.sum() == 0:
        return out
    value = psi(expected, actual)
    if min(base_present if base_present > 0 else present, present) <= SMALL_SAMPLE:
        p = _chi_square(np.round(expected), actual)
        test = {"test": "chi_square", "p_value": p, "drifted": p < P_VALUE, "threshold": P_VALUE}
    else:
        distance = float(jensenshannon(expected / expected.sum(), actual / actual.sum(), base=2.0))
        test = {"test": "jensen_shannon", "distance": distance, "drifted": distance >= DISTANCE, "threshold": DISTANCE}
    out.update(psi=value, **test)
    out["drift_status"] = _status(value, test["drifted"]) if present >= MIN_LIVE else "low_data"
    out["status"] = worst(out["drift_status"], out["missing_status"])
    return out


def _common(baseline: Mapping[str, Any], live: Mapping[tuple[str, str], int], present: int, rows: int | None) -> dict[str, Any]:
    missing = int(live.get(("m", ""), 0))
    wrong_type = int(live.get(("x", ""), 0))
    total = present + missing + wrong_type
    live_rate = missing / total if total else 0.0
    base_rate = int(baseline.get("missing") or 0) / rows if rows else 0.0
    status = "no_data" if total == 0 else "low_data" if total < MIN_LIVE else "ok"
    missing_status = _missing_status(live_rate, base_rate) if total >= MIN_LIVE else status
    return {
        "kind": baseline.get("kind"),
        "count": total,
        "missing": missing,
        "wrong_type": wrong_type,
        "missing_rate": live_rate,
        "baseline_missing_rate": base_rate,
        "missing_status": missing_status,
        "psi": None,
        "test": None,
        "drifted": None,
        "drift_status": status,
        "status": worst(status, missing_status),
    }


def flag_status(rate: float) -> str:
    return "alert" if rate >= FLAG_ALERT else "warn" if rate >= FLAG_WARN else "ok"
