"""Models that need their own code (``models.<alias>.trust_remote_code``) and the load checks
(teachfit.models.check_loading_info): built here, with no hub.

The custom reward model (teachfit.rehearsal.build_custom_reward) mirrors ArmoRM's layout (RLHFlow/ArmoRM-Llama3-8B-v0.1): a llama config
(``model_type: llama``) whose ``auto_map`` points AutoModelForSequenceClassification at a class in
a ``.py`` file next to config.json, a llama body, a multi-objective regression layer and a gating
layer, and an output whose ``.score`` is the gated sum; loaded without its code, transformers
would build a LlamaForSequenceClassification with a new random ``score`` head.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from teachfit.models import (
    MANIFEST,
    ModelLoadError,
    load_causal_lm,
    load_pretrained,
    materialize,
)
from teachfit.rehearsal import TINY_GATED_REWARD_CODE, build_custom_reward
from teachfit.schema import defaults
from teachfit.scoring.label_judge import JudgeError, JudgeSettings, SequenceClassifierReward
from teachfit.scoring.rewards import score_rewards

MODELING = TINY_GATED_REWARD_CODE

PAIRS = [
    ("What is two plus two?", "Four."),
    ("Explain why the sky is blue in one sentence.", "Light of short wave length is scattered more by the air."),
    ("Give an example of a prime number.", "7 is prime because it has no divisors other than 1 and 7."),
    ("List three numbers.", "1, 2, 3"),
]


@pytest.fixture(scope="module")
def custom_rm(tmp_path_factory):
    """A checkpoint folder of the custom-code reward model (weights, tokenizer, modelling code),
    built by the function the rehearsal's hub cache uses (teachfit.rehearsal)."""
    src = build_custom_reward(tmp_path_factory.mktemp("custom_rm") / "src")
    auto_map = json.loads((src / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoModelForSequenceClassification": "modeling_tiny_gated.TinyGatedReward"}
    assert (src / "modeling_tiny_gated.py").read_text() == MODELING  # save_pretrained copied the code
    assert sorted(p.name for p in src.iterdir() if p.suffix == ".py") == ["modeling_tiny_gated.py"]
    return src


def _generations(tmp_path):
    rows = [{"id": f"q{i}", "sample_idx": 0, "instruction": q, "response": a} for i, (q, a) in enumerate(PAIRS)]
    path = tmp_path / "generations.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path


def test_custom_code_reward_model_scores_its_own_score(custom_rm, tmp_path):
    """trust_remote_code: true -> the code travels into the materialized folder, and rule
    score_rewards returns the model's own `.score` (batched, padded) for every pair."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "armo"
    manifest = materialize("armo", {"source": "local", "path": str(custom_rm), "kind": "reward",
                                    "task": "seq_cls", "trust_remote_code": True}, out)
    assert manifest["trust_remote_code"] is True
    assert (out / "modeling_tiny_gated.py").read_text() == MODELING
    assert "modeling_tiny_gated.py" in manifest["files_sha256"]
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForSequenceClassification"] \
        .endswith("modeling_tiny_gated.TinyGatedReward")

    reward = defaults("teacher.reward", model="armo", type="classifier", batch_size=3)
    df = score_rewards(_generations(tmp_path), out, tmp_path / "rewards.parquet", reward, threads=1)

    # the model's own score, computed directly from the source checkpoint, one unpadded pair at a time
    direct_model = AutoModelForSequenceClassification.from_pretrained(str(custom_rm), trust_remote_code=True).eval()
    rm = SequenceClassifierReward(out, JudgeSettings(method="seq_cls", batch_size=1, version=1))
    direct = []
    for q, a in PAIRS:
        ids, _ = rm.encode(q, a)
        with torch.inference_mode():
            direct.append(direct_model(input_ids=torch.tensor([ids])).score[0, 0].item())
    np.testing.assert_allclose(df["reward"].to_numpy(), direct, rtol=1e-5, atol=1e-6)
    assert np.ptp(direct) > 0
    assert df["reward_model"].unique().to_list() == ["armo"]


def test_custom_code_reward_model_without_trust_is_refused(custom_rm, tmp_path):
    """trust_remote_code: false (the default) -> transformers would build a stock
    LlamaForSequenceClassification (a new random `score` head, the regression and gating weights
    dropped): materialize refuses, naming the model and the keys."""
    with pytest.raises(ModelLoadError) as err:
        materialize("armo", {"source": "local", "path": str(custom_rm), "kind": "reward", "task": "seq_cls"},
                    tmp_path / "armo")
    msg = str(err.value)
    assert f"models.armo ({custom_rm})" in msg and "LlamaForSequenceClassification" in msg
    assert "score.weight" in msg and "regression_layer.weight" in msg and "gating.0.weight" in msg
    assert "trust_remote_code" in msg
    assert not (tmp_path / "armo").exists()


def test_stock_class_over_custom_checkpoint_is_refused_at_scoring(custom_rm, tmp_path):
    """A folder holding the custom checkpoint but no trust (no manifest: a stray copy) is refused
    by the reward model loader too."""
    with pytest.raises(ModelLoadError, match=r"score\.weight.*regression_layer\.weight"):
        SequenceClassifierReward(custom_rm, JudgeSettings(method="seq_cls", batch_size=2, version=1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "tiny"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    return out


def test_missing_head_is_refused(tiny, tmp_path):
    """A causal LM checkpoint read as a reward model has no score head: refused (not scored with
    a new random head), at scoring and at materialize."""
    with pytest.raises(ModelLoadError, match=r"models\.tiny .*missing.*\['score\.weight'\]"):
        SequenceClassifierReward(tiny, JudgeSettings(method="seq_cls", batch_size=2, version=1))
    reward = defaults("teacher.reward", model="tiny", type="classifier")
    with pytest.raises(ModelLoadError, match=r"models\.tiny"):
        score_rewards(_generations(tmp_path), tiny, tmp_path / "r.parquet", reward, threads=1)
    assert not (tmp_path / "r.parquet").exists()
    with pytest.raises(ModelLoadError, match=r"models\.rm \(.*tiny\).*score\.weight"):
        materialize("rm", {"source": "local", "path": str(tiny), "kind": "reward", "task": "seq_cls"},
                    tmp_path / "rm")


def test_tied_model_loads_and_missing_lm_head_is_refused(tiny, tmp_path):
    """Tiny tied llama: loads (a tied lm_head is not missing). An untied checkpoint whose
    lm_head was not saved is refused, naming the key."""
    import shutil

    from safetensors.torch import load_file, save_file

    assert load_causal_lm(tiny).config.tie_word_embeddings
    broken = tmp_path / "untied"
    shutil.copytree(tiny, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (broken / "config.json").write_text(json.dumps(cfg))
    state = load_file(broken / "model.safetensors")
    assert not any(k.startswith("lm_head") for k in state)
    with pytest.raises(ModelLoadError, match=r"models\.tiny \(.*untied\).*missing.*lm_head\.weight"):
        load_causal_lm(broken)
    # a newly initialised head of another shape (mismatched keys) is refused as well
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:, :16].contiguous()
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="embed_tokens"):
        load_pretrained("AutoModelForCausalLM", broken)


def test_reward_head_with_several_logits_and_no_score_is_refused(tmp_path):
    """A 2-label classifier (tiny bert) is not a reward model: refused when scoring."""
    out = tmp_path / "bert"
    materialize("twolabels", {"source": "random", "arch": "bert", "task": "seq_cls"}, out)
    rm = SequenceClassifierReward(out, JudgeSettings(method="seq_cls", batch_size=2, version=1))
    with pytest.raises(JudgeError, match=r"models\.twolabels .*2 logits and no `\.score`"):
        rm.score(["q"], ["a"])


def test_manifest_trust_reaches_lm_eval_args(tiny, tmp_path):
    """lm-eval (hf and vllm backends) gets the models entry's trust_remote_code."""
    from teachfit.evaluation.lm_eval import EvalSettings, lm_eval_model_args

    engine = {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": None}
    cfg = EvalSettings.from_dict(defaults("eval"))
    assert lm_eval_model_args(cfg, tiny, None, engine, "cpu")[1]["trust_remote_code"] is False
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    manifest = json.loads((tiny / MANIFEST).read_text())
    (trusted / MANIFEST).write_text(json.dumps({**manifest, "trust_remote_code": True}))
    assert lm_eval_model_args(cfg, trusted, None, engine, "cpu")[1]["trust_remote_code"] is True
