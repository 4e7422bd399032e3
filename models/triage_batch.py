"""Triage one batch of support messages: score intent and sentiment, route, decide, draft replies.

Plain functions with no Prefect and no warehouse import; ``tasks/triage.py`` wraps
:func:`triage_file` (one staged Parquet batch in, a scores file and a drafts file out). Per message:

1. Text that cannot be triaged by an English intent model goes to a person in the routing table's
   default queue, with the reason, and is never auto-answered: an empty text, a message whose
   ingested ``lang`` is not English, or a text that looks non-English (:func:`language_issue`).
   It is not scored: an intent guessed from a language the model never saw would mislead the
   queues and the intent-volume monitor.
2. The rest are scored in one call per batch (intent model: ``intent_label``,
   ``intent_confidence``, ``intent_top3``; sentiment model when one serves). If the batch call
   fails, messages are scored one by one and only the ones that still fail go to a person with
   the error as reason; if every one fails the batch raises, so a broken model loses nothing
   (the next run selects the same messages again).
3. :func:`models.routing.route` gives queue, priority, urgency and auto-answer vs human; the
   auto-answer threshold is the one tuned on validation at training (``info["auto_answer"]``).
4. Auto-answered messages get a draft from their intent's approved answer
   (:func:`models.replies.draft_reply`), optionally rewritten through an instruct model's chat
   template (:func:`chat_rewriter`) and kept only when the rewrite keeps every fact.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from models.replies import Answer, Rewrite, draft_reply
from models.routing import AUTO_ANSWER, DEFAULT_PRIORITY, HUMAN, RoutingTable, route

SCORE_FILE_COLUMNS = [
    "message_id", "intent_label", "intent_confidence", "intent_top3", "sentiment_label", "sentiment_score",
    "sentiment_model_version", "queue", "priority", "urgent", "decision", "reasons", "lang",
]
DRAFT_FILE_COLUMNS = [
    "message_id", "template_id", "template_version", "draft_text", "rewritten", "rewrite_rejected", "facts",
]
ENGLISH = ("en",)
UNDETERMINED = "und"  # stored as lang when the text looks non-English and the source gave none

# A few frequent function words per language: cheap, dependency-free, enough to tell an English
# support message from a Spanish, French, German, Italian, Portuguese or Dutch one.
_EN_WORDS = frozenset("""the a an i my me is are was to of and in on for it have has can not my card
    money account why how what when where do did you your this that with from been will please""".split())
_OTHER_WORDS = frozenset("""el la los las mi mis es está estoy por para que qué cómo donde dónde tarjeta
    dinero cuenta le les je ne pas mon ma mes est une des du sur pour avec carte argent compte pourquoi
    der die das ich mein meine ist nicht und ein eine mit auf für warum wie karte konto geld il lo gli
    sono non perché come mio della conta cartão meu minha não porque het een niet mijn waarom geen""".split())
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


class Scorer(Protocol):
    """What triage needs from a served model (``models.serving.ServedModel`` has it)."""

    info: Mapping[str, Any]

    def score(self, texts: list[str]) -> tuple[pd.DataFrame, Any]: ...


@dataclass
class BatchStats:
    """What one batch did (returned to the flow for its summary)."""

    rows: int = 0
    scored: int = 0
    not_scored: int = 0  # empty or non-English: routed to a person unscored
    score_failed: int = 0
    sentiment_failed: int = 0
    auto_answered: int = 0
    drafts: int = 0
    rewritten: int = 0


def language_issue(text: str | None, lang: str | None) -> tuple[str, str | None]:
    """``(lang to store, reason the message cannot be triaged automatically or None)``.

    Empty text; an ingested ``lang`` that is not English (``en``, ``en-GB``, ...); or, without a
    ``lang``, a text whose letters are mostly non-ASCII (another script) or whose function words
    are mostly another European language's.
    """
    lang = lang.strip().lower() or None if isinstance(lang, str) else None  # NULL arrives as None or NaN
    if not isinstance(text, str) or not text.strip():
        return lang or UNDETERMINED, "empty message"
    if lang is not None and lang.split("-")[0].split("_")[0] not in ENGLISH:
        return lang, f"language {lang!r} is not supported by the intent model"
    if lang is not None:
        return lang, None
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) / len(letters) < 0.8:
        return UNDETERMINED, "text looks non-English (mostly non-Latin letters)"
    words = [w.lower() for w in _WORD.findall(text)]
    en = sum(w in _EN_WORDS for w in words)
    other = sum(w in _OTHER_WORDS for w in words)
    if other >= 2 and other > en:
        return UNDETERMINED, "text looks non-English"
    return "en", None


def auto_answer_threshold(info: Mapping[str, Any] | None) -> float | None:
    """The auto-answer confidence threshold a model version was tuned with, or None (never auto-answer)."""
    auto = (info or {}).get("auto_answer") or {}
    value = auto.get("threshold") if isinstance(auto, Mapping) else None
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _top3(row: Mapping[str, Any], intent_cols: Sequence[str]) -> list[dict[str, float]]:
    probs = sorted(((c.removeprefix("intent_p_"), float(row[c])) for c in intent_cols), key=lambda p: -p[1])
    return [{"intent": i, "p": round(p, 4)} for i, p in probs[:3]]


def _intent_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if "intent_label" not in frame.columns:
        raise ValueError("the intent model has no intent head (its scores have no intent_label column)")
    intent_cols = [c for c in frame.columns if c.startswith("intent_p_")]
    out = []
    for row in frame.to_dict("records"):
        conf = row.get("intent_confidence")
        if conf is None or (isinstance(conf, float) and math.isnan(conf)):
            conf = max((float(row[c]) for c in intent_cols), default=math.nan)
        top3 = row.get("intent_top3")
        if top3 is None or (not isinstance(top3, list | tuple) and pd.isna(top3)):
            top3 = _top3(row, intent_cols) if intent_cols else []
        out.append({"intent_label": row["intent_label"], "intent_confidence": float(conf),
                    "intent_top3": [{"intent": str(t["intent"]), "p": float(t["p"])} for t in top3],
                    "sentiment_label": row.get("sentiment_label"), "sentiment_score": row.get("sentiment_score")})
    return out


def score_intents(scorer: Scorer, texts: list[str]) -> tuple[list[dict[str, Any] | None], dict[int, str]]:
    """Intent rows in input order, and ``{index: error}`` for texts that could not be scored.

    One call for the batch; if it fails, one call per text, so one bad message does not hold the
    others back. Raises when every text fails (the model itself is broken: nothing is recorded,
    the next run retries them). A model without an intent head always raises.
    """
    if not texts:
        return [], {}
    try:
        rows = _intent_rows(scorer.score(list(texts))[0])
        if len(rows) != len(texts):
            raise ValueError(f"the intent model returned {len(rows)} rows for {len(texts)} texts")
        return list(rows), {}
    except ValueError as exc:
        if "intent head" in str(exc):
            raise
        batch_error: Exception = exc
    except Exception as exc:  # noqa: BLE001 - retried text by text below
        batch_error = exc
    rows_or_none: list[dict[str, Any] | None] = []
    errors: dict[int, str] = {}
    for i, text in enumerate(texts):
        try:
            rows_or_none.append(_intent_rows(scorer.score([text])[0])[0])
        except Exception as exc:  # noqa: BLE001 - recorded as this message's reason
            rows_or_none.append(None)
            errors[i] = f"{type(exc).__name__}: {exc}"[:300]
    if len(errors) == len(texts):
        raise RuntimeError(f"the intent model failed on every message of the batch: {batch_error}") from batch_error
    return rows_or_none, errors


def score_sentiment(scorer: Scorer | None, texts: list[str]) -> list[tuple[str | None, float | None]] | None:
    """``(sentiment_label, sentiment_score)`` per text, or None when there is no model, no
    sentiment head, or it failed (sentiment is a signal for urgency, never a reason to stop)."""
    if scorer is None or not texts:
        return None
    try:
        frame = scorer.score(list(texts))[0]
    except Exception:  # noqa: BLE001
        return None
    if "sentiment_label" not in frame.columns or len(frame) != len(texts):
        return None
    scores = frame["sentiment_score"] if "sentiment_score" in frame.columns else [None] * len(texts)
    return [(str(lab) if lab is not None else None, None if s is None or pd.isna(s) else float(s))
            for lab, s in zip(frame["sentiment_label"], scores, strict=True)]


def _human(table: RoutingTable, reason: str) -> dict[str, Any]:
    return {"queue": table.default_queue, "priority": DEFAULT_PRIORITY, "urgent": False, "decision": HUMAN,
            "reasons": f"{reason}; needs a person; default queue"}


def triage_batch(
    ids: Sequence[str],
    texts: Sequence[str | None],
    langs: Sequence[str | None],
    intent_scorer: Scorer,
    table: RoutingTable,
    kb: Mapping[str, Answer],
    *,
    sentiment_scorer: Scorer | None = None,
    sentiment_model_version: str | None = None,
    threshold: float | None = None,
    rewrite: Rewrite | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, BatchStats]:
    """Triage messages: ``(scores frame, drafts frame, stats)``, one scores row per message.

    ``threshold`` is the auto-answer confidence (None: nothing is auto-answered). Without a
    ``sentiment_scorer``, a sentiment head of the intent model itself is used when it has one
    (``sentiment_model_version`` should then name the intent model). Drafts exist
    only for auto-answered messages; an auto-answer whose draft cannot be built becomes human.
    """
    n = len(ids)
    if not (len(texts) == len(langs) == n):
        raise ValueError("ids, texts and langs must have the same length")
    stats = BatchStats(rows=n)
    out: list[dict[str, Any]] = []
    todo: list[int] = []
    for i in range(n):
        lang, issue = language_issue(texts[i], langs[i])
        base = {"message_id": ids[i], "intent_label": None, "intent_confidence": None, "intent_top3": None,
                "sentiment_label": None, "sentiment_score": None, "sentiment_model_version": None, "lang": lang}
        if issue is not None:
            base.update(_human(table, issue))
            stats.not_scored += 1
        else:
            todo.append(i)
        out.append(base)

    todo_texts = [str(texts[i]) for i in todo]
    intents, errors = score_intents(intent_scorer, todo_texts)
    sentiments = score_sentiment(sentiment_scorer, todo_texts)
    if sentiment_scorer is not None and sentiments is None and todo_texts:
        stats.sentiment_failed += len(todo_texts)
    answers = set(kb)
    drafts: list[dict[str, Any]] = []
    for j, i in enumerate(todo):
        row = out[i]
        scored = intents[j]
        if scored is None:
            row.update(_human(table, f"scoring failed ({errors.get(j, 'unknown error')})"))
            stats.score_failed += 1
            continue
        stats.scored += 1
        if sentiments is not None:
            row["sentiment_label"], row["sentiment_score"] = sentiments[j]
            row["sentiment_model_version"] = sentiment_model_version
        elif scored.get("sentiment_label") is not None and sentiment_scorer is None:
            # the intent model has a sentiment head itself and no separate sentiment model serves
            row["sentiment_label"] = str(scored["sentiment_label"])
            s = scored.get("sentiment_score")
            row["sentiment_score"] = None if s is None or pd.isna(s) else float(s)
            row["sentiment_model_version"] = sentiment_model_version
        row["intent_label"] = scored["intent_label"]
        row["intent_confidence"] = scored["intent_confidence"]
        row["intent_top3"] = json.dumps(scored["intent_top3"])
        decision = route(scored["intent_label"], scored["intent_confidence"], row["sentiment_label"], threshold,
                         table, answers)
        row.update({"queue": decision.queue, "priority": decision.priority, "urgent": decision.urgent,
                    "decision": decision.action, "reasons": "; ".join(decision.reasons)})
        if decision.action != AUTO_ANSWER:
            continue
        draft = draft_reply(scored["intent_label"], todo_texts[j], kb, rewrite=rewrite)
        if draft.needs_human or not draft.text:
            row.update({"decision": HUMAN, "reasons": row["reasons"] + f"; no draft ({draft.rejected_reason}): human"})
            continue
        stats.auto_answered += 1
        stats.drafts += 1
        stats.rewritten += int(draft.rewritten)
        drafts.append({"message_id": ids[i], "template_id": draft.template_id, "template_version": draft.version,
                       "draft_text": draft.text, "rewritten": draft.rewritten,
                       "rewrite_rejected": draft.rejected_reason, "facts": json.dumps(list(draft.facts))})
    scores = pd.DataFrame(out, columns=SCORE_FILE_COLUMNS)
    return scores, pd.DataFrame(drafts, columns=DRAFT_FILE_COLUMNS), stats


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def output_paths(input_path: str | Path) -> tuple[Path, Path]:
    """``(scores, drafts)`` file paths of a staged ``input-NNNNN.parquet`` batch."""
    p = Path(input_path)
    return p.with_name(p.name.replace("input-", "scores-")), p.with_name(p.name.replace("input-", "drafts-"))


def triage_file(input_path: str | Path, intent_scorer: Scorer, table: RoutingTable, kb: Mapping[str, Answer],
                *, extra: Mapping[str, Any] | None = None, **kwargs: Any) -> BatchStats:
    """Triage a staged batch (Parquet: ``message_id``, ``text``, ``lang``) into its output files.

    The drafts file is written first and the scores file last, each under a temporary name then
    renamed: a batch is complete exactly when its scores file exists. ``extra`` adds constant
    columns (run ids, ``scored_at``) to the scores. ``kwargs`` go to :func:`triage_batch`.
    """
    batch = pd.read_parquet(input_path, columns=["message_id", "text", "lang"])
    scores, drafts, stats = triage_batch(batch["message_id"].tolist(), batch["text"].tolist(),
                                         batch["lang"].tolist(), intent_scorer, table, kb, **kwargs)
    for key, value in (extra or {}).items():
        scores[key] = value
    scores_path, drafts_path = output_paths(input_path)
    _write_atomic(drafts, drafts_path)
    _write_atomic(scores, scores_path)
    return stats


REWRITE_SYSTEM = (
    "You rewrite a bank's approved support answer so that it replies to the customer's own words. "
    "Keep every number, amount, time limit, link and menu path exactly as written. Add no new number, "
    "amount, link, promise or fact. Reply with the rewritten answer only."
)


def chat_messages(template: str, message: str) -> list[dict[str, str]]:
    """The chat a rewrite is generated from (the customer's text is data, quoted, never instructions)."""
    return [
        {"role": "system", "content": REWRITE_SYSTEM},
        {"role": "user", "content": f"Customer message (quoted):\n\"\"\"{message[:1000]}\"\"\"\n\n"
                                    f"Approved answer:\n{template}\n\nRewritten answer:"},
    ]


def chat_rewriter(generate: Callable[[list[dict[str, str]]], str]) -> Rewrite:
    """A :data:`models.replies.Rewrite` hook from ``generate(chat messages) -> text``.

    ``draft_reply`` accepts its output only through ``check_rewrite`` (facts kept, none added).
    """
    def rewrite(template: str, message: str) -> str:
        return generate(chat_messages(template, message)).strip()

    return rewrite


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` carries a chat template (instruct backbones such as SmolLM2-Instruct)."""
    return bool(getattr(tokenizer, "chat_template", None))


def lm_chat_generate(model: Any, tokenizer: Any, max_new_tokens: int = 160) -> Callable[[list[dict[str, str]]], str]:
    """``generate(messages)`` for a causal LM: the tokenizer's chat template, then greedy decoding."""
    import torch

    def generate(messages: list[dict[str, str]]) -> str:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):  # newer tokenizers may return a BatchEncoding
            ids = ids["input_ids"]
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    return generate
