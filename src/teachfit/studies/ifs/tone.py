"""Response-tone classifier of the IFS study, after AlShikh et al. 2023, "Becoming self-instruct".

The study measures *format*, not content: does a model answer a prompt ("answer-like"
response) or does it keep writing the prompt ("continuation-like")? This module holds:

1. **Tone data** (:func:`make_tone_dataset`; rule :func:`make_tone_data`): instruction–response
   pairs are concatenated and cut at word boundaries. The text after the true boundary is a
   response (label 1); text that starts inside the instruction is a continuation (label 0):
   either a tail fragment of the instruction alone (``Ic``) or that tail followed by the
   response (``Ic+R``). Rows are split into train / held-out by a hash of the pair id.
2. **Tone classifier** (:func:`fit_tone_classifier`, :func:`evaluate_tone_classifier`,
   :func:`classify_responses`; rule :func:`train_tone_classifier`): a sequence classifier
   (num_labels=2) fine-tuned with ``transformers.Trainer`` on the ``text`` column alone;
   label 1 = answer-like. Held-out metrics come from scikit-learn.

Settings (:class:`ToneDataSettings`, :class:`ToneClassifierSettings`) are the validated config
sections ``ifs.tone_data`` and ``ifs.classifier``; their defaults live in the config schema
only (tests: ``teachfit.schema.defaults("ifs.tone_data")``). Heavy imports (torch,
transformers, scikit-learn) happen inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import (
    DataError,
    atomic_dir,
    content_id,
    read_parquet,
    read_table,
    require_columns,
    write_csv,
    write_json,
    write_parquet,
)
from teachfit.logs import timed
from teachfit.models import default_device, load_pretrained, tokenizer_sides
from teachfit.settings import from_dict as settings_from_dict
from teachfit.studies.ifs.intervals import wilson_interval

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- constants

TONE_KINDS = ("R", "Ic", "Ic+R")
TONE_LABELS = {0: "continuation", 1: "answer"}
TONE_MANIFEST = "tone_classifier.json"
# Held-out precision / recall / accuracy the paper reports for its classifier.
PAPER_METRICS = {"paper_accuracy": 0.970, "paper_precision": 0.983, "paper_recall": 0.925}


_WORD = re.compile(r"\S+")


# --------------------------------------------------------------------------- helpers


def _stable_unit(*parts: Any) -> float:
    """A number in [0, 1) from a sha256 of ``parts``: same input, same number, any machine."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / float(16**15)


def _pair_seed(seed: int, key: str) -> list[int]:
    """Seed material for a per-item numpy Generator: (seed, 32 bits of sha256(key))."""
    return [int(seed), int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16)]


def _word_starts(text: str) -> list[int]:
    return [m.start() for m in _WORD.finditer(text)]


def _word_ends(text: str) -> list[int]:
    return [m.end() for m in _WORD.finditer(text)]


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


# =========================================================================== 1. tone data


