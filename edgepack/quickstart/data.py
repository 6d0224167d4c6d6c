"""A synthetic forest-fire-risk data set with a season-to-season drift.

The label depends on weather, terrain and region through a known logistic model, so a
model trained on it has something real to learn; "this season" is hotter and drier and
its risk leans more on wind, so a model retrained on it is measurably better there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west", "coast")
VEGETATION = ("grass", "shrub", "conifer", "broadleaf")
# A region the training data never shows: the runtime's guardrails flag it.
UNSEEN_REGION = "highlands"
TARGET = "fire_risk"

_REGION_RISK = {"north": -0.6, "south": 0.8, "east": 0.1, "west": 0.4, "coast": -0.9}
_VEGETATION_RISK = {"grass": 0.7, "shrub": 0.4, "conifer": 0.6, "broadleaf": -0.5}


def make_season(rows: int, *, season: str, seed: int) -> pd.DataFrame:
    """Rows of weather, terrain and region features plus the ``fire_risk`` label (0/1).

    ``season`` is ``"last"`` or ``"this"``; this season is 4 °C warmer, 10 points drier,
    and wind weighs five times as much in the risk.
    """
    if season not in ("last", "this"):
        raise ValueError(f"season must be 'last' or 'this', got {season!r}")
    rng = np.random.default_rng(seed)
    warm = 4.0 if season == "this" else 0.0
    dry = 10.0 if season == "this" else 0.0
    wind_weight = 0.15 if season == "this" else 0.03

    temp = rng.normal(22 + warm, 6, rows)
    humidity = np.clip(rng.normal(55 - dry, 15, rows), 5, 100)
    wind = np.abs(rng.normal(15, 8, rows))
    rain = rng.exponential(8, rows)
    slope = np.clip(rng.normal(12, 8, rows), 0, 60)
    elevation = np.clip(rng.normal(600, 300, rows), 0, 2500)
    region = rng.choice(REGIONS, rows)
    vegetation = rng.choice(VEGETATION, rows, p=[0.3, 0.25, 0.3, 0.15])

    logit = (
        0.18 * (temp - 22)
        - 0.06 * (humidity - 50)
        + wind_weight * (wind - 15)
        - 0.08 * rain
        + 0.03 * slope
        - 0.0005 * (elevation - 600)
        + np.vectorize(_REGION_RISK.get)(region)
        + np.vectorize(_VEGETATION_RISK.get)(vegetation)
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)

    frame = pd.DataFrame(
        {
            "temp_c": temp.round(1),
            "humidity_pct": humidity.round(1),
            "wind_kmh": wind.round(1),
            "rain_mm_7d": rain.round(1),
            "slope_deg": slope.round(1),
            "elevation_m": elevation.round(0),
            "region": region.astype(object),
            "vegetation": vegetation.astype(object),
        }
    )
    # Sensors drop out now and then: a few humidity readings are missing.
    frame.loc[rng.random(rows) < 0.02, "humidity_pct"] = np.nan
    frame[TARGET] = label
    return frame


def device_stream(rows: int, *, seed: int, unseen_every: int = 25) -> list[dict[str, object]]:
    """Rows as a device would see them: this season's weather, now and then an unseen region."""
    frame = make_season(rows, season="this", seed=seed).drop(columns=[TARGET])
    records = frame.to_dict(orient="records")
    for i in range(0, rows, unseen_every):
        records[i]["region"] = UNSEEN_REGION
    for record in records:
        if record["humidity_pct"] != record["humidity_pct"]:  # NaN -> None, as JSON would carry it
            record["humidity_pct"] = None
    return records
