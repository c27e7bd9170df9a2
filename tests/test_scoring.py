"""teachfit.scoring.losses and rule score_losses: the three conventions pinned on tiny models with
hand-computed token positions, batched scoring vs the naive reference, truncation, empty inputs.
(Agreement with the reference code on real models: tests/test_fidelity.py.)"""

from __future__ import annotations

import math
import shutil

import numpy as np
import polars as pl
import pytest

from teachfit.schema import ConfigError, defaults
from teachfit.io import DataError, read_parquet
from teachfit.models import LogitHead, materialize
from teachfit.scoring.losses import (
    CONVENTIONS,
    ScoringError,
    ScoringSettings,
    _pack,
    check_scoring_section,
    convention_settings,
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
CHATML = (
    "{% for message in messages %}{{ '<s>' + message['role'] + '\n' + message['content'] + '</s>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}"
)


def scoring(convention: str = "chat", max_length: int | None = None, **kw) -> ScoringSettings:
    """What rule score_losses gets for ``convention`` (the schema's ``scoring`` defaults narrowed
    by :func:`convention_settings`), with ``max_length`` / ``batch_tokens`` / engine knobs on top."""
    job = convention_settings(defaults("scoring"), convention)
    if max_length is not None:
        job["max_length"] = max_length
    return ScoringSettings(**{**job, **kw})


def _toks(tok, ids) -> list[str]:
    return tok.convert_ids_to_tokens(list(ids))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random models: llama and gemma3 (byte-level BPE that adds no BOS, like SmolLM2),
    ``bos``: the llama one with a tokenizer that prepends ``<s>`` (like gemma / Llama-3), and
    ``chatml``: a template whose turn marker is the tokenizer's bos_token (like SmolLM2)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("scoring_models")
    out = {}
    for arch in ("llama", "gemma3"):
        materialize(f"tiny_{arch}", {"source": "random", "arch": arch}, root / arch)
        _sharpen_attention(root / arch)
        out[arch] = root / arch
    shutil.copytree(root / "llama", root / "bos")
    tok = AutoTokenizer.from_pretrained(root / "bos")
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)])
    tok.save_pretrained(root / "bos")
    out["bos"] = root / "bos"
    materialize("tiny_chatml", {"source": "random", "arch": "llama", "chat_template": CHATML}, root / "chatml")
    out["chatml"] = root / "chatml"
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
    for col in ("n_q_tokens", "n_a_tokens", "n_response_tokens", "n_instruction_tokens", "truncated",
                "prompt_overflow", "empty_response"):
        assert a[col].to_list() == b[col].to_list(), col


# --------------------------------------------------------------------------- conventions, by hand


def test_the_tiny_tokenizers_split_as_the_hand_computed_positions_assume(models):
    _, tok = load_scoring_model(models["llama"])
    assert _toks(tok, tok("the sum of 2\nis 5")["input_ids"]) == ["th", "e", "Ġsum", "Ġo", "f", "Ġ2", "Ċ", "is", "Ġ5"]
    _, btok = load_scoring_model(models["bos"])
    assert _toks(btok, btok("is 5")["input_ids"]) == ["<s>", "is", "Ġ5"]


def test_evolution_analysis_positions_without_bos(models):
    """eval_loss.py on a tokenizer that adds no BOS (SmolLM2, Qwen2.5): joint = tok(Q + "\\n" + A),
    nq = len(tok(Q)) = 6; L(Q) = joint tokens 1..5 (the first instruction token unscored);
    L(A|Q) = joint tokens 6.. (the separator Ċ included); L(A) = tok(A) tokens 1.. (its first
    token unscored)."""
    _, tok = load_scoring_model(models["llama"])
    (e,) = encode_pairs(tok, ["the sum of 2"], ["is 5"], scoring("evolution_analysis"))
    assert e.joint == tok("the sum of 2\nis 5")["input_ids"]
    assert (e.q_span, e.a_span, e.alone_span) == ((1, 6), (6, 9), (1, 2))
    assert _toks(tok, e.joint[1:6]) == ["e", "Ġsum", "Ġo", "f", "Ġ2"]
    assert _toks(tok, e.joint[6:9]) == ["Ċ", "is", "Ġ5"]
    assert _toks(tok, e.alone) == ["is", "Ġ5"] and _toks(tok, e.alone[1:2]) == ["Ġ5"]
    assert (e.n_response_tokens, e.n_instruction_tokens) == (2, 6)


