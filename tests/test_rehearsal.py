"""The rehearsal's parts (teachfit.rehearsal; the run itself is `make rehearsal`): the config keeps
every paper.yaml setting but the listed changes, every hub model it uses has a tiny stand-in of
its family, and the stand-ins load through materialize's hub path offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from teachfit.models import DECODER_ARCHS, ModelSpec, build_random_model
from teachfit.rehearsal import (
    LIST_CUTS,
    hub_family,
    rehearsal_config,
    seed_tiny_hub,
    used_models,
    write_seed_files,
)

REPO = Path(__file__).resolve().parents[1]


def _flat(node, prefix=""):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def rehearsal(paper):
    return rehearsal_config(paper, api_base="http://127.0.0.1:9/v1", api_model="m", api_key_env="K",
                            seed_dir="rehearsal_data/seeds")


def test_only_listed_keys_change(paper, rehearsal):
    """Every leaf that differs from paper.yaml is under a listed change, and every listed change
    is a size, list, source or speed change (no setting of the paper run changes silently)."""
    cfg, changes = rehearsal
    keys = {c.key for c in changes}
    assert {c.kind for c in changes} <= {"size", "list", "source", "speed", "random weights"}
    before, after = _flat(paper), _flat(cfg)
    differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    unlisted = sorted(k for k in differing if not any(k == c or k.startswith(c + ".") for c in keys))
    assert not unlisted, unlisted
    assert len(differing) > 20


def test_paper_settings_kept(rehearsal):
    """The settings the issue names: full SFT in bf16 with gradient checkpointing, vLLM for
    generation and lm-eval, n > 1 best / worst, both win-rate protocols, ifs.runs all, every
    evolver scenario with all its evolvers (>= 2, so each is ranked)."""
    cfg, _ = rehearsal
    assert cfg["sft"]["method"] == "full" and cfg["sft"]["bf16"] is True and cfg["sft"]["gradient_checkpointing"] is True
    assert cfg["eval"]["backend"] == "vllm"
    gens = {g: cfg["generators"][g] for g in cfg["teacher"]["generators"]}
    assert {(g.get("n"), g.get("select")) for g in gens.values()} >= {(4, "best"), (4, "worst")}
    backends = {cfg["models"][g["model"]].get("backend") for g in gens.values()}
    assert backends == {"vllm", "openai"}
    benches = cfg["teacher"]["winrate"]["benchmarks"]
    assert benches["alpaca_eval2"]["protocol"] == "alpaca_eval2" and benches["arena_hard"]["protocol"] == "arena_hard"
    assert cfg["ifs"]["runs"] == "all"
    for name, scenario in cfg["evolver"]["scenarios"].items():
        assert scenario["activate"] is True and scenario.get("evolvers") is None, name
    assert len(cfg["evolver"]["evolvers"]) >= 2
    for key, items in LIST_CUTS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == items


def test_every_used_hub_model_has_a_family(paper, rehearsal):
    cfg, _ = rehearsal
    families = {hub_family(cfg["models"][a]["hf_id"]) for a in used_models(cfg)
                if cfg["models"][a]["source"] == "hub"}
    assert families == {"qwen2", "llama", "gemma2", "phi3", "mistral", "mpt", "falcon", "gpt_neox",
                        "bert", "bert_pretraining", "custom_reward"}
    with pytest.raises(ValueError, match="no tiny stand-in for hub model 'org/unknown'"):
        hub_family("org/unknown")


def test_seed_files_use_each_sets_fields(tmp_path, rehearsal):
    cfg, _ = rehearsal
    counts = write_seed_files(cfg, tmp_path, "rehearsal_data/seeds",
                              [REPO / "config/seeds/general.jsonl", REPO / "config/seeds/math.jsonl"])
    assert set(counts) == {"magpie_air", "alpaca", "gsm8k_train", "code_alpaca"}
    gsm = [json.loads(line) for line in (tmp_path / "rehearsal_data/seeds/gsm8k_train.jsonl").read_text().splitlines()]
    assert set(gsm[0]) == {"question"} and len(gsm) == counts["gsm8k_train"]


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_random_decoder_of_each_family(tmp_path, arch):
    """build_random_model builds each family (head_dim 64, as the rehearsal's) and it runs."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = ModelSpec.from_config("x", {"source": "random", "arch": arch,
                                       "size": {"hidden_size": 128, "num_heads": 2, "intermediate_size": 256}})
    build_random_model(spec, tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == {"gemma3": "gemma3_text"}.get(arch, arch)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    logits = model(torch.tensor([[1, 5, 9, 3]])).logits
    assert logits.shape == (1, 4, model.config.vocab_size) and torch.isfinite(logits).all()


def test_tiny_hub_materializes_offline(tmp_path):
    """Hub entries (an instruct Qwen2, bert-base-uncased with its pre-training heads, the
    custom-code reward) materialize through the hub path from the seeded cache, offline: the
    encoder drops the heads (recorded), the reward keeps its code, the instruct model its template."""
    models = {
        "qwen": {"source": "hub", "hf_id": "Qwen/Qwen2-7B-Instruct", "revision": "main", "kind": "instruct",
                 "dtype": "bfloat16"},
        "bert_base": {"source": "hub", "hf_id": "google-bert/bert-base-uncased", "revision": "main",
                      "kind": "encoder", "task": "encoder"},
        "armorm": {"source": "hub", "hf_id": "RLHFlow/ArmoRM-Llama3-8B-v0.1", "revision": "main", "kind": "reward",
                   "task": "seq_cls", "trust_remote_code": True},
    }
    hf_home = tmp_path / "hf_home"
    done = seed_tiny_hub({"models": models, "ifs": {"models": list(models)}}, hf_home)
    assert done["models"] == {"Qwen/Qwen2-7B-Instruct": "qwen2", "google-bert/bert-base-uncased": "bert_pretraining",
                              "RLHFlow/ArmoRM-Llama3-8B-v0.1": "custom_reward"}
    script = (
        "import json, sys\nfrom teachfit.models import materialize\n"
        "models = json.loads(sys.argv[1])\n"
        "print(json.dumps({a: materialize(a, e, sys.argv[2] + '/' + a) for a, e in models.items()}))\n"
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(models), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifests = json.loads(done.stdout.strip().splitlines()[-1])
    assert manifests["qwen"]["chat_template"] == "model"
    assert manifests["qwen"]["source"]["hf_id"] == "Qwen/Qwen2-7B-Instruct"
    dropped = manifests["bert_base"]["source"]["dropped_keys"]
    assert dropped and all(k.startswith("cls.") for k in dropped)
    assert "dropped_keys" not in manifests["armorm"]["source"]
    assert (tmp_path / "out" / "armorm" / "modeling_tiny_gated.py").exists()


def test_runner_report_counts_rules_after_checkpoints_and_names_what_did_not_run(tmp_path):
    """The runner's report (tests/slurm/rehearsal.py): a rule the rehearsal ran that no dry run
    lists (planned after a checkpoint) gets its own row, marked; a paper rule that did not run
    makes the rehearsal fail; workflow rules outside paper.yaml's run are named."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rehearsal_runner", REPO / "tests" / "slurm" / "rehearsal.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    from collections import Counter

    sub = runner._submissions("Job 1 has been submitted with SLURM jobid 7 (log: /x/slurm_logs/rule_train_sft/a/7.log).")
    rows = {"7": type("Row", (), {"state": "COMPLETED"})()}
    paper, planned = {"train_sft": 100, "build_ifs_tables": 1}, {"train_sft": 4, "build_ifs_tables": 1}
    kw = dict(table="", rc=0, run_s=1.0, hub={}, seeds={}, hub_s=0.0, serve_s=0.0, subs=sub, rows=rows,
              workflow_rules=["answer_ifs_model", "build_ifs_tables", "select_data", "train_sft"],
              jobs=[{"run_id": "r1", "slurm_jobid": "7", "rule": "train_sft", "state": "COMPLETED"}])
    ran = Counter({"train_sft": 4, "answer_ifs_model": 3})
    assert runner._report(tmp_path, paper, planned, ran, **kw) == 1  # build_ifs_tables did not run
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["paper_rules_not_run"] == ["build_ifs_tables"]
    assert summary["rules_after_checkpoint"] == ["answer_ifs_model"]
    assert summary["workflow_rules_not_in_paper_run"] == ["select_data"]
    log = (tmp_path / "rehearsal.log").read_text()
    assert "answer_ifs_model*" in log and "select_data" in log
    ran["build_ifs_tables"] = 1
    assert runner._report(tmp_path, paper, planned, ran, **kw) == 0
