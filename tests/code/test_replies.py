"""Reply drafts (models.replies): the shipped knowledge base, template drafts, guarded rewrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.replies import (
    DEFAULT_KB_PATH,
    KnowledgeBaseError,
    check_rewrite,
    draft_reply,
    extract_facts,
    load_kb,
)
from models.routing import HUMAN, route
from core.intents import BANKING77_INTENTS

KB = load_kb()


def test_kb_has_at_least_20_versioned_answers_with_facts() -> None:
    assert len(KB) >= 20 and set(KB) <= set(BANKING77_INTENTS)
    assert len({a.template_id for a in KB.values()}) == len(KB)
    for answer in KB.values():
        assert answer.version >= 1
        facts = extract_facts(answer.text)
        assert facts["numbers"] or answer.keep, answer.intent  # something concrete to keep


@pytest.mark.parametrize("intent", sorted(KB))
def test_template_draft_keeps_the_templates_facts(intent: str) -> None:
    draft = draft_reply(intent, "hello?", KB, customer_name="Alice")
    assert draft.template_id == KB[intent].template_id and draft.version == KB[intent].version
    assert not draft.rewritten and not draft.needs_human and draft.text.startswith("Hi Alice")
    assert check_rewrite(KB[intent].text.replace("{customer_name}", "Alice"), draft.text, KB[intent].keep) is None
    assert "{" not in draft.text


def test_draft_lists_the_facts_used() -> None:
    draft = draft_reply("top_up_limits", "what is the max top up", KB)
    assert "amounts:£10,000" in draft.facts and "amounts:£50,000" in draft.facts
    assert "keep:Account > Limits" in draft.facts


def _polite(text: str, message: str) -> str:
    return "Thanks for getting in touch. " + text


@pytest.mark.parametrize(
    ("intent", "rewrite", "reason"),
    [
        ("top_up_limits", lambda t, m: t.replace("£10,000", "£20,000"), "drops amounts"),
        ("card_delivery_estimate", lambda t, m: t.replace("£5", "$5"), "drops amounts"),
        ("pending_transfer", lambda t, m: t.replace("24 hours", "24 days"), "drops durations"),
        ("card_arrival", lambda t, m: t.replace("5 working days", "five working days"), "drops"),
        ("verify_my_identity", lambda t, m: t + " Or visit https://bank-help.example/login.", "adds urls"),
        ("verify_my_identity", lambda t, m: t.replace("https://bank.example/help/verify", "our website"), "drops urls"),
        ("request_refund", lambda t, m: t + " Call us on 0800 123 456.", "adds numbers"),
        ("request_refund", lambda t, m: t + " We will reply within two days.", "adds numbers"),
        ("exchange_charge", lambda t, m: t.replace("0.5%", "0.25%"), "drops percents"),
        ("pin_blocked", lambda t, m: t.replace("Cards > Unblock PIN", "the settings"), "drops step"),
        ("age_limit", lambda t, m: "", "empty rewrite"),
        ("age_limit", lambda t, m: t + " {secret}", "braces"),
    ],
)
def test_rewrite_that_changes_or_invents_facts_is_rejected(intent: str, rewrite, reason: str) -> None:
    draft = draft_reply(intent, "a question", KB, rewrite=rewrite)
    template = draft_reply(intent, "a question", KB)
    assert not draft.rewritten and draft.text == template.text
    assert draft.rejected_reason and reason in draft.rejected_reason


def test_rewrite_that_keeps_facts_is_accepted() -> None:
    draft = draft_reply("pending_transfer", "where is my money??", KB, rewrite=_polite)
    assert draft.rewritten and draft.text.startswith("Thanks for getting in touch.")
    assert draft.rejected_reason is None


def test_rewrite_hook_receives_template_and_message_and_failure_falls_back() -> None:
    seen: list[tuple[str, str]] = []

    def boom(text: str, message: str) -> str:
        seen.append((text, message))
        raise RuntimeError("model offline")

    draft = draft_reply("age_limit", "how old must I be", KB, rewrite=boom)
    assert seen and seen[0][1] == "how old must I be" and "18 years" in seen[0][0]
    assert not draft.rewritten and "model offline" in (draft.rejected_reason or "")
    assert "18 years" in draft.text


def test_intent_without_answer_is_a_human_decision_not_a_crash() -> None:
    intent = "lost_or_stolen_card"
    assert intent not in KB
    draft = draft_reply(intent, "my card was stolen", KB, rewrite=_polite)
    assert draft.needs_human and draft.text == "" and draft.template_id is None
    assert route(intent, 0.99, "negative", 0.5, answers=KB.keys()).action == HUMAN
    assert draft_reply(None, "", KB).needs_human


@pytest.mark.parametrize(
    ("name", "greeting"),
    [("Ana", "Hi Ana,"), ("Mary-Jane O'Neil", "Hi Mary-Jane O'Neil,"), (None, "Hi there,"),
     ("visit http://x.example", "Hi there,"), ("Agent 007", "Hi there,"), ("{customer_name}", "Hi there,")],
)
def test_customer_name_only_where_safe(name: str | None, greeting: str) -> None:
    draft = draft_reply("card_arrival", "where is my card", KB, customer_name=name)
    assert draft.text.startswith(greeting)
    assert check_rewrite(draft_reply("card_arrival", "", KB).text, draft.text.replace(greeting, "Hi there,")) is None


@pytest.mark.parametrize("name", ["Alice", "Bob Smith", "Zoë"])
def test_template_draft_is_invariant_to_the_name_in_the_message(name: str) -> None:
    a = draft_reply("card_arrival", "where is my card?", KB)
    b = draft_reply("card_arrival", f"I'm {name}, where is my card?", KB)
    assert a == b


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"not_an_intent": {"template_id": "x", "version": 1, "text": "hi"}}, "unknown intent"),
        ({"age_limit": {"template_id": "x", "version": 0, "text": "hi"}}, "version must be a positive integer"),
        ({"age_limit": {"template_id": "x", "version": 1, "text": ""}}, "empty text"),
        ({"age_limit": {"template_id": "x", "version": 1, "text": "Hi {account_number}"}}, "not allowed"),
        ({"age_limit": {"template_id": "x", "version": 1, "text": "Hi", "keep": ["Menu"]}}, "keep phrase"),
        ({"age_limit": {"template_id": "x", "version": 1, "text": "a"},
          "change_pin": {"template_id": "x", "version": 1, "text": "b"}}, "already used"),
    ],
)
def test_bad_kb_entries_are_clear_errors(tmp_path: Path, entry: dict, expected: str) -> None:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"answers": entry}), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError) as err:
        load_kb(path)
    assert expected in str(err.value)


def test_default_kb_path_is_shipped() -> None:
    assert DEFAULT_KB_PATH.is_file()