def test_evolution_analysis_positions_with_bos_and_input(models):
    """With a BOS tokenizer (Llama-3, gemma) every instruction and response token is scored; an
    input joins as instruction + "\\n" + input + "\\n" + response (eval_loss.py:35-40)."""
    _, tok = load_scoring_model(models["bos"])
    (e,) = encode_pairs(tok, ["the sum of 2"], ["is 5"], scoring("evolution_analysis"))
    assert _toks(tok, e.joint) == ["<s>", "th", "e", "Ġsum", "Ġo", "f", "Ġ2", "Ċ", "is", "Ġ5"]
    assert (e.q_span, e.a_span, e.alone_span) == ((1, 7), (7, 10), (1, 3))
    assert _toks(tok, e.alone) == ["<s>", "is", "Ġ5"]
    (w,) = encode_pairs(tok, ["the sum of"], ["is 5"], scoring("evolution_analysis"), inputs=["2"])
    assert w.joint == tok("the sum of\n2\nis 5")["input_ids"]
    nq = len(tok("the sum of\n2")["input_ids"])
    assert (w.q_span, w.a_span) == ((1, nq), (nq, len(w.joint)))
    assert w.n_instruction_tokens == len(tok("the sum of")["input_ids"])  # the input is not counted


def test_cherry_positions_and_window(models):
    """data_analysis.py / data_by_IFD.py: L(A|Q) over the tokens of prompt + A from
    len(tok(prompt)); L(A) over the tokens of "### Response:" + A from len(tok("### Response:"))
    (3 here, 4 for LLaMA), the same response tokens; with a window of P + 2 both keep 2."""
    from teachfit.scoring.losses import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT

    _, tok = load_scoring_model(models["llama"])
    q, a = "Give an example.", "The answer is 10"
    prompt = ALPACA_PROMPT_NO_INPUT.format(instruction=q)
    assert prompt.endswith("### Instruction:\nGive an example.\n\n### Response:")
    n_p = len(tok(prompt)["input_ids"])
    (e,) = encode_pairs(tok, [q], [a], scoring("cherry"))
    assert e.joint == tok(prompt + a)["input_ids"]
    assert e.a_span == (n_p, len(e.joint)) and _toks(tok, e.alone[:3]) == ["###", "ĠResponse", ":"]
    assert e.alone_span == (3, len(e.alone))
    assert e.joint[slice(*e.a_span)] == e.alone[slice(*e.alone_span)] == tok(a)["input_ids"]
    assert tok.decode(e.joint[slice(*e.q_span)]) == q  # L(Q): the instruction inside the prompt
    assert not e.truncated and not e.prompt_overflow

    (t,) = encode_pairs(tok, [q], [a], scoring("cherry", max_length=n_p + 2, answer_window="response_marker_tokens"))
    assert t.truncated and len(t.joint) == n_p + 2 and len(t.alone) == 3 + 2 and not t.prompt_overflow
    assert t.joint[slice(*t.a_span)] == t.alone[slice(*t.alone_span)] == tok(a)["input_ids"][:2]
    (o,) = encode_pairs(tok, [q], [a], scoring("cherry", max_length=n_p))  # prompt fills the window
    assert o.prompt_overflow and o.a_span[0] == o.a_span[1] and o.alone_span[0] == o.alone_span[1]
    (w,) = encode_pairs(tok, [q], [a], scoring("cherry"), inputs=["2 and 3"])
    assert w.joint == tok(ALPACA_PROMPT_INPUT.format(instruction=q, input="2 and 3") + a)["input_ids"]


