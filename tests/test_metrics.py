"""teachfit.scoring.metrics: formulas pinned on hand-computed examples (arithmetic in comments); the
teacher study's data-metrics table (teachfit.studies.teacher.compute_data_metrics, compute_car) on files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.io import DataError, write_parquet
from teachfit.scoring.metrics import car, ic_ifd, ifd, ppl, response_length
from teachfit.studies.teacher import DATA_METRIC_COLUMNS, compute_car, compute_data_metrics


def test_ifd():
    # 1.2 / 1.5 = 0.8 ; 2.0 / 1.6 = 1.25 ; L(A) = 0 → NaN (not inf) ; NaN input → NaN
    out = ifd([1.2, 2.0, 0.5, np.nan], [1.5, 1.6, 0.0, 1.0])
    np.testing.assert_allclose(out[:2], [0.8, 1.25])
    assert np.isnan(out[2]) and np.isnan(out[3])


def test_ic_ifd():
    # 1.2 / (2.0 · 1.5) = 1.2 / 3.0 = 0.4 ; 0.9 / (0.5 · 3.0) = 0.9 / 1.5 = 0.6 ; L(Q) = 0 → NaN
    out = ic_ifd([1.2, 0.9, 1.0], [2.0, 0.5, 0.0], [1.5, 3.0, 1.0])
    np.testing.assert_allclose(out[:2], [0.4, 0.6])
    assert np.isnan(out[2])


def test_ppl():
    # exp(0) = 1 ; exp(ln 4) = 4 ; exp(1) = e
    np.testing.assert_allclose(ppl([0.0, math.log(4.0), 1.0]), [1.0, 4.0, math.e])


def test_car():
    # 3.0 / (1 + 0.5 · 1.0) = 3.0 / 1.5 = 2.0
    assert car(3.0, 1.0, beta=0.5) == pytest.approx(2.0)
    # (-1.0 + 3.0) / (1 + 0.25 · 2.0) = 2.0 / 1.5 = 4/3
    assert car(-1.0, 2.0, beta=0.25, reward_offset=3.0) == pytest.approx(4.0 / 3.0)
    # β = 0 → the plain mean reward
    assert car(2.5, 7.0, beta=0.0) == pytest.approx(2.5)
    # a higher loss must lower CAR (never an inverted penalty)
    assert car(2.0, 2.0, beta=1.0) < car(2.0, 1.0, beta=1.0)


@pytest.mark.parametrize("reward,offset", [(-0.5, 0.0), (0.0, 0.0), (-2.0, 1.0)])
def test_car_rejects_non_positive_reward(reward, offset):
    with pytest.raises(ValueError, match=r"≤ 0 inverts CAR's penalty.*reward_offset"):
        car(reward, 1.0, beta=1.0, reward_offset=offset)


def test_response_length():
    assert response_length(["a b  c", "", "hi"]).tolist() == [3, 0, 1]  # whitespace words
    assert response_length(["a b  c", "", "hi"], unit="chars").tolist() == [6, 0, 2]
    with pytest.raises(ValueError, match="unit"):
        response_length(["x"], unit="tokens")


# --------------------------------------------------------------------------- the teacher study's table
# compute_data_metrics / compute_car (rules of rules/teacher.smk) called on files, as the workflow does.

NAN = float("nan")
# generator, scorer, id, L(A|Q), L(A), L(Q), n_response_tokens: the chat convention (CAR's L, PPL,
# length); the cherry files (IFD) hold the same L(A|Q) and twice the L(A), so every IFD read from
# them is half the chat one
SCORES = [
    ("g1", "b", "1", 1.0, 2.0, 1.0, 10),
    ("g1", "b", "2", 2.0, 2.0, 2.0, 20),
    ("g1", "r", "1", 0.5, 1.0, 1.0, 12),
    ("g1", "r", "2", NAN, 1.0, 1.0, 0),
    ("g2", "b", "3", 3.0, 1.5, 2.0, 30),
    ("g2", "r", "3", 1.0, 4.0, 0.5, 28),
]
REWARDS = {"g1": {"1": 4.0, "2": 2.0}, "g2": {"3": 1.0}}
CONVENTIONS = {"car": "chat", "ifd": "cherry"}


def _files(tmp_path: Path, reward_shift: float = 0.0, drop: str | None = None) -> dict:
    """Responses and scores files plus the aligned params the rule passes."""
    responses, generators = [], []
    for g, rewards in REWARDS.items():
        path = tmp_path / f"responses_{g}.parquet"
        write_parquet(pl.DataFrame({"id": list(rewards), "reward": [r + reward_shift for r in rewards.values()]}),
                      path)
        responses.append(str(path))
        generators.append(g)
    scores, keys = [], []
    for g, s in dict.fromkeys((g, s) for g, s, *_ in SCORES):
        rows = [r for r in SCORES if r[:2] == (g, s)]
        df = pl.DataFrame([r[2:] for r in rows], orient="row",
                          schema=["id", "loss_a_given_q", "loss_a", "loss_q", "n_response_tokens"])
        df = df.with_columns((pl.col("n_response_tokens") == 0).alias("empty_response"))
        for conv in ("chat", "cherry"):
            # chat: g1's response 2 is cut at the window under the base; cherry: g1's response 1
            cut = "2" if conv == "chat" else "1"
            out = df.with_columns(pl.Series("truncated", [g == "g1" and s == "b" and r[2] == cut for r in rows]))
            if conv == "cherry":
                out = out.with_columns(pl.col("loss_a") * 2)
            path = tmp_path / f"scores_{g}_{s}.{conv}.parquet"
            write_parquet(out.drop(drop) if drop else out, path)
            scores.append(str(path))
            keys.append({"generator": g, "scorer": s, "convention": conv})
    return {"responses": responses, "generators": generators, "scores": scores, "score_keys": keys}


def _data_metrics(tmp_path: Path, bases: list[str], reference_model: str = "r", **kw) -> pl.DataFrame:
    return compute_data_metrics(**_files(tmp_path, **kw), metrics=tmp_path / "metrics.parquet",
                                bases=bases, reference_model=reference_model, conventions=CONVENTIONS)


def test_compute_data_metrics_and_car(tmp_path):
    t = _data_metrics(tmp_path, ["b"])
    assert t.columns == list(DATA_METRIC_COLUMNS)
    assert pl.read_parquet(tmp_path / "metrics.parquet").equals(t)
    assert t["generator"].to_list() == ["g1", "g2"] and t["base"].to_list() == ["b", "b"]
    g1 = t.row(0, named=True)
    assert g1["n"] == 2
    assert g1["reward"] == pytest.approx(3.0)              # (4 + 2) / 2
    assert g1["length"] == pytest.approx(12.0)             # reference tokenizer; the empty response is skipped
    # CAR's L: response 2 was truncated under the base (chat window): left out of L, counted
    assert g1["loss_base"] == pytest.approx(1.0) and g1["n_truncated_base"] == 1
    assert g1["ppl_base"] == pytest.approx(math.exp(1.0))  # exp of the mean loss
    assert g1["ifd_base"] == pytest.approx(0.375)          # cherry: mean(1/4, 2/4)
    assert g1["n_truncated_ifd_base"] == 1 and g1["n_no_ifd_base"] == 0  # kept over the window
    assert g1["loss_ref"] == pytest.approx(0.5)
    assert g1["ppl_ref"] == pytest.approx(math.exp(0.5))   # the NaN response is skipped
    assert g1["ifd_ref"] == pytest.approx(0.25)            # cherry: 0.5 / 2.0
    assert g1["n_no_ifd_ref"] == 1 and g1["n_truncated_ref"] == 0
    assert (g1["loss_convention"], g1["ifd_convention"]) == ("chat", "cherry")
    g2 = t.row(1, named=True)
    assert g2["ifd_base"] == pytest.approx(1.0)            # cherry: 3 / 3
    assert g2["length"] == pytest.approx(28.0)             # not the base scorer's 30
    car_table = compute_car(metrics=tmp_path / "metrics.parquet", table=tmp_path / "car.csv",
                            car=defaults("teacher.car", beta=2.0))
    assert pl.read_csv(tmp_path / "car.csv").columns == [*DATA_METRIC_COLUMNS, "car", "car_beta",
                                                         "car_reward_offset"]
    assert car_table["car"][0] == pytest.approx(1.0)       # 3 / (1 + 2 · 1.0) = 3 / 3
    assert car_table["car"][1] == pytest.approx(1.0 / 7.0)  # 1 / (1 + 2 · 3)
    assert car_table["car_beta"][1] == 2.0 and car_table["car_reward_offset"][1] == 0.0


def test_compute_data_metrics_several_bases(tmp_path):
    t = _data_metrics(tmp_path, ["b", "r"])
    assert t.select("generator", "base").rows() == [("g1", "b"), ("g1", "r"), ("g2", "b"), ("g2", "r")]
    # base "r" for g1: only id 1 is scored → L = 0.5; CAR = 3 / (1 + 1 · 0.5) = 2
    row = t.row(1, named=True)
    assert row["loss_base"] == pytest.approx(0.5) and row["ppl_ref"] == pytest.approx(math.exp(0.5))
    car_table = compute_car(metrics=tmp_path / "metrics.parquet", table=tmp_path / "car.csv",
                            car=defaults("teacher.car", beta=1.0))
    assert car_table["car"][1] == pytest.approx(2.0)


def test_compute_data_metrics_and_car_errors(tmp_path):
    with pytest.raises(DataError, match="no scores of generator 'g1' under scorer 'zzz' and convention 'chat'"):
        _data_metrics(tmp_path, ["zzz"])
    with pytest.raises(DataError, match=r"missing required column\(s\) \['loss_a'\]"):
        _data_metrics(tmp_path, ["b"], drop="loss_a")
    files = _files(tmp_path)
    with pytest.raises(ValueError, match="2 responses files but 1 entries in params generators"):
        compute_data_metrics(**{**files, "generators": ["g1"]}, metrics=tmp_path / "m.parquet",
                             bases=["b"], reference_model="r", conventions=CONVENTIONS)
    with pytest.raises(DataError, match="convention 'evolution_analysis'"):
        compute_data_metrics(**files, metrics=tmp_path / "m.parquet", bases=["b"], reference_model="r",
                             conventions={"car": "chat", "ifd": "evolution_analysis"})
    _data_metrics(tmp_path, ["b"], reward_shift=-10.0)
    with pytest.raises(DataError, match=r"generator g1, base b: .*reward_offset"):
        compute_car(metrics=tmp_path / "metrics.parquet", table=tmp_path / "car.csv",
                    car=defaults("teacher.car", beta=1.0))
    assert not (tmp_path / "car.csv").exists()
    # an offset that makes every mean reward positive: g1 (3 - 10 + 11) / (1 + 1 · 1.0) = 2
    t = compute_car(metrics=tmp_path / "metrics.parquet", table=tmp_path / "car.csv",
                    car=defaults("teacher.car", beta=1.0, reward_offset=11.0))
    assert t["car"][0] == pytest.approx(2.0)
