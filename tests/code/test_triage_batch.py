"""Triage of one batch (models.triage_batch), no Prefect, no warehouse: a fake intent model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from models.replies import extract_facts, load_kb
from models.routing import load_routing
from models.triage_batch import (
    auto_answer_threshold,
    chat_rewriter,
    has_chat_template,
    language_issue,
    score_intents,
    triage_batch,
)
from core.intents import BANKING77_INTENTS

KB = load_kb()
TABLE = load_routing()

# keyword -> intent; "definitely" makes the fake model confident
KEYWORDS = [("stolen", "lost_or_stolen_card"), ("declined", "declined_card_payment"), ("arrive", "card_arrival"),
            ("activate", "activate_my_card"), ("rate", "exchange_rate")]


class FakeIntentModel:
    """Looks like models.serving.ServedModel for triage: ``.score(texts)`` and ``.info``."""

    def __init__(self, threshold: float | None = 0.9, fail_on: str | None = None, heads: bool = True,
                 sentiment: bool = False) -> None:
        self.info = {"auto_answer": {"threshold": threshold, "precision": 0.96, "coverage": 0.4, "target": 0.95,
                                     "reason": "test"}}
        self.fail_on, self.heads, self.sentiment = fail_on, heads, sentiment
        self.seen: list[str] = []

    def score(self, texts: list[str]):
        self.seen += texts
        if self.fail_on and any(self.fail_on in t for t in texts):
            raise RuntimeError("cannot score this text")
        rows = []
        for t in texts:
            intent = next((i for k, i in KEYWORDS if k in t.lower()), "card_linking")
            conf = 0.99 if "definitely" in t.lower() else 0.6
            row = {"intent_label": intent, "intent_confidence": conf,
                   "intent_top3": [{"intent": intent, "p": conf}, {"intent": "card_linking", "p": 1 - conf}]}
            if self.sentiment:
                row.update(sentiment_label="negative" if "angry" in t.lower() else "neutral", sentiment_score=-0.5)
            rows.append(row)
        frame = pd.DataFrame(rows) if self.heads else pd.DataFrame({"topic_label": ["x"] * len(texts)})
        return frame, None


class FakeSentimentModel:
    info: dict = {}

    def score(self, texts: list[str]):
        neg = ["angry" in t.lower() or "terrible" in t.lower() for t in texts]
        return pd.DataFrame({"sentiment_label": ["negative" if n else "neutral" for n in neg],
                             "sentiment_score": [-0.8 if n else 0.0 for n in neg]}), None


def _run(texts, langs=None, **kwargs):
    ids = [f"m{i}" for i in range(len(texts))]
    model = kwargs.pop("model", None) or FakeIntentModel()
    threshold = kwargs.pop("threshold", auto_answer_threshold(model.info))
    scores, drafts, stats = triage_batch(ids, texts, langs or [None] * len(texts), model, kwargs.pop("table", TABLE),
                                         KB, sentiment_scorer=kwargs.pop("sentiment", FakeSentimentModel()),
                                         sentiment_model_version="s1", threshold=threshold, **kwargs)
    return scores.set_index("message_id"), drafts.set_index("message_id"), stats, model


@pytest.mark.parametrize(("text", "lang", "ok"), [
    ("My card has not arrived", None, True),
    ("My card has not arrived", "en-GB", True),
    ("", None, False),
    ("   \n", "en", False),
    ("Meine Karte ist nicht angekommen", "de", False),
    ("¿Dónde está mi tarjeta? No tengo dinero en la cuenta", None, False),
    ("Où est ma carte? Je ne peux pas payer", None, False),
    ("Моя карта не пришла", None, False),
    ("我的卡还没到", None, False),
    ("Why was my payment at Café Zürich declined?", None, True),
])
def test_language_issue(text: str, lang: str | None, ok: bool) -> None:
    stored, reason = language_issue(text, lang)
    assert (reason is None) == ok, (text, reason)
    assert stored


def test_routing_urgency_and_auto_answer() -> None:
    scores, drafts, stats, _ = _run([
        "My card was stolen, definitely",                    # urgent intent: person, priority 1
        "My card payment was declined",                      # failed payment, neutral: not urgent
        "Angry! My card payment was declined again",         # failed payment + negative: urgent
        "Definitely: when will my card arrive?",             # confident, auto-answerable: draft
        "when will my card arrive?",                         # below threshold: person
        "How do I link my card?",                            # not auto-answerable
    ])
    lost, declined, angry, arrive, unsure, link = (scores.loc[f"m{i}"] for i in range(6))
    assert (lost.queue, lost.priority, lost.urgent, lost.decision) == ("account_security", 1, True, "human")
    assert not declined.urgent and declined.decision == "human" and declined.sentiment_label == "neutral"
    assert angry.urgent and angry.priority == 1 and "negative sentiment on a failed payment" in angry.reasons
    assert arrive.decision == "auto_answer" and arrive.queue == "cards" and not arrive.urgent
    assert unsure.decision == "human" and "below threshold" in unsure.reasons
    assert link.decision == "human"
    assert list(drafts.index) == ["m3"] and stats.auto_answered == stats.drafts == 1
    assert json.loads(arrive.intent_top3)[0] == {"intent": "card_arrival", "p": 0.99}
    assert arrive.sentiment_model_version == "s1"


def test_no_threshold_means_no_auto_answer() -> None:
    scores, drafts, _, _ = _run(["Definitely: when will my card arrive?"], model=FakeIntentModel(threshold=None))
    assert scores.loc["m0"].decision == "human" and "no auto-answer threshold" in scores.loc["m0"].reasons
    assert drafts.empty
    assert auto_answer_threshold({}) is None and auto_answer_threshold({"auto_answer": {"threshold": "x"}}) is None
    assert auto_answer_threshold({"auto_answer": {"threshold": 0.93}}) == 0.93


def test_drafts_keep_the_templates_facts_and_invent_none() -> None:
    auto_intents = [i for i in KB if TABLE.get(i) and TABLE.get(i).auto_answerable and not TABLE.get(i).urgent]
    assert len(auto_intents) >= 10

    class PerIntent(FakeIntentModel):
        def score(self, texts):
            return pd.DataFrame({"intent_label": texts, "intent_confidence": [0.99] * len(texts)}), None

    scores, drafts, _, _ = _run(auto_intents, model=PerIntent())
    assert (scores.decision == "auto_answer").all() and len(drafts) == len(auto_intents)
    for mid, d in drafts.iterrows():
        template = KB[scores.loc[mid].intent_label]
        want = extract_facts(template.text)
        got = extract_facts(d.draft_text)
        for kind in ("numbers", "urls", "amounts", "percents", "durations"):
            assert got[kind] == want[kind], (mid, kind)
        assert d.template_id == template.template_id and d.template_version == template.version
        assert not d.rewritten and "{" not in d.draft_text


def test_rewrite_through_a_chat_template_is_kept_only_with_its_facts() -> None:
    chats: list[list[dict]] = []

    def faithful(messages):
        chats.append(messages)
        template = messages[-1]["content"].split("Approved answer:\n")[1].split("\n\nRewritten answer:")[0]
        return "Sorry for the wait! " + template

    def inventive(messages):
        return "Call 0800 555 0199 or see https://evil.example, it takes 2 days."

    text = "Definitely: when will my card arrive? It's been ages"
    _, drafts, stats, _ = _run([text], rewrite=chat_rewriter(faithful))
    d = drafts.loc["m0"]
    assert d.rewritten and d.draft_text.startswith("Sorry for the wait!") and stats.rewritten == 1
    assert [m["role"] for m in chats[0]] == ["system", "user"] and text in chats[0][1]["content"]
    _, drafts, stats, _ = _run([text], rewrite=chat_rewriter(inventive))
    d = drafts.loc["m0"]
    assert not d.rewritten and "rewrite" in d.rewrite_rejected and stats.rewritten == 0
    assert "0800" not in d.draft_text and "evil" not in d.draft_text
    assert d.draft_text == KB["card_arrival"].text.format(customer_name="there")

    class Tok:
        chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"

    assert has_chat_template(Tok()) and not has_chat_template(object())


def test_empty_and_foreign_messages_go_to_a_person_unscored() -> None:
    scores, drafts, stats, model = _run(
        ["Definitely: when will my card arrive?", "   ", "Meine Karte ist nicht angekommen",
         "¿Dónde está mi tarjeta? No tengo dinero en la cuenta"],
        langs=[None, None, "de", None])
    assert scores.loc["m0"].decision == "auto_answer"
    for mid in ("m1", "m2", "m3"):
        row = scores.loc[mid]
        assert row.decision == "human" and row.queue == TABLE.default_queue and pd.isna(row.intent_label)
        assert "needs a person" in row.reasons
    assert "empty message" in scores.loc["m1"].reasons and "'de'" in scores.loc["m2"].reasons
    assert scores.loc["m3"].lang == "und" and scores.loc["m2"].lang == "de"
    assert model.seen == ["Definitely: when will my card arrive?"]  # only the English text was scored
    assert stats.not_scored == 3 and list(drafts.index) == ["m0"]


def test_one_unscorable_message_goes_to_a_person_the_rest_are_triaged() -> None:
    scores, _, stats, _ = _run(["My card was stolen", "boom this breaks", "my card payment was declined"],
                               model=FakeIntentModel(fail_on="boom"))
    assert len(scores) == 3 and stats.score_failed == 1 and stats.scored == 2
    assert scores.loc["m1"].decision == "human" and "scoring failed" in scores.loc["m1"].reasons
    assert scores.loc["m0"].intent_label == "lost_or_stolen_card"
    with pytest.raises(RuntimeError, match="every message"):  # a broken model records nothing
        _run(["boom", "boom again"], model=FakeIntentModel(fail_on="boom"))
    with pytest.raises(ValueError, match="no intent head"):
        score_intents(FakeIntentModel(heads=False), ["hello"])


def test_missing_routing_rows_go_to_the_default_queue(tmp_path) -> None:
    lines = (TABLE.source and open(TABLE.source, encoding="utf-8").read().splitlines())
    kept = [ln for ln in lines if not ln.startswith(("card_arrival,", "lost_or_stolen_card,"))]
    path = tmp_path / "routing.csv"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    table = load_routing(path)
    assert set(table.missing) == {"card_arrival", "lost_or_stolen_card"}
    scores, drafts, _, _ = _run(["Definitely: when will my card arrive?", "My card was stolen"], table=table)
    for mid in ("m0", "m1"):
        assert scores.loc[mid].queue == "general" and scores.loc[mid].decision == "human"
        assert "not in routing table" in scores.loc[mid].reasons
    assert drafts.empty


def test_sentiment_from_the_intent_model_when_no_sentiment_model_serves() -> None:
    scores, _, _, _ = _run(["angry: my card payment was declined"], model=FakeIntentModel(sentiment=True),
                           sentiment=None)
    assert scores.loc["m0"].sentiment_label == "negative" and scores.loc["m0"].urgent


def test_every_known_intent_routes() -> None:
    model_frame = pd.DataFrame({"intent_label": list(BANKING77_INTENTS), "intent_confidence": [0.5] * 77})

    class All(FakeIntentModel):
        def score(self, texts):
            return model_frame.iloc[: len(texts)].reset_index(drop=True), None

    scores, _, _, _ = _run([f"message {i}" for i in range(77)], model=All())
    assert scores.queue.notna().all() and scores.priority.between(1, 4).all()


def test_chat_template_generation_with_a_tiny_lm(tmp_path) -> None:
    """lm_chat_generate on a real (random, tiny) causal LM with a chat template: it returns text, and
    draft_reply keeps the approved answer unless that text keeps every fact (random text does not)."""
    import torch

    from models.backbone import build_backbone
    from models.replies import draft_reply
    from models.tokenizer import train_tokenizer
    from models.triage_batch import lm_chat_generate

    tok = train_tokenizer(["my card has not arrived yet please help"] * 50, tmp_path / "tok", vocab_size=260,
                          max_length=64)
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant> {% endif %}")
    assert has_chat_template(tok)
    torch.manual_seed(0)
    model = build_backbone("tiny", tok).eval()
    generate = lm_chat_generate(model, tok, max_new_tokens=8)
    text = generate([{"role": "user", "content": "hello"}])
    assert isinstance(text, str)
    draft = draft_reply("card_arrival", "where is my card", KB, rewrite=chat_rewriter(generate))
    assert draft.text == KB["card_arrival"].text.format(customer_name="there") or draft.rewritten
    assert draft.rewritten or draft.rejected_reason