def test_cherry_reference_answer_window_and_skip_rule(models):
    """Issue 24: data_analysis.py:150 / data_by_IFD.py:94 cut the answer-alone text to
    max_length - P + 4 tokens whatever the tokenizer (4 = LLaMA's "<s> ▁### ▁Response :"), and
    data_by_IFD.py:100-101 drops a pair when P + its answer-alone response tokens exceed
    max_length. Here "### Response:" is 3 tokens: a cut pair keeps one response token more alone
    than jointly and is dropped (NaN, prompt_overflow); an uncut pair is scored as before."""
    _, tok = load_scoring_model(models["llama"])
    from teachfit.scoring.losses import ALPACA_PROMPT_NO_INPUT, CHERRY_REFERENCE_MARKER_TOKENS

    assert CHERRY_REFERENCE_MARKER_TOKENS == 4 and len(tok("### Response:")["input_ids"]) == 3
    q, a = "Give an example.", "The answer is 10 because 5 plus 5 equals 10 ."
    n_p, n_a = len(tok(ALPACA_PROMPT_NO_INPUT.format(instruction=q))["input_ids"]), len(tok(a)["input_ids"])
    for window in (n_p + 2, n_p + n_a - 1, n_p + n_a, n_p + n_a + 1):
        (e,) = encode_pairs(tok, [q], [a], scoring("cherry", max_length=window))
        assert len(e.alone) == min(3 + n_a, window - n_p + 4)  # the reference's window
        len_1 = len(e.alone) - 3  # data_by_IFD.py:86-90 (end_token_real - start_token)
        assert e.prompt_overflow == (n_p + len_1 > window)  # data_by_IFD.py:100-101
        assert e.prompt_overflow == (n_p + n_a > window) == e.truncated  # with a 3-token marker
        if e.prompt_overflow:
            assert e.a_span[0] == e.a_span[1] and e.alone_span[0] == e.alone_span[1]
        else:
            assert e.alone[slice(*e.alone_span)] == tok(a)["input_ids"][:len_1]
    scored = score_pairs(models["llama"], [q, q], [a, "yes"], scoring("cherry", max_length=n_p + 5))
    assert scored["prompt_overflow"].to_list() == [True, False]
    assert math.isnan(scored["loss_a"][0]) and math.isnan(scored["loss_a_given_q"][0])
    assert not math.isnan(scored["loss_a"][1])
    with pytest.raises(ValueError, match="answer_window: 'llama' not allowed"):
        scoring("cherry", answer_window="llama")
    with pytest.raises(ValueError, match="only the cherry convention"):
        scoring("chat", answer_window="reference")


def test_chat_positions_and_no_invented_start_token(models):
    """chat: prompt ids = the inference prompt's ids; L(A) conditions only on the tokenizer's
    own BOS. A tokenizer that adds no BOS gets NO start token, even when it names a bos_token
    its chat template uses as a turn marker (SmolLM2's <|im_start|>): the first response token
    of L(A) is then unscored."""
    from teachfit.generation.base import encode_prompts
    from teachfit.prompts import format_prompt

    q, a = "Explain the answer to the question", " It is 10 because 5 plus 5 equals 10."
    for name in ("llama", "chatml", "bos"):
        _, tok = load_scoring_model(models[name])
        (e,) = encode_pairs(tok, [q], [a], scoring("chat"))
        assert e.joint[: e.prompt_len] == encode_prompts(tok, [format_prompt(tok, q, fmt="chat")])[0]
        assert tok.decode(e.joint[slice(*e.q_span)]).strip() == q
        assert e.joint[slice(*e.a_span)] == tok(a, add_special_tokens=False)["input_ids"]
        r_ids = tok(a, add_special_tokens=False)["input_ids"]
        if name == "bos":
            assert e.alone == [tok.bos_token_id, *r_ids] and e.alone_span == (1, len(e.alone))
        else:
            assert e.alone == r_ids and e.alone_span == (1, len(r_ids))
            assert tok.bos_token_id not in e.alone
    _, tok = load_scoring_model(models["chatml"])
    (e,) = encode_pairs(tok, [q], [a], scoring("chat"))
    assert tok.bos_token_id in e.joint[: e.prompt_len]  # "<s>" is this template's turn marker
    assert e.q_span[0] > 1  # the "<s>user\n" turn header is not scored


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_losses_are_the_transformers_label_loss_of_each_span(models, convention):
    """Each loss equals HF's own mean cross-entropy with the other positions masked (-100), which
    is what both reference implementations compute."""
    import torch

    model, tok = load_scoring_model(models["bos"])
    settings = scoring(convention)
    enc = encode_pairs(tok, INSTRUCTIONS[:3], RESPONSES[:3], settings)
    fast = score_pairs(models["bos"], INSTRUCTIONS[:3], RESPONSES[:3], settings)

    def hf(ids, span):
        labels = torch.full((1, len(ids)), -100)
        labels[0, span[0]: span[1]] = torch.tensor(ids[span[0]: span[1]])
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids]), labels=labels).loss.item()

    for e, row in zip(enc, fast.iter_rows(named=True), strict=True):
        assert row["loss_q"] == pytest.approx(hf(e.joint, e.q_span), rel=1e-5)
        assert row["loss_a_given_q"] == pytest.approx(hf(e.joint, e.a_span), rel=1e-5)
        assert row["loss_a"] == pytest.approx(hf(e.alone, e.alone_span), rel=1e-5)


