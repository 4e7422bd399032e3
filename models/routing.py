"""Support-message routing: intent -> queue, priority, urgency, and auto-answer vs human.

The routing table is a CSV the user edits (shipped default: ``models/triage/routing.csv``, one
row per BANKING77 intent; see ``models/triage/README.md``). :func:`load_routing` validates it
strictly where a mistake would silently misroute (unknown intent, duplicate, bad priority or
flag: :class:`RoutingError` naming the row) and leniently where nothing is lost (intents the
table leaves out go to the default queue, listed in :attr:`RoutingTable.missing` so
``newspulse status`` can show them). :func:`route` makes the per-message decision and
:func:`tune_threshold` picks the auto-answer confidence threshold on validation predictions.

No Prefect and no warehouse imports: the triage flow calls these with plain values.
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from core.intents import BANKING77_INTENTS

DEFAULT_ROUTING_PATH = Path(__file__).resolve().parent / "triage" / "routing.csv"
DEFAULT_QUEUE = "general"
DEFAULT_PRIORITY = 3
PRIORITIES = (1, 2, 3, 4)  # 1 = handle first; ints so SQL views can ORDER BY priority
REQUIRED_COLUMNS = ("intent", "queue", "priority", "urgent", "auto_answerable")
# Used when a table has no urgent_if_negative column: an angry customer whose money did not move
# is the case the issue names ("negative sentiment on a failed payment").
FAILED_PAYMENT_INTENTS = frozenset({
    "declined_card_payment", "declined_transfer", "declined_cash_withdrawal", "failed_transfer",
    "top_up_failed", "card_not_working", "transaction_charged_twice",
})
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0", ""}

AUTO_ANSWER = "auto_answer"
HUMAN = "human"


class RoutingError(ValueError):
    """The routing table cannot be used as written; the message names every bad row."""


@dataclass(frozen=True)
class Route:
    """One row of the routing table."""

    intent: str
    queue: str
    priority: int
    urgent: bool
    auto_answerable: bool
    urgent_if_negative: bool = False


@dataclass(frozen=True)
class RoutingTable:
    """A validated routing table plus what it left out."""

    routes: dict[str, Route]
    missing: tuple[str, ...] = ()  # known intents with no row: routed to default_queue
    default_queue: str = DEFAULT_QUEUE
    source: str = ""

    def get(self, intent: str | None) -> Route | None:
        """The row for ``intent``, or None when the table has none (missing or unknown)."""
        return self.routes.get(intent) if intent else None


@dataclass(frozen=True)
class Decision:
    """What to do with one message; ``reasons`` says why, for the ticket view and audits."""

    intent: str | None
    queue: str
    priority: int
    urgent: bool
    action: str  # AUTO_ANSWER or HUMAN
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def auto_answer(self) -> bool:
        """True when the message may get an automatic (drafted) answer."""
        return self.action == AUTO_ANSWER


def _flag(value: str | None, column: str, line: int, problems: list[str]) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        problems.append(f"row {line}: {column} must be true or false, got {value!r}")
    return False


def load_routing(
    path: str | Path | None = None,
    intents: Sequence[str] = BANKING77_INTENTS,
    default_queue: str = DEFAULT_QUEUE,
) -> RoutingTable:
    """Load and validate a routing CSV (default: the shipped ``models/triage/routing.csv``).

    Raises :class:`RoutingError` listing every problem with its CSV line number (header = line
    1): an intent outside ``intents`` (with the closest known name, since BANKING77 spells some
    oddly), a duplicate intent, a priority outside 1-4, an unreadable flag, an empty queue, or
    missing columns. Intents the table leaves out are not an error: they are returned in
    ``missing`` (in label-set order) and :func:`route` sends them to ``default_queue``.
    """
    path = Path(path) if path is not None else DEFAULT_ROUTING_PATH
    known = set(intents)
    problems: list[str] = []
    routes: dict[str, Route] = {}
    first_line: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in (reader.fieldnames or [])]
        absent = [c for c in REQUIRED_COLUMNS if c not in header]
        if absent:
            raise RoutingError(f"{path}: missing column(s) {', '.join(absent)}; need {', '.join(REQUIRED_COLUMNS)}")
        reader.fieldnames = header  # tolerate spaces around header names
        has_negative_col = "urgent_if_negative" in header
        for row in reader:
            line = reader.line_num
            intent = (row.get("intent") or "").strip()
            if not intent:
                problems.append(f"row {line}: empty intent")
                continue
            if intent not in known:
                close = difflib.get_close_matches(intent, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"row {line}: unknown intent {intent!r}{hint}")
                continue
            if intent in first_line:
                problems.append(f"row {line}: duplicate intent {intent!r} (first on row {first_line[intent]})")
                continue
            first_line[intent] = line
            queue = (row.get("queue") or "").strip()
            if not queue:
                problems.append(f"row {line}: empty queue for {intent!r}")
            raw_priority = (row.get("priority") or "").strip()
            try:
                priority = int(raw_priority)
            except ValueError:
                priority = -1
            if priority not in PRIORITIES:
                problems.append(f"row {line}: priority for {intent!r} must be one of 1-4, got {raw_priority!r}")
            urgent = _flag(row.get("urgent"), "urgent", line, problems)
            auto = _flag(row.get("auto_answerable"), "auto_answerable", line, problems)
            negative = (
                _flag(row.get("urgent_if_negative"), "urgent_if_negative", line, problems)
                if has_negative_col
                else intent in FAILED_PAYMENT_INTENTS
            )
            routes[intent] = Route(intent, queue, priority, urgent, auto, negative)
    if problems:
        raise RoutingError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    missing = tuple(i for i in intents if i not in routes)
    return RoutingTable(routes, missing, default_queue, str(path))


@lru_cache(maxsize=1)
def default_table() -> RoutingTable:
    """The shipped routing table, loaded once per process."""
    return load_routing()


def route(
    intent: str | None,
    confidence: float,
    sentiment: str | None = None,
    threshold: float | None = None,
    table: RoutingTable | None = None,
    answers: Collection[str] | None = None,
) -> Decision:
    """Decide queue, priority, urgency and auto-answer vs human for one scored message.

    ``sentiment`` is the sentiment label ("negative" / "neutral" / "positive"); ``threshold`` is
    the tuned auto-answer confidence (None: never auto-answer, e.g. tuning found none). The
    message is auto-answered only when its intent is ``auto_answerable``, ``confidence >=
    threshold``, it is not urgent (urgent cases need a person) and, when ``answers`` (intents
    with an approved answer) is given, an answer exists. Everything else goes to a human; an
    empty/unknown/missing intent goes to the table's default queue. Never raises on odd input.
    """
    table = table if table is not None else default_table()
    reasons: list[str] = []
    row = table.get(intent)
    if row is None:
        why = "no intent" if not intent else f"intent {intent!r} not in routing table"
        return Decision(intent, table.default_queue, DEFAULT_PRIORITY, False, HUMAN, (why, "default queue"))
    urgent = row.urgent
    if row.urgent:
        reasons.append("urgent intent")
    if row.urgent_if_negative and (sentiment or "").strip().lower() == "negative":
        urgent = True
        reasons.append("negative sentiment on a failed payment")
    priority = 1 if urgent else row.priority  # urgent work jumps the queue whatever the row says
    try:
        conf = float(confidence)
    except (TypeError, ValueError):
        conf = math.nan
    action = HUMAN
    if urgent:
        reasons.append("urgent: human")
    elif not row.auto_answerable:
        reasons.append("intent not auto-answerable")
    elif threshold is None:
        reasons.append("no auto-answer threshold")
    elif math.isnan(conf) or conf < threshold:
        reasons.append(f"confidence {conf:.3f} below threshold {threshold:.3f}")
    elif answers is not None and intent not in answers:
        reasons.append("no approved answer")
    else:
        action = AUTO_ANSWER
        reasons.append(f"confidence {conf:.3f} >= threshold {threshold:.3f}")
    return Decision(intent, row.queue, priority, urgent, action, tuple(reasons))


@dataclass(frozen=True)
class ThresholdResult:
    """Outcome of :func:`tune_threshold`. ``threshold`` is None when the target is unreachable."""

    threshold: float | None
    precision: float | None  # precision of the auto-answered validation messages at threshold
    coverage: float  # share of all validation messages auto-answered at threshold
    n_auto: int
    n: int
    target: float
    reason: str

    @property
    def reached(self) -> bool:
        """True when a threshold meets the precision target."""
        return self.threshold is not None


def tune_threshold(
    confidence: Sequence[float],
    correct: Sequence[bool],
    target: float = 0.95,
    eligible: Sequence[bool] | None = None,
    min_support: int = 20,
) -> ThresholdResult:
    """Lowest confidence threshold whose auto-answered set reaches ``target`` precision.

    ``confidence[i]`` is the model's confidence on validation message i and ``correct[i]``
    whether its predicted intent was right; ``eligible[i]`` (default all) whether that
    prediction is auto-answerable at all, since only those messages can be auto-answered. The
    lowest qualifying threshold maximises coverage. ``min_support`` auto-answered messages are
    required, because 3 right out of 3 proves nothing about 95%. When no threshold qualifies
    the result has ``threshold=None`` (route() then never auto-answers) and says why.
    """
    n = len(confidence)
    if len(correct) != n or (eligible is not None and len(eligible) != n):
        raise ValueError("confidence, correct and eligible must have the same length")
    mask = [True] * n if eligible is None else [bool(e) for e in eligible]
    pairs = sorted(
        ((float(c), bool(k)) for c, k, e in zip(confidence, correct, mask) if e and not math.isnan(float(c))),
        key=lambda p: -p[0],
    )
    best: tuple[float, float, int] | None = None
    hits = 0
    for i, (conf, ok) in enumerate(pairs):
        hits += ok
        # Only cut between distinct values: ties on the threshold are all auto-answered.
        if i + 1 < len(pairs) and pairs[i + 1][0] == conf:
            continue
        n_auto = i + 1
        precision = hits / n_auto
        if n_auto >= min_support and precision >= target:
            best = (conf, precision, n_auto)
    if best is None:
        why = (
            f"no threshold reaches {target:.0%} precision with at least {min_support} "
            f"auto-answered of {len(pairs)} eligible messages"
        )
        return ThresholdResult(None, None, 0.0, 0, n, target, why)
    thr, precision, n_auto = best
    return ThresholdResult(
        thr, precision, n_auto / n if n else 0.0, n_auto, n, target,
        f"precision {precision:.3f} on {n_auto} auto-answered ({n_auto / n:.1%} coverage)",
    )
