"""teachfit.scoring.metrics: formulas pinned on hand-computed examples (arithmetic in comments)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from teachfit.scoring.metrics import car, data_metrics_table, ic_ifd, ifd, ppl, response_length


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


def _long_frame() -> pl.DataFrame:
    rows = [
        # generator, scorer, id, L(A|Q), L(A), L(Q), reward, n_a_tokens
        ("g1", "b", "1", 1.0, 2.0, 1.0, 4.0, 10),
        ("g1", "b", "2", 2.0, 2.0, 2.0, 2.0, 20),
        ("g1", "r", "1", 0.5, 1.0, 1.0, 4.0, 12),
        ("g1", "r", "2", float("nan"), 1.0, 1.0, 2.0, 0),
        ("g2", "b", "3", 3.0, 1.5, 2.0, 1.0, 30),
        ("g2", "r", "3", 1.0, 4.0, 0.5, 1.0, 28),
    ]
    cols = ["generator", "scorer", "id", "loss_a_given_q", "loss_a", "loss_q", "reward", "n_a_tokens"]
    return pl.DataFrame(rows, schema=cols, orient="row")


def test_data_metrics_table():
    t = data_metrics_table(_long_frame(), "b", reference_alias="r", beta=2.0)
    assert t["generator"].to_list() == ["g1", "g2"] and t["base"].to_list() == ["b", "b"]
    g1 = t.row(0, named=True)
    assert g1["n"] == 2 and g1["n_scored"] == 2
    assert g1["mean_reward"] == pytest.approx(3.0)          # (4 + 2) / 2
    assert g1["mean_length"] == pytest.approx(15.0)         # (10 + 20) / 2
    assert g1["mean_loss_base"] == pytest.approx(1.5)       # (1 + 2) / 2
    assert g1["ppl_base"] == pytest.approx(math.exp(1.5))   # exp of the mean loss
    assert g1["ifd_base"] == pytest.approx(0.75)            # mean(1/2, 2/2)
    assert g1["ic_ifd_base"] == pytest.approx(0.5)          # mean(1/(1·2), 2/(2·2))
    assert g1["ppl_ref"] == pytest.approx(math.exp(0.5))    # the NaN response is skipped
    assert g1["ifd_ref"] == pytest.approx(0.5)              # 0.5 / 1.0
    assert g1["car"] == pytest.approx(0.75)                 # 3 / (1 + 2 · 1.5) = 3 / 4
    g2 = t.row(1, named=True)
    assert g2["ifd_base"] == pytest.approx(2.0)             # 3 / 1.5
    assert g2["ic_ifd_ref"] == pytest.approx(0.5)           # 1 / (0.5 · 4)
    assert g2["car"] == pytest.approx(1.0 / 7.0)            # 1 / (1 + 2 · 3)
    assert g2["car_beta"] == 2.0 and g2["car_reward_offset"] == 0.0


def test_data_metrics_table_several_bases_and_no_reference():
    t = data_metrics_table(_long_frame(), ["b", "r"], beta=1.0)
    assert t.select("generator", "base").rows() == [("g1", "b"), ("g1", "r"), ("g2", "b"), ("g2", "r")]
    assert t["ppl_ref"].is_nan().all()
    # base "r" for g1: only id 1 is scored → n_scored 1; CAR = 3 / (1 + 1 · 0.5) = 2
    row = t.row(1, named=True)
    assert row["n_scored"] == 1 and row["car"] == pytest.approx(2.0)


def test_data_metrics_table_errors():
    df = _long_frame()
    with pytest.raises(ValueError, match="scorer 'zzz' not in the data"):
        data_metrics_table(df, "zzz", beta=1.0)
    neg = df.with_columns(pl.col("reward") - 10.0)
    with pytest.raises(ValueError, match="reward_offset"):
        data_metrics_table(neg, "b", beta=1.0)
    # an offset that makes every mean reward positive: g1 (3 - 10 + 10.5) / (1 + 1 · 1.5) = 1.4
    t = data_metrics_table(neg, "b", beta=1.0, reward_offset=10.5)
    assert t["car"][0] == pytest.approx(1.4)
    with pytest.raises(ValueError, match="missing column"):
        data_metrics_table(df.drop("loss_a"), "b", beta=1.0)
