"""Generation backends, the engine config, the sharded driver and rules generate_responses /
select_responses (teachfit.generation) on a tiny random llama."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.generation.base import Completion, SamplingConfig, encode_prompts, truncate_at_stop
from teachfit.generation.driver import generate_to_parquet
from teachfit.generation.engines import BackendConfig, backend_settings
from teachfit.generation.hf import TransformersBackend, balanced_batches
from teachfit.generation.responses import generate_responses, select_responses
from teachfit.generation.vllm import completion_from_vllm, vllm_sampling_kwargs
from teachfit.io import DataError
from teachfit.models import materialize
from teachfit.prompts import format_prompt

INSTRUCTIONS = [
    "hi",
    "write a list of water",
    "explain the code step by step and give an example of each function you use",
    "sum 1 2 3",
    "what is the number of people who come in the day",
    "find the answer",
    "give one reason",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Tiny llama whose weights are re-drawn with a larger scale: the default init
    (std 0.02) makes every prompt produce the same constant token, which would let
    alignment/batching tests pass vacuously."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("gen") / "tiny"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    model = AutoModelForCausalLM.from_pretrained(out)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backend(model_dir) -> TransformersBackend:
    return TransformersBackend(model_dir, batch_size=4, threads=1)


@pytest.fixture(scope="module")
def prompts(backend) -> list[str]:
    return [format_prompt(backend.tokenizer, x, fmt="chat") for x in INSTRUCTIONS]


GREEDY = SamplingConfig(max_new_tokens=12)
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, n=3, max_new_tokens=10, seed=7)


def backend_dict(**entry) -> dict:
    """What rules/common.smk passes as ``backend``: a model entry (schema defaults) -> engine settings."""
    return backend_settings(defaults("models.*", source="random", **entry),
                            defaults("generation", batch_size=4))


def ids_of(results: list[list[Completion]]) -> list[list[list[int]]]:
    return [[c.token_ids for c in outs] for outs in results]


@pytest.fixture(scope="module")
def greedy_single(backend, prompts) -> list[list[int]]:
    """Greedy token ids generating each prompt alone (batch of one, no padding)."""
    return [backend.generate([p], GREEDY)[0][0].token_ids for p in prompts]


# --------------------------------------------------------------------------- settings


def test_sampling_config_validation():
    assert SamplingConfig.from_dict({"temperature": 0.7, "n": 2, "max_new_tokens": 8}).n == 2
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['top_k'\].*temperature"):
        SamplingConfig.from_dict({"top_k": 5, "max_new_tokens": 8})
    with pytest.raises(TypeError, match="max_new_tokens"):  # no default: every caller configures it
        SamplingConfig.from_dict({"temperature": 0.7})
    with pytest.raises(ValueError, match="identical"):
        SamplingConfig(n=2, temperature=0.0, max_new_tokens=8)
    for bad in ({"top_p": 0.0}, {"top_p": 1.5}, {"temperature": -1}, {"n": 0},
                {"max_new_tokens": 0}, {"stop": [""]}, {"n": 1.5}):
        with pytest.raises(ValueError):
            SamplingConfig.from_dict({"max_new_tokens": 8, **bad})
    assert SamplingConfig(stop="###", max_new_tokens=8).stop == ["###"]


def test_backend_config_from_model_entry():
    """One engine config per model entry (backend_settings); unknown backends and keys are errors."""
    cfg = BackendConfig.from_dict(backend_dict())
    assert (cfg.backend, cfg.batch_size, cfg.tensor_parallel_size, cfg.gpu_memory_utilization) == \
        ("transformers", 4, 1, 0.9)
    # the entry's dtype is the compute dtype of both local engines (never vLLM's "auto")
    assert (cfg.dtype, cfg.cpu_kvcache_gib, cfg.enforce_eager) == ("float32", 2, False)
    bf16 = BackendConfig.from_dict(backend_dict(backend="vllm", dtype="bfloat16", cpu_kvcache_gib=3))
    assert (bf16.dtype, bf16.cpu_kvcache_gib) == ("bfloat16", 3)
    with pytest.raises(ValueError, match=r"dtype 'auto' is not allowed"):
        BackendConfig.from_dict({**backend_dict(backend="vllm"), "dtype": "auto"})
    with pytest.raises(ValueError, match="cpu_kvcache_gib must be an integer >= 1"):
        BackendConfig.from_dict({**backend_dict(backend="vllm"), "cpu_kvcache_gib": 0.5})
    vllm = BackendConfig.from_dict(backend_dict(backend="vllm", tensor_parallel_size=2, max_model_len=512,
                                                gpu_memory_utilization=0.5))
    assert (vllm.tensor_parallel_size, vllm.max_model_len, vllm.gpu_memory_utilization) == (2, 512, 0.5)
    with pytest.raises(ValueError, match="transformers, vllm"):
        BackendConfig.from_dict({**backend_dict(), "backend": "tgi"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['batchsize'\]"):
        BackendConfig.from_dict({**backend_dict(), "batchsize": 8})
    with pytest.raises(TypeError, match="batch_size"):  # no field defaults: the schema has them
        BackendConfig.from_dict({"backend": "transformers"})
    with pytest.raises(ValueError, match="api_base and api_model"):
        BackendConfig.from_dict(backend_dict(backend="openai"))


def test_engines_import_no_backend():
    """engines.py imports the backends inside build() only (no torch / SDK at import, no cycles)."""
    import subprocess
    import sys

    code = ("import sys, teachfit.generation.engines, teachfit.generation.base; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'openai', 'vllm', 'transformers') "
            "or m in ('teachfit.generation.hf', 'teachfit.generation.vllm', 'teachfit.generation.openai')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_is_a_clear_error(model_dir):
    with pytest.raises(RuntimeError, match="vLLM is not installed.*backend: transformers"):
        BackendConfig.from_dict(backend_dict(backend="vllm")).build(model_dir)


def test_truncate_at_stop():
    assert truncate_at_stop("abc### Instruction: x", ["### Instruction:", "c#"]) == ("ab", True)
    assert truncate_at_stop("abc", ["z"]) == ("abc", False)


# --------------------------------------------------------------------------- transformers backend


def test_left_padding_and_single_matches_model_generate(backend, prompts, greedy_single):
    """Our decoding loop reproduces transformers' own greedy generate() exactly."""
    import torch

    assert backend.tokenizer.padding_side == "left"
    for p, ours in zip(prompts[:3], greedy_single[:3]):
        ids = torch.tensor([encode_prompts(backend.tokenizer, [p])[0]])
        ref = backend.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=GREEDY.max_new_tokens,
            pad_token_id=backend.pad_id, eos_token_id=sorted(backend.eos_ids),
        )[0, ids.shape[1]:].tolist()
        ref = ref[: next((i for i, t in enumerate(ref) if t in backend.eos_ids), len(ref))]
        assert ours == ref
    assert len({tuple(x) for x in greedy_single}) > 1, "degenerate model: all outputs equal"


