from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from teachfit.models import materialize
from teachfit.studies.evolver.diversity import embed, nn_distance, top1_stats


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "bert"
    materialize("tinybert", {"source": "random", "arch": "bert", "task": "seq_cls"}, out)
    return out


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "llama"
    materialize("tiny_llama", {"source": "random", "arch": "llama"}, out)
    return out


def test_top1_stats_known_values():
    probs = [[0.95, 0.5, 1.0], [0.2, 0.9]]
    stats = top1_stats([[math.log(p) for p in s] for s in probs])
    flat = np.array([0.95, 0.5, 1.0, 0.2, 0.9])
    assert stats["n_sequences"] == 2 and stats["n_tokens"] == 5
    assert stats["mean"] == pytest.approx(flat.mean())
    assert stats["median"] == pytest.approx(0.9)
    assert stats["share_ge_0.9"] == pytest.approx(3 / 5)
    assert stats["seq_mean"] == pytest.approx((np.mean([0.95, 0.5, 1.0]) + np.mean([0.2, 0.9])) / 2)
    assert stats["q05"] <= stats["q25"] <= stats["median"] <= stats["q75"] <= stats["q95"]
    assert top1_stats([[0.0]], threshold=0.5)["share_ge_0.5"] == 1.0


def test_top1_stats_edge_cases():
    empty = top1_stats([None, []])
    assert empty["n_tokens"] == 0 and math.isnan(empty["mean"])
    with pytest.raises(ValueError, match="<= 0"):
        top1_stats([[0.5]])
    with pytest.raises(ValueError, match="NaN"):
        top1_stats([[float("nan")]])


def test_nn_distance_hand_made_vectors():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [-1.0, 0.0]])
    d = nn_distance(x)
    cos02 = 1 / math.sqrt(1 + 0.01**2)
    assert d[0] == pytest.approx(1 - cos02)
    assert d[2] == pytest.approx(1 - cos02)
    assert d[1] == pytest.approx(1 - 0.01 / math.sqrt(1 + 0.01**2))  # nearest is row 2
    assert d[3] == pytest.approx(1.0)  # orthogonal to row 1 beats opposite rows
    # scale does not matter, duplicates are at distance 0, chunking gives the same answer
    assert np.allclose(nn_distance(x * 7.0), d)
    assert np.allclose(nn_distance(x, chunk=1), d)
    assert nn_distance(np.array([[1.0, 2.0], [2.0, 4.0], [0.0, 1.0]]))[0] == pytest.approx(0.0)
    assert np.isnan(nn_distance(np.ones((1, 3)))).all()
    with pytest.raises(ValueError, match="2-D"):
        nn_distance(np.ones(3))


def test_embed_with_tiny_bert(tiny_bert):
    texts = ["the cat sat", "a much longer sentence about python code and math", "the cat sat", "hello"]
    e = embed(texts, tiny_bert, batch_size=2)
    assert e.shape == (4, 32) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.allclose(e[0], e[2], atol=1e-5)  # identical texts, even across batches
    assert not np.allclose(e[0], e[1], atol=1e-3)
    # order-independent: embedding a text alone gives the same vector as in a padded batch
    assert np.allclose(embed([texts[1]], tiny_bert)[0], e[1], atol=1e-4)
    d = nn_distance(e)
    assert d[0] == pytest.approx(0.0, abs=1e-5) and d[1] > 0


def test_describe_instructions(tmp_path, tiny_bert, tiny_llama):
    """Rule ``describe_instructions``: length, judged difficulty (the former
    ``judge.difficulty_file``'s rating, now computed only here), diversity and reward."""
    from teachfit.models import load_causal_lm, load_tokenizer
    from teachfit.scoring.label_judge import JudgeSettings, difficulty_prompt, rating_scores_loaded
    from teachfit.studies.evolver.describe import describe_instructions

    texts = ["x y", "x y", "python code"]
    pl.DataFrame({"id": ["a", "b", "c"], "instruction": texts, "round": [1, 1, 1]}).write_parquet(
        tmp_path / "i.parquet")
    pl.DataFrame({"id": ["c", "a"], "reward": [0.5, 2.0]}).write_parquet(tmp_path / "r.parquet")
    stats = describe_instructions(tmp_path / "i.parquet", tmp_path / "r.parquet", tiny_llama, tiny_bert,
                                  tmp_path / "d.parquet", batch_size=2)
    table = pl.read_parquet(tmp_path / "d.parquet")
    assert table.equals(stats)
    assert table.columns == ["id", "round", "length_words", "difficulty", "nn_distance", "reward"]
    assert table["id"].to_list() == ["a", "b", "c"] and table["round"].to_list() == [1, 1, 1]
    d = table["nn_distance"].to_list()
    assert d[0] == pytest.approx(0.0, abs=1e-5) and d[1] == pytest.approx(0.0, abs=1e-5) and d[2] > 0
    assert d == pytest.approx(nn_distance(embed(texts, tiny_bert)).tolist(), abs=1e-5)
    assert table["length_words"].to_list() == [2, 2, 2]
    # difficulty: the probability-weighted 1-5 rating of the difficulty_v1 prompt
    assert table["difficulty"].is_between(1.0, 5.0).all()
    tok = load_tokenizer(tiny_llama, padding_side="left")
    judge = JudgeSettings.from_dict({"method": "rating", "prompt_id": "difficulty_v1", "batch_size": 2, "version": 1})
    expected, _ = rating_scores_loaded(load_causal_lm(tiny_llama), tok,
                                       [difficulty_prompt(tok, t, "difficulty_v1") for t in texts], judge)
    assert table["difficulty"].to_list() == pytest.approx(expected.tolist(), abs=1e-6)
    assert table["reward"].to_list() == [2.0, None, 0.5]  # joined by id, missing -> null