# --------------------------------------------------------------------------- engine vs naive


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_matches_naive(models, arch, padding_side, convention):
    # small batch budget → several batches, each with padding; gemma3's sliding
    # window (64) is shorter than the longest pairs
    settings = scoring(convention, batch_tokens=400, max_padding=0.5, padding_side=padding_side)
    fast = score_pairs(models[arch], INSTRUCTIONS, RESPONSES, settings)
    slow = score_pairs_naive(models[arch], INSTRUCTIONS, RESPONSES, settings)
    assert fast.height == len(INSTRUCTIONS)
    assert max(fast["n_a_tokens"].to_list()) > 64 and min(fast["n_a_tokens"].to_list()) < 10
    assert fast.select(pl.col("loss_a_given_q").is_nan().sum()).item() == 0
    _assert_close(fast, slow)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("convention,share_prefix", [("chat", True), ("chat", False), ("cherry", True)])
def test_shared_prefix_cache_matches_naive(models, arch, convention, share_prefix):
    from teachfit.scoring.losses import shared_prefix_len

    settings = scoring(convention, batch_tokens=300, share_prefix=share_prefix)
    _, tok = load_scoring_model(models[arch])
    enc = encode_pairs(tok, INSTRUCTIONS, RESPONSES, settings)
    k = shared_prefix_len(enc)
    assert k >= 3  # "### Instruction:\n" of the default chat template / the Alpaca header
    assert all(e.joint[:k] == enc[0].joint[:k] for e in enc) and k < min(e.q_span[0] for e in enc)
    _assert_close(score_pairs(models[arch], INSTRUCTIONS, RESPONSES, settings),
                  score_pairs_naive(models[arch], INSTRUCTIONS, RESPONSES, settings))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_fast_head_path_is_used(models, arch):
    model, _ = load_scoring_model(models[arch])
    assert LogitHead(model).split  # body + LM head at selected positions reproduces model(...).logits


# --------------------------------------------------------------------------- truncation, empty


def test_chat_truncation_flag(models):
    settings = scoring("chat", max_length=48)
    _, tok = load_scoring_model(models["llama"])
    long_resp = "the answer is 10 because 5 plus 5 equals 10 . " * 20
    df = score_pairs(models["llama"], ["Give an example.", "Give an example."], ["The sum is 5.", long_resp], settings)
    (short, long_) = encode_pairs(tok, ["Give an example."] * 2, ["The sum is 5.", long_resp], settings)
    assert df["truncated"].to_list() == [False, True] and df["prompt_overflow"].to_list() == [False, False]
    assert len(long_.joint) == 48  # cut from the response end
    assert df["n_a_tokens"][1] == 48 - long_.prompt_len
    assert df["n_response_tokens"][1] == len(tok(long_resp, add_special_tokens=False)["input_ids"]) > 48
    assert df["n_a_tokens"][0] == short.a_span[1] - short.a_span[0] == df["n_response_tokens"][0]
    assert long_.alone[slice(*long_.alone_span)] == long_.joint[long_.a_span[0] + 1:]  # same kept tokens
    assert all(math.isfinite(v) for v in df["loss_a"].to_list())
    # a prompt longer than max_length: prompt cut, response losses NaN, still one row per pair
    df2 = score_pairs(models["llama"], ["word " * 200], ["short answer"], settings)
    assert df2["truncated"][0] and df2["prompt_overflow"][0] and df2["n_a_tokens"][0] == 0
    assert math.isnan(df2["loss_a_given_q"][0]) and math.isnan(df2["loss_a"][0])
    assert df2["n_q_tokens"][0] > 0 and math.isfinite(df2["loss_q"][0])


