"""Seeded support-inbox stream for the demo, with an injected outage whose onset is ground truth.

Beside the synthetic news stream (:mod:`sources.synthetic`), over the same days: a bank's support
inbox with ``messages_per_day`` messages (a daily rhythm, quieter nights and weekends), each with
an inbox id, channel, customer and time, and one **outage**: from ``onset`` for ``outage_hours``
hours the messages of the outage intents (``card_not_working``, ``declined_card_payment``,
``declined_transfer``) arrive on top of the usual traffic at ``outage_factor`` times its rate.
:func:`generate_support_stream` writes:

- ``support_inbox.jsonl``: what ``newspulse ingest support`` reads (message_id, channel,
  customer_id, created_at, text); no labels: an inbox carries none;
- ``support_truth.json``: the outage (onset, end, intents), where the texts came from, counts;
- ``support_intents.csv``: the true intent of every inbox message (message_id, intent), to score
  the intent model on the stream; never ingested;
- ``support_train.csv`` (only without BANKING77): labelled texts for the demo's intent model
  (message_id, text, intent, dataset, split), from templates phrased apart from the stream's.

Texts: with BANKING77 (``<data_dir>/banking77/test.csv``) every message is a real BANKING77
*test* text of its intent (an intent model trained on BANKING77 train is scored on unseen text;
all 77 intents, with a skewed everyday mix); without it, built-in templates for 16 intents (no
dataset text in the repository). Same seed and arguments give byte-identical files. Plain Python:
no Prefect, no DuckDB.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OUTAGE_INTENTS: tuple[str, ...] = ("card_not_working", "declined_card_payment", "declined_transfer")
OUTAGE_MIX = (0.45, 0.35, 0.20)
USUAL_OUTAGE_SHARE = 0.015
DATASET = "synthetic_support"
# Support traffic per UTC hour (relative): a busy working day, an evening tail, a quiet night.
HOUR_PROFILE = (0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.45, 0.8, 1.2, 1.5, 1.6, 1.6,
                1.5, 1.5, 1.6, 1.55, 1.45, 1.3, 1.15, 1.0, 0.8, 0.6, 0.4, 0.25)
WEEKEND_FACTOR = 0.6
CHANNELS = (("chat", 0.5), ("app", 0.25), ("email", 0.2), ("phone", 0.05))

FILL: dict[str, tuple[str, ...]] = {
    "merchant": ("the supermarket", "a petrol station", "an online shop", "the pharmacy", "a restaurant",
                 "the train station", "a hotel", "my gym", "a taxi app", "the bookshop"),
    "amount": ("12.50", "40", "86.20", "150", "9.99", "230", "64", "1,200", "18", "500"),
    "cur": ("EUR", "GBP", "USD", "CHF", "PLN", "SEK"),
    "country": ("Spain", "Italy", "Germany", "the US", "Portugal", "Greece", "Japan", "Canada"),
    "when": ("today", "this morning", "just now", "an hour ago", "yesterday", "last night", "on Monday"),
    "who": ("my landlord", "my sister", "a friend", "my employer", "a supplier", "my flatmate"),
    "days": ("three", "five", "ten", "two", "seven"),
}
HELLO = ("", "", "", "Hi, ", "Hello, ", "Hey, ", "Good morning, ", "Hi team, ", "Urgent: ")
BYE = ("", "", "", " Thanks.", " Please help.", " What should I do?", " Can you check?", " Thank you!",
       " This is really annoying.", " Please fix this asap.")

# Stream phrasing per intent (names are BANKING77's).
STREAM: dict[str, tuple[str, ...]] = {
    "card_not_working": (
        "my card is not working at {merchant}", "the card stopped working {when}",
        "why does my card not work anymore", "my card doesn't work in any shop {when}",
        "card not working at {merchant}, tried three times", "is there a problem with cards? mine is not working",
        "my debit card suddenly stopped working", "the chip on my card isn't working {when}"),
    "declined_card_payment": (
        "my card payment at {merchant} was declined", "payment of {amount} {cur} got declined {when}",
        "why was my card declined at {merchant}", "every card payment I try is being declined",
        "card declined when paying {amount} {cur}", "my payment keeps getting declined {when}",
        "declined at the till at {merchant}, I have money in the account"),
    "declined_transfer": (
        "my transfer to {who} was declined", "the bank transfer of {amount} {cur} got declined {when}",
        "why can't I send money to {who}? it says declined", "transfer declined, please explain",
        "my payment to {who} keeps failing as declined", "I tried to transfer {amount} {cur} and it was rejected"),
    "card_arrival": (
        "my new card has not arrived yet", "when will my card arrive? ordered {days} days ago",
        "still waiting for the card I ordered", "the card was supposed to come {when} but nothing",
        "how long until my card is delivered"),
    "lost_or_stolen_card": (
        "I lost my card {when}", "my card was stolen at {merchant}", "I think someone took my card",
        "can't find my card anywhere, please block it", "my wallet with the card was stolen in {country}"),
    "exchange_rate": (
        "what exchange rate do you use for {cur}", "how is the rate for {cur} calculated",
        "is the exchange rate for {cur} fixed", "where can I see today's {cur} rate"),
    "pending_transfer": (
        "my transfer to {who} is still pending", "transfer of {amount} {cur} pending since {when}",
        "why is my transfer stuck as pending", "how long does a pending transfer take"),
    "top_up_failed": (
        "my top up failed {when}", "tried to top up {amount} {cur} but it failed",
        "top-up did not go through", "why does my top up keep failing"),
    "change_pin": (
        "how do I change my PIN", "I want a new PIN for my card", "can I change the PIN in the app",
        "where do I reset my card PIN"),
    "request_refund": (
        "I want a refund from {merchant}", "how do I get my money back for a purchase",
        "requesting a refund of {amount} {cur}", "can you refund the payment at {merchant}"),
    "transfer_fee_charged": (
        "why was I charged a fee for my transfer", "there is a fee on my transfer to {who}",
        "I paid {amount} {cur} and got charged an extra fee", "transfer fee appeared on my statement"),
    "balance_not_updated_after_bank_transfer": (
        "my balance hasn't updated after the transfer", "money from {who} not showing in my balance",
        "I received a transfer but the balance is the same", "balance still old after the bank transfer {when}"),
    "activate_my_card": (
        "how do I activate my card", "I got the card, how to activate it", "card activation is not obvious",
        "where in the app do I activate the new card"),
    "passcode_forgotten": (
        "I forgot my passcode", "can't remember the app passcode", "how do I reset my passcode",
        "locked out, forgot the passcode"),
    "terminate_account": (
        "I want to close my account", "how do I delete my account", "please terminate my account",
        "I'd like to cancel everything and close the account"),
    "cash_withdrawal_charge": (
        "why was I charged for taking cash out", "fee for an ATM withdrawal in {country}",
        "I withdrew {amount} {cur} and got charged", "is there a charge for cash withdrawals"),
}
# Training phrasing for the demo's intent model without BANKING77: worded apart from STREAM.
TRAIN: dict[str, tuple[str, ...]] = {
    "card_not_working": ("card won't work", "my bank card fails every time", "the card is dead, it does nothing",
                         "card refuses to function", "help, card broken"),
    "declined_card_payment": ("shop rejected my card", "purchase refused by the terminal",
                              "the merchant said my card was refused", "card got rejected paying for groceries",
                              "payment refused at checkout"),
    "declined_transfer": ("money transfer refused", "outgoing payment to a friend refused",
                          "the bank refused my transfer", "sending funds was rejected",
                          "wire to another account refused"),
    "card_arrival": ("where is my card", "card delivery is late", "no card in the post yet",
                     "tracking for my card shipment", "card has still not been delivered"),
    "lost_or_stolen_card": ("someone stole my card", "card is missing", "freeze my card, it's gone",
                            "I misplaced my bank card", "card taken from my bag"),
    "exchange_rate": ("currency conversion rate", "what rate for foreign currency", "conversion rate info",
                      "how much is one pound in euro here", "rates for currencies"),
    "pending_transfer": ("transfer not completed yet", "outgoing transfer on hold", "payment still processing",
                         "transfer waiting for ages", "sent money shows as in progress"),
    "top_up_failed": ("adding money failed", "couldn't load money into the account", "topping up gives an error",
                      "top up unsuccessful", "loading funds did not work"),
    "change_pin": ("new pin please", "update card pin", "modify my pin number", "set a different pin",
                   "pin change"),
    "request_refund": ("money back please", "I need a refund", "return my payment", "refund for an order",
                       "get a refund on a purchase"),
    "transfer_fee_charged": ("charge on a transfer", "fee taken from my transfer", "why a transfer cost",
                             "extra cost for sending money", "transfer was more expensive than expected"),
    "balance_not_updated_after_bank_transfer": ("incoming transfer missing from balance",
                                                "balance not reflecting money received",
                                                "account total didn't change after payment in",
                                                "deposit by transfer not in balance", "balance wrong after transfer"),
    "activate_my_card": ("card activation", "turn on my new card", "make the card active",
                         "enable the card I received", "start using new card"),
    "passcode_forgotten": ("lost my login code", "passcode reset", "don't know my code for the app",
                           "forgotten security code", "new passcode needed"),
    "terminate_account": ("close account", "end my membership with the bank", "shut down my account",
                          "remove my account permanently", "quit this bank"),
    "cash_withdrawal_charge": ("atm fee", "charged for withdrawing money", "cash machine cost",
                               "withdrawal fee question", "why a charge at the cash point"),
}


def _fill(template: str, r: random.Random) -> str:
    return template.format(**{k: r.choice(v) for k, v in FILL.items() if "{" + k + "}" in template})


def _template_text(intent: str, r: random.Random, table: dict[str, tuple[str, ...]]) -> str:
    body = _fill(r.choice(table[intent]), r)
    hello, bye = r.choice(HELLO), r.choice(BYE)
    if bye and body[-1] not in ".?!":
        body += "."
    text = hello + (body if not hello else body[0].lower() + body[1:]) + bye
    return text[0].upper() + text[1:]


def _banking77_texts(data_dir: Path | str | None) -> dict[str, list[str]] | None:
    """BANKING77 *test* texts by intent, or None when the file is not there."""
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser() / "banking77" / "test.csv"
    if not path.is_file():
        return None
    from sources.support import read_banking77

    df = read_banking77(path)
    df = df[df["error"].isna() & df["text"].notna() & df["label"].notna()]
    out: dict[str, list[str]] = {}
    for text, label in zip(df["text"], df["label"], strict=True):
        out.setdefault(str(label), []).append(str(text))
    return out or None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_support_stream(out_dir: Path | str, seed: int = 7, days: int = 14,
                            start: datetime = datetime(2026, 10, 1, tzinfo=UTC), messages_per_day: int = 200,
                            data_dir: Path | str | None = None, outage_day: int | None = None,
                            outage_hours: float = 3.0, outage_factor: float = 1.5,
                            train_per_intent: int = 40) -> dict[str, Any]:
    """Write the support inbox, its ground truth and (without BANKING77) a training file.

    ``outage_day`` (default: about 70 % through the stream, never before day 3 so the monitor has
    history) is the day of the outage; its onset falls between 09:00 and 15:00 UTC. Returns
    ``{"paths": {inbox, truth, intents, train (None with BANKING77)}, "ground_truth": {...}}``.
    """
    if days < 4:
        raise ValueError("the support stream needs at least 4 days (history before the outage)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = random.Random(f"support-{seed}")
    real = _banking77_texts(data_dir)
    intents = sorted(real) if real else sorted(STREAM)
    # The everyday mix: skewed (a few intents are most of the inbox), the outage intents ordinary.
    shuffled = intents[:]
    r.shuffle(shuffled)
    weights = {name: 1.0 / (1 + rank) ** 0.7 for rank, name in enumerate(shuffled)}
    norm = sum(weights.values())
    weights = {k: v / norm for k, v in weights.items()}
    # Every outage intent at an ordinary share on ordinary days: the median intent's, at most 1.5 %
    # (card trouble is a small part of a bank's inbox until something breaks).
    typical = min(sorted(weights.values())[len(weights) // 2], USUAL_OUTAGE_SHARE)
    for name in OUTAGE_INTENTS:
        weights[name] = typical
    norm = sum(weights.values())
    weights = {k: v / norm for k, v in weights.items()}
    names, wts = list(weights), list(weights.values())

    day = outage_day if outage_day is not None else max(3, round(days * 0.7))
    day = min(max(day, 3), days - 1)
    onset = start + timedelta(days=day, hours=r.randint(9, 14), minutes=r.randrange(0, 60, 5))
    end = onset + timedelta(hours=outage_hours)

    texts_used: dict[str, int] = {}

    def text_for(intent: str) -> str:
        if real:
            pool = real[intent]
            i = texts_used.get(intent, r.randrange(len(pool)))
            texts_used[intent] = i + 1
            return pool[i % len(pool)]
        return _template_text(intent, r, STREAM)

    per_hour = messages_per_day / (sum(HOUR_PROFILE) * (5 + 2 * WEEKEND_FACTOR) / 7)
    msgs: list[tuple[datetime, str]] = []
    for h in range(days * 24):
        t0 = start + timedelta(hours=h)
        rate = per_hour * HOUR_PROFILE[t0.hour] * (WEEKEND_FACTOR if t0.weekday() >= 5 else 1.0)
        for _ in range(_poisson(r, rate)):
            msgs.append((t0 + timedelta(seconds=r.randrange(3600)), r.choices(names, wts)[0]))
    n_background = len(msgs)
    # The outage: its intents arrive on top of the usual traffic from the onset on.
    outage = 0
    t = onset
    while t < end:
        t1 = min(t + timedelta(hours=1), end)
        rate = per_hour * HOUR_PROFILE[t.hour] * outage_factor * (t1 - t).total_seconds() / 3600
        for _ in range(_poisson(r, rate)):
            ts = t + timedelta(seconds=r.randrange(max(1, int((t1 - t).total_seconds()))))
            msgs.append((ts, r.choices(OUTAGE_INTENTS, OUTAGE_MIX)[0]))
            outage += 1
        t = t1
    msgs.sort(key=lambda m: m[0])

    inbox, gold = io.StringIO(), io.StringIO()
    gold_w = csv.writer(gold, lineterminator="\n")
    gold_w.writerow(["message_id", "intent"])
    channels, cw = [c for c, _ in CHANNELS], [w for _, w in CHANNELS]
    for i, (ts, intent) in enumerate(msgs, start=1):
        mid = f"sup-{seed}-{i:06d}"
        rec = {"message_id": mid, "channel": r.choices(channels, cw)[0], "customer_id": f"C{r.randint(1, 4000):05d}",
               "created_at": _iso(ts), "text": text_for(intent)}
        inbox.write(json.dumps(rec, ensure_ascii=False) + "\n")
        gold_w.writerow([mid, intent])
    paths = {"inbox": out / "support_inbox.jsonl", "truth": out / "support_truth.json",
             "intents": out / "support_intents.csv", "train": None if real else out / "support_train.csv"}
    paths["inbox"].write_text(inbox.getvalue(), encoding="utf-8")
    paths["intents"].write_text(gold.getvalue(), encoding="utf-8")
    n_train = 0
    if not real:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["message_id", "text", "intent", "dataset", "split"])
        tr = random.Random(f"support-train-{seed}")
        seen: set[str] = set()
        for intent in sorted(TRAIN):
            k = 0
            for _ in range(train_per_intent * 20):
                if k >= train_per_intent:
                    break
                text = _template_text(intent, tr, TRAIN)
                if text.lower() in seen:
                    continue
                seen.add(text.lower())
                k += 1
                w.writerow([f"suptrain-{seed}-{intent}-{k:03d}", text, intent, DATASET,
                            "validation" if k % 5 == 0 else "train"])
                n_train += 1
        paths["train"].write_text(buf.getvalue(), encoding="utf-8")
    in_outage = [m for m in msgs if onset <= m[0] < end]
    truth = {
        "outage": {"onset": _iso(onset), "end": _iso(end), "intents": list(OUTAGE_INTENTS),
                   "hours": outage_hours, "factor": outage_factor, "messages_injected": outage,
                   "messages_during": len(in_outage),
                   "outage_intent_share_during": round(sum(m[1] in OUTAGE_INTENTS for m in in_outage)
                                                       / max(len(in_outage), 1), 4),
                   "outage_intent_share_usual": round(sum(weights[n] for n in OUTAGE_INTENTS), 4)},
        "texts": "banking77 test" if real else "templates",
        "intents": len(names), "seed": seed, "days": days, "start": _iso(start),
        "counts": {"messages": len(msgs), "background": n_background, "outage": outage, "train": n_train},
    }
    paths["truth"].write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"paths": {k: (str(v) if v else None) for k, v in paths.items()}, "ground_truth": truth}


def _poisson(r: random.Random, lam: float) -> int:
    """A Poisson draw from ``random.Random`` (Knuth; small rates only)."""
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation keeps the loop short
        return max(0, round(r.gauss(lam, lam ** 0.5)))
    import math

    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= r.random()
        if p <= limit:
            return k
        k += 1


def intent_accuracy(intents_csv: Path | str, predicted: dict[str, str]) -> dict[str, Any]:
    """Share of stream messages (by inbox id) whose predicted intent is the true one."""
    with open(intents_csv, encoding="utf-8", newline="") as fh:
        gold = {row["message_id"]: row["intent"] for row in csv.DictReader(fh)}
    both = [m for m in gold if m in predicted]
    right = sum(predicted[m] == gold[m] for m in both)
    return {"messages": len(both), "accuracy": right / len(both) if both else None}
