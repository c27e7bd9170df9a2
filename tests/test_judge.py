"""teachfit.scoring.label_judge and rule score_rewards: rating-token judge and sequence-classifier reward
models (tiny random models)."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.io import DataError, read_parquet
from teachfit.models import load_causal_lm, load_tokenizer, materialize
from teachfit.scoring.label_judge import (
    JudgeError,
    JudgeSettings,
    SequenceClassifierReward,
    difficulty_prompt,
    label_token_ids,
    label_word_probs,
    rating_scores_loaded,
    rating_token_ids,
    reward_prompt,
)
from teachfit.scoring.rewards import score_rewards

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
    # an encoder reward model: the tiny bert with a 1-logit head (a reward is one number)
    bert_rm = AutoModelForSequenceClassification.from_pretrained(root / "bert", num_labels=1,
                                                                 ignore_mismatched_sizes=True)
    bert_rm.save_pretrained(root / "bert_rm_src")
    AutoTokenizer.from_pretrained(root / "bert").save_pretrained(root / "bert_rm_src")
    materialize("tiny_bert", {"source": "local", "path": str(root / "bert_rm_src"), "kind": "reward",
                              "task": "seq_cls"}, root / "bert_rm")
    return {"llama": root / "llama", "bert": root / "bert_rm", "llama_rm": root / "llama_rm"}


def judge(**kw) -> JudgeSettings:
    """Settings as rule score_rewards builds them from the schema's ``teacher.reward`` defaults."""
    reward = defaults("teacher.reward", model="unused")
    return JudgeSettings(**{"method": "rating", "batch_size": reward["batch_size"],
                            "version": reward["version"], **kw})


def rating_scores(model_dir, prompts, settings):
    model = load_causal_lm(model_dir, dtype=settings.dtype)
    tok = load_tokenizer(model_dir, padding_side="left")
    return rating_scores_loaded(model, tok, prompts, settings, name=str(model_dir))[0]


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

    tok = load_tokenizer(models["llama"])
    prompts = [reward_prompt(tok, q, a) for q, a in PAIRS]
    batched = rating_scores(models["llama"], prompts, judge(batch_size=3))
    single = rating_scores(models["llama"], prompts, judge(batch_size=1))
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
        rating_scores(models["llama"], ["x"], judge(ratings=["1", "1234567"]))


def test_settings():
    assert JudgeSettings.from_dict({"method": "rating", "batch_size": 2, "version": 1}).batch_size == 2
    with pytest.raises(ValueError, match="batchsize.*allowed keys"):
        JudgeSettings.from_dict({"method": "rating", "batchsize": 2, "version": 1})
    with pytest.raises(TypeError, match="batch_size"):  # config keys have no dataclass default
        JudgeSettings.from_dict({"method": "rating", "version": 1})
    with pytest.raises(ValueError, match="not a number"):
        judge(ratings=["bad", "good"])
    with pytest.raises(ValueError, match="prompt_id"):
        judge(prompt_id="nope")
    with pytest.raises(ValueError, match="method"):
        judge(method="pairwise")


@pytest.mark.parametrize("which", ["bert", "llama_rm"])
def test_sequence_classifier_batched_equals_single(models, which):
    qs, rs = zip(*PAIRS, strict=True)
    batched = SequenceClassifierReward(models[which], judge(method="seq_cls", batch_size=4))
    single = SequenceClassifierReward(models[which], judge(method="seq_cls", batch_size=1))
    a, b = batched.score(qs, rs), single.score(qs, rs)
    assert a.shape == (len(PAIRS),) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.ptp(a) > 0
    assert batched.model.config.pad_token_id == single.model.config.pad_token_id  # restored