def test_evolution_analysis_truncation_is_transformers_truncation(models):
    """The reference does not truncate; each of its three tokenizations is cut to max_length as
    tokenizer(text, truncation=True, max_length=...) would, and the row is flagged."""
    _, tok = load_scoring_model(models["llama"])
    q, a = "Give an example.", "the answer is 10 because 5 plus 5 equals 10 . " * 10
    (e,) = encode_pairs(tok, [q], [a], scoring("evolution_analysis", max_length=40))
    assert e.truncated and not e.prompt_overflow
    assert e.joint == tok(f"{q}\n{a}")["input_ids"][:40] and e.alone == tok(a)["input_ids"][:40]
    assert e.a_span == (len(tok(q)["input_ids"]), 40)
    (o,) = encode_pairs(tok, ["word " * 60], ["short"], scoring("evolution_analysis", max_length=40))
    assert o.prompt_overflow and o.a_span[0] == o.a_span[1] == 40


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_empty_response_and_instruction(models, convention):
    qs = ["What is 2 plus 2?", "What is 2 plus 2?", ""]
    rs = ["4 is the answer", "", "Hello there."]
    settings = scoring(convention)
    df = score_pairs(models["bos"], qs, rs, settings)
    assert df.height == 3
    assert df["empty_response"].to_list() == [False, True, False]
    assert math.isnan(df["loss_a_given_q"][1]) and math.isnan(df["loss_a"][1])
    assert df["n_a_tokens"][1] == 0 and math.isfinite(df["loss_q"][1])
    assert math.isnan(df["loss_q"][2]) and df["n_q_tokens"][2] == 0 and math.isfinite(df["loss_a"][2])
    # the empty row does not disturb the others
    ref = score_pairs(models["bos"], [qs[0]], [rs[0]], settings)
    assert df["loss_a_given_q"][0] == pytest.approx(ref["loss_a_given_q"][0], rel=1e-5)
    _assert_close(df, score_pairs_naive(models["bos"], qs, rs, settings))


# --------------------------------------------------------------------------- settings, errors


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


def test_convention_settings_narrow_the_section():
    section = defaults("scoring", max_length={"cherry": 300})
    assert section["max_length"] == {"evolution_analysis": 1024, "cherry": 300, "chat": 1024}
    assert convention_settings(section, "cherry") == {"convention": "cherry", "max_length": 300,
                                                      "batch_tokens": 8192, "version": section["version"],
                                                      "answer_window": "reference"}
    assert "answer_window" not in convention_settings(section, "chat")
    assert defaults("scoring")["max_length"]["cherry"] == 512  # Cherry_LLM's window
    with pytest.raises(ValueError, match="convention 'alpaca' unknown"):
        convention_settings(section, "alpaca")
    with pytest.raises(ConfigError, match="max_length"):
        defaults("scoring", max_length={"raw": 64})
    check_scoring_section(section)
    with pytest.raises(ValueError, match="scoring.max_length.chat: must be an integer ≥ 2"):
        check_scoring_section({**section, "max_length": {**section["max_length"], "chat": 1}})


def test_settings_from_dict_rejects_unknown_keys():
    job = convention_settings(defaults("scoring"), "chat")
    assert ScoringSettings.from_dict({**job, "max_length": 64}).max_length == 64
    with pytest.raises(ValueError, match="maxlen.*allowed keys.*max_length"):
        ScoringSettings.from_dict({**job, "maxlen": 64})
    with pytest.raises(ValueError, match="template"):  # the old global template is gone
        ScoringSettings.from_dict({**job, "template": "raw"})
    with pytest.raises(ValueError, match="scoring.convention: 'alpaca' not allowed"):
        ScoringSettings.from_dict({**job, "convention": "alpaca"})
    with pytest.raises(TypeError, match="batch_tokens"):  # config keys: no dataclass default
        ScoringSettings.from_dict({"convention": "chat", "max_length": 64, "version": 1})