def test_batched_greedy_equals_one_at_a_time(backend, prompts, greedy_single):
    lengths = [len(x) for x in encode_prompts(backend.tokenizer, prompts)]
    assert max(lengths) > 2 * min(lengths)  # real left padding inside batches
    batched = backend.generate(prompts, GREEDY)
    assert [outs[0].token_ids for outs in batched] == greedy_single


@pytest.mark.parametrize(("n", "cap", "sizes"), [
    (80, 64, [40, 40]), (86, 64, [43, 43]), (7, 3, [3, 2, 2]), (64, 64, [64]), (1, 64, [1]), (0, 64, []),
    (130, 64, [44, 43, 43])])
def test_balanced_batches(n, cap, sizes):
    """The fewest batches of at most ``cap`` prompts, sizes differing by at most one, order kept."""
    order = list(range(100, 100 + n))
    out = balanced_batches(order, cap)
    assert [len(b) for b in out] == sizes
    assert [i for b in out for i in b] == order


def test_balanced_batches_rejects_zero():
    with pytest.raises(ValueError, match="max_per_batch must be >= 1, got 0"):
        balanced_batches([1], 0)


def test_batch_size_does_not_change_greedy_answers(backend, prompts, greedy_single):
    """The same prompts at 2, 3 and 64 rows per batch (other batch boundaries, other padding):
    identical greedy tokens, so the batch size is a speed setting only."""
    saved = backend.batch_size
    try:
        for bs in (2, 3, 64):
            backend.batch_size = bs
            assert [o[0].token_ids for o in backend.generate(prompts, GREEDY)] == greedy_single, bs
    finally:
        backend.batch_size = saved


