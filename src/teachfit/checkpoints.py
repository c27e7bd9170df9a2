"""A finished SFT run read back for inference: its final model, its checkpoints, LoRA merged.

The reader side of :func:`teachfit.training.sft.train_sft`'s output (``<sft_dir>/adapter``,
``checkpoints/checkpoint-N/``, ``checkpoints.json``). Evaluation, IFS curves and win rates
import this module, never the training code. Heavy imports (torch, transformers, peft) happen
inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from teachfit.io import DataError, read_json
from teachfit.logs import timed
from teachfit.models import default_device, device_placement, load_pretrained, load_tokenizer


def final_model_dir(sft_dir: str | Path) -> Path:
    """``<sft_dir>/adapter``: the final LoRA adapter or fully fine-tuned model of a finished run.

    Raises :class:`DataError` when ``sft_dir`` is not a finished :func:`train_sft` output.
    """
    sft_dir = Path(sft_dir)
    if not (sft_dir / "checkpoints.json").is_file():
        raise DataError(f"{sft_dir}: not a finished SFT output (no checkpoints.json)")
    return sft_dir / "adapter"


def checkpoint_list(sft_dir: str | Path) -> list[dict[str, Any]]:
    """The checkpoints of a finished run, read from ``<sft_dir>/checkpoints.json``.

    Returns ``[{step, examples_seen, path}]`` sorted by step, ``path`` made absolute (a LoRA
    adapter folder with ``adapter_config.json`` or a full model with ``config.json``). The one
    reader of ``checkpoints.json`` (evaluation, IFS curves, win rates). Raises
    :class:`DataError` naming the file and entry when it is missing, not a list, an entry lacks
    ``step`` / ``examples_seen`` / ``path``, a path holds no adapter or model, or two entries
    share a step.
    """
    sft_dir = Path(sft_dir)
    src = sft_dir / "checkpoints.json"
    if not src.is_file():
        raise DataError(f"{sft_dir}: not a finished SFT output (no checkpoints.json)")
    entries = read_json(src)
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{src}: expected a non-empty JSON list of {{step, examples_seen, path}}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"step", "examples_seen", "path"} <= set(entry):
            raise DataError(f"{src}[{i}]: needs keys 'step', 'examples_seen' and 'path', got {entry!r}")
        path = (sft_dir / entry["path"]).resolve()
        if not ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
            raise DataError(f"{src}[{i}].path: {path} holds neither a PEFT adapter "
                            "(adapter_config.json) nor a model (config.json)")
        out.append({**entry, "path": str(path)})
    steps = [e["step"] for e in out]
    if len(set(steps)) != len(steps):
        raise DataError(f"{src}: steps are not unique: {steps}")
    return sorted(out, key=lambda e: e["step"])


def load_for_inference(path: str | Path, base_model_dir: str | Path, dtype: str = "float32",
                       device: str | None = None, base: Any = None) -> tuple[Any, Any]:
    """Load an SFT output dir, its ``adapter/`` or a checkpoint as ``(model, tokenizer)``.

    LoRA weights are not merged here (:func:`merge_lora` merges them for inference): a LoRA run
    gives a ``peft.PeftModel`` over the base model in ``base_model_dir``; a full fine-tuning run
    gives the fine-tuned model itself. The
    tokenizer (the checkpoint's own if it saved one, else the base model's) is left-padded
    for batched generation. ``device`` defaults to :func:`teachfit.models.default_device`.
    ``base``: an already loaded copy of the base model (in ``dtype``, no adapter attached, e.g.
    the previous checkpoint's merged model after :func:`unmerge_lora`) that a LoRA adapter is attached
    to instead of reading the base from disk again; ignored for a full model.
    Raises :class:`DataError` when ``path`` holds neither an adapter nor a model.
    """
    path = Path(path)
    if (path / "checkpoints.json").exists():
        path = final_model_dir(path)
    placement = device_placement(device)  # several GPUs: accelerate's device_map
    with timed("model_load"):
        if (path / "adapter_config.json").exists():
            from peft import PeftModel

            if base is None:
                base = load_pretrained("AutoModelForCausalLM", base_model_dir, dtype=dtype, **placement)
            model = PeftModel.from_pretrained(base, str(path))
        elif (path / "config.json").exists():
            model = load_pretrained("AutoModelForCausalLM", path, dtype=dtype, trust_from=base_model_dir, **placement)
        else:
            raise DataError(f"{path}: neither a LoRA adapter (adapter_config.json) nor a model (config.json)")
        tok_dir = path if (path / "tokenizer_config.json").exists() else Path(base_model_dir)
        tokenizer = load_tokenizer(tok_dir, padding_side="left")
        if not placement:
            model.to(default_device(device))
    model.eval()
    return model, tokenizer


def merge_lora(model: Any) -> tuple[Any, dict[str, Any]]:
    """Merge a ``peft.PeftModel``'s LoRA weights into its base layers for inference.

    Returns ``(merged, originals)``: ``merged`` is the plain base model whose LoRA-wrapped
    layers now hold ``W + scaling * B @ A`` (peft ``merge_and_unload``), ``originals`` maps each
    such layer's name (relative to the base model, e.g. ``model.layers.0.self_attn.q_proj``) to
    a copy of the weight the merge overwrote, so that :func:`unmerge_lora` gives the base model
    back bit for bit. A model that is not a ``PeftModel`` is returned unchanged with ``{}``.

    Tied embeddings: when the adapter targets a layer whose weight the output head shares
    (``embed_tokens`` with ``tie_word_embeddings``), training changed the input side only; the
    head is untied first (its own copy of the base weight, ``tie_word_embeddings`` False, entry
    ``originals[<head name>] = None``), so the merged model computes what was trained
    (``tests/test_sft.py::test_merge_lora_on_tied_embeddings_*``); merging into the shared
    tensor would change the output projection as well (peft#2972, #2777).

    Why: an unmerged adapter adds two small matmuls and peft's Python wrapper to every adapted
    layer in every forward pass; merged, a decode step of gemma-3-270m (batch 16, one thread)
    took 262 ms instead of 339 ms. The outputs are the same function of the input up to float
    rounding (``tests/test_sft.py::test_merge_lora_*``: logits within 1e-4 of the unmerged
    adapter's; all 258 greedy IFS answers of a default-run gemma-3-270m LoRA run identical,
    docs/engines.md).
    """
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(model, PeftModel):
        return model, {}
    inner = model.get_base_model()
    originals: dict[str, Any] = {name: module.get_base_layer().weight.detach().clone()
                                 for name, module in inner.named_modules() if isinstance(module, LoraLayer)}
    head_name, head = _tied_head(inner, LoraLayer)
    if head is not None:
        # The adapter changed the input embedding only (the unmerged model's output head reads
        # the base weight): the head gets its own copy of the base weight before the merge
        # writes W + BA into the shared tensor (peft#2972, #2777), and the config says untied
        with torch.no_grad():
            head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        _set_tied(inner, False)
        originals[head_name] = None
    merged = model.merge_and_unload()
    merged.eval()
    return merged, originals


def _tied_head(model: Any, lora_layer: type) -> tuple[str, Any]:
    """``(name, module)`` of ``model``'s output head when its weight is the very tensor of a
    LoRA-wrapped layer's base weight (tied input/output embeddings with ``embed_tokens``
    targeted), else ``("", None)``."""
    head = model.get_output_embeddings()
    if head is None or isinstance(head, lora_layer) or getattr(head, "weight", None) is None:
        return "", None
    ptr = head.weight.data_ptr()
    if not any(isinstance(m, lora_layer) and m.get_base_layer().weight.data_ptr() == ptr
               for m in model.modules()):
        return "", None
    name = next(n for n, m in model.named_modules() if m is head)
    return name, head


def _set_tied(model: Any, tied: bool) -> None:
    """Set ``tie_word_embeddings`` wherever the model's config (and its text config) carries it."""
    configs = {id(c): c for c in (model.config, model.config.get_text_config())}
    for cfg in configs.values():
        if hasattr(cfg, "tie_word_embeddings"):
            cfg.tie_word_embeddings = tied


def unmerge_lora(model: Any, originals: Mapping[str, Any]) -> Any:
    """Undo :func:`merge_lora`: copy ``originals`` (layer name -> weight) back into ``model``
    (the merged plain model) in place and return it: the base model exactly as it was loaded,
    ready for the next adapter. An entry whose weight is ``None`` is an output head that
    :func:`merge_lora` untied: it shares the input embedding's tensor again and the config says
    tied again. Raises ``KeyError`` naming a layer ``model`` does not have."""
    import torch

    with torch.no_grad():
        for name, weight in originals.items():
            try:
                module = model.get_submodule(name)
            except AttributeError as exc:
                raise KeyError(f"unmerge_lora: the model has no layer {name!r}") from exc
            if weight is not None:
                module.weight.copy_(weight)
        for name, weight in originals.items():
            if weight is None:
                model.get_submodule(name).weight = model.get_input_embeddings().weight
                _set_tied(model, True)
    return model
