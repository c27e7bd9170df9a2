"""Supervised fine-tuning (SFT) of a student model with trl's ``SFTTrainer`` (+ peft LoRA).

One call of :func:`train_sft` trains one student on one instruction-response table:

* the table (Parquet: ``id``, ``instruction``, ``response``) becomes a *conversational
  prompt-completion* dataset (user = instruction, assistant = response); the tokenizer's
  chat template renders it, and the loss is on the completion (response + end-of-turn
  tokens) only (``completion_only_loss=True``). This works with any chat template, also
  ones without ``{% generation %}`` markers (e.g. SmolLM2's), which ``assistant_only_loss``
  would reject.
* the trainer's ``output_dir`` is ``scratch_dir`` (outside Snakemake's declared output):
  it checkpoints there every ``save_steps`` steps and a re-run resumes from the last
  checkpoint, so a failed or preempted job loses at most ``save_steps`` steps.
* the declared ``out_dir`` is built under a temporary name and renamed at the end:
  ``adapter/`` (final LoRA adapter, or full model, + tokenizer), ``checkpoints/checkpoint-N/``
  (weights + tokenizer, without optimizer/scheduler/RNG state), ``checkpoints.json`` and
  ``sft_config.json``. The per-step training log goes to a Parquet table.

Use :func:`load_for_inference` to load the final model or any checkpoint for evaluation and
:func:`checkpoint_list` to enumerate the checkpoints (IFS curves over training).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_parquet, sha256_file, write_json, write_parquet
from teachfit.models import MANIFEST, read_manifest
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)

METHODS = ("lora", "full")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
REQUIRED_COLUMNS = ("id", "instruction", "response")
FINGERPRINT_FILE = "teachfit_sft_fingerprint.json"
# Files of a trainer checkpoint that are only needed to resume training; they are not
# copied into the declared output (the optimizer state alone is 2x the trainable params).
RESUME_ONLY_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin")
RESUME_ONLY_PREFIXES = ("rng_state",)
LOG_COLUMNS = ("loss", "learning_rate", "grad_norm", "entropy", "num_tokens", "mean_token_accuracy")


# --------------------------------------------------------------------------- settings


@dataclass
class SFTSettings:
    """Settings of one SFT run (``config["sft"]``); unknown keys are errors."""

    method: str = field(
        default="lora",
        metadata={"help": "Fine-tuning method: 'lora' (peft LoRA adapter) or 'full' (all weights).",
                  "choices": list(METHODS)},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (method=lora)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (method=lora)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch (method=lora)."})
    lora_target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "Modules that get LoRA adapters: 'all-linear' or a list of module names "
                          "(e.g. ['q_proj', 'v_proj'])."},
    )
    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "Peak learning rate of AdamW. The papers use 2e-5 for full fine-tuning; "
                          "LoRA needs a higher rate (2e-4 default)."},
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Epochs over the training table (ignored when max_steps > 0)."}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Total optimizer steps; -1 = derive from num_train_epochs."}
    )
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Examples per device per micro-batch."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated into one optimizer step."}
    )
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={"help": "Learning-rate schedule (transformers SchedulerType).", "choices": list(SCHEDULERS)},
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_length: int = field(
        default=512, metadata={"help": "Maximum tokens per example (prompt + response); longer ones are truncated."}
    )
    save_steps: int = field(
        default=10,
        metadata={"help": "Checkpoint every N optimizer steps (resume points and the checkpoints kept in "
                          "the output for learning curves); the final step is always saved."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init, data order and dropout."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPU); False on CPU."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Write a training-log row every N steps."})
    version: int = field(
        default=1, metadata={"help": "Semantics version of teachfit.training.sft; bump to re-run after a code change."}
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"sft.method: {self.method!r} not allowed; allowed: {', '.join(METHODS)}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(
                f"sft.lr_scheduler_type: {self.lr_scheduler_type!r} not allowed; allowed: {', '.join(SCHEDULERS)}"
            )
        positive = ("lora_r", "lora_alpha", "learning_rate", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "max_length", "save_steps", "logging_steps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"sft.{name}: must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"sft.lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"sft.warmup_steps: must be >= 0, got {self.warmup_steps!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"sft.max_steps: must be -1 (use epochs) or > 0, got {self.max_steps!r}")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError(f"sft.num_train_epochs: must be > 0 when max_steps = -1, got {self.num_train_epochs!r}")
        if isinstance(self.lora_target_modules, (list, tuple)):
            if not self.lora_target_modules or not all(isinstance(m, str) for m in self.lora_target_modules):
                raise ValueError("sft.lora_target_modules: must be 'all-linear' or a non-empty list of module names")
            self.lora_target_modules = list(self.lora_target_modules)
        elif not isinstance(self.lora_target_modules, str):
            raise ValueError("sft.lora_target_modules: must be 'all-linear' or a list of module names")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SFTSettings:
        return settings_from_dict(cls, d, "sft settings")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step on one device (times the world size when distributed)."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps


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


def to_prompt_completion(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows: user = instruction, assistant = response."""
    return [
        {
            "id": str(r["id"]),
            "prompt": [{"role": "user", "content": r["instruction"]}],
            "completion": [{"role": "assistant", "content": r["response"]}],
        }
        for r in records
    ]


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


