"""teachfit.scoring.losses and rule score_losses: batched scoring vs the naive reference, spans,
truncation, empty inputs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from teachfit.config import defaults
from teachfit.io import DataError, read_parquet
from teachfit.models import materialize
from teachfit.scoring.losses import (
    ScoringError,
    ScoringSettings,
    _Head,
    _pack,
    encode_pairs,
    load_scoring_model,
    score_losses,
    score_pairs,
    score_pairs_naive,
)

INSTRUCTIONS = [
    "What is the sum of 2 and 3?",
    "Explain step by step how to write a python function that returns the total of a list.",
    "hi",
    "Give an example.",
    "list the numbers from 1 to 10 and explain why each one is or is not prime " * 3,
    "Answer the question.",
]
RESPONSES = [
    "The sum is 5.",
    "First define the function with def, then loop over the list and add each number to a total; "
    "finally return the total. " * 4,
    "Hello! How can I help you today?",
    "For example, 2 plus 2 equals 4.",
    "1 is not prime. 2 is prime. 3 is prime.",
    "yes",
]


def scoring(**kw) -> ScoringSettings:
    """The schema's ``scoring`` defaults (what the rule passes) with ``kw`` on top (config keys or
    the engine's own knobs)."""
    config_keys = {k: v for k, v in kw.items() if k in ("max_length", "batch_tokens", "template", "version")}
    return ScoringSettings(**{**defaults("scoring", **config_keys), **kw})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring_models")
    out = {}
    for arch in ("llama", "gemma3"):
        materialize(f"tiny_{arch}", {"source": "random", "arch": arch}, root / arch)
        _sharpen_attention(root / arch)
        out[arch] = root / arch
    return out


def _sharpen_attention(model_dir) -> None:
    """Scale q/k projections so that random attention is far from uniform: position,
    mask and cache errors then change the losses well beyond the test tolerance."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(8.0)
    model.save_pretrained(model_dir)


def _assert_close(a: pl.DataFrame, b: pl.DataFrame, rtol: float = 1e-4) -> None:
    assert a.columns == b.columns
    for col in ("loss_q", "loss_a_given_q", "loss_a"):
        x, y = a[col].to_numpy(), b[col].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)), col
        ok = ~np.isnan(x)
        np.testing.assert_allclose(x[ok], y[ok], rtol=rtol, atol=0, err_msg=col)
    for col in ("n_q_tokens", "n_a_tokens", "truncated", "empty_response"):
        assert a[col].to_list() == b[col].to_list(), col


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_matches_naive(models, arch, padding_side):
    # small batch budget → several batches, each with padding; gemma3's sliding
    # window (64) is shorter than the longest pairs
    settings = scoring(batch_tokens=400, max_padding=0.5, padding_side=padding_side)
    fast = score_pairs(models[arch], INSTRUCTIONS, RESPONSES, settings)
    slow = score_pairs_naive(models[arch], INSTRUCTIONS, RESPONSES, settings)
    assert fast.height == len(INSTRUCTIONS)
    assert max(fast["n_a_tokens"].to_list()) > 64 and min(fast["n_a_tokens"].to_list()) < 10
    assert fast.select(pl.col("loss_a_given_q").is_nan().sum()).item() == 0
    _assert_close(fast, slow)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("share_prefix", [True, False])
def test_shared_prefix_cache_matches_naive(models, arch, share_prefix):
    from teachfit.scoring.losses import shared_prefix_len

    settings = scoring(batch_tokens=300, share_prefix=share_prefix)
    _, tok = load_scoring_model(models[arch])
    enc = encode_pairs(tok, INSTRUCTIONS, RESPONSES, settings)
    k = shared_prefix_len(enc)
    assert k >= 3  # "### Instruction:\n" of the default chat template
    assert all(e.joint[:k] == enc[0].joint[:k] for e in enc) and k < min(e.q_span[0] for e in enc)
    _assert_close(score_pairs(models[arch], INSTRUCTIONS, RESPONSES, settings),
                  score_pairs_naive(models[arch], INSTRUCTIONS, RESPONSES, settings))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_fast_head_path_is_used(models, arch):
    model, _ = load_scoring_model(models[arch])
    assert _Head(model).split  # body + LM head at selected positions reproduces model(...).logits


def test_losses_match_transformers_label_loss(models):
    """L(A|Q) equals HF's own mean cross-entropy with the prompt masked out (-100)."""
    import torch

    model, tok = load_scoring_model(models["llama"])
    settings = scoring()
    enc = encode_pairs(tok, INSTRUCTIONS[:2], RESPONSES[:2], settings)
    fast = score_pairs(models["llama"], INSTRUCTIONS[:2], RESPONSES[:2], settings)
    for e, (loss_aq, loss_a) in zip(enc, fast.select("loss_a_given_q", "loss_a").iter_rows(), strict=True):
        ids = torch.tensor([e.joint])
        labels = ids.clone()
        labels[0, : e.prompt_len] = -100
        with torch.inference_mode():
            hf = model(input_ids=ids, labels=labels).loss.item()
            alone = torch.tensor([e.alone])
            lab = alone.clone()
            lab[0, 0] = -100
            hf_a = model(input_ids=alone, labels=lab).loss.item()
        assert loss_aq == pytest.approx(hf, rel=1e-5)
        assert loss_a == pytest.approx(hf_a, rel=1e-5)


