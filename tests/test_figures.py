"""teachfit.figures: every helper writes non-empty PNG + PDF files atomically."""

from __future__ import annotations

import polars as pl
import pytest

from teachfit.figures import FigureStyle, bar, heatmap, line_curves, scatter_with_rho


def _check(paths, stem):
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.pdf"]
    for p in paths:
        assert p.stat().st_size > 500
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(x.name for x in stem.parent.iterdir() if x.name.startswith(".")) == []  # no temp files


def test_all_helpers_write_png_and_pdf(tmp_path):
    df = pl.DataFrame({
        "generator": ["a", "a", "b", "b", "c", "c"],
        "base": ["x", "y", "x", "y", "x", "y"],
        "ifd": [0.8, 0.9, 0.7, float("nan"), 1.1, 1.0],
        "performance": [0.3, 0.4, 0.2, 0.25, 0.5, 0.45],
    })
    style = FigureStyle(dpi=60, width=4, height=3)
    _check(heatmap(df, "generator", "base", "ifd", tmp_path / "heat", "IFD", style), tmp_path / "heat")
    _check(scatter_with_rho(df, "ifd", "performance", tmp_path / "scatter", "IFD vs perf", style,
                            label="generator"), tmp_path / "scatter")
    _check(bar(df, "generator", "performance", tmp_path / "bar", "perf", style), tmp_path / "bar")
    curves = pl.DataFrame({"step": [0, 100, 200, 0, 100, 200], "ifs": [0.2, 0.5, 0.6, 0.1, 0.3, 0.7],
                           "run": ["r1"] * 3 + ["r2"] * 3})
    _check(line_curves(curves, "step", "ifs", "run", tmp_path / "sub" / "curves", "IFS", style,
                       marks={"plateau": 150}), tmp_path / "sub" / "curves")


def test_style_from_dict():
    assert FigureStyle.from_dict({"dpi": 300}).dpi == 300
    assert FigureStyle.from_dict(None).formats == ["png", "pdf"]
    with pytest.raises(ValueError, match="colour.*allowed keys"):
        FigureStyle.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="formats"):
        FigureStyle(formats=["gif"])


def test_missing_column_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="missing column"):
        bar(pl.DataFrame({"a": [1]}), "a", "b", tmp_path / "x")
