"""The generation protocol every backend implements, its settings and the helpers they share.

Nothing here imports another ``teachfit.generation`` module (no import cycles): the backends
(:mod:`~teachfit.generation.hf` transformers, :mod:`~teachfit.generation.vllm` vLLM,
:mod:`~teachfit.generation.openai` OpenAI-compatible endpoints) import this module, and
:mod:`~teachfit.generation.engines` builds them (lazily) from one :class:`BackendConfig`.

A backend takes already formatted prompt strings (see :mod:`teachfit.prompts`) and returns one
list of ``sampling.n`` :class:`Completion` per prompt, in input order.

Sampling semantics (every backend):

* ``temperature == 0`` is greedy decoding; ``n > 1`` then is an error (``n``
  identical copies would silently fake diversity).
* sampling = softmax(logits / temperature) restricted to the top-p nucleus; no
  top-k, no repetition penalty (the model's ``generation_config`` is ignored, so
  results do not depend on defaults shipped with a checkpoint).
* each sampled row is seeded from the run seed and its own prompt (:func:`row_seed`), so a
  prompt's samples do not depend on which other prompts share its batch.
* a completion ends at an EOS token (``finish_reason="stop"``, EOS not returned),
  at the first stop string (text cut before it, ``"stop"``), or after
  ``max_new_tokens`` tokens (``"length"``). The EOS tokens are the same set for every local
  engine (:func:`eos_token_ids`: the tokenizer's, ``config.json``'s and
  ``generation_config.json``'s).
* a prompt longer than the engine's context minus ``max_new_tokens`` is cut from the left
  (:func:`fit_prompts`); ``Completion.prompt_tokens_cut`` counts the removed tokens (never a
  failed batch).
* ``top1_logprobs[i]`` = max over the vocabulary of log softmax(raw logits) at
  generated position ``i`` (nats; temperature/top-p not applied); for greedy decoding
  this is the chosen token's log-probability.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from teachfit.io import content_id
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm", "openai")
DTYPES = ("float32", "bfloat16", "float16")  # compute dtypes of the local engines (= models.*.dtype)
FINISH_REASONS = ("stop", "length")
# bump when the semantics of generated rows change (2: rows carry n_prompt_tokens_cut)
GENERATION_VERSION = 2


# --------------------------------------------------------------------------- settings


@dataclass
class SamplingConfig:
    """How to decode one batch of prompts (``temperature == 0`` means greedy).

    ``max_new_tokens`` has no default: every caller has a configured value for it
    (``generators.<name>.max_new_tokens``, ``evolver.max_new_tokens``, ``ifs.prompts.max_new_tokens``,
    ...). The other fields default to "off" (greedy, no nucleus, one completion, no stop strings,
    no log-probabilities): the decoder's neutral values, which callers that decode greedily by
    design (win-rate and IFS answers) rely on. Rule ``generate_responses`` passes every
    sampling key of the validated generator entry, so the schema's generator defaults are the
    ones a run uses. Raises ``ValueError`` naming the field on a bad value.
    """

    max_new_tokens: int = field(metadata={"help": "Maximum generated tokens per completion."})
    temperature: float = field(default=0.0, metadata={"help": "Softmax temperature; 0 = greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; 1 = off."})
    n: int = field(default=1, metadata={"help": "Completions per prompt (needs temperature > 0 when > 1)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed; each prompt derives its own stream."})
    stop: list[str] = field(default_factory=list,
                            metadata={"help": "Stop strings; the text is cut before the first one."})
    logprobs: bool = field(default=False,
                           metadata={"help": "Return the top-1 log-probability at each generated position."})

    def __post_init__(self) -> None:
        self.temperature = float(self.temperature)
        self.top_p = float(self.top_p)
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        for name in ("n", "max_new_tokens", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"sampling.{name} must be an integer, got {value!r}")
        if self.n < 1:
            raise ValueError(f"sampling.n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.seed < 0:
            raise ValueError(f"sampling.seed must be >= 0, got {self.seed}")
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError(
                f"sampling.n = {self.n} with temperature 0 (greedy) would return {self.n} identical "
                "completions; set temperature > 0 or n = 1"
            )
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop)
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"sampling.stop entries must be non-empty strings, got {s!r}")
        if not isinstance(self.logprobs, bool):
            raise ValueError(f"sampling.logprobs must be true or false, got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SamplingConfig:
        return settings_from_dict(cls, d, "sampling")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    """One generated continuation of one prompt."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or stop string) | "length"
    top1_logprobs: list[float] | None = None
    # tokens cut from the left of the prompt to fit the context (fit_prompts); None = unknown
    # (an API endpoint, which tokenizes on the server)
    prompt_tokens_cut: int | None = 0