def test_conventions_match_the_plan():
    from teachfit.workflow import plan

    assert plan.CONVENTIONS == CONVENTIONS


def test_missing_chat_template_is_a_clear_error(models, tmp_path):
    from transformers import AutoTokenizer

    d = tmp_path / "nochat"
    shutil.copytree(models["llama"], d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = None
    with pytest.raises(ScoringError, match="no chat template"):
        encode_pairs(tok, ["q"], ["a"], scoring("chat"))
    # the reference conventions need no template
    assert len(encode_pairs(tok, ["q"], ["a"], scoring("evolution_analysis"))) == 1


def test_score_losses_rule_keeps_ids_and_writes_atomically(models, tmp_path):
    """Rule score_losses: id + the score columns + provenance, input order, atomic write, and
    the same numbers as score_pairs with the job's settings; rows with an input are scored by
    the reference conventions as instruction + input (raw_instruction, input)."""
    src = tmp_path / "responses.parquet"
    pl.DataFrame({"id": ["a", "b", "c"], "instruction": [INSTRUCTIONS[0], INSTRUCTIONS[1], "Sum these.\n\n2 and 3"],
                  "raw_instruction": [INSTRUCTIONS[0], INSTRUCTIONS[1], "Sum these."],
                  "input": [None, "", "2 and 3"], "response": ["x y", "", "z"],
                  "extra": [1, 2, 3]}).write_parquet(src)
    section = defaults("scoring", max_length={"evolution_analysis": 256, "chat": 256})
    for convention in CONVENTIONS:
        out = tmp_path / "out" / f"scores.{convention}.parquet"
        job = convention_settings(section, convention)
        df = score_losses(src, models["llama"], out, job, "tiny_llama", threads=1)
        back = read_parquet(out)
        assert back["id"].to_list() == ["a", "b", "c"]
        assert back.columns == ["id", "loss_q", "loss_a_given_q", "loss_a", "n_q_tokens", "n_a_tokens",
                                "n_response_tokens", "n_instruction_tokens", "truncated", "prompt_overflow",
                                "empty_response", "mean_rank_a_given_q", "mean_rank_clip_a_given_q",
                                "convention", "scoring_settings_hash", "scoring_version",
                                "scorer"]
        assert back["scorer"].to_list() == ["tiny_llama"] * 3
        assert back["convention"].unique().to_list() == [convention]
        assert back["scoring_settings_hash"].unique().to_list() == [ScoringSettings.from_dict(job).hash()]
        assert back["scoring_version"].unique().to_list() == [section["version"]]
        assert back["empty_response"].to_list() == [False, True, False]
        assert df.equals(back)
        if convention == "chat":
            qs, inputs = [INSTRUCTIONS[0], INSTRUCTIONS[1], "Sum these.\n\n2 and 3"], None
        else:
            qs, inputs = [INSTRUCTIONS[0], INSTRUCTIONS[1], "Sum these."], [None, None, "2 and 3"]
        direct = score_pairs(models["llama"], qs, ["x y", "", "z"], ScoringSettings.from_dict(job), inputs=inputs)
        _assert_close(back.select(direct.columns), direct, rtol=1e-9)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"scores.{c}.parquet" for c in CONVENTIONS)  # no temp files left
    job = convention_settings(section, "chat")
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"id": ["a"], "prompt": ["q"], "response": ["r"]}).write_parquet(bad)
    with pytest.raises(DataError, match=r"bad.parquet.*\['instruction'\]"):
        score_losses(bad, models["llama"], tmp_path / "never.parquet", job, "s", threads=1)
    dup = tmp_path / "dup.parquet"
    pl.DataFrame({"id": ["a", "a"], "instruction": ["q", "q"], "response": ["r", "s"]}).write_parquet(dup)
    with pytest.raises(DataError, match="duplicate ids"):
        score_losses(dup, models["llama"], tmp_path / "never.parquet", job, "s", threads=1)
    ints = tmp_path / "ints.parquet"
    pl.DataFrame({"id": ["a"], "instruction": ["q"], "response": [3]}).write_parquet(ints)
    with pytest.raises(DataError, match="'response' must hold strings"):
        score_losses(ints, models["llama"], tmp_path / "never.parquet", job, "s", threads=1)
    assert not (tmp_path / "never.parquet").exists()