def test_decoder_reward_pools_last_token(models):
    """The llama reward = its score head at the last real token of the unpadded conversation."""
    import torch

    rm = SequenceClassifierReward(models["llama_rm"], judge(method="seq_cls"))
    assert rm.chat and not rm.encoder
    ids, truncated = rm.encode(*PAIRS[2])
    assert not truncated
    with torch.inference_mode():
        hidden = rm.model.model(input_ids=torch.tensor([ids])).last_hidden_state
        expected = rm.model.score(hidden[0, -1]).item()
    assert rm.score([PAIRS[2][0]], [PAIRS[2][1]])[0] == pytest.approx(expected, rel=1e-5)


def _generations(tmp_path, n_samples: int = 2):
    """A generations table as rule generate_responses writes it: n samples per instruction."""
    rows = [{"id": f"q{i}", "sample_idx": j, "instruction": q,
             "response": a if j == 0 else a + " Extra words."}
            for i, (q, a) in enumerate(PAIRS) for j in range(n_samples)]
    path = tmp_path / "generations.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path, rows


def test_score_rewards_rule_judge(models, tmp_path):
    """Rule score_rewards, type judge: one reward per (id, sample_idx) row, scored as the rating
    judge scores the same pairs, and the columns select_responses and the tables read."""
    src, rows = _generations(tmp_path)
    reward = defaults("teacher.reward", model="tiny_llama", batch_size=3)
    df = score_rewards(src, models["llama"], tmp_path / "rewards.parquet", reward, threads=1)
    assert df.equals(read_parquet(tmp_path / "rewards.parquet"))
    assert df.columns == ["id", "reward", "reward_truncated", "judge_method", "judge_prompt_id",
                          "judge_settings_hash", "judge_version", "reward_model", "sample_idx"]
    assert df.select("id", "sample_idx").rows() == [(r["id"], r["sample_idx"]) for r in rows]
    assert df.schema["sample_idx"] == pl.Int64 and df.schema["reward"] == pl.Float64
    assert df["reward"].is_between(1.0, 5.0).all() and not df["reward_truncated"].any()
    assert df["judge_method"].unique().to_list() == ["rating"]
    assert df["judge_prompt_id"].unique().to_list() == ["quality_v1"]
    assert df["judge_version"].unique().to_list() == [reward["version"]]
    assert df["reward_model"].unique().to_list() == ["tiny_llama"]  # the manifest's alias
    assert df["judge_settings_hash"].unique().to_list() == [judge(batch_size=3).hash()]
    # the same numbers as the judge primitive on the same pairs (the two samples differ)
    tok = load_tokenizer(models["llama"])
    prompts = [reward_prompt(tok, r["instruction"], r["response"]) for r in rows]
    np.testing.assert_allclose(df["reward"].to_numpy(), rating_scores(models["llama"], prompts, judge()),
                               rtol=1e-5)
    assert df.filter(pl.col("id") == "q1")["reward"].n_unique() == 2


def test_score_rewards_rule_classifier_and_errors(models, tmp_path):
    src, rows = _generations(tmp_path, n_samples=1)
    reward = defaults("teacher.reward", model="tiny_bert", type="classifier")
    df = score_rewards(src, models["bert"], tmp_path / "rm.parquet", reward, threads=1)
    assert df["reward"].is_finite().all() and df["judge_method"][0] == "seq_cls"
    assert df["id"].to_list() == [r["id"] for r in rows]
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"id": ["a"], "sample_idx": [0], "prompt": ["q"], "response": ["r"]}).write_parquet(bad)
    with pytest.raises(DataError, match=r"bad.parquet.*\['instruction'\]"):
        score_rewards(bad, models["llama"], tmp_path / "never.parquet", reward, threads=1)
    dup = tmp_path / "dup.parquet"
    pl.DataFrame({"id": ["a", "a"], "sample_idx": [0, 0], "instruction": ["q", "q"],
                  "response": ["r", "s"]}).write_parquet(dup)
    with pytest.raises(DataError, match="duplicate"):
        score_rewards(dup, models["llama"], tmp_path / "never.parquet", reward, threads=1)
    nulls = tmp_path / "nulls.parquet"
    pl.DataFrame({"id": ["a"], "sample_idx": [0], "instruction": ["q"], "response": [None]},
                 schema_overrides={"response": pl.String}).write_parquet(nulls)
    with pytest.raises(DataError, match="'response' is null"):
        score_rewards(nulls, models["llama"], tmp_path / "never.parquet", reward, threads=1)
    assert not (tmp_path / "never.parquet").exists()


