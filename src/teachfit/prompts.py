"""Prompt formatting: turn an instruction into the exact string a model is given.

Three formats (``fmt``):

* ``chat``    – the tokenizer's chat template (``apply_chat_template`` with
  ``add_generation_prompt=True``); few-shot pairs become earlier user/assistant turns.
* ``raw``     – the instruction as-is, or ``raw_template.format(instruction=...)``.
* ``fewshot`` – plain-text few-shot prompt for base models, using the same
  ``### Instruction:`` / ``### Response:`` markers as
  :data:`teachfit.models.DEFAULT_CHAT_TEMPLATE`; pair it with
  :func:`stop_strings` so a base model stops before inventing the next turn.

Backends receive the formatted strings; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FORMATS = ("chat", "raw", "fewshot")

INSTRUCTION_MARKER = "### Instruction:\n"
RESPONSE_MARKER = "### Response:\n"
# A base model prompted in the few-shot format tends to continue with a new
# "### Instruction:" block; these cut it off there.
FEWSHOT_STOPS = ("\n### Instruction", "### Instruction:")


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"prompt format {fmt!r} is not known; allowed: {', '.join(FORMATS)}")


def _fewshot_block(question: str, answer: str) -> str:
    return f"{INSTRUCTION_MARKER}{question}\n\n{RESPONSE_MARKER}{answer}\n\n"


def format_prompt(
    tokenizer: Any,
    instruction: str,
    fmt: str = "chat",
    system: str | None = None,
    fewshot: Sequence[tuple[str, str]] = (),
    raw_template: str | None = None,
) -> str:
    """Format one instruction as a generation prompt.

    ``tokenizer`` is only used by ``fmt="chat"`` (it may be ``None`` otherwise).
    ``system`` is a system turn for ``chat`` and a leading paragraph for
    ``fewshot`` (as in the default chat template); ``raw`` accepts neither
    ``system`` nor ``fewshot`` (put them into ``raw_template`` instead).
    """
    _check_fmt(fmt)
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
    pairs = [tuple(p) for p in fewshot]
    for i, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise ValueError(f"fewshot[{i}] must be a (question, answer) pair of strings, got {pair!r}")

    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "prompt format 'chat' needs a tokenizer with a chat template; this one has none "
                "(materialize the model through teachfit.models, which adds a default template, "
                "or use fmt 'fewshot' / 'raw')"
            )
        messages: list[dict[str, str]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        for q, a in pairs:
            messages.append({"role": "user", "content": q})
            messages.append({"role": "assistant", "content": a})
        messages.append({"role": "user", "content": instruction})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if not isinstance(text, str):  # defensive: some versions return a list for batches
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text

    if fmt == "raw":
        if system is not None or pairs:
            raise ValueError(
                "prompt format 'raw' takes neither 'system' nor 'fewshot'; "
                "write them into raw_template instead"
            )
        if raw_template is None:
            return instruction
        if "{instruction}" not in raw_template:
            raise ValueError(f"raw_template must contain '{{instruction}}'; got {raw_template!r}")
        return raw_template.format(instruction=instruction)

    # fewshot
    head = f"{system}\n\n" if system is not None else ""
    shots = "".join(_fewshot_block(q, a) for q, a in pairs)
    return f"{head}{shots}{INSTRUCTION_MARKER}{instruction}\n\n{RESPONSE_MARKER}"


def stop_strings(fmt: str, extra: Sequence[str] = ()) -> list[str]:
    """Stop strings to use with a prompt format: `FEWSHOT_STOPS` for ``fewshot``,
    none for ``chat``/``raw`` (those end at EOS); ``extra`` is appended (deduplicated)."""
    _check_fmt(fmt)
    out = list(FEWSHOT_STOPS) if fmt == "fewshot" else []
    for s in extra:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        if s not in out:
            out.append(s)
    return out