@runtime_checkable
class Backend(Protocol):
    def generate(
        self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate"
    ) -> list[list[Completion]]:
        """One list of ``sampling.n`` completions per prompt, in input order."""
        ...


# --------------------------------------------------------------------------- shared helpers


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of already-formatted prompts.

    Special tokens (BOS) are added by the tokenizer unless the prompt text already
    starts with the BOS token (chat templates usually write it), so no prompt gets
    two BOS tokens. Both backends use this, so they see identical token ids.
    """
    bos = getattr(tokenizer, "bos_token", None)
    out: list[list[int]] = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] must be a str, got {type(p).__name__}")
        add_special = not (bos and p.startswith(bos))
        ids = list(tokenizer(p, add_special_tokens=add_special)["input_ids"])
        if not ids:
            if tokenizer.bos_token_id is None:
                raise ValueError(f"prompts[{i}] is empty and the tokenizer has no BOS token to start from")
            ids = [tokenizer.bos_token_id]
        out.append(ids)
    return out


def fit_prompts(encoded: list[list[int]], max_length: int | None, max_new_tokens: int,
                where: str) -> tuple[list[list[int]], list[int]]:
    """Cut prompts from the left so that prompt + ``max_new_tokens`` fits ``max_length`` tokens.

    ``encoded``: token ids per prompt; ``max_length``: the engine's context length in tokens
    (``None``: no limit); ``where`` names the engine / model in messages. Returns the fitted
    ids and, per prompt, how many tokens were removed (0 = untouched). Cutting from the left
    keeps the end of the prompt (the instruction's last words and the assistant turn start),
    as the transformers backend always did; one warning counts the cut prompts. Raises
    ``ValueError`` when ``max_new_tokens`` alone leaves no room for a prompt. Every local
    backend uses this, so a too-long prompt never fails a batch or a shard.
    """
    if not max_length:
        return encoded, [0] * len(encoded)
    budget = int(max_length) - int(max_new_tokens)
    if budget < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt within "
            f"max_length={max_length} ({where})"
        )
    cut = [max(0, len(ids) - budget) for ids in encoded]
    n_cut = sum(c > 0 for c in cut)
    if n_cut:
        first = next(i for i, c in enumerate(cut) if c)
        log.warning("%s: %d of %d prompt(s) longer than %d tokens (context %d - max_new_tokens %d) "
                    "were cut from the left (first: #%d, %d tokens removed)", where, n_cut, len(encoded),
                    budget, max_length, max_new_tokens, first, cut[first])
    return [ids[c:] for ids, c in zip(encoded, cut, strict=True)], cut


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def row_seed(seed: int, prompt_ids: Sequence[int], sample_idx: int) -> int:
    """Seed of one sampled row, derived from the run seed and the prompt itself."""
    return int(content_id(seed, list(prompt_ids), sample_idx, n=15), 16)


def eos_token_ids(tokenizer: Any, model_config: Any = None, generation_config: Any = None) -> set[int]:
    """All token ids that end a completion: the tokenizer's EOS, ``config.json``'s
    ``eos_token_id`` (``model_config``) and ``generation_config.json``'s (an int or a list).
    Both local backends stop on exactly this set (vLLM gets it as ``stop_token_ids``)."""
    ids: set[int] = set()
    for src in (generation_config, model_config):
        value = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def model_fingerprint(model_dir: Path) -> str:
    """Identity of a model directory for shard keys: its manifest's file hashes if present."""
    manifest = model_dir / "teachfit_model.json"
    if manifest.exists():
        try:
            files = json.loads(manifest.read_text()).get("files_sha256", {})
            return content_id(files)
        except (OSError, json.JSONDecodeError):
            pass
    return str(model_dir.resolve())
