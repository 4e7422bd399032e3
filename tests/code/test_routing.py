"""Routing table (models.routing): the shipped file, validation errors, decisions, threshold tuning."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from models.replies import load_kb
from models.routing import (
    AUTO_ANSWER,
    DEFAULT_ROUTING_PATH,
    HUMAN,
    RoutingError,
    load_routing,
    route,
    tune_threshold,
)
from core.intents import BANKING77_INTENTS

HEADER = "intent,queue,priority,urgent,auto_answerable\n"


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "routing.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def _full_rows(skip: set[str] = frozenset()) -> str:
    return "".join(f"{i},general,3,false,false\n" for i in BANKING77_INTENTS if i not in skip)


def test_default_table_covers_exactly_the_77_intents() -> None:
    with DEFAULT_ROUTING_PATH.open(newline="") as fh:
        names = [row["intent"] for row in csv.DictReader(fh)]
    assert sorted(names) == sorted(BANKING77_INTENTS) and len(names) == 77
    table = load_routing()
    assert table.missing == () and len(table.routes) == 77


def test_default_auto_answerable_intents_have_approved_answers() -> None:
    # An auto-answerable intent without an answer would always fall back to a human.
    kb = load_kb()
    auto = {i for i, r in load_routing().routes.items() if r.auto_answerable}
    assert auto <= set(kb), sorted(auto - set(kb))
    assert not any(load_routing().routes[i].urgent for i in auto)  # urgent cases never auto


@pytest.mark.parametrize(
    ("intent", "queue", "urgent"),
    [
        ("lost_or_stolen_card", "account_security", True),
        ("compromised_card", "account_security", True),
        ("card_swallowed", "cards", True),
        ("lost_or_stolen_phone", "account_security", True),
        ("card_arrival", "cards", False),
        ("cancel_transfer", "transfers", False),
        ("top_up_limits", "top_up", False),
        ("exchange_rate", "exchange", False),
        ("transfer_fee_charged", "fees_charges", False),
        ("verify_my_identity", "identity", False),
        ("age_limit", "general", False),
    ],
)
def test_default_rows(intent: str, queue: str, urgent: bool) -> None:
    decision = route(intent, 0.99, "neutral", 0.9)
    assert (decision.queue, decision.urgent) == (queue, urgent)
    if urgent:
        assert decision.priority == 1 and decision.action == HUMAN


@pytest.mark.parametrize(
    ("intent", "confidence", "sentiment", "threshold", "action", "urgent"),
    [
        ("card_arrival", 0.97, "neutral", 0.9, AUTO_ANSWER, False),
        ("card_arrival", 0.90, "neutral", 0.9, AUTO_ANSWER, False),  # >= threshold
        ("card_arrival", 0.89, "neutral", 0.9, HUMAN, False),
        ("card_arrival", 0.99, "neutral", None, HUMAN, False),  # no tuned threshold
        ("card_arrival", float("nan"), "neutral", 0.9, HUMAN, False),
        ("card_linking", 0.99, "neutral", 0.9, HUMAN, False),  # not auto-answerable
        ("declined_card_payment", 0.99, "negative", 0.9, HUMAN, True),
        ("declined_transfer", 0.99, "negative", 0.9, HUMAN, True),
        ("failed_transfer", 0.99, "negative", 0.9, HUMAN, True),
        ("declined_transfer", 0.99, "neutral", 0.9, HUMAN, False),
        ("card_arrival", 0.99, "negative", 0.9, AUTO_ANSWER, False),  # negative alone is not urgent
        ("lost_or_stolen_card", 0.99, "positive", 0.5, HUMAN, True),
    ],
)
def test_route_decisions(
    intent: str, confidence: float, sentiment: str, threshold: float | None, action: str, urgent: bool
) -> None:
    decision = route(intent, confidence, sentiment, threshold)
    assert (decision.action, decision.urgent) == (action, urgent), decision.reasons
    assert decision.reasons


@pytest.mark.parametrize("intent", [None, "", "not_an_intent"])
def test_no_or_unknown_intent_goes_to_default_queue(intent: str | None) -> None:
    decision = route(intent, 0.99, "neutral", 0.5)
    assert (decision.queue, decision.action) == ("general", HUMAN)


def test_intent_without_answer_gets_human_decision() -> None:
    table = load_routing()
    decision = route("card_arrival", 0.99, "neutral", 0.5, table=table, answers={"age_limit"})
    assert decision.action == HUMAN and "no approved answer" in decision.reasons


def test_unknown_intent_row_is_an_error_naming_it_and_the_row(tmp_path: Path) -> None:
    path = _write(tmp_path, _full_rows() + "refund_not_showing_up,payments,3,false,false\n")
    with pytest.raises(RoutingError) as err:
        load_routing(path)
    msg = str(err.value)
    assert "row 79" in msg and "'refund_not_showing_up'" in msg and "Refund_not_showing_up" in msg


def test_missing_intents_go_to_default_queue_and_are_listed(tmp_path: Path) -> None:
    left_out = {"card_arrival", "lost_or_stolen_card"}
    table = load_routing(_write(tmp_path, _full_rows(left_out)))
    assert set(table.missing) == left_out
    decision = route("card_arrival", 0.99, "neutral", 0.5, table=table)
    assert (decision.queue, decision.action) == ("general", HUMAN)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("card_arrival,cards,3,false,true\ncard_arrival,cards,2,false,true\n", "row 3: duplicate intent 'card_arrival' (first on row 2)"),
        ("card_arrival,cards,0,false,true\n", "priority for 'card_arrival' must be one of 1-4, got '0'"),
        ("card_arrival,cards,high,false,true\n", "got 'high'"),
        ("card_arrival,cards,3,maybe,true\n", "urgent must be true or false"),
        ("card_arrival,,3,false,true\n", "empty queue"),
        (",cards,3,false,true\n", "empty intent"),
    ],
)
def test_bad_rows_are_clear_errors(tmp_path: Path, rows: str, expected: str) -> None:
    with pytest.raises(RoutingError, match="problem") as err:
        load_routing(_write(tmp_path, rows))
    assert expected in str(err.value)


def test_missing_column_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match="missing column"):
        load_routing(_write(tmp_path, "card_arrival,cards\n", header="intent,queue\n"))


def test_urgent_if_negative_defaults_without_the_column(tmp_path: Path) -> None:
    table = load_routing(_write(tmp_path, "declined_transfer,transfers,2,false,false\n"))
    assert route("declined_transfer", 0.9, "negative", 0.5, table=table).urgent


@pytest.mark.parametrize("name", ["Alice", "Mr Oluwaseun Adebayo-Smith", "Zoë", "李伟"])
def test_routing_is_invariant_to_the_customers_name(name: str) -> None:
    # Routing sees only the scored intent/confidence/sentiment; a stub scorer that reads the text
    # (as the flow will) must still give the same decision whatever name the message carries.
    def score(text: str) -> tuple[str, float, str]:
        return ("card_arrival" if "card" in text.lower() else "general_question", 0.95, "neutral")

    base = route(*score("Hi, where is my new card?"), threshold=0.9)
    other = route(*score(f"Hi, I'm {name}, where is my new card?"), threshold=0.9)
    assert base == other


def _synthetic_validation(n: int = 3000, seed: int = 0) -> tuple[list[float], list[bool]]:
    # A calibrated-ish model: a prediction with confidence c is right with probability c.
    rng = random.Random(seed)
    conf = [rng.betavariate(5, 1.5) for _ in range(n)]
    return conf, [rng.random() < c for c in conf]


def test_tuned_threshold_reaches_95_precision_and_reports_coverage() -> None:
    conf, correct = _synthetic_validation()
    result = tune_threshold(conf, correct, target=0.95)
    assert result.reached and result.threshold is not None
    auto = [k for c, k in zip(conf, correct) if c >= result.threshold]
    assert sum(auto) / len(auto) >= 0.95 and len(auto) == result.n_auto
    assert result.coverage == pytest.approx(len(auto) / len(conf)) and 0 < result.coverage < 1
    # The lowest such threshold: one step lower would break the target (or the support).
    lower = max(c for c in conf if c < result.threshold)
    below = [k for c, k in zip(conf, correct) if c >= lower]
    assert sum(below) / len(below) < 0.95


def test_eligible_mask_limits_auto_answers_but_coverage_is_over_all() -> None:
    conf, correct = _synthetic_validation()
    eligible = [i % 2 == 0 for i in range(len(conf))]
    result = tune_threshold(conf, correct, eligible=eligible)
    assert result.reached and result.n_auto <= sum(eligible) and result.n == len(conf)


@pytest.mark.parametrize(
    ("conf", "correct", "min_support"),
    [
        ([0.9] * 100, [i % 2 == 0 for i in range(100)], 20),  # 50% precision at every cut
        ([0.99, 0.98, 0.5], [True, True, False], 20),  # right, but too few to trust
        ([], [], 1),
    ],
)
def test_unreachable_target_gives_a_clear_result(conf: list[float], correct: list[bool], min_support: int) -> None:
    result = tune_threshold(conf, correct, min_support=min_support)
    assert not result.reached and result.threshold is None and result.coverage == 0.0
    assert "no threshold reaches 95% precision" in result.reason
    assert route("card_arrival", 0.999, "neutral", result.threshold).action == HUMAN


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        tune_threshold([0.5, 0.6], [True])