def test_output_order_survives_length_sorting(backend, prompts, greedy_single):
    order = [3, 0, 6, 2, 5, 1, 4]
    out = backend.generate([prompts[i] for i in order], GREEDY)
    assert [o[0].token_ids for o in out] == [greedy_single[i] for i in order]
    texts = [o[0].text for o in out]
    assert texts == [backend.tokenizer.decode(greedy_single[i], skip_special_tokens=True) for i in order]


def test_from_loaded_peft_model(backend, prompts, greedy_single):
    """An SFT checkpoint arrives as a loaded PeftModel; a fresh LoRA (B = 0) changes nothing."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(backend.model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    wrapped = TransformersBackend.from_loaded(peft_model, backend.tokenizer, batch_size=4)
    assert wrapped.info["backend"] == "transformers"
    assert [o[0].token_ids for o in wrapped.generate(prompts, GREEDY)] == greedy_single


def test_n_samples_and_seed_reproducibility(backend, prompts):
    a = backend.generate(prompts[:4], SAMPLED)
    assert len(a) == 4 and all(len(outs) == SAMPLED.n for outs in a)
    assert any(len({tuple(c.token_ids) for c in outs}) > 1 for outs in a)
    assert ids_of(backend.generate(prompts[:4], SAMPLED)) == ids_of(a)
    other_seed = SamplingConfig(**{**SAMPLED.to_dict(), "seed": 8})
    assert ids_of(backend.generate(prompts[:4], other_seed)) != ids_of(a)


def test_sampled_rows_do_not_depend_on_batch_composition(backend, prompts):
    together = backend.generate(prompts[:4], SAMPLED)
    alone = [backend.generate([p], SAMPLED)[0] for p in prompts[:4]]
    assert ids_of(alone) == ids_of(together)


def test_max_new_tokens(backend, prompts):
    out = backend.generate(prompts, SamplingConfig(max_new_tokens=5))
    for o in out:
        c = o[0]
        assert len(c.token_ids) <= 5
        assert (c.finish_reason == "length") == (len(c.token_ids) == 5)


def test_eos_stops_and_is_stripped(backend, prompts, greedy_single):
    full = greedy_single[1]
    k = next(i for i in range(2, len(full)) if full[i] not in full[:i])
    saved = backend.eos_ids
    backend.eos_ids = saved | {full[k]}
    try:
        out = backend.generate([prompts[0], prompts[1]], GREEDY)
    finally:
        backend.eos_ids = saved
    c = out[1][0]
    assert c.token_ids == full[:k] and c.finish_reason == "stop"
    assert full[k] not in c.token_ids
    assert out[0][0].token_ids == greedy_single[0][: len(out[0][0].token_ids)]


def test_stop_strings_cut_text(backend, prompts, greedy_single):
    tok = backend.tokenizer
    i, stop = next(
        (i, t) for i, ids in enumerate(greedy_single)
        for t in [tok.decode(ids, skip_special_tokens=True)[4:6]]
        if t.isascii() and t.strip() and len(t) == 2
    )
    full_text = tok.decode(greedy_single[i], skip_special_tokens=True)
    out = backend.generate([prompts[i]], SamplingConfig(max_new_tokens=12, stop=[stop]))[0][0]
    assert out.finish_reason == "stop"
    assert out.text == full_text[: full_text.index(stop)]
    assert stop not in out.text
    assert len(out.token_ids) < len(greedy_single[i]) or greedy_single[i] == out.token_ids
    assert out.token_ids == greedy_single[i][: len(out.token_ids)]


def test_top1_logprobs_match_teacher_forced_scores(backend, prompts):
    import torch

    out = backend.generate(prompts[:3], SamplingConfig(max_new_tokens=8, logprobs=True))
    for p, o in zip(prompts[:3], out):
        c = o[0]
        assert c.top1_logprobs is not None and len(c.top1_logprobs) == len(c.token_ids) > 0
        assert all(x <= 0 for x in c.top1_logprobs)
        # greedy: the top-1 logprob is the chosen token's logprob under a full forward pass
        prompt_ids = encode_prompts(backend.tokenizer, [p])[0]
        ids = torch.tensor([prompt_ids + c.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(backend.model(ids).logits[0].float(), -1)
        pos = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
        chosen = logp[pos, torch.tensor(c.token_ids)].tolist()
        assert chosen == pytest.approx(c.top1_logprobs, abs=1e-4)
    sampled = backend.generate(prompts[:2], SamplingConfig(temperature=1.5, max_new_tokens=8, logprobs=True))
    assert all(len(c.top1_logprobs) == len(c.token_ids) for outs in sampled for c in outs)
    assert backend.generate(prompts[:1], GREEDY)[0][0].top1_logprobs is None


# --------------------------------------------------------------------------- vLLM mapping (no GPU)


def test_vllm_sampling_kwargs_mapping():
    kw = vllm_sampling_kwargs(SamplingConfig(temperature=0.7, top_p=0.9, n=2, max_new_tokens=33,
                                             stop=["###"], logprobs=True), seed=123, stop_token_ids=[30, 2])
    assert kw == {"n": 2, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_tokens": 33,
                  "seed": 123, "stop": ["###"], "stop_token_ids": [2, 30], "logprobs": 1,
                  "skip_special_tokens": True}
    greedy = vllm_sampling_kwargs(SamplingConfig(max_new_tokens=4), seed=5)
    assert greedy["seed"] is None and greedy["logprobs"] is None and greedy["stop"] is None


def test_completion_from_vllm_output():
    lp = SimpleNamespace
    out = SimpleNamespace(
        text="Hi", token_ids=[5, 6, 2], finish_reason="stop", stop_reason=None,
        logprobs=[{5: lp(logprob=-0.5, rank=1)},
                  {6: lp(logprob=-2.0, rank=2), 9: lp(logprob=-0.3, rank=1)},
                  {2: lp(logprob=-0.1, rank=1)}],
    )
    c = completion_from_vllm(out, eos_ids={2}, want_logprobs=True, prompt_tokens_cut=3)
    assert c == Completion(text="Hi", token_ids=[5, 6], finish_reason="stop", top1_logprobs=[-0.5, -0.3],
                           prompt_tokens_cut=3)
    long = SimpleNamespace(text="x", token_ids=[5], finish_reason="length", stop_reason=None, logprobs=None)
    assert completion_from_vllm(long, {2}, want_logprobs=False).finish_reason == "length"
    with pytest.raises(RuntimeError, match="abort"):
        completion_from_vllm(SimpleNamespace(text="", token_ids=[], finish_reason="abort", logprobs=None),
                             {2}, False)


def test_completion_from_vllm_strips_every_kept_stop_token():
    """Issue 13 fault 1 (the kind): vLLM keeps the token it stopped on, whether the tokenizer's EOS,
    a generation_config.json EOS id (``stop_reason`` = that id) or any stop token id; none is
    returned, and neither is its log-probability (6 ids and 6 logprobs, not 7)."""
    lp = SimpleNamespace
    ids = [11, 12, 13, 14, 15, 7042]
    rows = [{t: lp(logprob=-0.1 * (k + 1), rank=1)} for k, t in enumerate([*ids, 30])]
    gen_cfg_eos = SimpleNamespace(text="abc", token_ids=[*ids, 30], finish_reason="stop", stop_reason=30,
                                  logprobs=rows)
    for eos_ids in ({2}, {2, 30}):  # known from generation_config.json, or only from stop_reason
        c = completion_from_vllm(gen_cfg_eos, eos_ids, want_logprobs=True)
        assert c.token_ids == ids and len(c.top1_logprobs) == 6 and c.finish_reason == "stop"
    # the EOS is the last allowed token: vLLM may report "length"; it is still an EOS stop
    at_limit = SimpleNamespace(text="a", token_ids=[5, 2], finish_reason="length", stop_reason=None,
                               logprobs=None)
    c = completion_from_vllm(at_limit, {2}, want_logprobs=False)
    assert (c.token_ids, c.finish_reason) == ([5], "stop")
    # a stop *string* (str stop_reason) keeps its tokens: the text is cut, as in transformers
    s = SimpleNamespace(text="Hello ###", token_ids=[5, 6, 7], finish_reason="stop", stop_reason="###",
                        logprobs=None)
    c = completion_from_vllm(s, {2}, want_logprobs=False, stop=["###"])
    assert (c.token_ids, c.text) == ([5, 6, 7], "Hello ")


def test_fit_prompts_cuts_from_the_left_and_counts(caplog):
    """Issue 13 fault 5 (the kind, shared by both local backends): a prompt longer than the
    context minus max_new_tokens is cut from the left, the cut is counted, nothing fails."""
    from teachfit.generation.base import fit_prompts

    encoded = [list(range(153)), list(range(73)), list(range(10))]
    with caplog.at_level("WARNING"):
        fitted, cut = fit_prompts(encoded, 128, 64, where="test")
    assert cut == [89, 9, 0]
    assert [len(x) for x in fitted] == [64, 64, 10]
    assert fitted[0] == list(range(89, 153)) and fitted[2] == list(range(10))
    assert "2 of 3 prompt(s)" in caplog.text
    assert fit_prompts(encoded, None, 64, where="test") == (encoded, [0, 0, 0])
    with pytest.raises(ValueError, match="max_new_tokens=128 leaves no room.*max_length=128"):
        fit_prompts(encoded, 128, 128, where="test")


def test_transformers_trims_long_prompts_and_counts(model_dir, prompts):
    """The transformers side of fault 5: a prompt cut to fit generates what its kept (left-cut)
    token ids generate on their own, and the completion reports how many tokens were cut."""
    short = TransformersBackend(model_dir, batch_size=4, max_length=24, threads=1)
    s = SamplingConfig(max_new_tokens=8)
    ids = encode_prompts(short.tokenizer, [prompts[2]])[0]
    first = encode_prompts(short.tokenizer, [prompts[0]])[0]
    assert len(ids) > 16
    out = short.generate([prompts[2], prompts[0]], s)
    assert out[0][0].prompt_tokens_cut == len(ids) - 16
    assert out[1][0].prompt_tokens_cut == max(0, len(first) - 16)
    kept = short._generate_rows([(ids[-16:], 0)], s)[0]
    assert kept.token_ids == out[0][0].token_ids


def test_eos_ids_include_generation_config(model_dir, tmp_path):
    """Fault 1 on the transformers side: both backends build their EOS set with eos_token_ids, so
    generation_config.json's ids count (vLLM gets the same set as stop_token_ids)."""
    import shutil

    from transformers import GenerationConfig

    from teachfit.generation.base import eos_token_ids

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    path = copy / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    cfg["eos_token_id"] = [2, 30]
    path.write_text(json.dumps(cfg))
    be = TransformersBackend(copy, batch_size=2, threads=1)
    assert {2, 30} <= be.eos_ids
    assert {2, 30} <= eos_token_ids(be.tokenizer, None, GenerationConfig.from_pretrained(copy))


