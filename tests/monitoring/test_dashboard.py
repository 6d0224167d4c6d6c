"""The dashboard in a real browser: Debian's chromium, headless, loads the page from a real
collector holding a real fleet's synced records, runs the vendored Vega-Lite, and the test
reads what it rendered (the DOM after the charts are drawn) and keeps a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx

from .fleet import FEATURES, Fleet

BUDGET_MS = "30000"
"""Virtual time chromium gives the page's fetches and charts before dumping the DOM."""


class Tables(HTMLParser):
    """Every table row's cell texts, and the attributes of <body>."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.body: dict[str, str | None] = {}
        self.svgs = 0
        self.texts: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "svg":
            self.svgs += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self.texts.append(data)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: run scripts/install-test-tools.sh (Debian package 'chromium')"
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses to run as root with its sandbox
    command = [binary, "--headless", *sandbox, "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--no-first-run", f"--virtual-time-budget={BUDGET_MS}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def render(url: str, tmp_path: Path) -> Tables:
    done = chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    page = Tables()
    page.feed(done.stdout)
    return page


def test_the_dashboard_renders_fleet_drift_flags_and_live_accuracy(fleet: Fleet, tmp_path: Path) -> None:
    url = f"{fleet.collector.url}/dashboard#token={fleet.admin_token}"
    page = render(url, tmp_path)
    text = " ".join(page.texts)
    assert page.body.get("data-state") == "rendered", re.sub(r"\s+", " ", text)[:2000]
    rows = {row[0]: row for row in page.rows if row}
    for device in ("steady", "hot", "odd"):
        assert rows[device][2] == "800" and rows[device][-1] == "active"
        assert "fire-risk v1 (800)" in rows[device][-2]
    # The drift table is fleet-wide: the hot device's shift makes temp c alert.
    assert rows["temp c"][-1] == "alert"
    assert {rows[name][-1] for name in FEATURES if name not in ("temp c", "region")} == {"ok"}
    assert rows["unseen_category:region"][1] == str(sum("unseen_category:region" in r["flags"] for r in fleet.collector.records("odd")))
    # One chart per feature and the prediction, the flag rates and the live accuracy: drawn by Vega as SVG.
    assert page.svgs >= len(FEATURES) + 3
    assert re.search(r"1600 labeled records: accuracy 0\.\d{3}, roc_auc 0\.\d{3}", text)
    assert "Histograms: baseline against live" in text and "Flag rates over time" in text

    shot = tmp_path / "dashboard.png"
    done = chromium("--window-size=1400,3200", f"--screenshot={shot}", url, profile=tmp_path / "profile-shot")
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    keep = os.environ.get("EDGEPACK_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "dashboard.png")


def test_one_devices_view_shows_only_its_shift(fleet: Fleet, tmp_path: Path) -> None:
    page = render(f"{fleet.collector.url}/dashboard#token={fleet.admin_token}&device=hot", tmp_path)
    assert page.body.get("data-state") == "rendered"
    rows = {row[0]: row for row in page.rows if row}
    assert rows["temp c"][-1] == "alert"
    assert {rows[name][-1] for name in FEATURES if name != "temp c"} == {"ok"}  # region is the odd device's
    assert "800 labeled records: accuracy" in " ".join(page.texts)


def test_the_dashboard_asks_for_a_token_and_refuses_a_device_token(fleet: Fleet, tmp_path: Path) -> None:
    page = render(f"{fleet.collector.url}/dashboard", tmp_path)
    assert page.body.get("data-state") == "signed-out"
    assert not any(row and row[0] == "temp c" for row in page.rows)
    refused = render(f"{fleet.collector.url}/dashboard#token={fleet.collector.token}", tmp_path)
    assert refused.body.get("data-state") == "error"
    assert "the token was refused (403)" in " ".join(refused.texts)


def test_the_page_and_its_assets_come_from_the_collector_alone(fleet: Fleet) -> None:
    page = httpx.get(f"{fleet.collector.url}/dashboard", timeout=10)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/dashboard/") for s in sources)  # nothing from a CDN
    for source in sources:
        assert httpx.get(fleet.collector.url + source, timeout=10).status_code == 200, source
