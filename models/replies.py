"""Reply drafts for auto-answerable support messages, built from approved answers.

The knowledge base (shipped default: ``models/triage/answers.json``; see the README there) maps
an intent to one approved answer with a template id and version. :func:`draft_reply` renders it
(template-only by default) and may pass it through an optional ``rewrite`` hook, e.g. a later
instruct model prompted through its chat template to match the customer's wording. A rewrite is
accepted only if it keeps every fact of the template (numbers, amounts, percentages, time limits,
URLs, key step phrases) and adds no number or URL; otherwise the template text is kept and the
reason recorded. Nothing here sends anything: callers store the returned :class:`Draft`.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from core.intents import BANKING77_INTENTS

DEFAULT_KB_PATH = Path(__file__).resolve().parent / "triage" / "answers.json"
# Only values we control may enter a template; the name is sanitised by _safe_name.
ALLOWED_PLACEHOLDERS = frozenset({"customer_name"})
DEFAULT_NAME = "there"  # "Hi there," when no usable name is known

Rewrite = Callable[[str, str], str]  # (template text, customer message) -> rewritten text

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+|[\w.+-]+@[\w-]+\.[\w.-]+", re.I)
_AMOUNT = re.compile(r"[£$€]\s?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?\s?(?:GBP|EUR|USD)\b", re.I)
_PERCENT = re.compile(r"\d+(?:\.\d+)?\s?%")
_DURATION = re.compile(
    r"(\d+(?:\.\d+)?)\s*(?:-\s*)?(working day|business day|minute|hour|day|week|month|year)s?\b", re.I
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Number words count as numbers: a rewrite must not invent "within two days" either.
_NUMBER_WORDS = re.compile(
    r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|hundred|thousand|million|dozen|twice)\b", re.I,
)
_NAME_OK = re.compile(r"[^\W\d_]+(?:[ '\-][^\W\d_]+){0,3}")


class KnowledgeBaseError(ValueError):
    """The knowledge-base file cannot be used as written; the message names the entry."""


@dataclass(frozen=True)
class Answer:
    """One approved answer."""

    intent: str
    template_id: str
    version: int
    text: str
    keep: tuple[str, ...] = ()  # step phrases a rewrite must keep verbatim (menu paths etc.)


@dataclass(frozen=True)
class Draft:
    """A reply draft, never sent. ``text`` is empty and ``needs_human`` set when no answer exists."""

    intent: str | None
    template_id: str | None
    version: int | None
    text: str
    facts: tuple[str, ...]  # the template facts this text carries (checked against a rewrite)
    rewritten: bool = False
    rejected_reason: str | None = None  # why a rewrite was refused (template text kept)
    needs_human: bool = False


def load_kb(path: str | Path | None = None) -> dict[str, Answer]:
    """Load and validate a knowledge base (default: ``models/triage/answers.json``).

    Raises :class:`KnowledgeBaseError` naming each bad entry: an intent outside BANKING77, a
    duplicate template id, a version that is not a positive integer, empty text, a placeholder
    other than ``{customer_name}``, or a ``keep`` phrase missing from its own text.
    """
    path = Path(path) if path is not None else DEFAULT_KB_PATH
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data.get("answers") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise KnowledgeBaseError(f"{path}: expected an object with an 'answers' mapping")
    known = set(BANKING77_INTENTS)
    problems: list[str] = []
    kb: dict[str, Answer] = {}
    seen_ids: dict[str, str] = {}
    for intent, entry in entries.items():
        where = f"answer {intent!r}"
        if intent not in known:
            problems.append(f"{where}: unknown intent")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object")
            continue
        tid, version, text = entry.get("template_id"), entry.get("version"), entry.get("text")
        keep = tuple(entry.get("keep") or ())
        if not isinstance(tid, str) or not tid.strip():
            problems.append(f"{where}: missing template_id")
        elif tid in seen_ids:
            problems.append(f"{where}: template_id {tid!r} already used by {seen_ids[tid]!r}")
        else:
            seen_ids[tid] = intent
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            problems.append(f"{where}: version must be a positive integer, got {version!r}")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: empty text")
            continue
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as exc:
            problems.append(f"{where}: bad template braces ({exc})")
            continue
        if fields - ALLOWED_PLACEHOLDERS:
            problems.append(f"{where}: placeholder(s) {sorted(fields - ALLOWED_PLACEHOLDERS)} not allowed")
        problems += [f"{where}: keep phrase {k!r} not in its text" for k in keep if k not in text]
        kb[intent] = Answer(intent, str(tid), int(version) if isinstance(version, int) else 0, text, keep)
    if problems:
        raise KnowledgeBaseError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return kb


def extract_facts(text: str) -> dict[str, set[str]]:
    """The protected tokens of a text: urls (and emails), amounts, percents, durations, numbers.

    Tokens are normalised (lowercase, no spaces, no plural "s") so "24 hours" and "24 hour"
    match, while "24 days", "£6" or "$5" for "£5" do not. ``numbers`` holds every bare number
    and number word, so an invented "0800 123" or "two days" shows up there.
    """
    urls = {u.rstrip(".,;:!?").lower() for u in _URL.findall(text)}
    rest = _URL.sub(" ", text)  # digits inside URLs are the URL's, not new numbers
    amounts = {re.sub(r"\s", "", a).upper() for a in _AMOUNT.findall(rest)}
    percents = {re.sub(r"\s", "", p) for p in _PERCENT.findall(rest)}
    durations = {f"{n} {u.lower()}" for n, u in _DURATION.findall(rest)}
    numbers = {n.replace(",", "") for n in _NUMBER.findall(rest)}
    numbers |= {w.lower() for w in _NUMBER_WORDS.findall(rest)}
    return {"urls": urls, "amounts": amounts, "percents": percents, "durations": durations, "numbers": numbers}


def _fact_list(facts: Mapping[str, set[str]], keep: tuple[str, ...]) -> tuple[str, ...]:
    order = ("amounts", "percents", "durations", "urls", "numbers")
    return tuple(f"{kind}:{v}" for kind in order for v in sorted(facts[kind])) + tuple(f"keep:{k}" for k in keep)


def check_rewrite(template: str, candidate: str, keep: tuple[str, ...] = ()) -> str | None:
    """None when ``candidate`` keeps every fact of ``template`` and adds none; else why not."""
    if not candidate or not candidate.strip():
        return "empty rewrite"
    if "{" in candidate or "}" in candidate:
        return "rewrite contains template braces"
    want, got = extract_facts(template), extract_facts(candidate)
    for kind in ("amounts", "percents", "durations", "urls", "numbers"):
        lost = want[kind] - got[kind]
        if lost:
            return f"rewrite drops {kind}: {sorted(lost)}"
    for kind in ("numbers", "urls", "amounts", "percents", "durations"):
        added = got[kind] - want[kind]
        if added:
            return f"rewrite adds {kind}: {sorted(added)}"
    lost_steps = [k for k in keep if k.lower() not in candidate.lower()]
    if lost_steps:
        return f"rewrite drops step phrase(s): {lost_steps}"
    return None


def _safe_name(name: str | None) -> str:
    """A customer name safe to put in a reply: letters only (no digits, URLs, markup), <= 40 chars."""
    name = (name or "").strip()
    return name if len(name) <= 40 and _NAME_OK.fullmatch(name) else DEFAULT_NAME


def draft_reply(
    intent: str | None,
    message: str,
    kb: Mapping[str, Answer] | None = None,
    rewrite: Rewrite | None = None,
    customer_name: str | None = None,
) -> Draft:
    """Draft a reply to ``message`` from the approved answer for ``intent``; never sends it.

    Template-only unless ``rewrite`` is given; its output replaces the template text only when
    :func:`check_rewrite` accepts it, otherwise the template text is kept and
    ``rejected_reason`` says why (a hook that raises is treated the same way). An intent with no
    approved answer gives an empty draft with ``needs_human=True``, never an exception.
    """
    kb = kb if kb is not None else load_kb()
    answer = kb.get(intent) if intent else None
    if answer is None:
        return Draft(intent, None, None, "", (), needs_human=True, rejected_reason="no approved answer")
    # format_map over a fixed dict: only the sanitised name can enter the text.
    text = answer.text.format_map({"customer_name": _safe_name(customer_name)})
    facts = _fact_list(extract_facts(text), answer.keep)
    base = Draft(intent, answer.template_id, answer.version, text, facts)
    if rewrite is None:
        return base
    try:
        candidate = rewrite(text, message)
    except Exception as exc:  # noqa: BLE001  (a model failure must not lose the draft)
        return replace(base, rejected_reason=f"rewrite failed: {type(exc).__name__}: {exc}")
    if not isinstance(candidate, str):
        return replace(base, rejected_reason=f"rewrite returned {type(candidate).__name__}, not text")
    why = check_rewrite(text, candidate, answer.keep)
    if why is not None:
        return replace(base, rejected_reason=why)
    return replace(base, text=candidate.strip(), rewritten=True)