# difficulty ratings: rule describe_instructions (tests/test_diversity.py)


def _with_config(src, dst, **tokenizer_config):
    """A copy of the model at ``src`` whose tokenizer_config.json also says ``tokenizer_config``."""
    import json

    shutil.copytree(src, dst)
    path = dst / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **tokenizer_config}))
    return dst


def _bert_pair_template(tok):
    """The tiny tokenizer encoding like BERT's (all-MiniLM, cross-encoders): ``[CLS] A [SEP] B [SEP]``
    with ``token_type_ids`` 0 on segment A and 1 on segment B."""
    from tokenizers.processors import TemplateProcessing

    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.cls_token_id), ("[SEP]", tok.sep_token_id)])
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    tok.init_kwargs["model_input_names"] = tok.model_input_names
    return tok


def test_encoder_reward_passes_segment_ids(models, tmp_path):
    """Issue 24 (vllm#19988): a cross-encoder scores tok(q, a) with its token_type_ids 0…0 1…1;
    the reward equals model(**tok(q, a)), not the score of the response read as segment A."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = tmp_path / "bert_tt"
    model = AutoModelForSequenceClassification.from_pretrained(models["bert"])
    with torch.no_grad():  # a segment-B embedding far from segment A's, a head that reads it
        model.bert.embeddings.token_type_embeddings.weight[1].normal_(0.0, 2.0)
        model.classifier.weight.mul_(1000.0)
    model.save_pretrained(src)
    _bert_pair_template(AutoTokenizer.from_pretrained(models["bert"])).save_pretrained(src)
    qs, rs = zip(*PAIRS, strict=True)
    rm = SequenceClassifierReward(src, judge(method="seq_cls", batch_size=2))
    got = rm.score(qs, rs)
    tok = AutoTokenizer.from_pretrained(src)
    with torch.inference_mode():
        want = np.array([rm.model(**tok(q, a, return_tensors="pt")).logits[0, 0].item() for q, a in PAIRS])
        no_segments = np.array([rm.model(**{k: v for k, v in tok(q, a, return_tensors="pt").items()
                                            if k != "token_type_ids"}).logits[0, 0].item() for q, a in PAIRS])
    assert rm.encode_inputs(*PAIRS[0])[0]["token_type_ids"][-1] == 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(want - no_segments).max() > 1e-2  # the case would fail without the segment ids


def test_encoder_reward_cuts_the_response_end_whatever_truncation_side(models, tmp_path):
    """Issue 24 (transformers#15440): a tokenizer_config.json saying truncation_side=left and
    padding_side=left changes neither the kept tokens (the response END is cut) nor the scores."""
    from transformers import AutoTokenizer

    from transformers import AutoTokenizer as _Auto

    bert = tmp_path / "bert_pairs"
    shutil.copytree(models["bert"], bert)
    _bert_pair_template(_Auto.from_pretrained(bert)).save_pretrained(bert)
    left = _with_config(bert, tmp_path / "bert_left", truncation_side="left", padding_side="left")
    settings = judge(method="seq_cls", batch_size=3, max_length=24)
    q, a = PAIRS[1]
    ids, truncated = SequenceClassifierReward(left, settings).encode(q, a)
    tok = AutoTokenizer.from_pretrained(bert)
    full = tok(q, a)["input_ids"]
    assert truncated and len(ids) == 24 and ids[:20] == full[:20] and ids[-1] == tok.sep_token_id
    qs, rs = zip(*PAIRS, strict=True)
    np.testing.assert_allclose(SequenceClassifierReward(left, settings).score(qs, rs),
                               SequenceClassifierReward(bert, settings).score(qs, rs), rtol=1e-5)