@pytest.mark.parametrize("template", ["chat", "raw"])
def test_instruction_and_response_spans(models, template):
    _, tok = load_scoring_model(models["llama"])
    q, a = "Explain the answer to the question", " It is 10 because 5 plus 5 equals 10."
    (e,) = encode_pairs(tok, [q], [a], scoring(template=template))
    span = tok.decode(e.joint[e.q_span[0]: e.q_span[1]])
    assert span.strip() == q  # template tokens excluded, instruction tokens included
    if template == "chat":
        assert e.q_span[0] > 1  # "### Instruction:\n" of the default template is not scored
        assert "### Response" in tok.decode(e.joint[e.q_span[1]: e.prompt_len])
    assert tok.decode(e.joint[e.a_span[0]: e.a_span[1]]) == a
    assert e.joint[e.a_span[0]:] == e.alone[1:]  # identical response tokens in both passes
    assert e.alone[0] == tok.bos_token_id  # L(A): the first token is conditioned on BOS only
    (e2,) = encode_pairs(tok, [q], [a], scoring(template=template, start_token="eos"))
    assert e2.alone[0] == tok.eos_token_id and e2.alone[1:] == e.alone[1:]


def test_raw_template_scores_match_naive(models):
    settings = scoring(template="raw", raw_template="Q: {instruction}\nA:", batch_tokens=300)
    _assert_close(score_pairs(models["llama"], INSTRUCTIONS, RESPONSES, settings),
                  score_pairs_naive(models["llama"], INSTRUCTIONS, RESPONSES, settings))


def test_truncation_flag(models):
    settings = scoring(max_length=48)
    _, tok = load_scoring_model(models["llama"])
    long_resp = "the answer is 10 because 5 plus 5 equals 10 . " * 20
    df = score_pairs(models["llama"], ["Give an example.", "Give an example."], ["The sum is 5.", long_resp], settings)
    (short, long_) = encode_pairs(tok, ["Give an example."] * 2, ["The sum is 5.", long_resp], settings)
    assert df["truncated"].to_list() == [False, True]
    assert len(long_.joint) == 48  # cut from the response end
    assert df["n_a_tokens"][1] == 48 - long_.prompt_len
    assert df["n_a_tokens"][0] == short.a_span[1] - short.a_span[0]
    assert all(math.isfinite(v) for v in df["loss_a"].to_list())
    # a prompt longer than max_length: prompt cut, response losses NaN, still one row per pair
    df2 = score_pairs(models["llama"], ["word " * 200], ["short answer"], settings)
    assert df2["truncated"][0] and df2["n_a_tokens"][0] == 0 and math.isnan(df2["loss_a_given_q"][0])
    assert df2["n_q_tokens"][0] > 0 and math.isfinite(df2["loss_q"][0])


def test_empty_response_and_instruction(models):
    qs = ["What is 2 plus 2?", "What is 2 plus 2?", ""]
    rs = ["4", "", "Hello there."]
    df = score_pairs(models["llama"], qs, rs, scoring())
    assert df.height == 3
    assert df["empty_response"].to_list() == [False, True, False]
    assert math.isnan(df["loss_a_given_q"][1]) and math.isnan(df["loss_a"][1])
    assert df["n_a_tokens"][1] == 0 and math.isfinite(df["loss_q"][1])
    assert math.isnan(df["loss_q"][2]) and df["n_q_tokens"][2] == 0 and math.isfinite(df["loss_a"][2])
    # the empty row does not disturb the others
    ref = score_pairs(models["llama"], [qs[0]], [rs[0]], scoring())
    assert df["loss_a_given_q"][0] == pytest.approx(ref["loss_a_given_q"][0], rel=1e-5)
    _assert_close(df, score_pairs_naive(models["llama"], qs, rs, scoring()))


