"""The validity gate's judge: two calibrated yes/no questions to the evolver study's judge model.

The judge (:class:`GateJudge`) is the evolver study's judge model (``evolver.judge``) through
:func:`teachfit.scoring.label_judge.label_scorer`: two yes/no questions, few-shot, whose
probabilities are calibrated by contextual calibration (Zhao et al. 2021, "Calibrate Before
Use"; reference tonyzhaozh/few-shot-learning ``run_classification.py``: the label
probabilities of the content-free inputs "N/A", "" and "[MASK]" are averaged and divided out).
A content-free input then scores exactly 0.5; a reply is dropped when its calibrated
probability of "yes" is below ``evolver.gate.threshold`` (default 0.5: less evidence for a
task, or for a gain, than a content-free input gives).

The judge is asked only where the text checks (:mod:`teachfit.studies.evolver.gate_checks`)
leave a question open: a text without a task cue (``not_instruction``) and a borderline gain
(``no_gain`` with one or two new content words).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from teachfit.scoring.label_judge import first_label_share, label_scorer

LABEL_WORDS = ("yes", "no")
CONTENT_FREE = ("N/A", "", "[MASK]")

_REQUEST_INTRO = (
    "Each text below was written as a task for an AI assistant. Answer yes if the text asks the "
    "assistant to do something or asks it a question. Answer no if it is only a statement, a fact, an "
    "answer, a list of tips or a fragment.\n\n"
)
_REQUEST_SHOTS = (
    ("Describe how a rainbow forms, in two short paragraphs.", "yes"),
    ("Rainbows form when sunlight is bent inside raindrops.", "no"),
    ("Which planet in our solar system has the longest day?", "yes"),
    ("1. Drink more water. 2. Sleep eight hours. 3. Walk every day.", "no"),
)
_GAIN_INTRO = (
    "Each pair below shows an original task and a rewritten task. Answer yes if the rewritten task asks "
    "for more than the original: an extra requirement, more depth, more specific details, or a new "
    "topic. Answer no if it asks for the same thing or less.\n\n"
)
_GAIN_SHOTS = (
    ("Write a poem about the sea.", "Write a poem about the sea in which every stanza ends with the word salt.",
     "yes"),
    ("List three fruits.", "List three fruits.", "no"),
    ("Explain how vaccines work.", "Explain how mRNA vaccines train the immune system, step by step.", "yes"),
    ("Give two tips for sleeping well.", "Give tips for sleeping.", "no"),
)


def request_prompt(text: str) -> str:
    """Few-shot yes/no prompt: is ``text`` a task or question (yes) or not (no)? Ends in ``Request:``."""
    shots = "".join(f"Text: {t}\nRequest: {a}\n\n" for t, a in _REQUEST_SHOTS)
    return f"{_REQUEST_INTRO}{shots}Text: {text.strip()}\nRequest:"


def gain_prompt(parent: str, text: str) -> str:
    """Few-shot yes/no prompt: does ``text`` ask for more than ``parent``? Ends in ``More:``."""
    shots = "".join(f"Original: {p}\nRewritten: {t}\nMore: {a}\n\n" for p, t, a in _GAIN_SHOTS)
    return f"{_GAIN_INTRO}{shots}Original: {parent.strip()}\nRewritten: {text.strip()}\nMore:"


def contextual_calibration(p_yes: np.ndarray, p_cf_yes: float) -> np.ndarray:
    """Calibrated P(yes) of a two-label judge (Zhao et al. 2021, diagonal W, b = 0).

    ``p_yes``: P(yes) renormalised over the two labels, shape ``[n]``; ``p_cf_yes``: the mean
    P(yes) of the content-free inputs. ``q ∝ (p / p_cf, (1-p) / (1-p_cf))``, renormalised, so
    a content-free input maps to 0.5. Reference: tonyzhaozh/few-shot-learning
    ``run_classification.py`` (``get_p_content_free``, ``eval_accuracy`` with ``diagonal_W``).
    """
    p = np.clip(np.asarray(p_yes, dtype=np.float64), 1e-9, 1 - 1e-9)
    cf = float(np.clip(p_cf_yes, 1e-9, 1 - 1e-9))
    yes, no = p / cf, (1 - p) / (1 - cf)
    return yes / (yes + no)


class GateJudge:
    """The judge's two calibrated questions over a ``score_fn(prompts, words) -> [n, 2]`` (label
    probabilities, :func:`teachfit.scoring.label_judge.label_scorer`)."""

    def __init__(self, score_fn: Callable[[list[str], Sequence[str]], Any]) -> None:
        self.score_fn = score_fn
        self._cf: dict[str, float] = {}

    def _p_yes(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros(0)
        return first_label_share(self.score_fn(prompts, list(LABEL_WORDS)), len(prompts))

    def _content_free(self, kind: str) -> float:
        if kind not in self._cf:
            prompts = ([request_prompt(c) for c in CONTENT_FREE] if kind == "request"
                       else [gain_prompt(c, c) for c in CONTENT_FREE])
            self._cf[kind] = float(np.mean(self._p_yes(prompts)))
        return self._cf[kind]

    def is_request(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated P(the text is a task or question), shape ``[len(texts)]``."""
        if not texts:
            return np.zeros(0)
        return contextual_calibration(self._p_yes([request_prompt(t) for t in texts]), self._content_free("request"))

    def has_gain(self, parents: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Calibrated P(the text asks for more than its parent), shape ``[len(texts)]``."""
        if not texts:
            return np.zeros(0)
        raw = self._p_yes([gain_prompt(p, t) for p, t in zip(parents, texts)])
        return contextual_calibration(raw, self._content_free("gain"))

    @property
    def content_free(self) -> dict[str, float]:
        """Mean content-free P(yes) of each question asked so far."""
        return dict(self._cf)


def judge_factory(judge_dir: str | Path, backend: Mapping[str, Any], threads: int | None) -> Callable[[], GateJudge]:
    """A zero-argument factory of the :class:`GateJudge` over ``judge_dir`` with engine settings
    ``backend`` (loaded only when called: a round without open questions never loads the model)."""
    def make() -> GateJudge:
        return GateJudge(label_scorer(judge_dir, dict(backend), int(backend["batch_size"]), threads))

    return make