# --------------------------------------------------------------------------- config and plan


def _config(*overlays: str) -> dict:
    from real_models import ROOT
    from snakemake.utils import update_config

    from teachfit.schema import load_yaml

    from teachfit.workflow.config import validate_config

    cfg = load_yaml(ROOT / "config" / "config.yaml")
    for name in overlays:
        update_config(cfg, load_yaml(ROOT / name))
    return validate_config(cfg)


def test_paper_windows_cover_paper_prompts_and_4096_token_responses():
    """paper.yaml's windows of the conventions CAR's L and the evolver selection use hold the
    longest response any paper generator may write (counted again under another model's
    tokenizer: ×1.25) plus a 2,048-token prompt; cherry keeps Cherry_LLM's 512."""
    cfg = _config("config/paper.yaml")
    longest = max([g["max_new_tokens"] for g in cfg["generators"].values()] + [cfg["evolver"]["max_new_tokens"]])
    assert longest == 4096
    windows = cfg["scoring"]["max_length"]
    for convention in (cfg["teacher"]["car"]["convention"], cfg["evolver"]["selection"]["convention"]):
        assert windows[convention] >= 1.25 * longest + 2048, convention
    assert windows["cherry"] == 512


def test_plan_scores_each_use_under_its_convention():
    from teachfit.workflow.plan import build_plan

    plan = build_plan(_config())
    keys = plan.teacher_score_keys()
    t = plan.config["teacher"]
    assert {k["convention"] for k in keys} == {"chat", "cherry"}  # CAR / PPL: chat; IFD: cherry
    assert len(keys) == len(t["generators"]) * len({*t["bases"], t["reference_model"]}) * 2
    sel = plan.selection_scorer("icifd50")
    assert sel == {"scorer": plan.config["evolver"]["scoring_model"], "convention": "evolution_analysis"}
    assert plan.selection_scorer("length50") == sel  # instruction tokens under the scorer's tokenizer
    assert plan.selection_scorer("random50") is None and plan.selection_scorer("full") is None
    cfg = plan.config
    cfg["teacher"]["ifd_convention"] = "chat"
    assert {k["convention"] for k in build_plan(cfg).teacher_score_keys()} == {"chat"}  # one file each


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_cut_from_the_right_whatever_the_tokenizer_config_says(models, tmp_path, convention):
    """Issue 24 (vllm#12050, transformers#15440): a scorer whose tokenizer_config.json says
    truncation_side=left (and padding_side=left) is still cut from the right, as documented: the
    L(Q) span covers the instruction, and the losses equal those of the same model without it."""
    import json

    left = tmp_path / "left"
    shutil.copytree(models["llama"], left)
    path = left / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "truncation_side": "left",
                                "padding_side": "left"}))
    q = "what is 1 plus 1 ? explain the answer step by step"
    a = " ".join(["the answer is the sum of the two numbers"] * 8)
    settings = scoring(convention, max_length=48)
    _, tok = load_scoring_model(left)
    assert tok.truncation_side == "right"
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(left)  # as a library user may pass it
    assert raw.truncation_side == "left"
    (e,) = encode_pairs(raw, [q], [a], settings)
    assert e.truncated and raw.decode(e.joint[slice(*e.q_span)]).strip() in q  # no response text
    if convention == "evolution_analysis":
        assert e.joint == raw(f"{q}\n{a}")["input_ids"][:48] and e.alone == raw(a)["input_ids"][:48]
    got, want = score_pairs(left, [q], [a], settings), score_pairs(models["llama"], [q], [a], settings)
    _assert_close(got, want, rtol=1e-6)
