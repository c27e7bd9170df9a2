"""teachfit.scoring.judge: rating-token judge and sequence-classifier reward models (tiny random models)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from teachfit.io import read_parquet
from teachfit.models import load_tokenizer, materialize
from teachfit.scoring.judge import (
    JudgeError,
    JudgeSettings,
    SequenceClassifierReward,
    difficulty_prompt,
    label_token_ids,
    label_word_probs,
    rating_scores,
    rating_token_ids,
    reward_file,
    reward_prompt,
)

PAIRS = [
    ("What is the sum of 2 and 3?", "5"),
    ("Explain how to write a python function.", "Use def, give it a name, then return the total. " * 6),
    ("hi", "Hello! How can I help?"),
    ("Give an example of a prime number.", "7 is prime because it has no divisors other than 1 and 7."),
    ("List three numbers.", "1, 2, 3"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("judge_models")
    materialize("tiny_llama", {"source": "random", "arch": "llama"}, root / "llama")
    materialize("tiny_bert", {"source": "random", "arch": "bert", "task": "seq_cls"}, root / "bert")
    # a decoder reward model (Skywork-Reward style): llama body + a 1-logit score head
    rm = AutoModelForSequenceClassification.from_pretrained(root / "llama", num_labels=1)
    rm.save_pretrained(root / "llama_rm")
    AutoTokenizer.from_pretrained(root / "llama").save_pretrained(root / "llama_rm")
    return {"llama": root / "llama", "bert": root / "bert", "llama_rm": root / "llama_rm"}


def test_prompts(models):
    tok = load_tokenizer(models["llama"])
    p = reward_prompt(tok, "What is 2+2?", "It is 4.")
    assert "What is 2+2?" in p and "It is 4." in p and "1 to 5" in p
    assert p.endswith("### Response:\n")  # the generation prompt of the (default) chat template
    d = difficulty_prompt(tok, "What is 2+2?")
    assert "What is 2+2?" in d and "It is 4." not in d and "difficult" in d
    with pytest.raises(JudgeError, match="quality prompt"):
        difficulty_prompt(tok, "q", prompt_id="quality_v1")


def test_rating_scores_formula_and_batching(models):
    import torch

    from teachfit.models import load_causal_lm

    tok = load_tokenizer(models["llama"])
    prompts = [reward_prompt(tok, q, a) for q, a in PAIRS]
    batched = rating_scores(models["llama"], prompts, JudgeSettings(batch_size=3))
    single = rating_scores(models["llama"], prompts, JudgeSettings(batch_size=1))
    assert batched.shape == (len(PAIRS),)
    assert np.all((batched >= 1.0) & (batched <= 5.0))
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert np.ptp(batched) > 0  # different prompts, different scores
    # the definition, by hand on one unpadded prompt: Σ k · softmax(z_rating)_k
    model = load_causal_lm(models["llama"])
    ids = tok(prompts[1], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        z = model(input_ids=ids).logits[0, -1].double()
    rid = rating_token_ids(tok, ["1", "2", "3", "4", "5"])
    expected = float((torch.softmax(z[rid], -1) * torch.arange(1, 6, dtype=torch.float64)).sum())
    assert batched[1] == pytest.approx(expected, rel=1e-5)


def test_label_word_probs_shares_the_judge_primitive(models):
    """Label-word probabilities (ObjecQA, win rate): softmax over the words' first tokens."""
    import torch

    from teachfit.io import DataError
    from teachfit.models import load_causal_lm

    tok = load_tokenizer(models["llama"], padding_side="left")
    model = load_causal_lm(models["llama"])
    prompts = [reward_prompt(tok, q, a) for q, a in PAIRS]
    words = ["yes", "no"]
    batched = label_word_probs(model, tok, prompts, words, batch_size=2)
    single = label_word_probs(model, tok, prompts, words, batch_size=1)
    assert batched.shape == (len(PAIRS), 2)
    np.testing.assert_allclose(batched.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    ids = tok(prompts[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        z = model(input_ids=ids).logits[0, -1].double()
    expected = torch.softmax(z[label_token_ids(tok, words)], -1).numpy()
    np.testing.assert_allclose(batched[0], expected, rtol=1e-5)
    with pytest.raises(DataError, match="share a first token"):
        label_word_probs(model, tok, prompts[:1], ["yes", "yes"])


def test_rating_tokens_must_be_single_tokens(models):
    tok = load_tokenizer(models["llama"])
    assert len(tok("1234567", add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(JudgeError, match="single token"):
        rating_token_ids(tok, ["1", "1234567"])
    with pytest.raises(JudgeError, match="single token"):
        rating_scores(models["llama"], ["x"], JudgeSettings(ratings=["1", "1234567"]))


def test_settings():
    assert JudgeSettings.from_dict({"batch_size": 2}).batch_size == 2
    with pytest.raises(ValueError, match="batchsize.*allowed keys"):
        JudgeSettings.from_dict({"batchsize": 2})
    with pytest.raises(ValueError, match="not a number"):
        JudgeSettings(ratings=["bad", "good"])
    with pytest.raises(ValueError, match="prompt_id"):
        JudgeSettings(prompt_id="nope")


@pytest.mark.parametrize("which", ["bert", "llama_rm"])
def test_sequence_classifier_batched_equals_single(models, which):
    qs, rs = zip(*PAIRS, strict=True)
    batched = SequenceClassifierReward(models[which], JudgeSettings(method="seq_cls", batch_size=4))
    single = SequenceClassifierReward(models[which], JudgeSettings(method="seq_cls", batch_size=1))
    a, b = batched.score(qs, rs), single.score(qs, rs)
    assert a.shape == (len(PAIRS),) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.ptp(a) > 0
    assert batched.model.config.pad_token_id == single.model.config.pad_token_id  # restored


def test_decoder_reward_pools_last_token(models):
    """The llama reward = its score head at the last real token of the unpadded conversation."""
    import torch

    rm = SequenceClassifierReward(models["llama_rm"], JudgeSettings(method="seq_cls"))
    assert rm.chat and not rm.encoder
    ids, truncated = rm.encode(*PAIRS[2])
    assert not truncated
    with torch.inference_mode():
        hidden = rm.model.model(input_ids=torch.tensor([ids])).last_hidden_state
        expected = rm.model.score(hidden[0, -1]).item()
    assert rm.score([PAIRS[2][0]], [PAIRS[2][1]])[0] == pytest.approx(expected, rel=1e-5)


def test_reward_and_difficulty_files(models, tmp_path):
    src = tmp_path / "responses.jsonl"
    pl.DataFrame({"id": [f"r{i}" for i in range(len(PAIRS))],
                  "instruction": [q for q, _ in PAIRS], "response": [a for _, a in PAIRS]}
                 ).write_ndjson(src)
    out = tmp_path / "rewards.parquet"
    reward_file(models["llama"], src, out, {"batch_size": 2}, provenance={"judge": "tiny_llama"})
    df = read_parquet(out)
    assert df["id"].to_list() == [f"r{i}" for i in range(len(PAIRS))]
    assert df["reward"].is_between(1.0, 5.0).all() and df["judge"].unique().to_list() == ["tiny_llama"]
    assert df["judge_method"][0] == "rating" and not df["reward_truncated"].any()
    out2 = tmp_path / "rm.parquet"
    df2 = reward_file(models["bert"], src, out2, {"method": "seq_cls"})
    assert df2["reward"].is_finite().all() and df2["judge_method"][0] == "seq_cls"
    # difficulty ratings: rule describe_instructions (tests/test_diversity.py)
