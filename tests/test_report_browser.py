"""The HTML report's recommendation section, checked in a real headless browser (Debian's
chromium, driven over the DevTools pipe by tests/browser_utils.py), on the report of the shared
tiny run (tests/configs/tiny.yaml: the full teacher study, so the ranking carries the
predicted-vs-measured check). Skipped when chromium is not installed (`apt-get install chromium`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from browser_utils import Chromium, chromium_path
from workflow_utils import snakemake

from teachfit.studies.recommend import RANKING_METRICS

pytestmark = pytest.mark.slow

ROWS = "Array.from(document.querySelectorAll('nav table tbody tr'))"


def test_ranking_table_carries_the_measured_check(tiny_run):
    """rank_teachers on the tiny run: every generator ranked per metric, and (teacher study on) rho
    of predicted vs measured ranks = the correlation table's Spearman, sign-flipped for lower-first metrics."""
    res = tiny_run / "results" / "tables"
    rank = pl.read_csv(res / "teacher_ranking.csv")
    corr = pl.read_csv(res / "teacher_metric_correlations.csv").filter(pl.col("base") == "tiny_base")
    assert sorted(rank["generator"]) == ["t_best2", "t_fewshot", "t_greedy"]
    assert rank["performance_rank"].min() == 1 and "car_rho" in rank.columns
    for m, (direction, _) in RANKING_METRICS.items():
        expected = corr[f"{m}_spearman"][0]
        got = rank[f"{m}_rho"][0]
        if math.isnan(expected):
            assert math.isnan(got), m
        else:
            assert got == pytest.approx(expected if direction == "higher" else -expected), m
    verdict = (tiny_run / "results" / "recommend" / "teacher_verdict.rst").read_text()
    assert "Measured after fine-tuning (the full study)" in verdict and "Spearman rho =" in verdict


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(tiny_run, "--configfile", "tests/configs/tiny.yaml", "--report", str(out))
    return out


@pytest.fixture()
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    b = Chromium(exe)
    yield b
    b.close()


def _click_row_link(browser: Chromium, suffix: str, which: str) -> None:
    """Click the eye (show) or the info link of the result row whose path ends with ``suffix``."""
    link = "row.querySelector('a[iconname=eye]')" if which == "show" else "Array.from(row.querySelectorAll('a')).pop()"
    browser.js(f"(() => {{ const row = {ROWS}.find(r => r.cells[0].innerText.trim().endsWith({json.dumps(suffix)}));"
               f" {link}.click(); return true; }})()")


def test_report_has_the_recommendation_section_with_its_figure_and_verdict(report, browser, tmp_path):
    browser.open(report.resolve().as_uri())
    menu = browser.wait_for("typeof app !== 'undefined' && "
                            "Array.from(document.querySelectorAll('nav a')).map(a => a.innerText.trim())"
                            ".filter(t => t === 'Recommendation' || t === 'Teacher study').length === 2 && "
                            "Array.from(document.querySelectorAll('nav a')).map(a => a.innerText.trim())")
    assert "Recommendation" in menu
    browser.js("Array.from(document.querySelectorAll('nav a'))"
               ".find(a => a.innerText.trim() === 'Recommendation').click()")
    rows = browser.wait_for(f"{ROWS}.length > 0 && {ROWS}.map(r => r.cells[0].innerText.trim())")
    assert rows == ["results/figures/teacher/ranking.png", "results/tables/teacher_ranking.csv"]
    # the figure: shown in the page and decoded by the browser
    _click_row_link(browser, "/ranking.png", "show")
    width = browser.wait_for("(() => { const i = document.querySelector('#app img[src^=\"data:image/png\"]');"
                             " return i && i.complete && i.naturalWidth; })()")
    assert width > 500
    shot = browser.screenshot(tmp_path / "ranking.png")
    assert shot.stat().st_size > 20_000
    # the verdict, generated from the numbers, is the figure's description
    _click_row_link(browser, "/ranking.png", "info")
    text = browser.wait_for("document.querySelector('nav').innerText.includes('Verdict') && "
                            "document.querySelector('nav').innerText")
    assert "Student tiny_base (3 candidate teachers). CAR ranks" in text
    assert "Measured after fine-tuning (the full study)" in text
    assert "Spearman rho =" in text