@dataclass
class ToneDataSettings:
    """How instruction–response pairs are cut into tone-classifier rows (config ``ifs.tone_data``).

    No field has a default: the config schema holds them (``defaults("ifs.tone_data")``).
    """

    shift_choices: tuple[float, ...] = field(
        metadata={"help": "fractions f of the instruction's words kept in a continuation; "
                          "one is drawn uniformly per pair"},
    )
    ic_share: float = field(
        metadata={"help": "probability that a pair's continuation is 'Ic' (instruction tail "
                          "only) rather than 'Ic+R' (tail + response)"},
    )
    min_instruction_words: int = field(metadata={"help": "pairs whose instruction has fewer words are dropped"})
    min_response_words: int = field(metadata={"help": "pairs whose response has fewer words are dropped"})
    min_fragment_words: int = field(metadata={"help": "a continuation keeps at least this many instruction words"})
    joiner: str = field(metadata={"help": "text between the instruction tail and the response in Ic+R"})
    heldout_share: float = field(metadata={"help": "share of pair ids (by hash) that go to the held-out split"})

    def __post_init__(self) -> None:
        self.shift_choices = tuple(float(f) for f in self.shift_choices)
        if not self.shift_choices or not all(0.0 < f <= 1.0 for f in self.shift_choices):
            raise ValueError(
                f"tone_data.shift_choices: need a non-empty list of fractions in (0, 1], "
                f"got {list(self.shift_choices)}"
            )
        if not 0.0 <= self.ic_share <= 1.0:
            raise ValueError(f"tone_data.ic_share: must be in [0, 1], got {self.ic_share}")
        if self.min_fragment_words < 1:
            raise ValueError(
                f"tone_data.min_fragment_words: must be >= 1, got {self.min_fragment_words}"
            )
        if self.min_instruction_words < self.min_fragment_words + 1:
            raise ValueError(
                "tone_data.min_instruction_words must be >= min_fragment_words + 1 (a continuation "
                "must start inside the instruction, after at least one word); got "
                f"{self.min_instruction_words} and {self.min_fragment_words}"
            )
        if self.min_response_words < 1:
            raise ValueError(
                f"tone_data.min_response_words: must be >= 1, got {self.min_response_words}"
            )
        if not 0.0 <= self.heldout_share < 1.0:
            raise ValueError(
                f"tone_data.heldout_share: must be in [0, 1), got {self.heldout_share}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ToneDataSettings:
        return settings_from_dict(cls, d, "tone_data")


def heldout_split(pair_id: str, heldout_share: float) -> str:
    """``"heldout"`` if sha256("tone-split", pair_id) maps below ``heldout_share``, else ``"train"``.

    Depends on the pair id only (not on the seed or on row order), so every row built from
    one pair lands in the same split, in every run.
    """
    return "heldout" if _stable_unit("tone-split", str(pair_id)) < heldout_share else "train"


def _pair_ids(pairs_df: pl.DataFrame) -> list[str]:
    if "pair_id" in pairs_df.columns:
        ids = [str(x) for x in pairs_df["pair_id"].to_list()]
    elif "id" in pairs_df.columns:
        ids = [str(x) for x in pairs_df["id"].to_list()]
    else:
        ids = [
            content_id("tone-pair", i, r, prefix="pair_")
            for i, r in zip(pairs_df["instruction"].to_list(), pairs_df["response"].to_list())
        ]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    dups = sorted(i for i, c in counts.items() if c > 1)
    if dups:
        raise DataError(f"tone pairs: duplicate pair id(s) {dups[:5]} ({len(dups)} in all)")
    return ids


def make_tone_dataset(
    pairs_df: pl.DataFrame,
    settings: ToneDataSettings | Mapping[str, Any],
    seed: int,
) -> pl.DataFrame:
    """Cut instruction–response pairs into answer-like (1) and continuation-like (0) texts.

    Input: ``pairs_df`` with string columns ``instruction`` and ``response``; the pair id is
    the ``pair_id`` column, else the ``id`` column, else ``content_id(instruction, response)``.
    Ids must be unique (else :class:`DataError`). ``settings``: :class:`ToneDataSettings` or the
    config section ``ifs.tone_data``; ``seed``: the global seed.

    The rule, per pair (words = maximal runs of non-whitespace, ``\\S+``; cuts fall on word
    starts and the original whitespace inside a piece is kept):

    * Let the instruction I have ``n`` words and the response R ``m`` words. The pair is
      dropped if ``n < min_instruction_words`` or ``m < min_response_words``.
    * **R row** (label 1): ``text = R.strip()``, ``cut = n`` — the word offset in the
      concatenated word sequence I+R at which the text starts (the true boundary).
    * **One continuation row** (label 0), drawn with ``rng = numpy.random.default_rng([seed,
      h])``, ``h`` = the first 32 bits of sha256(pair id) (so a pair's draw does not depend
      on row order): first ``f = shift_choices[rng.integers(len(shift_choices))]``, then
      ``kind = "Ic" if rng.random() < ic_share else "Ic+R"``. The fragment keeps
      ``k = clip(floor(f*n + 0.5), min_fragment_words, n - 1)`` instruction words, so it
      always starts inside the instruction (at least one word is cut off the front) and
      ``cut = n - k``. ``Ic``: ``text`` = I from the start of word ``cut`` to its end,
      stripped. ``Ic+R``: that tail + ``joiner`` + ``R.strip()``.

    So the output is exactly balanced (one row per label per kept pair) and the
    continuation kinds split about ``ic_share : 1 - ic_share``.

    Returns one row per kept pair and label (2 × kept pairs rows), columns: ``id`` (content id
    of pair_id, kind, cut), ``pair_id``, ``cut``, ``n_words`` (words in I), ``kind`` (R | Ic |
    Ic+R), ``label`` (1 = answer-like), ``text``, ``split`` (train | heldout, from
    :func:`heldout_split` on the pair id).
    """
    s = settings if isinstance(settings, ToneDataSettings) else ToneDataSettings.from_dict(settings)
    require_columns(pairs_df, ["instruction", "response"], "tone pairs")
    ids = _pair_ids(pairs_df)
    rows: list[dict[str, Any]] = []
    dropped = 0
    choices = s.shift_choices
    for pid, ins, resp in zip(
        ids, pairs_df["instruction"].to_list(), pairs_df["response"].to_list()
    ):
        if not isinstance(ins, str) or not isinstance(resp, str):
            raise DataError(f"tone pairs: pair {pid!r} has a non-string instruction or response")
        starts = _word_starts(ins)
        n = len(starts)
        m = len(_WORD.findall(resp))
        if n < s.min_instruction_words or m < s.min_response_words:
            dropped += 1
            continue
        split = heldout_split(pid, s.heldout_share)
        response = resp.strip()
        rows.append({"pair_id": pid, "cut": n, "n_words": n, "kind": "R", "label": 1, "text": response,
                         "split": split})
        rng = np.random.default_rng(_pair_seed(seed, pid))
        f = choices[int(rng.integers(len(choices)))]
        kind = "Ic" if rng.random() < s.ic_share else "Ic+R"
        k = min(max(_round_half_up(f * n), s.min_fragment_words), n - 1)
        cut = n - k
        tail = ins[starts[cut]:].strip()
        text = tail if kind == "Ic" else tail + s.joiner + response
        rows.append({"pair_id": pid, "cut": cut, "n_words": n, "kind": kind, "label": 0, "text": text,
                         "split": split})
    if dropped:
        log.info("tone data: dropped %d of %d pairs below the minimum lengths", dropped, len(ids))
    schema = {"pair_id": pl.String, "cut": pl.Int64, "n_words": pl.Int64, "kind": pl.String,
              "label": pl.Int64, "text": pl.String, "split": pl.String}
    df = pl.DataFrame(rows, schema=schema)
    ids_col = [content_id("tone", p, k, c) for p, k, c in
               zip(df["pair_id"].to_list(), df["kind"].to_list(), df["cut"].to_list())]
    return df.with_columns(pl.Series("id", ids_col, dtype=pl.String)).select(
        ["id", *schema]
    )


def split_tone_dataset(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train rows, held-out rows) by the ``split`` column of :func:`make_tone_dataset`."""
    require_columns(df, ["split"], "tone data")
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "heldout")


# =========================================================================== 2. classifier


@dataclass
class ToneClassifierSettings:
    """Fine-tuning of the answer-vs-continuation classifier (config ``ifs.classifier``).

    No field has a default: the config schema holds them (``defaults("ifs.classifier",
    encoder=...)``). They map 1:1 onto ``transformers.TrainingArguments`` (see
    :func:`fit_tone_classifier`).
    """

    encoder: str = field(metadata={"help": "alias of the encoder model (recorded in the manifest)"})
    epochs: float = field(metadata={"help": "passes over the training rows (num_train_epochs)"})
    learning_rate: float = field(metadata={"help": "AdamW peak learning rate"})
    batch_size: int = field(metadata={"help": "rows per optimizer step (per_device_train_batch_size)"})
    max_length: int = field(
        metadata={"help": "tokens per text (longer: truncated; the start carries the signal)"}
    )
    weight_decay: float = field(metadata={"help": "AdamW weight decay (not on biases / LayerNorm)"})
    warmup_ratio: float = field(
        metadata={"help": "share of steps with linear warm-up, then linear decay to 0"}
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"tone_classifier.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.epochs > 0:
            raise ValueError(f"tone_classifier.epochs: must be > 0, got {self.epochs}")
        if not self.learning_rate > 0:
            raise ValueError(
                f"tone_classifier.learning_rate: must be > 0, got {self.learning_rate}"
            )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(
                f"tone_classifier.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}"
            )
        if self.weight_decay < 0:
            raise ValueError(
                f"tone_classifier.weight_decay: must be >= 0, got {self.weight_decay}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ToneClassifierSettings:
        return settings_from_dict(cls, d, "tone_classifier")


def _check_tone_rows(df: pl.DataFrame, what: str) -> tuple[list[str], list[int]]:
    require_columns(df, ["text", "label"], what)
    if df.height == 0:
        raise DataError(f"{what}: no rows")
    texts = df["text"].to_list()
    labels = df["label"].to_list()
    bad = [i for i, y in enumerate(labels) if y not in (0, 1)]
    if bad:
        raise DataError(f"{what}: column 'label' must be 0 or 1; row {bad[0]} has {labels[bad[0]]!r}")
    if any(not isinstance(t, str) for t in texts):
        raise DataError(f"{what}: column 'text' has non-string (null?) values")
    return texts, [int(y) for y in labels]


def _forward_args(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def fit_tone_classifier(
    encoder_dir: str | Path,
    train_df: pl.DataFrame,
    out_dir: str | Path,
    settings: ToneClassifierSettings | Mapping[str, Any],
    seed: int,
    device: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``AutoModelForSequenceClassification(num_labels=2)`` on ``text`` → ``label``.

    ``encoder_dir`` is any encoder checkpoint (e.g. all-MiniLM-L6-v2, a plain BertModel: a
    fresh classification head is added, initialised after ``transformers.set_seed(seed)``).
    ``train_df`` needs ``text`` and ``label`` (1 = answer-like); if it has a ``split`` column,
    every row must be ``train`` (guards against training on held-out pairs; else
    :class:`DataError`, as for a single-label set).

    Training is ``transformers.Trainer`` with ``TrainingArguments(seed, learning_rate,
    num_train_epochs=epochs, per_device_train_batch_size=batch_size, weight_decay,
    warmup_steps=warmup_ratio (a float < 1 is a share of the steps), lr_scheduler_type="linear",
    max_grad_norm=1.0, report_to="none", save_strategy="no", use_cpu=<no CUDA device>)``;
    texts are tokenized once (truncated to ``max_length`` tokens) and padded per batch.

    ``out_dir`` (written through :func:`teachfit.io.atomic_dir`) gets the model, the tokenizer
    and ``tone_classifier.json``: settings, seed, data counts, ``steps``, ``epoch_losses``
    (mean training cross-entropy per epoch, nats), first / last step loss, device, seconds.
    Returns that manifest.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    s = (settings if isinstance(settings, ToneClassifierSettings)
         else ToneClassifierSettings.from_dict(settings))
    if "split" in train_df.columns:
        other = sorted(set(train_df["split"].to_list()) - {"train"})
        if other:
            raise DataError(
                f"tone classifier training data holds rows of split(s) {other}; pass only the "
                "train split (see split_tone_dataset)"
            )
    texts, labels = _check_tone_rows(train_df, "tone classifier training data")
    if len(set(labels)) < 2:
        raise DataError("tone classifier training data: needs rows of both labels 0 and 1")

    t0 = time.time()
    dev = default_device(device)
    set_seed(int(seed))
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{encoder_dir}: tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    # the text's start carries the signal: cut its end, pad on the right (the collator pads with
    # tok.padding_side), whatever tokenizer_config.json says; saved with the classifier
    tok.truncation_side, tok.padding_side = "right", "right"

    with timed("model_load"):
        model = AutoModelForSequenceClassification.from_pretrained(
            str(encoder_dir), num_labels=2, id2label=dict(TONE_LABELS),
            label2id={v: k for k, v in TONE_LABELS.items()}, dtype=torch.float32,
        )
    model.config.pad_token_id = tok.pad_token_id
    keep = {"input_ids", "attention_mask"} | (
        {"token_type_ids"} if "token_type_ids" in _forward_args(model) else set())
    enc = tok(texts, truncation=True, max_length=s.max_length)
    rows = [{**{k: enc[k][i] for k in keep if k in enc}, "labels": labels[i]} for i in range(len(texts))]

    n = len(texts)
    with tempfile.TemporaryDirectory(prefix="tone_trainer_") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            seed=int(seed),
            learning_rate=s.learning_rate,
            num_train_epochs=s.epochs,
            per_device_train_batch_size=s.batch_size,
            weight_decay=s.weight_decay,
            warmup_steps=s.warmup_ratio,
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            logging_strategy="steps",
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=dev == "cpu",
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorWithPadding(tok))
        trainer.train()
    step_losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    steps = int(trainer.state.global_step)
    steps_per_epoch = math.ceil(n / s.batch_size)
    by_epoch: dict[int, list[float]] = {}
    for i, loss in enumerate(step_losses):
        by_epoch.setdefault(i // steps_per_epoch, []).append(loss)
    epoch_losses = [float(np.mean(by_epoch[e])) for e in sorted(by_epoch)]

    model = trainer.model
    model.eval()
    manifest = {
        "encoder_dir": str(encoder_dir),
        "settings": dataclasses.asdict(s),
        "seed": int(seed),
        "trainer": "transformers.Trainer",
        "labels": {str(k): v for k, v in TONE_LABELS.items()},
        "n_train": n,
        "n_train_by_label": {"0": labels.count(0), "1": labels.count(1)},
        "steps": steps,
        "epoch_losses": epoch_losses,
        "first_step_loss": step_losses[0],
        "last_step_loss": step_losses[-1],
        "device": dev,
        "seconds": round(time.time() - t0, 2),
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(manifest, tmp / TONE_MANIFEST)
    return manifest


class ToneClassifier:
    """A trained tone classifier, loaded once; :meth:`predict_proba` gives P(answer-like).

    ``max_length`` defaults to the training ``max_length`` in the folder's
    ``tone_classifier.json``; a folder with neither raises :class:`DataError`, as does one
    without ``config.json`` or with a head of other than 2 labels.
    """

    def __init__(self, model_dir: str | Path, device: str | None = None,
                 max_length: int | None = None) -> None:
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise DataError(f"{self.model_dir}: not a model directory (no config.json)")
        manifest_path = self.model_dir / TONE_MANIFEST
        self.manifest = (json.loads(manifest_path.read_text()) if manifest_path.exists() else {})
        if max_length is None:
            max_length = self.manifest.get("settings", {}).get("max_length")
            if max_length is None:
                raise DataError(f"{self.model_dir}: no {TONE_MANIFEST} with settings.max_length; "
                                "pass max_length")
        self.max_length = int(max_length)
        self.device = default_device(device)
        self.tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token

        with timed("model_load"):
            self.model = load_pretrained("AutoModelForSequenceClassification", self.model_dir,
                                         dtype="float32").to(self.device)
        self.model.eval()
        if self.model.config.num_labels != 2:
            raise DataError(
                f"{self.model_dir}: expected a 2-label classifier, has "
                f"{self.model.config.num_labels} labels"
            )
        self._accepts_tti = "token_type_ids" in _forward_args(self.model)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """P(label 1 = answer-like) per text: float64 array of shape ``(len(texts),)``, input order.

        Texts are scored longest first in batches of ``batch_size`` (truncated to
        ``max_length`` tokens). A non-str text raises ``TypeError``.
        """
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("classify: every text must be a str")
        out = np.zeros(len(texts), dtype=np.float64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        with torch.no_grad():
            for b in tqdm(range(0, len(order), batch_size), desc="classify", unit="batch",
                          disable=len(order) <= batch_size):
                idx = order[b:b + batch_size]
                with tokenizer_sides(self.tok, truncation="right", padding="right"):
                    enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
                if not self._accepts_tti:
                    enc.pop("token_type_ids", None)
                logits = self.model(**enc).logits.float()
                out[idx] = torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
        return out


def classify_responses(
    model_dir: str | Path,
    texts: Sequence[str],
    batch_size: int = 32,
    threshold: float = 0.5,
    empty_label: int | None = 0,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(P(answer-like), labels) for ``texts`` with the classifier saved in ``model_dir``.

    Both arrays have shape ``(len(texts),)`` (float64, int64). Texts are stripped of
    leading/trailing whitespace first, like the training texts of :func:`make_tone_dataset`
    (generations often start with a newline or space). ``labels = (p >= threshold)``, int 0/1.
    Texts that are empty after stripping get ``empty_label`` and probability
    ``float(empty_label)`` without being scored (an empty generation answers nothing);
    ``empty_label=None`` scores them like any other text. The classifier is loaded only when
    some text needs scoring.
    """
    texts = list(texts)
    probs = np.zeros(len(texts), dtype=np.float64)
    if empty_label is not None:
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        probs[:] = float(empty_label)
    else:
        keep = list(range(len(texts)))
    if keep:
        clf = ToneClassifier(model_dir, device=device)
        probs[keep] = clf.predict_proba([texts[i].strip() for i in keep], batch_size=batch_size)
    labels = (probs >= threshold).astype(np.int64)
    return probs, labels


def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, Any]:
    """Accuracy, precision / recall / F1 of the positive class (1) and the confusion counts.

    scikit-learn's ``accuracy_score``, ``precision_recall_fscore_support(average="binary",
    pos_label=1, zero_division=0)`` (0/0 counts as 0.0) and ``confusion_matrix(labels=[0, 1])``.
    Returns ``{accuracy, precision, recall, f1, n, n_positive, confusion: {tn, fp, fn, tp}}``.
    Raises ``ValueError`` on length mismatch or no labels.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"binary_metrics: {t.shape} true labels vs {p.shape} predictions")
    if t.size == 0:
        raise ValueError("binary_metrics: no labels")
    precision, recall, f1, _ = precision_recall_fscore_support(
        t, p, average="binary", pos_label=1, labels=[0, 1], zero_division=0)
    tn, fp, fn, tp = (int(x) for x in confusion_matrix(t, p, labels=[0, 1]).ravel())
    return {"accuracy": float(accuracy_score(t, p)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "n": int(t.size),
            "n_positive": int((t == 1).sum()), "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp}}


def evaluate_tone_classifier(
    model_dir: str | Path,
    heldout_df: pl.DataFrame,
    batch_size: int = 32,
    threshold: float = 0.5,
    device: str | None = None,
) -> dict[str, Any]:
    """Held-out metrics: :func:`binary_metrics` plus ``by_kind``, ``mean_p_answer``, ``seconds``.

    Positive class = 1 (answer-like). ``by_kind`` gives accuracy per ``kind`` when the
    column exists (R / Ic / Ic+R), to show which continuations fool the classifier.
    Every text is scored (no empty-text shortcut).
    """
    t0 = time.time()
    texts, labels = _check_tone_rows(heldout_df, "tone classifier held-out data")
    probs, pred = classify_responses(model_dir, texts, batch_size=batch_size,
                                     threshold=threshold, empty_label=None, device=device)
    metrics: dict[str, Any] = binary_metrics(labels, pred)
    if "kind" in heldout_df.columns:
        kinds = np.asarray(heldout_df["kind"].to_list())
        correct = pred == np.asarray(labels)
        metrics["by_kind"] = {
            str(k): {"accuracy": float(correct[kinds == k].mean()), "n": int((kinds == k).sum())}
            for k in sorted(set(kinds.tolist()))
        }
    metrics["mean_p_answer"] = float(probs.mean())
    metrics["seconds"] = round(time.time() - t0, 2)
    return metrics


# --------------------------------------------------------------------------- rules


def make_tone_data(pairs: list[str], data: str | Path, settings: Mapping[str, Any],
                   seed: int) -> pl.DataFrame:
    """Rule ``make_tone_data``: tone-classifier rows from instruction–response pair files.

    ``pairs``: JSON / JSONL / Parquet files with ``instruction`` and ``response`` (and
    optionally ``id``); a file without those columns raises :class:`DataError` naming it.
    Pairs are concatenated in file order and de-duplicated on (instruction, response); when
    ids repeat across files (one instruction answered by several generators) the pair id is
    the content id of the two texts. ``settings`` = config ``ifs.tone_data``, ``seed`` = the
    global seed. Writes :func:`make_tone_dataset`'s table to ``data`` and returns it.
    """
    frames = []
    for path in pairs:
        table = read_table(path)
        missing = [c for c in ("instruction", "response") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: tone-classifier pairs need columns instruction, response; "
                            f"missing {missing}")
        cols = [c for c in ("id", "instruction", "response") if c in table.columns]
        frames.append(table.select(cols))
    if not frames:
        raise DataError("make_tone_data: no pair files")
    table = pl.concat(frames, how="diagonal_relaxed").unique(
        subset=["instruction", "response"], keep="first", maintain_order=True)
    if "id" in table.columns and table["id"].n_unique() != table.height:
        table = table.drop("id")  # ids repeat across files (same instruction, other generator)
    if "id" not in table.columns:
        table = table.with_columns(pl.Series("id", [content_id(i, r) for i, r in
                                                    zip(table["instruction"], table["response"])]))
    out = make_tone_dataset(table.select("id", "instruction", "response"), settings, seed)
    log.info("tone data: %d rows (%s)", out.height, dict(out.group_by("kind").len().iter_rows()))
    write_parquet(out, data)
    return out


def train_tone_classifier(data: str | Path, encoder_dir: str | Path, classifier: str | Path,
                          metrics: str | Path, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Rule ``train_tone_classifier``: fit on the train split, score the held-out split.

    ``data``: :func:`make_tone_data`'s table; ``settings`` = config ``ifs.classifier``. Writes
    the classifier folder (:func:`fit_tone_classifier`) and a one-row ``metrics`` CSV, columns:
    ``accuracy, accuracy_lo, accuracy_hi`` (95% Wilson interval over the held-out rows),
    ``precision, recall, f1`` (of label 1, answer-like), the confusion matrix ``tn, fp, fn, tp``
    (rows: true label, 0 = continuation), ``accuracy_R, accuracy_Ic, accuracy_Ic+R`` (per kind of
    text), ``n`` (held-out rows), ``n_heldout_pairs``, ``n_train``, ``n_train_pairs``, ``encoder``
    (folder), ``epochs, learning_rate, batch_size`` (as trained), ``final_train_loss`` (mean
    cross-entropy of the last epoch, nats), and the paper's held-out accuracy / precision / recall
    beside ours (AlShikh et al. 2023, Table 4: 0.970 / 0.983 / 0.925). Returns that row.
    """
    table = read_parquet(data, required=["text", "label", "split"])
    train, heldout = split_tone_dataset(table)
    info = fit_tone_classifier(encoder_dir, train, classifier, settings, seed)
    held = evaluate_tone_classifier(classifier, heldout)
    lo, hi = wilson_interval(round(held["accuracy"] * held["n"]), held["n"])
    row: dict[str, Any] = {"accuracy": held["accuracy"], "accuracy_lo": lo, "accuracy_hi": hi}
    row.update({k: held[k] for k in ("precision", "recall", "f1")})
    row.update(held["confusion"])
    by_kind = held.get("by_kind", {})
    row.update({f"accuracy_{k}": by_kind.get(k, {}).get("accuracy", float("nan")) for k in TONE_KINDS})
    pairs = "pair_id" in table.columns
    row.update(n=held["n"], n_heldout_pairs=heldout["pair_id"].n_unique() if pairs else None,
               n_train=train.height, n_train_pairs=train["pair_id"].n_unique() if pairs else None,
               encoder=str(encoder_dir), epochs=info["settings"]["epochs"],
               learning_rate=info["settings"]["learning_rate"], batch_size=info["settings"]["batch_size"],
               final_train_loss=info["epoch_losses"][-1], **PAPER_METRICS)
    write_csv(pl.DataFrame([row]), metrics)
    log.info("tone classifier held-out: %s; by kind %s (train: %d steps, epoch losses %s)",
             row, by_kind, info["steps"], info["epoch_losses"])
    return row
