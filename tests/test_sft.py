"""Tests of teachfit.training.sft on tiny random models (CPU, seconds each)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import polars as pl
import pytest
from workflow_utils import Preempted, preempt_after_save

from teachfit.schema import ConfigError, defaults
from teachfit.io import DataError, sha256_file, write_json, write_parquet
from teachfit.checkpoints import checkpoint_list, load_for_inference, merge_lora, unmerge_lora
from teachfit.models import MANIFEST, materialize
from teachfit.training.sft import (
    FINGERPRINT_FILE,
    PROJECT_KEYS,
    _fingerprint,
    _prepare_scratch,
    check_sft_settings,
    load_sft_records,
    make_lora_config,
    make_sft_config,
    make_sft_trainer,
    train_sft,
)

CHATML = (
    "{% for message in messages %}{{ '<s>' + message['role'] + '\n' + message['content'] + '</s>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}"
)
RUN = defaults("sft", max_steps=6, save_steps=2, per_device_train_batch_size=4, learning_rate=1e-2)


def _train(model_dir: Path, trainset: Path, base: Path, sft: dict, **kw) -> dict:
    """train_sft called as the rule calls it, with outputs under ``base``."""
    return train_sft(trainset=trainset, model_dir=model_dir, sft_dir=base / "out", train_log=base / "log.parquet",
                     sft=sft, scratch=base / "scratch", **kw)


def _rows(n: int) -> list[dict]:
    return [
        {"id": f"ex{i}", "instruction": f"what is {i} plus {i} ?", "response": f"the answer is {2 * i} .",
         "teacher": "t"}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    return out


@pytest.fixture(scope="module")
def tiny_chatml(tmp_path_factory) -> Path:
    """A tiny model whose chat template has no {% generation %} markers (like SmolLM2's)."""
    out = tmp_path_factory.mktemp("models") / "tiny_chatml"
    materialize("tiny_chatml", {"source": "random", "arch": "llama", "chat_template": CHATML}, out)
    return out


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    write_parquet(pl.DataFrame(_rows(16)), path)
    return path


@pytest.fixture(scope="module")
def lora_run(tiny, train_file, tmp_path_factory) -> dict:
    """One uninterrupted LoRA run: 6 steps, a checkpoint every 2."""
    base = tmp_path_factory.mktemp("lora_run")
    summary = _train(tiny, train_file, base, RUN, threads=1)
    return {"summary": summary, "out": base / "out", "scratch": base / "scratch", "log": base / "log.parquet"}


# --------------------------------------------------------------------------- settings and data


def test_settings_reject_unknown_key_naming_it():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lora_rank'\].*lora_alpha"):
        defaults("sft", lora={"lora_rank": 4})
    with pytest.raises(TypeError, match="lora_rank"):  # library callers that bypass the schema
        make_lora_config({**defaults("sft"), "lora": {**defaults("sft")["lora"], "lora_rank": 4}})


def test_settings_defaults_and_checks():
    s = defaults("sft")
    assert (s["method"], s["lora"]["r"], s["lora"]["lora_alpha"], s["learning_rate"], s["save_steps"],
            s["version"]) == ("lora", 8, 16, 2e-4, 10, 2)
    with pytest.raises(ConfigError, match="method"):
        defaults("sft", method="qlora")
    with pytest.raises(ConfigError, match="save_steps"):
        defaults("sft", save_steps=0)
    with pytest.raises(ValueError, match=r"sft.max_steps: must be -1 \(use epochs\) or > 0"):
        check_sft_settings({**s, "max_steps": 0})
    with pytest.raises(ValueError, match="sft.lora.target_modules"):
        check_sft_settings({**s, "lora": {**s["lora"], "target_modules": []}})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['lora'\]"):
        check_sft_settings({k: v for k, v in s.items() if k != "lora"})


def test_settings_go_one_to_one_into_sftconfig_and_loraconfig(tmp_path):
    """Every sft key besides method/version/lora is an SFTConfig field with the same value; every
    lora key a LoraConfig field; the project's fixed choices are set explicitly."""
    s = defaults("sft", learning_rate=3e-4, warmup_steps=2, lr_scheduler_type="linear",
                 lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    cfg = make_sft_config(s, tmp_path)
    for key, value in s.items():
        if key not in PROJECT_KEYS:
            assert getattr(cfg, key) == value or str(getattr(cfg, key)) == f"SchedulerType.{value.upper()}", key
    assert cfg.output_dir == str(tmp_path) and cfg.report_to == [] and cfg.push_to_hub is False
    assert cfg.completion_only_loss is True and cfg.packing is False and cfg.data_seed == s["seed"]
    assert cfg.activation_checkpointing is False and cfg.gradient_checkpointing is False
    lora = make_lora_config(s)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, set(lora.target_modules)) == (4, 16, 0.05, {"q_proj", "v_proj"})
    assert (str(lora.task_type), lora.bias) in {("TaskType.CAUSAL_LM", "none"), ("CAUSAL_LM", "none")}
    assert make_lora_config({**s, "method": "full"}) is None


def test_empty_training_file_raises(tiny, tmp_path):
    empty = tmp_path / "empty.parquet"
    write_parquet(pl.DataFrame(schema={"id": pl.Utf8, "instruction": pl.Utf8, "response": pl.Utf8}), empty)
    with pytest.raises(DataError, match="empty"):
        _train(tiny, empty, tmp_path, defaults("sft"))
    assert not (tmp_path / "out").exists()


def test_bad_training_rows_raise_naming_file_and_ids(tmp_path):
    path = tmp_path / "bad.parquet"
    write_parquet(pl.DataFrame({"id": ["a", "b"], "instruction": ["x", None], "response": ["y", "z"]}), path)
    with pytest.raises(DataError, match=r"bad\.parquet.*instruction.*'b'"):
        load_sft_records(path)
    write_parquet(pl.DataFrame({"id": ["a"], "instruction": ["x"]}), path)
    with pytest.raises(DataError, match="response"):
        load_sft_records(path)


#: Responses that start or end with whitespace: the first may merge with the template's last
#: token if prompt and response were tokenized as one text (issue 11: SmolLM2, "\n\none two").
WHITESPACE_RESPONSES = ["\n\none two", "one two", " one two", "\none two\n", "\t- one\n- two", "  \n\n one two  "]


def _stop_ids(model_dir: Path) -> set[int]:
    """The ids that end generation for the model in ``model_dir`` (what both backends stop at)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from teachfit.generation.base import eos_token_ids

    try:
        gen = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        gen = None
    return eos_token_ids(AutoTokenizer.from_pretrained(model_dir), AutoConfig.from_pretrained(model_dir), gen)


def _assert_training_tokens_are_inference_tokens(tokenizer, rows, records, stop_ids) -> None:
    """Every row's prompt part is, token for token, the inference prompt (format_prompt chat +
    encode_prompts), and its completion is the response's own tokens + the end-of-turn tokens,
    ending at the first stop token."""
    from teachfit.generation.base import encode_prompts
    from teachfit.prompts import format_prompt

    for row, rec in zip(rows, records, strict=True):
        prompt = encode_prompts(tokenizer, [format_prompt(tokenizer, rec["instruction"], fmt="chat")])[0]
        n = len(prompt)
        assert row["input_ids"][:n] == prompt, rec
        assert row["completion_mask"] == [0] * n + [1] * (len(row["input_ids"]) - n)
        completion = row["input_ids"][n:]
        response = tokenizer(rec["response"], add_special_tokens=False)["input_ids"]
        assert completion[: len(response)] == response
        end = completion[len(response):]
        assert end and end[-1] in stop_ids and not set(end[:-1]) & stop_ids  # stops at the first stop token


@pytest.mark.parametrize("alias", ["tiny", "tiny_chatml", "smollm2", "gemma270m"])
def test_training_prompt_is_the_inference_prompt_for_every_shipped_tokenizer(alias, request):
    """The prompt tokens of every training example equal the inference prompt's, whatever
    whitespace the response starts with; the completion ends at EOS / end-of-turn. SmolLM2 and
    gemma-3-270m skip when results/models/<alias> is not materialised."""
    from real_models import real_model_dir
    from transformers import AutoTokenizer

    from teachfit.training.sft import completion_end_ids, sft_dataset_rows

    model_dir = request.getfixturevalue(alias) if alias.startswith("tiny") else real_model_dir(alias)
    if model_dir is None:
        pytest.skip(f"results/models/{alias} is not materialised")
    tok = AutoTokenizer.from_pretrained(model_dir)
    stops = _stop_ids(model_dir)
    end = completion_end_ids(tok, stops)
    records = [{"id": str(i), "instruction": q, "response": r}
               for i, (q, r) in enumerate((q, r) for q in ("list two numbers", "Name a fruit.\n")
                                          for r in WHITESPACE_RESPONSES)]
    rows = sft_dataset_rows(tok, records, end)
    _assert_training_tokens_are_inference_tokens(tok, rows, records, stops)
    if alias == "smollm2":
        # issue 11's failing input: the inference prompt ends "assistant", "Ċ" (33 tokens) and the
        # training sequence must not merge that "Ċ" with the response's "\n\n"
        row = rows[0]
        assert tok.convert_ids_to_tokens(row["input_ids"][31:33]) == ["istant", "Ċ"]
        assert row["completion_mask"].index(1) == 33
        assert tok.convert_ids_to_tokens(row["input_ids"][33:]) == ["Ċ", "Ċ", "one", "Ġtwo", "<|im_end|>"]


def test_completion_ends_at_eos_not_after(tiny, tiny_chatml):
    """The project's default template writes "\n\n" after EOS, ChatML-like ones "\n" after the
    end-of-turn token: generation stops at it, so nothing after it is trained."""
    from transformers import AutoTokenizer

    from teachfit.training.sft import completion_end_ids

    for model_dir in (tiny, tiny_chatml):
        tok = AutoTokenizer.from_pretrained(model_dir)
        text = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                       tokenize=False)
        assert text.endswith(tok.eos_token + ("\n\n" if model_dir == tiny else "\n"))
        assert completion_end_ids(tok, _stop_ids(model_dir)) == [tok.eos_token_id]
    tok = AutoTokenizer.from_pretrained(tiny)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(DataError, match="would never learn to stop"):
        completion_end_ids(tok, _stop_ids(tiny))


@pytest.mark.parametrize("model", ["tiny", "tiny_chatml"])
def test_loss_only_on_response_tokens(model, request, tmp_path):
    """Collated labels: every prompt position is -100 and the prompt is the inference prompt;
    the supervised tokens are exactly the response's tokens + EOS (nothing after), for a
    template with and without {% generation %} markers, also for responses starting with
    whitespace."""
    from teachfit.generation.base import encode_prompts
    from teachfit.prompts import format_prompt

    model_dir = request.getfixturevalue(model)
    records = [{"id": str(i), "instruction": f"what is {i} plus {i} ?", "response": r}
               for i, r in enumerate(WHITESPACE_RESPONSES[:3])]
    trainer = make_sft_trainer(model_dir, records, defaults("sft", method="full"), tmp_path)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    for i, rec in enumerate(records):
        prompt = encode_prompts(tok, [format_prompt(tok, rec["instruction"], fmt="chat")])[0]
        n_prompt = len(prompt)
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert ids[:n_prompt].tolist() == prompt
        assert (labels[:n_prompt] == -100).all(), "prompt tokens must not carry loss"
        supervised = ids[labels != -100]
        assert (labels[labels != -100] == supervised).all()
        expected = tok(rec["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert supervised.tolist() == expected, "the response and EOS, nothing after"
        assert tok.decode(supervised) == rec["response"] + tok.eos_token
        assert (labels[n_prompt + len(expected):] == -100).all()


def test_prepare_scratch_drops_checkpoints_of_other_settings(tiny, train_file, tmp_path):
    fp_a = _fingerprint(defaults("sft"), train_file, tiny)
    fp_b = _fingerprint(defaults("sft", learning_rate=1e-3), train_file, tiny)
    assert _prepare_scratch(tmp_path, fp_a) is None
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert _prepare_scratch(tmp_path, fp_a).endswith("checkpoint-3")
    assert _prepare_scratch(tmp_path, fp_b) is None
    assert not (tmp_path / "checkpoint-3").exists()
    assert json.loads((tmp_path / FINGERPRINT_FILE).read_text()) == fp_b


# --------------------------------------------------------------------------- LoRA training


def test_lora_changes_adapter_not_base_params(tiny, train_file, tmp_path):
    settings = defaults("sft", max_steps=2, save_steps=2, learning_rate=1e-2)
    trainer = make_sft_trainer(tiny, load_sft_records(train_file), settings, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert any("lora_" in n for n in before)
    trainer.train()
    for name, param in trainer.model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad
            if "lora_B" in name:  # lora_A could stay put only if lora_B's grad vanished
                assert not param.detach().equal(before[name]), f"{name} did not change"
        else:
            assert not param.requires_grad
            assert param.detach().equal(before[name]), f"base parameter {name} changed"


def test_lora_run_outputs(lora_run, tiny, train_file):
    out, s = lora_run["out"], lora_run["summary"]
    assert s["steps"] == 6 and s["steps_run"] == 6 and s["start_step"] == 0
    assert s["resumed_from"] is None and s["method"] == "lora"
    assert math.isfinite(s["final_loss"])
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "tokenizer_config.json").is_file()
    assert not out.with_name(f".{out.name}.partial").exists()
    ckpts = json.loads((out / "checkpoints.json").read_text())
    assert [c["step"] for c in ckpts] == [2, 4, 6]
    assert [c["examples_seen"] for c in ckpts] == [8, 16, 24]
    for c in ckpts:
        d = out / c["path"]
        assert (d / "adapter_model.safetensors").is_file() and (d / "tokenizer_config.json").is_file()
        left = {p.name for p in d.iterdir()}
        assert not left & {"optimizer.pt", "scheduler.pt", "training_args.bin"}
        assert not any(n.startswith("rng_state") for n in left)
    assert [c["step"] for c in checkpoint_list(out)] == [2, 4, 6]
    assert all(Path(c["path"]).is_absolute() and Path(c["path"]).is_dir() for c in checkpoint_list(out))
    cfg = json.loads((out / "sft_config.json").read_text())
    assert cfg["settings"] == RUN and cfg["settings"]["lora"]["r"] == 8
    assert cfg["base_model"]["manifest_sha256"] == sha256_file(tiny / MANIFEST)
    assert cfg["train"]["sha256"] == sha256_file(train_file)
    import peft
    import transformers
    import trl

    assert cfg["versions"]["trl"] == trl.__version__
    assert cfg["versions"]["peft"] == peft.__version__
    assert cfg["versions"]["transformers"] == transformers.__version__
    sc = cfg["sft_config"]
    import torch

    assert sc["activation_checkpointing"] is False and sc["use_cpu"] is (not torch.cuda.is_available())
    assert (sc["report_to"], sc["push_to_hub"], sc["bf16"], sc["gradient_checkpointing"], sc["seed"]) == (
        [], False, False, False, 0)
    # the scratch checkpoints are removed after success
    assert not list(lora_run["scratch"].glob("checkpoint-*"))


def test_lora_log_table(lora_run):
    df = pl.read_parquet(lora_run["log"])
    assert df["step"].to_list() == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(x) and x > 0 for x in df["loss"].to_list())
    assert all(math.isfinite(x) for x in df["grad_norm"].to_list())
    assert df["learning_rate"].to_list()[0] == pytest.approx(1e-2)
    assert df["learning_rate"].to_list() == sorted(df["learning_rate"].to_list(), reverse=True)  # cosine decay
    assert df["epoch"].to_list()[-1] == pytest.approx(1.5)  # 6 steps x 4 / 16 examples
    assert not df["restored"].any()
    assert lora_run["summary"]["final_loss"] == pytest.approx(df["loss"][-1])
    # lr 1e-2 on 16 repeated-pattern examples: the loss goes down
    assert df["loss"][-1] < df["loss"][0]


def test_checkpoint_list_errors_name_file_and_entry(lora_run, tmp_path):
    with pytest.raises(DataError, match="not a finished SFT output"):
        checkpoint_list(tmp_path)
    out = tmp_path / "run"
    shutil.copytree(lora_run["out"], out)
    entries = json.loads((out / "checkpoints.json").read_text())
    write_json([*entries, entries[-1]], out / "checkpoints.json")
    with pytest.raises(DataError, match="steps are not unique"):
        checkpoint_list(out)
    write_json([{"step": 1, "examples_seen": 4, "path": "checkpoints/none"}], out / "checkpoints.json")
    with pytest.raises(DataError, match=r"checkpoints.json\[0\].path: .* holds neither"):
        checkpoint_list(out)
    write_json({"step": 1}, out / "checkpoints.json")
    with pytest.raises(DataError, match="expected a non-empty JSON list"):
        checkpoint_list(out)


def test_load_for_inference_lora(lora_run, tiny):
    import torch
    from peft import PeftModel

    model, tok = load_for_inference(lora_run["out"], tiny)
    assert isinstance(model, PeftModel) and tok.padding_side == "left"
    batch = tok(["### Instruction:\nwhat is 1 plus 1 ?\n\n### Response:\n"], return_tensors="pt")
    with torch.no_grad():
        final = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
    early, _ = load_for_inference(checkpoint_list(lora_run["out"])[0]["path"], tiny)
    with torch.no_grad():
        first = early(**batch).logits
    assert not torch.allclose(final, base) and not torch.allclose(final, first)
    last, _ = load_for_inference(checkpoint_list(lora_run["out"])[-1]["path"], tiny)
    with torch.no_grad():
        assert torch.allclose(last(**batch).logits, final)  # checkpoint-6 == final adapter


@pytest.mark.parametrize("method", ["lora", "full"])
def test_completion_loss_matches_trl(tiny, method, tmp_path):
    """The trainer's loss (LM head over the trained positions only) is trl's SFTTrainer loss:
    same value and same gradients on one padded batch (dropout off), with and without
    ``num_items_in_batch``; the batch has prompt and padding positions the head skips."""
    import torch
    from trl import SFTTrainer

    records = [{"id": str(i), "instruction": f"what is {i} plus {i} ?" + " and more" * (i % 3),
                "response": f"the answer is {2 * i} ." * (1 + i % 2)} for i in range(4)]
    trainer = make_sft_trainer(tiny, records, defaults("sft", method=method), tmp_path)
    assert type(trainer).__name__ == "CompletionLossSFTTrainer"
    model = trainer.model
    assert trainer._logit_head(model).split, "the fast path must be the one under test"
    model.eval()  # dropout off: both losses see the same network
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert (batch["attention_mask"] == 0).any() and (batch["labels"] == -100).any()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for n_items in (None, 37):
        grads = []
        losses = []
        for fn in (trainer.compute_loss, lambda m, x, num_items_in_batch: SFTTrainer.compute_loss(
                trainer, m, x, num_items_in_batch=num_items_in_batch)):
            model.zero_grad()
            loss = fn(model, dict(batch), num_items_in_batch=n_items)
            loss.backward()
            losses.append(loss.item())
            grads.append([p.grad.detach().clone() for p in trainable])
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        for mine, ref in zip(*grads):
            assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-6)
    assert trainer._metrics["eval"]["mean_token_accuracy"]


def test_merge_lora_same_function_and_unmerge_restores_base_exactly(lora_run, tiny):
    """merge_lora gives the adapter's logits (float rounding) with plain layers; unmerge_lora
    puts every overwritten base weight back bit for bit, so the next adapter goes onto the
    unchanged base (answer_ifs_run reuses one base over all checkpoints)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok = load_for_inference(lora_run["out"], tiny)
    batch = tok(["what is 1 plus 1 ?", "a longer question about 2 plus 2 ?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**batch).logits
    merged, originals = merge_lora(model)
    assert not isinstance(merged, PeftModel) and originals
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, ref, rtol=1e-4, atol=1e-4)
    restored = unmerge_lora(merged, originals)
    fresh = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    want = fresh.state_dict()
    for name, value in restored.state_dict().items():
        assert torch.equal(value, want[name]), name
    plain, none = merge_lora(fresh)
    assert plain is fresh and none == {}
    with pytest.raises(KeyError, match="no layer 'nope'"):
        unmerge_lora(fresh, {"nope": torch.zeros(1)})


def test_merge_lora_on_tied_embeddings_evaluates_what_was_trained(tiny, train_file, tmp_path):
    """Issue 24 (peft#2972, #2777): LoRA on embed_tokens of the tiny tied llama, 4 steps. Training
    changed the input embedding only; merge_lora unties the head first, so merged == unmerged
    (a merge into the shared tensor changes the output projection too); unmerge_lora restores the
    base bit for bit with the tie."""
    import torch
    from transformers import AutoModelForCausalLM

    sft = {**RUN, "max_steps": 4, "lora": {**RUN["lora"], "target_modules": ["q_proj", "embed_tokens"]}}
    _train(tiny, train_file, tmp_path, sft, threads=1)
    model, tok = load_for_inference(tmp_path / "out", tiny)
    base = model.get_base_model()
    assert base.get_output_embeddings().weight is base.model.embed_tokens.get_base_layer().weight
    batch = tok(["what is 1 plus 1 ?", "a longer question about 2 plus 2 ?"], return_tensors="pt", padding=True)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = model(**batch).logits
        naive = load_for_inference(tmp_path / "out", tiny)[0].merge_and_unload()(**batch).logits
    assert (naive - ref)[real].abs().max() > 1e-2  # the case: peft's plain merge changes the model
    merged, originals = merge_lora(model)
    with torch.no_grad():
        got = merged(**batch).logits
    assert torch.allclose(got[real], ref[real], rtol=1e-4, atol=1e-4)
    assert (got.argmax(-1) == ref.argmax(-1))[real].all()
    assert merged.get_output_embeddings().weight is not merged.get_input_embeddings().weight
    assert merged.config.tie_word_embeddings is False
    restored = unmerge_lora(merged, originals)
    assert restored.get_output_embeddings().weight is restored.get_input_embeddings().weight
    assert restored.config.tie_word_embeddings is True
    want = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).state_dict()
    for name, value in restored.state_dict().items():
        assert torch.equal(value, want[name]), name


