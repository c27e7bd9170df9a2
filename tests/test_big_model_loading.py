"""Forward-only jobs on a model spread by accelerate's big-model loading (device_map): the same
losses as the one-device path. On CPU the only device is the CPU, so the split is CPU + disk
(``max_memory`` below the model's size offloads the last layers to ``offload_folder``; accelerate's
hooks move them in for each forward, as they move activations between GPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from teachfit.models import device_placement, load_causal_lm, load_tokenizer, materialize
from teachfit.schema import defaults
from teachfit.scoring.losses import ScoringSettings, convention_settings, encode_pairs, score_encoded


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    return out


def test_device_map_split_gives_the_same_losses(tiny, tmp_path):
    assert device_placement("cpu") == {}  # one device: the plain .to(device) path
    settings = ScoringSettings(**convention_settings(defaults("scoring"), "chat"))
    tok = load_tokenizer(tiny, padding_side="right")
    pairs = [(f"what is {i} plus {i} ?", f"the answer is {2 * i} ." * (1 + i % 3)) for i in range(6)]
    encoded = encode_pairs(tok, [q for q, _ in pairs], [a for _, a in pairs], settings)

    one = load_causal_lm(tiny)
    # the second decoder layer offloaded (what max_memory below the model's size gives a large one)
    device_map = {name: "cpu" for name, _ in one.model.named_children() if name != "layers"}
    device_map.update({"lm_head": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk"})
    device_map = {k if k.startswith(("model.", "lm_head")) else f"model.{k}": v for k, v in device_map.items()}
    split = load_causal_lm(tiny, placement={"device_map": device_map,
                                            "offload_folder": str(tmp_path / "offload")})
    assert split.hf_device_map["model.layers.1"] == "disk"
    assert split.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # really not resident

    ref = score_encoded(one, tok, encoded, settings)
    got = score_encoded(split, tok, encoded, settings)
    for col in ("loss_q", "loss_a_given_q", "loss_a"):
        assert got[col].to_list() == pytest.approx(ref[col].to_list(), abs=1e-4), col
    assert ref.height == 6
