"""Tests for teachfit.evaluation.lm_eval and the custom lm-eval tasks (tiny random models, offline)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.evaluation.lm_eval import (
    DEFAULT_TASKS_DIR,
    EvalError,
    EvalSettings,
    _hub_offline,
    ensure_punkt_tab,
    evaluate_checkpoints,
    evaluate_model,
    lm_eval_model_args,
    summarize_evals,
    tidy_results,
    vllm_max_lora_rank,
)
from teachfit.generation.engines import backend_settings
from teachfit.io import DataError, write_json

IFEVAL_METRICS = {"prompt_level_strict_acc,none", "inst_level_strict_acc,none",
                  "prompt_level_loose_acc,none", "inst_level_loose_acc,none"}
ARITH_METRICS = {"exact_match,strict-match", "exact_match,flexible-extract"}
# tiny-model runs: few docs, few new tokens, 1-shot, so each evaluation takes seconds
FAST = {"limit": 2, "max_gen_toks": 4, "num_fewshot": 1, "batch_size": 2}
MODEL_LABEL = {"model": "tiny", "dataset": "", "generator": "", "selection": "", "base": "tiny",
               "checkpoint": "base", "step": 0, "examples_seen": 0}
RUN = {"dataset": "d", "generator": "g", "selection": "full", "base": "tiny"}
# the model's engine settings, as rules/eval.smk passes them (backend_config of the model entry)
ENGINE = backend_settings(defaults("models.*", source="random"), defaults("generation"))


def _eval(**overrides) -> dict:
    """The eval section a rule passes: schema defaults plus ``overrides``."""
    return defaults("eval", **{**FAST, **overrides})


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ifeval_utils(tmp_path_factory):
    ensure_punkt_tab(tmp_path_factory.mktemp("nltk_data"))
    return _load_module(DEFAULT_TASKS_DIR / "tf_ifeval" / "utils.py", "tf_ifeval_utils_test")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from teachfit.models import materialize

    out = tmp_path_factory.mktemp("models") / "tiny"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    return out


@pytest.fixture(scope="module")
def base_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_base")
    table = evaluate_model(model_dir=tiny_model, results=out / "tiny.json", samples=out / "tiny.samples.jsonl",
                           tidy=out / "tiny.parquet", eval=_eval(), model="tiny", backend=ENGINE, threads=1)
    return out, table


def _adapter(tiny_model: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    # init_lora_weights=False: random A and B, so the adapter really changes the outputs
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(str(out))
    return out


# --------------------------------------------------------------------------- settings


def test_settings_come_from_the_schema_and_reject_unknown_or_missing_keys():
    cfg = EvalSettings.from_dict(defaults("eval"))
    assert cfg.tasks == ["tf_ifeval", "tf_arith"]
    assert (cfg.batch_size, cfg.max_gen_toks, cfg.limit, cfg.apply_chat_template, cfg.checkpoints) == (
        8, 256, None, "auto", "all")
    assert cfg.tasks_dir() == DEFAULT_TASKS_DIR.resolve()
    assert all("help" in f.metadata for f in EvalSettings.__dataclass_fields__.values())
    with pytest.raises(EvalError, match=r"unknown setting\(s\) \['max_new_tokens'\].*max_gen_toks"):
        EvalSettings.from_dict({**defaults("eval"), "max_new_tokens": 5})
    with pytest.raises(EvalError, match=r"missing key\(s\) \['batch_size'\]"):
        EvalSettings.from_dict({k: v for k, v in defaults("eval").items() if k != "batch_size"})


@pytest.mark.parametrize("bad", [
    {"tasks": []}, {"tasks": ["tf_arith", "tf_arith"]}, {"batch_size": 0}, {"limit": 0}, {"num_fewshot": -1},
    {"apply_chat_template": "yes"}, {"checkpoints": "best"}, {"include_path": "/nonexistent/tasks"},
])
def test_settings_reject_bad_values(bad):
    key = next(iter(bad))
    with pytest.raises(EvalError, match=key):
        EvalSettings.from_dict({**defaults("eval"), **bad}).tasks_dir()


# --------------------------------------------------------------------------- data


def test_ifeval_data_is_well_formed(ifeval_utils):
    from lm_eval.tasks.ifeval import instructions_registry as reg

    ds = ifeval_utils.load_data()["test"]
    assert 35 <= len(ds) <= 50
    assert len(set(ds["key"])) == len(ds)
    for doc in ds:
        ids = doc["instruction_id_list"]
        assert len(ids) == len(doc["kwargs"]) >= 1, doc["key"]
        for iid, kwargs in zip(ids, doc["kwargs"], strict=True):
            assert iid in reg.INSTRUCTION_DICT, (doc["key"], iid)
            given = {k: v for k, v in kwargs.items() if v}
            instruction = reg.INSTRUCTION_DICT[iid](iid)
            instruction.build_description(**given)
            built = instruction.get_instruction_args() or {}
            # every argument is given by the data: nothing was filled in at random
            norm = {k: sorted(v) if isinstance(v, list) else v for k, v in built.items()}
            assert norm == {k: sorted(v) if isinstance(v, list) else v for k, v in given.items()}, (
                doc["key"], iid)
            for other in ids:
                assert other == iid or other not in reg.INSTRUCTION_CONFLICTS[iid], (doc["key"], iid, other)


def test_arith_data_reproduces_and_is_consistent():
    folder = DEFAULT_TASKS_DIR / "tf_arith"
    gen = _load_module(folder / "make_data.py", "tf_arith_make_data_test")
    built = gen.build()
    for name, text in built.items():
        assert (folder / name).read_text(encoding="utf-8") == text, f"{name}: rerun make_data.py"
    splits = {n: [json.loads(x) for x in t.splitlines()] for n, t in built.items()}
    test, train = splits["tf_arith_test.jsonl"], splits["tf_arith_train.jsonl"]
    assert (len(test), len(train)) == (40, 8)
    assert not {r["question"] for r in test} & {r["question"] for r in train}
    for rec in test + train:
        *steps, final = rec["answer"].split("\n")
        assert final.startswith("#### ")
        value = int(final.removeprefix("#### "))
        assert value >= 0
        assert steps[-1].rstrip(".").split("= ")[-1].split()[0] == str(value), rec["id"]
        for step in steps:  # every "a op b = c" step is right
            lhs, rhs = step.split(" = ")
            a, op, b = lhs.split()[-3:]
            c = int(rhs.split()[0].rstrip("."))
            assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b),
                    "/": int(a) / int(b)}[op] == c, rec["id"]


# --------------------------------------------------------------------------- offline IFEval scoring


def test_punkt_tab_written_from_package(tmp_path):
    import nltk

    root = ensure_punkt_tab(tmp_path / "nd")
    english = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in english.iterdir()) == [
        "SOURCE.txt", "abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"]
    assert "dr" in (english / "abbrev_types.txt").read_text().split("\n")
    assert Path(nltk.data.find("tokenizers/punkt_tab/english/")).resolve() == english.resolve()
    # the model knows "Dr." and "p.m." are abbreviations: 2 sentences, not 4
    tok = nltk.data.load("nltk:tokenizers/punkt/english.pickle")
    assert len(tok.tokenize("We met Dr. Smith at 3 p.m. on Monday. It rained.")) == 2
    assert ensure_punkt_tab(root) == root  # second call: files kept


def _score(utils, key: int, response: str) -> dict:
    doc = next(d for d in utils.load_data()["test"] if d["key"] == key)
    return utils.process_results(doc, [response])


def test_ifeval_scores_compliant_1_and_noncompliant_0(ifeval_utils):
    # 1007: at least 5 sentences (punkt sentence splitter)
    five = "I sleep late. Then I cook eggs. We walk to Dr. Lee's farm. I read a book. I call my mother."
    four_with_abbrev = "I sleep late. Then we visit Dr. Brown at 2 p.m. and eat cake. I read. I rest."
    assert _score(ifeval_utils, 1007, five)["prompt_level_strict_acc"] is True
    assert _score(ifeval_utils, 1007, four_with_abbrev) == {
        "prompt_level_strict_acc": False, "inst_level_strict_acc": [False],
        "prompt_level_loose_acc": False, "inst_level_loose_acc": [False]}
    # 1021: fewer than 4 all-capital words (nltk.word_tokenize)
    assert _score(ifeval_utils, 1021, "Welcome to sports day. Run FAST and have fun!")["inst_level_strict_acc"] == [True]
    assert _score(ifeval_utils, 1021, "RUN FAST, JUMP HIGH and WIN BIG today!")["inst_level_strict_acc"] == [False]
    # 1030: fewer than 4 sentences and never the word "boring" -> per-instruction results
    ok = "The museum was quiet. I loved the old maps."
    assert _score(ifeval_utils, 1030, ok)["inst_level_strict_acc"] == [True, True]
    bad = "The museum was boring. The maps were old. The cafe was shut. I left early. Then I slept."
    assert _score(ifeval_utils, 1030, bad)["inst_level_strict_acc"] == [False, False]
    # 1000: no commas; loose mode is still strict about commas
    assert _score(ifeval_utils, 1000, "Hi Sam\nPlease water my plants.\nThanks")["prompt_level_loose_acc"] is True
    assert _score(ifeval_utils, 1000, "Hi Sam, please water my plants.")["prompt_level_loose_acc"] is False


def test_ifeval_import_needs_no_download(tmp_path):
    """Fresh HOME/cache, nltk.download disabled: lm-eval's IFEval still imports and scores."""
    code = textwrap.dedent(f"""
        import nltk
        def no_download(*a, **k):
            raise SystemExit("nltk.download was called")
        nltk.download = no_download
        import importlib.util
        spec = importlib.util.spec_from_file_location("u", {str(DEFAULT_TASKS_DIR / "tf_ifeval" / "utils.py")!r})
        u = importlib.util.module_from_spec(spec); spec.loader.exec_module(u)
        doc = [d for d in u.load_data()["test"] if d["key"] == 1007][0]
        print(u.process_results(doc, ["One. Two is here. Three! Four? Five."])["prompt_level_strict_acc"])
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "TEACHFIT_NLTK_DATA")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
    assert list((tmp_path / "cache" / "teachfit" / "nltk_data").glob("punkt_tab-*/tokenizers/punkt_tab/english/abbrev_types.txt"))


# --------------------------------------------------------------------------- tiny-model runs


def test_evaluate_model_writes_results_and_samples(base_run):
    out, table = base_run
    data = json.loads((out / "tiny.json").read_text())
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "teachfit"):
        assert key in data, key
    assert data["teachfit"]["label"] == MODEL_LABEL
    assert data["teachfit"]["settings"]["limit"] == 2 and data["teachfit"]["device"] == "cpu"
    assert data["teachfit"]["dtype"] == "float32"
    assert set(data["results"]) == {"tf_ifeval", "tf_arith"}
    assert data["versions"] == {"tf_ifeval": 1.0, "tf_arith": 1.0}
    assert data["n-shot"] == {"tf_ifeval": 0, "tf_arith": 1}  # ifeval's 0 is never overridden
    assert data["teachfit"]["apply_chat_template"] is True  # materialize() gives a chat template
    assert data["config"]["gen_kwargs"] == {"max_gen_toks": 4}
    samples = [json.loads(x) for x in (out / "tiny.samples.jsonl").read_text().splitlines()]
    # 2 ifeval docs; 2 arith docs x 2 filters (strict-match, flexible-extract)
    assert sorted((s["task"], s["filter"]) for s in samples) == sorted(
        [("tf_ifeval", "none")] * 2 + [("tf_arith", "strict-match")] * 2
        + [("tf_arith", "flexible-extract")] * 2)
    arith = next(s for s in samples if s["task"] == "tf_arith")
    prompt = arith["arguments"][0][0]
    assert "### Instruction:" in prompt and prompt.count("Question:") == 2  # chat + 1 shot
    assert pl.read_parquet(out / "tiny.parquet").equals(table)


def test_tidy_results(base_run):
    out, table = base_run
    df = tidy_results(out / "tiny.json")  # the label stored in the JSON
    assert df.equals(table)
    assert df.columns[:8] == list(MODEL_LABEL)
    assert set(df["metric"]) == IFEVAL_METRICS | ARITH_METRICS
    assert df.height == 6
    assert df["value"].is_finite().all() and df["value"].is_between(0, 1).all()
    assert set(df["task_version"]) == {"1.0"}
    assert df["higher_is_better"].all()
    assert df.filter(pl.col("metric") == "prompt_level_strict_acc,none")["stderr"].is_not_null().all()
    assert df.filter(pl.col("metric") == "inst_level_strict_acc,none")["stderr"].is_null().all()
    relabeled = tidy_results(out / "tiny.json", {"model": "x", "step": 3})
    assert relabeled["step"].to_list() == [3] * 6
    with pytest.raises(EvalError, match="clash"):
        tidy_results(out / "tiny.json", {"metric": "x"})


def test_unknown_task_names_it(tiny_model, tmp_path):
    with pytest.raises(EvalError, match="tf_ifevall"):
        evaluate_model(model_dir=tiny_model, results=tmp_path / "x.json", samples=tmp_path / "x.jsonl",
                       tidy=tmp_path / "x.parquet", eval=_eval(tasks=["tf_arith", "tf_ifevall"]), model="tiny",
                       backend=ENGINE)
    assert not (tmp_path / "x.json").exists()


@pytest.fixture(scope="module")
def sft_dir(tiny_model, tmp_path_factory) -> Path:
    """What teachfit.training.sft.train_sft leaves: checkpoint-2 (an adapter without tokenizer) and
    the final adapter (step 4, with the tokenizer), listed in checkpoints.json."""
    from teachfit.models import load_tokenizer

    sft = tmp_path_factory.mktemp("sft") / "run"
    _adapter(tiny_model, sft / "checkpoints" / "checkpoint-2", seed=2)
    _adapter(tiny_model, sft / "adapter", seed=3)
    load_tokenizer(tiny_model).save_pretrained(str(sft / "adapter"))
    write_json([{"step": 2, "examples_seen": 16, "path": "checkpoints/checkpoint-2"},
                {"step": 4, "examples_seen": 32, "path": "adapter"}], sft / "checkpoints.json")
    return sft


def _checkpoints(tiny_model, sft, tmp_path, name, selected=(), **overrides):
    settings = _eval(**{"tasks": ["tf_arith"], "limit": 1, **overrides})
    return evaluate_checkpoints(sft_dir=sft, model_dir=tiny_model, selected=[str(p) for p in selected],
                                eval_dir=tmp_path / name, tidy=tmp_path / f"{name}.parquet", eval=settings,
                                run=RUN, backend=ENGINE, threads=1)


def test_evaluate_checkpoints(tiny_model, sft_dir, tmp_path):
    df = _checkpoints(tiny_model, sft_dir, tmp_path, "eval", checkpoints="all")
    assert sorted(p.name for p in (tmp_path / "eval").glob("*.json")) == ["checkpoint-2.json", "checkpoint-4.json"]
    assert not list(tmp_path.glob(".*partial"))
    assert pl.read_parquet(tmp_path / "eval.parquet").equals(df)
    assert df.columns[:9] == ["model", "dataset", "generator", "selection", "base", "checkpoint", "step",
                              "examples_seen", "is_final"]
    assert df.height == 2 * len(ARITH_METRICS)
    assert set(df["model"]) == {"tiny"} and set(df["dataset"]) == {"d"}
    assert sorted(set(df.select("step", "examples_seen", "is_final").rows())) == [(2, 16, False), (4, 32, True)]
    assert df["value"].is_between(0, 1).all()
    args = {p.stem: json.loads(p.read_text())["config"]["model_args"]
            for p in (tmp_path / "eval").glob("*.json")}
    assert args["checkpoint-2"]["peft"] == str(sft_dir / "checkpoints" / "checkpoint-2")
    assert args["checkpoint-2"]["pretrained"] == str(tiny_model)
    assert "tokenizer" not in args["checkpoint-2"]  # no tokenizer saved: the base model's
    assert args["checkpoint-4"]["tokenizer"] == str(sft_dir / "adapter")  # the adapter's own tokenizer

    final = _checkpoints(tiny_model, sft_dir, tmp_path, "final", checkpoints="final")
    assert set(final["checkpoint"]) == {"checkpoint-4"} and final["is_final"].all()
    assert "selected" not in final.columns

    write_json({"step": 2, "checkpoint": "checkpoint-2"}, tmp_path / "selected.json")
    both = _checkpoints(tiny_model, sft_dir, tmp_path, "both", [tmp_path / "selected.json"],
                        checkpoints="final_and_selected")
    assert sorted(set(both.select("step", "is_final", "selected").rows())) == [(2, False, True), (4, True, False)]
    write_json({"step": 7}, tmp_path / "bad.json")
    with pytest.raises(DataError, match=r"step\(s\) \[7\]"):
        _checkpoints(tiny_model, sft_dir, tmp_path, "bad", [tmp_path / "bad.json"], checkpoints="final_and_selected")
    assert not (tmp_path / "bad").exists()

    summary = summarize_evals(runs=[str(tmp_path / "eval.parquet")], models=[str(tmp_path / "final.parquet")],
                              table=tmp_path / "summary.csv")
    assert summary.height == 3 * len(ARITH_METRICS)
    assert pl.read_csv(tmp_path / "summary.csv").columns == df.columns


def test_no_chat_template_and_peft_adapter(tiny_model, sft_dir, base_run, tmp_path):
    lora = _checkpoints(tiny_model, sft_dir, tmp_path, "lora", checkpoints="final", apply_chat_template=False,
                        limit=2)
    payload = json.loads((tmp_path / "lora" / "checkpoint-4.json").read_text())
    assert payload["config"]["model_args"]["peft"] == str(sft_dir / "adapter")
    assert payload["teachfit"]["apply_chat_template"] is False
    assert lora["value"].is_between(0, 1).all()
    lora_samples = [json.loads(x) for x in (tmp_path / "lora" / "checkpoint-4.samples.jsonl").read_text().splitlines()]
    base = [json.loads(x) for x in (base_run[0] / "tiny.samples.jsonl").read_text().splitlines()]
    assert "### Instruction:" not in lora_samples[0]["arguments"][0][0]
    # same base model without the adapter (no chat template) gives other generations
    evaluate_model(model_dir=tiny_model, results=tmp_path / "b.json", samples=tmp_path / "b.samples.jsonl",
                   tidy=tmp_path / "b.parquet", eval=_eval(tasks=["tf_arith"], apply_chat_template=False),
                   model="tiny", backend=ENGINE, threads=1)
    plain = [json.loads(x) for x in (tmp_path / "b.samples.jsonl").read_text().splitlines()]
    assert [s["arguments"] for s in plain] == [s["arguments"] for s in lora_samples]
    assert [s["resps"] for s in plain] != [s["resps"] for s in lora_samples]
    assert [s["arguments"] for s in base if s["task"] == "tf_arith"] != [s["arguments"] for s in plain]


def test_merged_lora_hflm_scores_like_lm_eval_peft(tiny_model, sft_dir, tmp_path, monkeypatch):
    """An adapter checkpoint is evaluated with its LoRA merged (merged_lora_hflm); lm-eval's own
    ``peft=`` path (unmerged) on the same checkpoint gives the same generations and scores, for
    an adapter with and without its own tokenizer. The adapters have random A and B."""
    import teachfit.evaluation.lm_eval as lm_eval_module

    merged = _checkpoints(tiny_model, sft_dir, tmp_path, "merged", checkpoints="all", limit=4, max_gen_toks=8)
    for p in (tmp_path / "merged").glob("*.json"):
        assert json.loads(p.read_text())["teachfit"]["lora_merged"] is True
    monkeypatch.setattr(lm_eval_module, "merged_lora_hflm", lambda model_args, batch_size: "hf")
    peft = _checkpoints(tiny_model, sft_dir, tmp_path, "peft", checkpoints="all", limit=4, max_gen_toks=8)
    for name in ("checkpoint-2", "checkpoint-4"):
        a, b = ([json.loads(x)["resps"] for x in (tmp_path / d / f"{name}.samples.jsonl").read_text().splitlines()]
                for d in ("merged", "peft"))
        assert a == b and len(a) >= 4  # a sample per doc and filter
    assert merged.select("checkpoint", "metric", "value").equals(peft.select("checkpoint", "metric", "value"))


def test_checkpoints_json_errors_name_file(tiny_model, tmp_path):
    sft = tmp_path / "sft"
    write_json([{"step": 1, "examples_seen": 4, "path": "checkpoints/missing"}], sft / "checkpoints.json")
    with pytest.raises(DataError, match=r"checkpoints.json\[0\].path"):
        _checkpoints(tiny_model, sft, tmp_path, "eval")
    write_json([{"step": 1, "path": "adapter"}], sft / "checkpoints.json")
    with pytest.raises(DataError, match=r"checkpoints.json\[0\]: needs keys"):
        _checkpoints(tiny_model, sft, tmp_path, "eval")
    assert not (tmp_path / "eval").exists()


def test_hub_offline_switch_restores():
    import huggingface_hub.constants as hc

    before = (os.environ.get("HF_HUB_OFFLINE"), hc.HF_HUB_OFFLINE)
    with _hub_offline(True):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and hc.HF_HUB_OFFLINE is True
    assert (os.environ.get("HF_HUB_OFFLINE"), hc.HF_HUB_OFFLINE) == before



# --------------------------------------------------------------------------- eval.backend: hf | vllm


def test_backend_setting_defaults_to_hf_and_rejects_others():
    assert EvalSettings.from_dict(defaults("eval")).backend == "hf"
    assert EvalSettings.from_dict(defaults("eval", backend="vllm")).backend == "vllm"
    with pytest.raises(EvalError, match="eval.backend: 'sglang' not one of hf, vllm"):
        EvalSettings.from_dict({**defaults("eval"), "backend": "sglang"})


def _adapter_dir(tmp_path: Path, r: int, rank_pattern: dict | None = None, tokenizer: bool = False) -> Path:
    d = tmp_path / f"adapter_r{r}"
    d.mkdir()
    write_json({"r": r, "rank_pattern": rank_pattern or {}, "peft_type": "LORA"}, d / "adapter_config.json")
    if tokenizer:
        (d / "tokenizer_config.json").write_text("{}")
    return d


def test_model_args_hf(tmp_path):
    cfg = EvalSettings.from_dict(defaults("eval"))
    assert lm_eval_model_args(cfg, tmp_path / "base", None, ENGINE, "cpu") == (
        "hf", {"pretrained": str(tmp_path / "base"), "dtype": "float32", "trust_remote_code": False})
    adapter = _adapter_dir(tmp_path, 8, tokenizer=True)
    model, args = lm_eval_model_args(cfg, tmp_path / "base", adapter, ENGINE, "cuda:0")
    assert model == "hf" and args == {"pretrained": str(tmp_path / "base"), "dtype": "bfloat16",
                                      "trust_remote_code": False, "peft": str(adapter), "tokenizer": str(adapter)}


def test_model_args_vllm_serves_a_lora_checkpoint_with_its_adapter(tmp_path):
    cfg = EvalSettings.from_dict(defaults("eval", backend="vllm", seed=7))
    engine = {**ENGINE, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "max_model_len": 4096}
    adapter = _adapter_dir(tmp_path, 4)
    model, args = lm_eval_model_args(cfg, tmp_path / "base", adapter, engine, "cuda:0")
    assert model == "vllm"
    assert args == {"pretrained": str(tmp_path / "base"), "dtype": "bfloat16", "trust_remote_code": False, "seed": 7,
                    "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "max_model_len": 4096,
                    "lora_local_path": str(adapter), "max_lora_rank": 8}
    assert "peft" not in args and "enable_lora" not in args  # lm-eval sets enable_lora from lora_local_path
    # a full checkpoint is loaded directly; max_model_len only when the model entry sets it
    model, args = lm_eval_model_args(cfg, tmp_path / "checkpoint-9", None, ENGINE, "cpu")
    assert args == {"pretrained": str(tmp_path / "checkpoint-9"), "dtype": "bfloat16", "trust_remote_code": False,
                    "seed": 7, "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9}


@pytest.mark.parametrize(("r", "pattern", "expected"), [(8, None, 8), (16, None, 16), (17, None, 32),
                                                        (8, {"q_proj": 64}, 64), (300, None, 320), (512, None, 512)])
def test_vllm_max_lora_rank(tmp_path, r, pattern, expected):
    assert vllm_max_lora_rank(_adapter_dir(tmp_path, r, pattern)) == expected


def test_vllm_max_lora_rank_errors_name_the_file(tmp_path):
    with pytest.raises(EvalError, match=r"adapter_r600/adapter_config.json: LoRA rank 600 exceeds"):
        vllm_max_lora_rank(_adapter_dir(tmp_path, 600))
    d = tmp_path / "norank"
    d.mkdir()
    write_json({"peft_type": "LORA"}, d / "adapter_config.json")
    with pytest.raises(EvalError, match="norank/adapter_config.json: no LoRA rank"):
        vllm_max_lora_rank(d)


@pytest.fixture()
def fake_lm_eval(monkeypatch):
    """lm_eval.simple_evaluate replaced by a recorder returning a fixed result (the argument mapping
    of the rule functions is tested here; vLLM itself does not run on this machine)."""
    import lm_eval

    calls = []

    def simple_evaluate(**kw):
        calls.append(kw)
        return {"results": {"tf_arith": {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.1}},
                "versions": {"tf_arith": 1}, "n-shot": {"tf_arith": 1},
                "higher_is_better": {"tf_arith": {"exact_match": True}},
                "n-samples": {"tf_arith": {"original": 3, "effective": 2}},
                "config": {"model": kw["model"], "model_args": kw["model_args"]}, "samples": {}}

    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    return calls


def test_evaluate_checkpoints_through_vllm_keeps_the_tidy_output(tiny_model, sft_dir, tmp_path, fake_lm_eval):
    """Rule evaluate_checkpoints with eval.backend vllm: each LoRA checkpoint is served with its
    adapter on the base model; the tidy table is the hf backend's, column for column."""
    vllm = _checkpoints(tiny_model, sft_dir, tmp_path, "vllm", checkpoints="all", backend="vllm")
    hf = _checkpoints(tiny_model, sft_dir, tmp_path, "hf", checkpoints="all", backend="hf")
    # hf: an adapter checkpoint goes in as lm-eval's HFLM over the merged model (merged_lora_hflm)
    assert [c["model"] if isinstance(c["model"], str) else type(c["model"]).__name__
            for c in fake_lm_eval] == ["vllm", "vllm", "HFLM", "HFLM"]
    first, final = fake_lm_eval[0]["model_args"], fake_lm_eval[1]["model_args"]
    assert first["pretrained"] == str(tiny_model) and first["lora_local_path"] == str(sft_dir / "checkpoints" / "checkpoint-2")
    assert first["max_lora_rank"] == 8 and "tokenizer" not in first
    assert final["lora_local_path"] == str(sft_dir / "adapter") and final["tokenizer"] == str(sft_dir / "adapter")
    assert fake_lm_eval[0]["device"] is None and fake_lm_eval[2]["device"] == "cpu"
    assert vllm.columns == hf.columns and vllm.drop("value").equals(hf.drop("value"))
    payload = json.loads((tmp_path / "vllm" / "checkpoint-4.json").read_text())
    assert payload["teachfit"]["lm_eval_model"] == "vllm" and payload["teachfit"]["settings"]["backend"] == "vllm"


def test_evaluate_checkpoints_through_vllm_loads_a_full_checkpoint_directly(tiny_model, tmp_path, fake_lm_eval):
    import shutil

    sft = tmp_path / "full_run"
    shutil.copytree(tiny_model, sft / "final")
    write_json([{"step": 3, "examples_seen": 12, "path": "final"}], sft / "checkpoints.json")
    _checkpoints(tiny_model, sft, tmp_path, "full", checkpoints="final", backend="vllm")
    args = fake_lm_eval[0]["model_args"]
    assert fake_lm_eval[0]["model"] == "vllm" and args["pretrained"] == str(sft / "final")
    assert "lora_local_path" not in args and "max_lora_rank" not in args


def test_vllm_backend_without_vllm_fails_clearly(tiny_model, tmp_path):
    """On this machine vLLM is not installed: the vllm backend must fail (lm-eval's own message), not
    fall back to transformers, and leave no outputs."""
    pytest.importorskip("lm_eval")
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here; make test-vllm runs it for real")
    with pytest.raises(Exception, match="vllm"):
        evaluate_model(model_dir=tiny_model, results=tmp_path / "v.json", samples=tmp_path / "v.jsonl",
                       tidy=tmp_path / "v.parquet", eval=_eval(tasks=["tf_arith"], backend="vllm"), model="tiny",
                       backend=ENGINE)
    assert not (tmp_path / "v.json").exists() and not (tmp_path / "v.parquet").exists()