def make_sft_config(settings: SFTSettings, scratch_dir: str | Path) -> Any:
    """The trl ``SFTConfig``, with every result-changing default set explicitly."""
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(scratch_dir),
        # optimisation
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=settings.warmup_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.bf16,
        fp16=False,
        # transformers 5.23 renamed it; trl's SFTConfig defaults the old name to True, so set both
        activation_checkpointing=settings.gradient_checkpointing,
        gradient_checkpointing=settings.gradient_checkpointing,
        # data
        max_length=settings.max_length,
        packing=False,
        completion_only_loss=True,
        assistant_only_loss=False,
        dataset_num_proc=None,
        dataloader_num_workers=0,
        # logging and checkpoints
        logging_strategy="steps",
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=None,
        save_only_model=False,
        eval_strategy="no",
        report_to="none",
        push_to_hub=False,
        use_cpu=not cuda,
    )


def make_sft_trainer(
    model_dir: str | Path,
    records: list[dict[str, Any]],
    settings: SFTSettings,
    scratch_dir: str | Path,
    callbacks: list[Any] | None = None,
) -> Any:
    """Build the ``SFTTrainer`` (model, tokenizer, LoRA config, prepared dataset)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    args = make_sft_config(settings, scratch_dir)
    set_seed(settings.seed)  # before the model: peft initialises LoRA A randomly
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not tokenizer.chat_template:
        raise DataError(
            f"{model_dir}: tokenizer has no chat template; materialize the model with "
            "teachfit.models.materialize (it adds teachfit.models.DEFAULT_CHAT_TEMPLATE to base models)"
        )
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # float32 master weights; bf16=True means autocast mixed precision, not bf16 weights
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)

    peft_config = None
    if settings.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=settings.lora_target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )

    dataset = Dataset.from_list(to_prompt_completion(records))
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )


# --------------------------------------------------------------------------- helpers


def _fingerprint(settings: SFTSettings, train_path: Path, model_dir: Path) -> dict[str, Any]:
    """What a resumable checkpoint in scratch must match (settings, data, base model)."""
    return {
        "settings": settings.to_dict(),
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
    model_dir: str | Path,
    train_path: str | Path,
    out_dir: str | Path,
    settings: dict[str, Any],
    scratch_dir: str | Path,
    log_table_path: str | Path,
    threads: int = 1,
    callbacks: list[Any] | None = None,
    clean_scratch: bool = True,
) -> dict[str, Any]:
    """Fine-tune the materialized model in ``model_dir`` on ``train_path``; see module doc.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (tests use one to
    simulate a preemption). With ``clean_scratch`` the checkpoints in ``scratch_dir`` are
    removed after a successful run (everything later stages need is in ``out_dir``).
    Returns a summary: steps, final_loss, train_loss, seconds, resumed_from, ...
    """
    import torch

    t0 = time.time()
    cfg = SFTSettings.from_dict(settings)
    model_dir, train_path = Path(model_dir), Path(train_path)
    out_dir, scratch_dir = Path(out_dir), Path(scratch_dir)
    manifest = read_manifest(model_dir)
    records = load_sft_records(train_path)
    if threads and threads > 0 and not torch.cuda.is_available():
        torch.set_num_threads(threads)

    fingerprint = _fingerprint(cfg, train_path, model_dir)
    resume = _prepare_scratch(scratch_dir, fingerprint)
    resumed_from = _step_of(resume) if resume else None
    if resume:
        log.info("resuming from checkpoint-%d (%s)", resumed_from, resume)
    else:
        log.info("training from scratch: %d examples, %s, output %s", len(records), cfg.method, out_dir)

    recorder = _run_recorder()
    trainer = make_sft_trainer(model_dir, records, cfg, scratch_dir, callbacks=[recorder, *(callbacks or [])])
    log.info("SFTConfig: %s", trainer.args.to_json_string())
    n_train = len(trainer.train_dataset)
    if n_train < len(records):
        log.warning("%d of %d examples dropped: their prompt fills max_length=%d, leaving no response token",
                    len(records) - n_train, len(records), cfg.max_length)
    result = trainer.train(resume_from_checkpoint=resume)
    steps = int(trainer.state.global_step)
    effective_batch = cfg.effective_batch_size * int(trainer.args.world_size)

    # ---- assemble the declared output under a temporary name
    tmp_dir = out_dir.with_name(f".{out_dir.name}.partial")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
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

    history = trainer.state.log_history
    logged = [e for e in history if "loss" in e]
    final_loss = float(logged[-1]["loss"]) if logged else math.nan
    settings_hash = content_id(cfg.to_dict(), n=12)
    write_json(
        {
            "settings": cfg.to_dict(),
            "settings_hash": settings_hash,
            "loss_mask": "completion_only (conversational prompt-completion; prompt tokens labelled -100)",
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
    write_parquet(table, log_table_path)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_dir.rename(out_dir)

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
        "method": cfg.method,
    }
    log.info("SFT done: %s", summary)
    return summary


def checkpoint_list(out_dir: str | Path) -> list[dict[str, Any]]:
    """The checkpoints of a finished run: [{step, examples_seen, path (absolute)}], by step."""
    out_dir = Path(out_dir)
    path = out_dir / "checkpoints.json"
    if not path.exists():
        raise DataError(f"{out_dir}: not a finished SFT output (no checkpoints.json)")
    entries = json.loads(path.read_text())
    return sorted(
        ({**e, "path": str((out_dir / e["path"]).resolve())} for e in entries), key=lambda e: e["step"]
    )


def load_for_inference(path: str | Path, base_model_dir: str | Path, dtype: str = "float32",
                       device: str | None = None) -> tuple[Any, Any]:
    """Load an SFT output dir, its ``adapter/`` or a checkpoint as ``(model, tokenizer)``.

    LoRA weights are not merged: a LoRA run gives a ``peft.PeftModel`` over the base model
    in ``base_model_dir``; a full fine-tuning run gives the fine-tuned model itself. The
    tokenizer is left-padded for batched generation.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from teachfit.models import load_tokenizer

    path = Path(path)
    if (path / "checkpoints.json").exists():
        path = path / "adapter"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=getattr(torch, dtype))
        model = PeftModel.from_pretrained(base, str(path))
    elif (path / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    else:
        raise DataError(f"{path}: neither a LoRA adapter (adapter_config.json) nor a model (config.json)")
    tok_dir = path if (path / "tokenizer_config.json").exists() else Path(base_model_dir)
    tokenizer = load_tokenizer(tok_dir, padding_side="left")
    model.to(device)
    model.eval()
    return model, tokenizer