# --------------------------------------------------------------------------- resume


def test_resume_after_interruption(tiny, train_file, tmp_path, lora_run, caplog):
    out, scratch, log_path = tmp_path / "out", tmp_path / "scratch", tmp_path / "log.parquet"
    with pytest.raises(Preempted):
        _train(tiny, train_file, tmp_path, RUN, callbacks=[preempt_after_save(4)])
    assert not out.exists() and not log_path.exists(), "a crash must not leave complete-looking outputs"
    assert sorted(p.name for p in scratch.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    with caplog.at_level(logging.INFO, logger="teachfit.training.sft"):
        s = _train(tiny, train_file, tmp_path, RUN)
    assert "resuming from checkpoint-4" in caplog.text
    assert s["resumed_from"] == 4 and s["start_step"] == 4 and s["steps_run"] == 2 and s["steps"] == 6
    df = pl.read_parquet(log_path)
    assert df["step"].to_list() == [1, 2, 3, 4, 5, 6]
    new = df.filter(~pl.col("restored"))
    assert new["step"].to_list() == [5, 6]  # trained in the second run only
    assert set(df["resumed_from"].to_list()) == {4}
    assert [c["step"] for c in checkpoint_list(out)] == [2, 4, 6]
    # same data order, optimizer and RNG state: the resumed run matches the uninterrupted one
    ref = pl.read_parquet(lora_run["log"])
    assert df["loss"].to_list() == pytest.approx(ref["loss"].to_list(), rel=1e-5)
    assert df["learning_rate"].to_list() == pytest.approx(ref["learning_rate"].to_list())


# --------------------------------------------------------------------------- full fine-tuning


def test_full_finetuning(tiny, train_file, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    settings = defaults("sft", method="full", max_steps=2, save_steps=2, learning_rate=1e-3)
    s = _train(tiny, train_file, tmp_path, settings)
    out = tmp_path / "out"
    assert s["steps"] == 2 and s["method"] == "full"
    assert (out / "adapter" / "model.safetensors").is_file() and (out / "adapter" / "config.json").is_file()
    assert not (out / "adapter" / "adapter_config.json").exists()
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file() and not (ckpt / "optimizer.pt").exists()
    base, tuned = load_file(tiny / "model.safetensors"), load_file(out / "adapter" / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert len(changed) == len(base), f"unchanged: {set(base) - set(changed)}"
    model, _ = load_for_inference(out, tiny)
    assert not isinstance(model, PeftModel)
    assert pl.read_parquet(tmp_path / "log.parquet")["step"].to_list() == [1, 2]


# --------------------------------------------------------------------------- GPU


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_lora_bf16_on_gpu(tiny, train_file, tmp_path):
    settings = {**RUN, "bf16": True, "gradient_checkpointing": True}
    s = _train(tiny, train_file, tmp_path, settings)
    assert s["steps"] == 6
    df = pl.read_parquet(tmp_path / "log.parquet")
    assert all(math.isfinite(x) for x in df["loss"].to_list())
    cfg = json.loads((tmp_path / "out" / "sft_config.json").read_text())
    assert cfg["sft_config"]["use_cpu"] is False and cfg["sft_config"]["bf16"] is True
    model, _ = load_for_inference(tmp_path / "out", tiny)
    assert next(model.parameters()).device.type == "cuda"
