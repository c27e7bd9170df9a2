"""Arena-Hard v0.1 judging (protocol ``arena_hard``): pairwise verdicts against a baseline's
answers and the Arena-Hard win rate.

Conventions of Arena-Hard-Auto v0.1 (lmarena/arena-hard-auto, v0.1-era ``config/judge_config.yaml``,
``gen_judgment.py``, ``show_result.py``, ``utils.py``), reproduced here:

* The judge gets a system prompt (write your own answer first, then compare; helpful, relevant,
  concise, creative, missing information) and a user turn with the user prompt and the answers
  of assistants A and B; it must end with one of five verdict labels ``[[A>>B]]``, ``[[A>B]]``,
  ``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``. Temperature 0, up to 4096 new tokens
  (``judge_max_new_tokens``).
* Two games per question: game 1 shows the baseline as A and the model as B, game 2 the model as A
  and the baseline as B.
* Parsing (``get_score``): every match of ``\\[\\[([AB<>=]+)\\]\\]`` in the judgment; no match →
  the judge is asked to "continue your judgment and finish by outputting a final verdict label"
  (two attempts in all, the judgment text accumulating ``"\\n" + reply``); more than one distinct
  match → no verdict, no retry.
* Scoring (``show_result.py``): each game is a battle between the baseline and the model; a tie
  ``A=B`` scores 1/2, a strict ``>`` one win, ``>>`` a win counted 3 times (``--weight 3``); a game
  without a valid label (none of the five) has weight 0: it is dropped and counted
  (``n_invalid_games``). The Bradley-Terry fit against the single baseline gives the model's win
  rate against it; with one baseline the battles form a star, the fit decouples and the win rate
  equals the weighted share of wins, ``(wins + ties / 2) / games`` with ``>>`` counted 3 times
  (:func:`arena_hard_score`; tests check it against a logistic-regression BT fit). The 95 %
  interval comes from 100 bootstrap resamples of the battles (2.5 / 97.5 percentiles, seeded).

The system prompt is written in our own words (Arena-Hard's text is not copied); the verdict
labels, the user-turn layout and the continuation request are Arena-Hard's conventions. A
benchmark's ``judge_prompt`` file can supply the official text
(:func:`teachfit.evaluation.winrate_judges.load_judge_prompt`; ``{instruction}``, ``{output_1}`` = A,
``{output_2}`` = B). Rates are fractions in [0, 1] (Arena-Hard prints percentages). Lengths are
characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from teachfit.evaluation.winrate_judges import Conversation, render

VERDICT_PATTERN = re.compile(r"\[\[([AB<>=]+)\]\]")
# label -> (score of assistant A, weight): A>>B is a win of A counted `STRONG_WEIGHT` times
STRONG_WEIGHT = 3
LABELS = {"A>>B": (1.0, STRONG_WEIGHT), "A>B": (1.0, 1), "A=B": (0.5, 1), "B>A": (0.0, 1),
          "B>>A": (0.0, STRONG_WEIGHT)}
JUDGE_TEMPERATURE = 0.0
JUDGMENT_ATTEMPTS = 2
BOOTSTRAP_ROUNDS = 100
CONTINUE_PROMPT = "continue your judgment and finish by outputting a final verdict label"

SYSTEM_PROMPT = (
    "You are an impartial judge. You will see a user prompt and the answers that two AI assistants, "
    "A and B, gave to it. Your task is to decide which of the two answers is better.\n\n"
    "Start by writing your own answer to the prompt, before you judge the assistants' answers.\n\n"
    "Then compare each assistant's answer with yours. Point out and correct any mistakes or "
    "inaccurate statements.\n\n"
    "Next, judge whether each answer is helpful, relevant and concise. Helpful: it answers the prompt "
    "correctly or does what it asks; when the prompt is ambiguous or can be read in more than one way, "
    "asking the user for clarification is more helpful than answering on an assumption. Relevant: "
    "every part of the answer bears on what was asked. Concise: clear, without padding or needless "
    "length.\n\n"
    "Where it matters, also weigh creativity and novelty. Last, name any important information an "
    "answer leaves out that would help the user.\n\n"
    "After your explanation, give your final verdict as exactly one of these labels:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'For example: "My final verdict is tie: [[A=B]]".'
)
USER_TEMPLATE = (
    "<|User Prompt|>\n{instruction}\n\n"
    "<|The Start of Assistant A's Answer|>\n{output_1}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{output_2}\n<|The End of Assistant B's Answer|>"
)
JUDGED_COLUMNS = ("id", "game", "model_is_a", "label", "score", "weight", "attempts", "judgment",
                  "len_model", "len_ref")


def parse_verdict(judgment: str) -> tuple[str | None, bool]:
    """``(label, try_again)`` as Arena-Hard's ``get_score``: the one distinct ``[[...]]`` label in
    ``judgment`` and False; ``(None, True)`` when there is none (ask the judge to continue);
    ``(None, False)`` when there are several distinct ones. The label may be outside the five
    valid ones (scoring drops it)."""
    found = {m for m in VERDICT_PATTERN.findall(judgment) if m != ""}
    if not found:
        return None, True
    if len(found) == 1:
        return found.pop().strip("\n"), False
    return None, False


def game_conversation(instruction: str, answer_a: str, answer_b: str,
                      prompt: tuple[str, str] | None = None) -> Conversation:
    """System and user turns of one game (``prompt`` = ``(system, user)`` templates replacing ours)."""
    system, user = prompt or (SYSTEM_PROMPT, USER_TEMPLATE)
    values = {"instruction": instruction, "output_1": answer_a, "output_2": answer_b}
    return [{"role": "system", "content": system}, {"role": "user", "content": render(user, values)}]


def model_score(label: str | None, model_is_a: bool) -> tuple[float, int]:
    """``(score of the model, weight)`` of one game: 1 / 0.5 / 0 for a model win / tie / loss,
    weight 3 for a ``>>`` verdict, 1 otherwise, and ``(nan, 0)`` for no or an invalid label."""
    if label not in LABELS:
        return float("nan"), 0
    score_a, weight = LABELS[label]
    return (score_a if model_is_a else 1.0 - score_a), weight


def judge_games(instructions: Sequence[str], model_outputs: Sequence[str], reference_outputs: Sequence[str],
                chat_fn: Callable[[list[Conversation]], list[str]], ids: Sequence[str],
                prompt: tuple[str, str] | None = None) -> pl.DataFrame:
    """Both games of every question, one row per (question, game); columns :data:`JUDGED_COLUMNS`.

    ``chat_fn(conversations)`` returns the judge's reply to each conversation (greedy; the caller
    fixes the token budget). Game 1: A = reference (baseline), B = model; game 2 swapped. A
    judgment without a label gets :data:`CONTINUE_PROMPT` as a further user turn
    (:data:`JUDGMENT_ATTEMPTS` attempts in all; all first attempts go in one ``chat_fn`` call, the
    retries in a second). ``label`` is the parsed verdict (null when none or several distinct),
    ``score`` / ``weight`` from :func:`model_score`, ``judgment`` the accumulated text.
    """
    instructions, model_outputs, reference_outputs = list(instructions), list(model_outputs), list(reference_outputs)
    n = len(instructions)
    if not (len(model_outputs) == len(reference_outputs) == len(ids) == n):
        raise ValueError(f"judge_games: {n} instructions, {len(model_outputs)} model outputs, "
                         f"{len(reference_outputs)} reference outputs and {len(ids)} ids; they must align")
    games = []  # (question index, game number, model is A)
    convs: list[Conversation] = []
    for i in range(n):
        for game, model_is_a in ((1, False), (2, True)):
            a, b = (model_outputs[i], reference_outputs[i]) if model_is_a else (reference_outputs[i], model_outputs[i])
            games.append((i, game, model_is_a))
            convs.append(game_conversation(instructions[i], a, b, prompt))
    judgments = [""] * len(convs)
    labels: list[str | None] = [None] * len(convs)
    attempts = [0] * len(convs)
    pending = list(range(len(convs)))
    for attempt in range(JUDGMENT_ATTEMPTS):
        if not pending:
            break
        replies = chat_fn([convs[k] for k in pending]) if pending else []
        if len(replies) != len(pending):
            raise RuntimeError(f"judge_games: the judge returned {len(replies)} replies for {len(pending)} conversations")
        retry = []
        for k, reply in zip(pending, replies):
            judgments[k] += "\n" + reply
            attempts[k] = attempt + 1
            labels[k], again = parse_verdict(judgments[k])
            convs[k] = [*convs[k], {"role": "assistant", "content": reply}]
            if again:
                convs[k].append({"role": "user", "content": CONTINUE_PROMPT})
                retry.append(k)
        pending = retry
    rows = []
    for k, (i, game, model_is_a) in enumerate(games):
        score, weight = model_score(labels[k], model_is_a)
        rows.append({"id": str(ids[i]), "game": game, "model_is_a": model_is_a, "label": labels[k],
                     "score": score, "weight": weight, "attempts": attempts[k], "judgment": judgments[k],
                     "len_model": len(model_outputs[i]), "len_ref": len(reference_outputs[i])})
    schema = {"id": pl.String, "game": pl.Int64, "model_is_a": pl.Boolean, "label": pl.String,
              "score": pl.Float64, "weight": pl.Int64, "attempts": pl.Int64, "judgment": pl.String,
              "len_model": pl.Int64, "len_ref": pl.Int64}
    return pl.DataFrame(rows, schema=schema).select(JUDGED_COLUMNS)


def _share(scores: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((scores * weights).sum() / total) if total > 0 else float("nan")


def arena_hard_score(df: pl.DataFrame, seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS) -> dict[str, Any]:
    """Arena-Hard win rate of :func:`judge_games`' table against its baseline.

    ``win_rate`` = Σ weight·score / Σ weight over games with a valid label (ties 1/2, ``>>``
    counted 3 times): the Bradley-Terry win rate against the single baseline. ``ci_low`` /
    ``ci_high``: 2.5 / 97.5 percentiles over ``rounds`` bootstrap resamples (with replacement,
    ``numpy.random.default_rng(seed)``) of the weighted battles (each game expanded into ``weight``
    unit battles, as Arena-Hard replicates ``>>`` rows). Also ``n_questions``, ``n_games``,
    ``n_valid_games``, ``n_invalid_games`` (no label, several labels or a label outside the five),
    ``n_retried`` (games that needed the continuation turn), ``label_counts`` and the judge's
    position bias ``p_a_wins`` (share of valid games won by assistant A, ties one half; 0.5 = none).
    """
    valid = df.filter(pl.col("weight") > 0)
    scores = valid["score"].to_numpy().astype(np.float64)
    weights = valid["weight"].to_numpy().astype(np.float64)
    battles = np.repeat(scores, weights.astype(int))
    rng = np.random.default_rng(seed)
    boot = np.array([rng.choice(battles, size=battles.size, replace=True).mean() for _ in range(rounds)]) \
        if battles.size else np.array([np.nan])
    a_score = np.where(valid["model_is_a"].to_numpy(), scores, 1.0 - scores)
    counts = df.group_by("label").len().sort("label")
    return {
        "win_rate": _share(scores, weights),
        "ci_low": float(np.percentile(boot, 2.5)), "ci_high": float(np.percentile(boot, 97.5)),
        "n_questions": int(df["id"].n_unique()), "n_games": df.height, "n_valid_games": valid.height,
        "n_invalid_games": df.height - valid.height, "n_retried": int((df["attempts"] > 1).sum()),
        "label_counts": {str(r["label"]): int(r["len"]) for r in counts.iter_rows(named=True)},
        "p_a_wins": float(a_score.mean()) if a_score.size else float("nan"),
        "bootstrap_rounds": rounds,
    }