# --------------------------------------------------------------------------- driver


class CountingBackend:
    """Wraps a backend and records the prompt lists it is asked to generate."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.info = inner.info

    def generate(self, prompts, sampling, desc="generate"):
        self.calls.append(list(prompts))
        return self.inner.generate(prompts, sampling, desc)


def _records(n: int) -> list[dict]:
    return [{"id": f"r{i}", "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)] + f" {i}"} for i in range(n)]


def _run(backend, tmp_path, sampling=SAMPLED, n=10):
    recs = _records(n)
    ps = [format_prompt(None, r["instruction"], fmt="fewshot") for r in recs]
    return generate_to_parquet(backend, recs, ps, sampling, tmp_path / "out.parquet", tmp_path / "shards",
                               shard_size=4, provenance={"generator": "tiny", "model": "tiny"})


def _shards(tmp_path) -> list[Path]:
    return sorted((tmp_path / "shards").glob("run-*/shard-*.parquet"))


def test_generate_to_parquet_table(backend, tmp_path):
    counting = CountingBackend(backend)
    df = _run(counting, tmp_path)
    assert [len(c) for c in counting.calls] == [4, 4, 2]
    assert df.height == 10 * SAMPLED.n
    assert df.equals(pl.read_parquet(tmp_path / "out.parquet"))
    for col in ("id", "instruction", "sample_idx", "prompt", "response", "n_response_tokens",
                "finish_reason", "generator", "model", "gen_temperature", "gen_top_p", "gen_n",
                "gen_max_new_tokens", "gen_seed", "gen_stop", "gen_key", "n_prompt_tokens_cut"):
        assert col in df.columns, col
    assert "top1_logprobs" not in df.columns
    assert df.schema["n_prompt_tokens_cut"] == pl.Int64 and df["n_prompt_tokens_cut"].to_list() == [0] * 30
    assert df["id"].to_list() == [f"r{i}" for i in range(10) for _ in range(SAMPLED.n)]
    assert df["sample_idx"].to_list() == list(range(SAMPLED.n)) * 10
    assert set(df["finish_reason"]) <= {"stop", "length"}
    assert df["n_response_tokens"].max() <= SAMPLED.max_new_tokens
    assert df["gen_temperature"].unique().to_list() == [1.0]
    assert df.schema["gen_stop"] == pl.List(pl.String)
    assert len(_shards(tmp_path)) == 3


def test_resume_regenerates_only_missing_shard(backend, tmp_path):
    first = _run(CountingBackend(backend), tmp_path)
    (tmp_path / "out.parquet").unlink()
    shards = _shards(tmp_path)
    shards[1].unlink()
    counting = CountingBackend(backend)
    again = _run(counting, tmp_path)
    assert len(counting.calls) == 1 and len(counting.calls[0]) == 4
    assert counting.calls[0][0].endswith("### Instruction:\n" + _records(10)[4]["instruction"]
                                         + "\n\n### Response:\n")
    assert again.equals(first)


def test_corrupt_or_short_shard_is_regenerated(backend, tmp_path):
    first = _run(CountingBackend(backend), tmp_path)
    shards = _shards(tmp_path)
    shards[2].write_bytes(shards[2].read_bytes()[:50])  # truncated file
    pl.read_parquet(shards[0]).head(3).write_parquet(shards[0])  # wrong row count
    counting = CountingBackend(backend)
    again = _run(counting, tmp_path)
    assert sorted(len(c) for c in counting.calls) == [2, 4]
    assert again.equals(first)


def test_changed_sampling_uses_new_shard_key(backend, tmp_path):
    first = _run(CountingBackend(backend), tmp_path)
    old_dirs = {p.parent for p in _shards(tmp_path)}
    changed = SamplingConfig(**{**SAMPLED.to_dict(), "seed": 99})
    counting = CountingBackend(backend)
    df = _run(counting, tmp_path, sampling=changed)
    assert len(counting.calls) == 3
    new_dirs = {p.parent for p in _shards(tmp_path)}
    assert new_dirs.isdisjoint(old_dirs) and len(new_dirs) == 1
    assert df["gen_key"][0] != first["gen_key"][0]
    assert df["gen_seed"].unique().to_list() == [99]


def test_logprobs_column_and_errors(backend, tmp_path):
    s = SamplingConfig(max_new_tokens=6, logprobs=True)
    df = _run(backend, tmp_path, sampling=s, n=3)
    assert df.schema["top1_logprobs"] == pl.List(pl.Float64)
    assert [len(x) for x in df["top1_logprobs"]] == df["n_response_tokens"].to_list()
    with pytest.raises(DataError, match="empty instruction list"):
        generate_to_parquet(backend, [], [], s, tmp_path / "e.parquet", tmp_path / "es")
    with pytest.raises(DataError, match=r"\['response'\]"):
        generate_to_parquet(backend, [{"id": "a", "response": "x"}], ["p"], s,
                            tmp_path / "c.parquet", tmp_path / "cs")
    with pytest.raises(ValueError, match="align"):
        generate_to_parquet(backend, [{"id": "a"}], ["p", "q"], s, tmp_path / "d.parquet", tmp_path / "ds")


def test_backend_info_is_json_serialisable(backend):
    assert json.loads(json.dumps(backend.info))["backend"] == "transformers"


# --------------------------------------------------------------------------- rules


def _instructions(tmp_path, n: int = 5) -> Path:
    path = tmp_path / "instructions.parquet"
    pl.DataFrame({"id": [f"q{i}" for i in range(n)], "instruction": INSTRUCTIONS[:n],
                  "seedset": ["tiny"] * n}).write_parquet(path)
    return path


def test_generate_responses_rule(model_dir, tmp_path):
    """Rule generate_responses: the generator entry's prompt format and sampling, the model's
    engine from BackendConfig, provenance columns, and a rerun that reuses every shard."""
    gen = defaults("generators.*", model="tiny", prompt_format="fewshot", temperature=1.0, n=2,
                   max_new_tokens=6, seed=3)
    kw = {"instructions": _instructions(tmp_path), "model_dir": model_dir,
          "generations": tmp_path / "gen.parquet", "shard_dir": tmp_path / "shards", "name": "t_fewshot",
          "generator": gen, "backend": backend_dict(), "generation": defaults("generation", shard_size=2),
          "threads": 1}
    df = generate_responses(**kw)
    assert df.height == 10 and df.equals(pl.read_parquet(tmp_path / "gen.parquet"))
    assert df["id"].to_list() == [f"q{i}" for i in range(5) for _ in range(2)]
    assert df["sample_idx"].to_list() == [0, 1] * 5
    row = df.row(0, named=True)
    assert (row["generator"], row["model"], row["backend"], row["prompt_format"]) == \
        ("t_fewshot", "tiny", "transformers", "fewshot")
    # the plain-text few-shot format: the project's two demonstrations, then the instruction
    assert row["prompt"].startswith("### Instruction:\nGive two tips")
    assert row["prompt"].endswith("### Instruction:\n" + INSTRUCTIONS[0] + "\n\n### Response:\n")
    assert row["gen_stop"] == ["\n### Instruction", "### Instruction:"]
    assert (row["gen_temperature"], row["gen_n"], row["gen_max_new_tokens"], row["gen_seed"]) == \
        (1.0, 2, 6, 3)
    assert len(list((tmp_path / "shards").glob("run-*/shard-*.parquet"))) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("run-*/shard-*.parquet")}
    assert generate_responses(**kw).equals(df)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # shards reused, not regenerated
    empty = tmp_path / "empty.parquet"
    pl.DataFrame({"id": [], "instruction": []}, schema={"id": pl.String, "instruction": pl.String}
                 ).write_parquet(empty)
    with pytest.raises(DataError, match="empty instruction list"):
        generate_responses(**{**kw, "instructions": empty})


def test_select_responses_rule(tmp_path):
    gens = pl.DataFrame({"id": ["a", "a", "a", "b", "b", "b"], "sample_idx": [0, 1, 2] * 2,
                         "response": ["a0", "a1", "a2", "b0", "b1", "b2"]})
    rewards = pl.DataFrame({"id": ["a", "a", "a", "b", "b", "b"], "sample_idx": [0, 1, 2] * 2,
                            "reward": [1.0, 3.0, 2.0, 2.0, 2.0, 1.0]})
    gens.write_parquet(tmp_path / "g.parquet")
    rewards.write_parquet(tmp_path / "r.parquet")

    def kept(select):
        df = select_responses(tmp_path / "g.parquet", tmp_path / "r.parquet", tmp_path / f"{select}.parquet",
                              select)
        assert df.equals(pl.read_parquet(tmp_path / f"{select}.parquet"))
        assert df["n_samples"].to_list() == [3, 3] and df["select"].unique().to_list() == [select]
        assert df["response_id"].n_unique() == 2
        return df["response"].to_list()

    assert kept("first") == ["a0", "b0"]
    assert kept("best") == ["a1", "b0"]  # ties go to the lower sample_idx
    assert kept("worst") == ["a0", "b2"]
    with pytest.raises(ValueError, match="select"):
        kept("median")
    rewards.head(5).write_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match="1 generated responses have no reward"):
        kept("best")


def test_set_cpu_kvcache_exports_the_configured_size(monkeypatch, caplog):
    """Fault 4 (the kind): the CPU KV cache comes from the model entry (cpu_kvcache_gib), exported
    as VLLM_CPU_KVCACHE_SPACE before the engine starts; a different value already set is replaced
    with a warning naming both (the config wins); non-integer or < 1 GiB sizes are errors."""
    from teachfit.generation.vllm import KVCACHE_ENV, set_cpu_kvcache

    monkeypatch.delenv(KVCACHE_ENV, raising=False)
    set_cpu_kvcache(3)
    assert os.environ[KVCACHE_ENV] == "3"
    monkeypatch.setenv(KVCACHE_ENV, "40")
    with caplog.at_level("WARNING"):
        set_cpu_kvcache(2)
    assert os.environ[KVCACHE_ENV] == "2" and "VLLM_CPU_KVCACHE_SPACE=40" in caplog.text
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="cpu_kvcache_gib must be an integer >= 1"):
            set_cpu_kvcache(bad)