def test_pack_respects_budget_and_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=300).tolist()
    batches = _pack(lengths, batch_tokens=1000, max_padding=0.1)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(300))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * longest <= 1000
        waste = sum(longest - lengths[i] for i in b)
        assert waste <= 0.1 * len(b) * longest + 1e-9
    # without a padding limit only the token budget splits
    assert len(_pack([10] * 50, batch_tokens=100)) == 5


def test_settings_from_dict_rejects_unknown_keys():
    assert ScoringSettings.from_dict(defaults("scoring", max_length=64)).max_length == 64
    with pytest.raises(ValueError, match="maxlen.*allowed keys.*max_length"):
        ScoringSettings.from_dict({**defaults("scoring"), "maxlen": 64})
    with pytest.raises(ValueError, match="template"):
        ScoringSettings.from_dict({**defaults("scoring"), "template": "alpaca"})
    with pytest.raises(ValueError, match="instruction"):
        scoring(template="raw", raw_template="no placeholder")
    with pytest.raises(TypeError, match="batch_tokens"):  # config keys: no dataclass default
        ScoringSettings.from_dict({"max_length": 64, "template": "chat", "version": 1})


def test_missing_chat_template_is_a_clear_error(models, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    d = tmp_path / "nochat"
    shutil.copytree(models["llama"], d)
    tok = AutoTokenizer.from_pretrained(d)
    with pytest.raises(ScoringError, match="no chat template"):
        tok.chat_template = None
        encode_pairs(tok, ["q"], ["a"], scoring(template="chat"))


def test_score_losses_rule_keeps_ids_and_writes_atomically(models, tmp_path):
    """Rule score_losses: id + the score columns + provenance, input order, atomic write, and
    the same numbers as score_pairs with the section's settings."""
    src = tmp_path / "responses.parquet"
    pl.DataFrame({"id": ["a", "b", "c"], "instruction": INSTRUCTIONS[:3], "response": ["x y", "", "z"],
                  "extra": [1, 2, 3]}).write_parquet(src)
    out = tmp_path / "out" / "scores.parquet"
    section = defaults("scoring", max_length=256)
    df = score_losses(src, models["llama"], out, section, "tiny_llama", threads=1)
    back = read_parquet(out)
    assert back["id"].to_list() == ["a", "b", "c"]
    assert back.columns == ["id", "loss_q", "loss_a_given_q", "loss_a", "n_q_tokens", "n_a_tokens",
                            "truncated", "empty_response", "scoring_settings_hash", "scoring_version",
                            "scorer"]
    assert back["scorer"].to_list() == ["tiny_llama"] * 3
    assert back["scoring_settings_hash"].unique().to_list() == [ScoringSettings.from_dict(section).hash()]
    assert back["scoring_version"].unique().to_list() == [section["version"]]
    assert back["empty_response"].to_list() == [False, True, False]
    assert df.equals(back)
    direct = score_pairs(models["llama"], INSTRUCTIONS[:3], ["x y", "", "z"],
                         ScoringSettings.from_dict(section))
    _assert_close(back.select(direct.columns), direct, rtol=1e-9)
    assert [p.name for p in out.parent.iterdir()] == ["scores.parquet"]  # no temp files left
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"id": ["a"], "prompt": ["q"], "response": ["r"]}).write_parquet(bad)
    with pytest.raises(DataError, match=r"bad.parquet.*\['instruction'\]"):
        score_losses(bad, models["llama"], tmp_path / "never.parquet", section, "s", threads=1)
    dup = tmp_path / "dup.parquet"
    pl.DataFrame({"id": ["a", "a"], "instruction": ["q", "q"], "response": ["r", "s"]}).write_parquet(dup)
    with pytest.raises(DataError, match="duplicate ids"):
        score_losses(dup, models["llama"], tmp_path / "never.parquet", section, "s", threads=1)
    ints = tmp_path / "ints.parquet"
    pl.DataFrame({"id": ["a"], "instruction": ["q"], "response": [3]}).write_parquet(ints)
    with pytest.raises(DataError, match="'response' must hold strings"):
        score_losses(ints, models["llama"], tmp_path / "never.parquet", section, "s", threads=1)
    assert not (tmp_path / "never.parquet").exists()
