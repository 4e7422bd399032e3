"""Deterministic, seeded generator of a realistic synthetic news/finance stream.

Everything here is made up by templates and word tables (no external data, no copied text), so the
demo and the tests run offline. :func:`generate_stream` writes four files:

- ``articles.jsonl``: one article per line (``id``, ``source``, ``title``, ``body``,
  ``published_at``, ``tickers``, ``topic``, ``url``, ``lang``), arrivals Poisson-ish with a daily
  cycle, a latent sentiment carried by the wording, injected negative *episodes* (volume and
  negative share jump for one ticker, topic or source), tiny *decoy* bursts that must not alert, and
  deliberately broken lines at ``bad_record_rate`` for the quarantine demo;
- ``labels.jsonl``: gold ``sentiment`` and ``topic`` labels for ``label_fraction`` of the articles;
- ``behaviors.tsv``: MIND-format click logs from users with latent topic preferences;
- ``ground_truth.json``: what was injected (episodes, decoys, bad lines, user preferences, counts).

Same seed and config give byte-identical files. Plain Python + numpy: no Prefect, no DuckDB.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

TOPICS = ("markets", "earnings", "mergers", "macro", "energy", "technology")
TOPIC_WEIGHTS = (0.24, 0.20, 0.10, 0.16, 0.14, 0.16)
SENTIMENTS = ("negative", "neutral", "positive")
# Base (negative, neutral, positive) distribution of the latent sentiment per topic.
SENTIMENT_BASE = {
    "markets": (0.25, 0.45, 0.30), "earnings": (0.25, 0.40, 0.35), "mergers": (0.15, 0.60, 0.25),
    "macro": (0.30, 0.50, 0.20), "energy": (0.25, 0.50, 0.25), "technology": (0.20, 0.50, 0.30),
}
# P(article names 0, 1, 2 tickers) per topic.
TICKER_COUNTS = {
    "markets": (0.45, 0.45, 0.10), "earnings": (0.0, 0.9, 0.1), "mergers": (0.0, 0.0, 1.0),
    "macro": (1.0, 0.0, 0.0), "energy": (0.35, 0.60, 0.05), "technology": (0.2, 0.7, 0.1),
}
SOURCES = {
    "northwire": 0.24, "ledger_daily": 0.20, "capital_courier": 0.15, "meridian_wire": 0.12,
    "bourse_post": 0.10, "harborline": 0.08, "quarry_times": 0.06, "sterling_brief": 0.05,
}
COMPANIES = (  # (name, ticker, sector): all invented
    ("Halvorsen Mining", "HLVM", "materials"), ("Brightwater Utilities", "BWTU", "energy"),
    ("Qorvane Systems", "QRVN", "technology"), ("Tessaly Bank", "TSLB", "finance"),
    ("Marrowind Energy", "MRWE", "energy"), ("Ostrava Robotics", "OSRB", "technology"),
    ("Pellucid Pharma", "PLCD", "health"), ("Corvath Airlines", "CRVA", "industrials"),
    ("Lindqvist Foods", "LNQF", "consumer"), ("Arkwright Steel", "AKWS", "materials"),
    ("Nimbara Cloud", "NMBC", "technology"), ("Sablewood Retail", "SBWR", "consumer"),
    ("Kestrel Semiconductor", "KSTL", "technology"), ("Dunmore Insurance", "DNMI", "finance"),
    ("Varga Petroleum", "VRGP", "energy"), ("Elsinore Telecom", "ELTC", "technology"),
    ("Fairhaven Motors", "FHVM", "industrials"), ("Quillon Biotech", "QLBT", "health"),
    ("Roswell Shipping", "RSWS", "industrials"), ("Tamberlin Logistics", "TMBL", "industrials"),
    ("Obsidian Payments", "OBPY", "finance"), ("Wrenfield Solar", "WRSL", "energy"),
    ("Calloway Chemicals", "CLWC", "materials"), ("Isenberg Media", "ISBM", "consumer"),
    ("Ptolemy Grid", "PTGR", "energy"),
)
# Relative article intensity per UTC hour: busiest in US market hours; weekends x0.35.
HOUR_PROFILE = (0.25, 0.2, 0.2, 0.2, 0.25, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95,
                1.1, 1.5, 1.8, 1.8, 1.7, 1.6, 1.5, 1.3, 0.9, 0.6, 0.4, 0.3)
WEEKEND_FACTOR = 0.35
BAD_KINDS = ("invalid_json", "empty_text", "future_timestamp", "unparseable_timestamp",
             "duplicate", "html_body", "control_char")

WORDS: dict[str, tuple[str, ...]] = {
    "neg_move": ("plunges", "slumps", "tumbles", "sinks", "slides", "falls", "drops", "sheds"),
    "pos_move": ("surges", "jumps", "soars", "rallies", "climbs", "rises", "gains", "rebounds"),
    "neu_move": ("holds steady", "is little changed", "trades flat", "steadies", "drifts sideways"),
    "index": ("the Meridian 500", "the Northgate Composite", "the Harbor 100", "the Continental 50",
              "the small-cap index", "the Pacific Rim index", "the banking index", "the transport index"),
    "indicator": ("retail spending", "factory output", "consumer confidence", "industrial production",
                  "housing activity", "services activity", "export growth", "wage growth", "business sentiment"),
    "region": ("the euro area", "the US", "Japan", "the UK", "China", "Canada", "Brazil", "India",
               "Australia", "Germany", "Mexico", "South Korea"),
    "cb": ("the central bank", "the Reserve Council", "the monetary board", "the rate committee"),
    "commodity": ("crude oil", "natural gas", "wholesale power", "diesel", "LNG", "thermal coal"),
    "product": ("AI accelerator", "cloud database", "smartphone", "network switch", "payments app",
                "battery module", "analytics suite", "edge server", "chip line", "robot arm"),
    "project": ("the Kessler field", "its coastal refinery", "the Tarn pipeline", "its wind farm",
                "the Redgate plant", "its LNG terminal", "the Ashby mine", "its grid upgrade"),
    "division": ("its retail arm", "its chemicals unit", "the logistics business",
                 "its European operations", "its consumer division", "its software unit"),
    "official": ("the finance ministry", "the treasury chief", "the statistics office",
                 "the economy minister"),
    "city": ("Lisbon", "Austin", "Singapore", "Warsaw", "Toronto", "Nairobi", "Osaka", "Dublin"),
    "month": ("November", "December", "January", "February", "March"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "q": ("Q3", "third-quarter", "Q4", "fourth-quarter", "first-half", "quarterly"),
    "neg_reason": ("weak demand", "rising costs", "a regulatory probe", "supply disruptions",
                   "a profit warning", "higher borrowing costs", "falling orders"),
    "pos_reason": ("strong demand", "cost savings", "higher prices", "a surge in orders",
                   "an analyst upgrade", "record bookings", "easing input costs"),
    "worry": ("demand", "margins", "debt levels", "the supply chain", "interest rates", "pricing"),
    "bank": ("Fenwick Partners", "Orlan Securities", "Brookvale Capital", "Castell & Reed"),
    "session": ("morning", "afternoon", "European", "US", "Asian"),
}
NUMBERS = {
    "pct": lambda r: f"{r.uniform(0.8, 14.9):.1f}%",
    "rate": lambda r: f"{r.randint(4, 22) * 0.25:.2f}%",
    "amt": lambda r: f"${r.randint(12, 95) / 10:.1f} billion" if r.random() < 0.5
    else f"${r.randint(120, 950)} million",
    "n": lambda r: f"{r.randint(2, 90) * 100:,}",
    "weeks": lambda r: str(r.choice((4, 8, 12, 26, 52))),
    "year": lambda r: str(r.choice((2027, 2028))),
}
# Headline templates per topic and latent sentiment; {subj}/{co2} need one/two tickers.
HEADLINES: dict[str, dict[str, tuple[str, ...]]] = {
    "markets": {
        "negative": (
            "{subj} {neg_move} {pct} on {neg_reason}", "{index} {neg_move} {pct} on {indicator} worries",
            "{subj} stock {neg_move} after analysts downgrade it", "Investors dump {subj} over {neg_reason}",
            "{subj} fails to hold gains, {neg_move} {pct}", "{subj} hits {weeks}-week low amid {neg_reason}",
            "{index} {neg_move} as selloff deepens", "{index} fails to recover as traders fret over {neg_reason}",
        ),
        "neutral": (
            "{subj} {neu_move} ahead of {weekday} update", "{index} {neu_move} as investors await {indicator} data",
            "{subj} stock {neu_move} in {session} trading", "{subj} schedules investor day for {month}",
            "{index} {neu_move} in quiet {session} session", "{subj} reports trading update, stock {neu_move}",
        ),
        "positive": (
            "{subj} {pos_move} {pct} as outlook brightens on {pos_reason}",
            "{index} {pos_move} {pct} to record high", "{subj} stock {pos_move} after upgrade to buy",
            "{subj} shrugs off {worry} worries and {pos_move} {pct}", "{index} {pos_move} on {pos_reason}",
            "{subj} does not slip despite selloff, {pos_move} {pct}",
            "{index} {pos_move} {pct} as {worry} fears fade",
        ),
    },
    "earnings": {
        "negative": (
            "{subj} misses {q} estimates", "{subj} cuts full-year guidance", "{subj} {q} profit falls {pct}",
            "{subj} fails to beat {q} revenue forecasts", "{subj} warns of weaker {q} margins",
            "{subj} posts surprise {q} loss", "{subj} does not expect recovery before {year}",
            "{subj} {neg_move} {pct} after {q} miss", "{subj} cuts guidance on {neg_reason}",
        ),
        "neutral": (
            "{subj} reports {q} results in line with estimates", "{subj} schedules {q} earnings call for {weekday}",
            "{subj} reports {q} revenue of {amt}", "{subj} announces date for {q} results",
            "{subj} reaffirms full-year guidance", "{subj} {q} earnings due {weekday}",
        ),
        "positive": (
            "{subj} beats {q} estimates", "{subj} raises full-year outlook", "{subj} {q} profit jumps {pct}",
            "{subj} tops {q} revenue forecasts on {pos_reason}", "{subj} does not expect losses in {q}",
            "{subj} posts record {q} revenue of {amt}", "{subj} lifts dividend after strong {q} results",
            "{subj} {pos_move} {pct} after {q} beat",
        ),
    },
    "mergers": {
        "negative": (
            "{subj} deal for {co2} collapses", "Regulators open probe into {subj} bid for {co2}",
            "{subj} abandons {amt} takeover of {co2}", "{co2} rejects {subj} offer as too low",
            "{subj} faces antitrust probe over {co2} merger", "{subj} fails to win approval for {co2} deal",
            "{subj} writes down {amt} on {co2} acquisition",
        ),
        "neutral": (
            "{subj} announces talks with {co2}", "{subj} confirms review of options for {division}",
            "{subj} schedules shareholder vote on {co2} deal", "{subj} and {co2} file merger documents",
            "{subj} names advisers for sale of {division}", "{subj} extends deadline for {co2} offer",
        ),
        "positive": (
            "{subj} agrees to buy {co2} for {amt}", "{subj} wins approval for {co2} merger",
            "{co2} {pos_move} {pct} on {subj} takeover bid", "{subj} completes {co2} deal ahead of schedule",
            "{subj} clears final hurdle in {co2} acquisition", "Regulators do not object to {subj} deal for {co2}",
        ),
    },
    "macro": {
        "negative": (
            "{region} {indicator} worse than expected", "{region} economy contracts {pct} in {q} period",
            "{cb} warns of slowing growth in {region}", "{region} jobless claims jump to {weeks}-week high",
            "{region} {indicator} misses forecasts", "Recession fears deepen as {region} {indicator} slumps",
            "{region} growth fails to pick up", "{region} {indicator} {neg_move} {pct}",
        ),
        "neutral": (
            "{cb} holds rates at {rate}", "{region} {indicator} in line with forecasts",
            "{cb} schedules policy meeting for {weekday}", "{region} publishes {indicator} data",
            "{official} reports on {region} outlook", "{region} {indicator} unchanged in {month}",
        ),
        "positive": (
            "{region} economy grows faster than expected", "{region} {indicator} beats forecasts",
            "{region} inflation eases to {rate}", "{cb} signals rate cuts as inflation cools",
            "{region} {indicator} {pos_move} {pct}", "{region} does not expect recession, says {official}",
        ),
    },
    "energy": {
        "negative": (
            "{commodity} {neg_move} {pct} as oversupply fears grow", "{subj} cuts output after outage at {project}",
            "{subj} halts {project} amid safety probe", "{subj} announces {n} layoffs as {commodity} slumps",
            "{subj} fails to restart {project}", "Storm damage shuts {project}, {subj} {neg_move}",
            "{commodity} {neg_move} on weak {region} demand",
        ),
        "neutral": (
            "{subj} announces maintenance at {project}", "{commodity} {neu_move} ahead of producer meeting",
            "{subj} reports {q} output", "{subj} schedules start of {project}",
            "{subj} names new chief for operations in {region}", "{commodity} {neu_move} in {session} trading",
        ),
        "positive": (
            "{commodity} {pos_move} {pct} on supply cuts", "{subj} raises output target",
            "{subj} wins {amt} contract for {project}", "{subj} {pos_move} on {commodity} rally",
            "{subj} does not expect delays at {project}", "{commodity} {pos_move} as {region} demand recovers",
        ),
    },
    "technology": {
        "negative": (
            "{subj} hit by data breach affecting {n} customers", "{subj} recalls {product} over defect",
            "{subj} announces {n} layoffs", "{subj} faces probe over {product}", "{subj} delays {product} launch",
            "{subj} {product} fails to win orders", "{subj} {neg_move} after chip shortage warning",
            "Chipmaker index {neg_move} as {product} demand fades", "Tech sector {neg_move} on {neg_reason}",
        ),
        "neutral": (
            "{subj} announces {product} launch date", "{subj} schedules developer conference for {month}",
            "{subj} reports {product} shipments", "{subj} opens office in {city}",
            "{subj} updates {product} software", "Tech sector {neu_move} before {indicator} data",
        ),
        "positive": (
            "{subj} unveils {product}, shares jump {pct}", "{subj} wins {amt} cloud contract",
            "{subj} raises outlook on {product} demand", "{subj} beats estimates on strong {product} sales",
            "{subj} does not expect supply problems for {product}",
            "Chipmaker index {pos_move} on {product} orders",
        ),
    },
}
BODY_SENTIMENT = {
    "negative": (
        "Analysts cut their price targets after the news.", "The move adds to worries about {worry}.",
        "Management blamed {neg_reason}.", "Traders said sentiment had turned sharply negative.",
        "The outlook does not look better for the rest of the year.",
        "Losses deepened through the {session} session.",
    ),
    "neutral": (
        "A spokesperson declined to comment further.",
        "Analysts said the figures were broadly in line with expectations.",
        "The company said its plans were unchanged.", "Traders said the news had little impact.",
        "No change to the schedule was announced.",
    ),
    "positive": (
        "Analysts raised their price targets after the news.", "The move eases worries about {worry}.",
        "Management credited {pos_reason}.", "Traders said the mood had clearly improved.",
        "Executives said they do not expect further losses.", "Gains held through the {session} session.",
    ),
}
BODY_FILLER = ("{co} trades under the ticker {tk}.", "Peers such as {co2} were also in focus.",
               "Further details are expected on {weekday}.", "Trading volumes in {region} were close to average.",
               "The figures cover the {q} period.", "Analysts at {bank} said they would review their forecasts.",
               "The statement was released before the {session} session.")


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic stream; the defaults give about 11k articles in under 3 seconds.

    ``n_episodes`` negative episodes (volume x2-4, negative share 0.6-0.85, 2-12 h) are injected;
    ``n_decoys`` tiny bursts (3-5 negative articles of a rare ticker within an hour) must not alert.
    ``bad_record_rate`` is the share of broken lines relative to the good articles.
    """

    seed: int = 7
    start: datetime = datetime(2026, 10, 1, tzinfo=UTC)
    days: int = 28
    articles_per_day: int = 400
    n_users: int = 300
    impressions_per_user: int = 8
    n_episodes: int = 6
    bad_record_rate: float = 0.01
    label_fraction: float = 0.6
    n_decoys: int = 3


@dataclass
class GeneratedStream:
    """Paths written by :func:`generate_stream` and the counts of what they hold."""

    out_dir: Path
    articles_path: Path
    labels_path: Path
    behaviors_path: Path
    ground_truth_path: Path
    counts: dict[str, int] = field(default_factory=dict)


@lru_cache(maxsize=None)
def _parsed(template: str) -> tuple[tuple[str, str | None], ...]:
    return tuple((lit, name) for lit, name, _, _ in string.Formatter().parse(template))


def _fill(template: str, ctx: dict[str, str], rnd: random.Random) -> str:
    out: list[str] = []
    for literal, name in _parsed(template):
        out.append(literal)
        if name is not None:
            out.append(ctx[name] if name in ctx else rnd.choice(WORDS[name]) if name in WORDS
                       else NUMBERS[name](rnd))
    text = "".join(out)
    return text[0].upper() + text[1:]


def _fits(template: str, n_tickers: int) -> bool:
    return ("{subj}" in template or "{co}" in template) == (n_tickers >= 1) if "{co2}" not in template \
        else n_tickers >= 2


_HEADLINE_CHOICES = {(t, s, n): tuple(h for h in HEADLINES[t][s] if _fits(h, n))
                     for t in TOPICS for s in SENTIMENTS for n in range(3)}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mind_time(t: datetime) -> str:
    return f"{t.month}/{t.day}/{t.year} {(t.hour % 12) or 12}:{t.minute:02d}:{t.second:02d} " \
           f"{'AM' if t.hour < 12 else 'PM'}"


def _split(article_id: str) -> str:
    bucket = int(hashlib.md5(article_id.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else "validation" if bucket == 8 else "test"


class _Gen:
    """One generation run: holds the seeded random streams and the article skeletons."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        if cfg.days < 2 or cfg.articles_per_day < 1:
            raise ValueError("need days >= 2 and articles_per_day >= 1")
        self.cfg, self.rnd, self.rng = cfg, random.Random(cfg.seed), np.random.default_rng(cfg.seed)
        order = self.rnd.sample(range(len(COMPANIES)), len(COMPANIES))  # popularity rank per company
        self.pop = [(order.index(i) + 1) ** -0.8 for i in range(len(COMPANIES))]
        self.hours = cfg.days * 24
        when = [cfg.start + timedelta(hours=h) for h in range(self.hours)]
        w = np.array([HOUR_PROFILE[t.hour] * (WEEKEND_FACTOR if t.weekday() >= 5 else 1.0) for t in when])
        self.lam = w / w.sum() * cfg.articles_per_day * cfg.days
        self.weekday_hours = [h for h, t in enumerate(when) if t.weekday() < 5 and 12 <= t.hour <= 18]
        self.arts: list[dict[str, Any]] = []

    def tickers(self, topic: str, first: int | None = None) -> list[int]:
        n = self.rnd.choices((0, 1, 2), TICKER_COUNTS[topic])[0]
        if first is not None:
            n = max(n, 2 if topic == "mergers" else 1)
        sector = topic if topic in ("energy", "technology") else None
        w = [p * ((3.0 if c[2] == sector else 0.3) if sector else 1.0) for p, c in zip(self.pop, COMPANIES)]
        out = [] if first is None else [first]
        while len(out) < n:
            pick = self.rnd.choices(range(len(COMPANIES)), w)[0]
            if pick not in out:
                out.append(pick)
        return out

    def article(self, sec: float, source: str | None = None, topic: str | None = None,
                ticker: int | None = None, sentiment: str | None = None) -> dict[str, Any]:
        topic = topic or self.rnd.choices(TOPICS, TOPIC_WEIGHTS)[0]
        art = {"sec": int(sec), "source": source or self.rnd.choices(list(SOURCES), list(SOURCES.values()))[0],
               "topic": topic, "tickers": self.tickers(topic, ticker),
               "sentiment": sentiment or self.rnd.choices(SENTIMENTS, SENTIMENT_BASE[topic])[0]}
        self.arts.append(art)
        return art

    def baseline(self) -> None:
        counts = self.rng.poisson(self.lam)
        for h, c in enumerate(counts):
            for s in sorted(self.rng.integers(0, 3600, size=c)):
                self.article(h * 3600 + s)

    @staticmethod
    def matches(art: dict[str, Any], dim: str, key: str) -> bool:
        if dim == "ticker":
            return any(COMPANIES[i][1] == key for i in art["tickers"])
        return art[dim] == key

    def episodes(self) -> list[dict[str, Any]]:
        cfg, rnd = self.cfg, self.rnd
        dims = [("ticker", "topic", "source")[i % 3] for i in range(cfg.n_episodes)]
        rnd.shuffle(dims)
        ranked = sorted(range(len(COMPANIES)), key=lambda i: -self.pop[i])
        pools = {"ticker": [COMPANIES[i][1] for i in ranked[:6]], "topic": list(TOPICS), "source": list(SOURCES)[:5]}
        for d in pools:
            rnd.shuffle(pools[d])
        lo, hi = max(24, self.hours // 5), self.hours - 13
        hours = [h for h in self.weekday_hours if lo <= h <= hi] or list(range(min(lo, hi), hi + 1))
        out, total = [], len(self.arts)
        for i, dim in enumerate(dims):
            key = pools[dim][dims[:i].count(dim) % len(pools[dim])]
            onset = rnd.choice(hours) * 3600 + rnd.randint(0, 59) * 60
            end = onset + rnd.randint(2, 12) * 3600
            mult, share = round(rnd.uniform(2.0, 4.0), 2), round(rnd.uniform(0.6, 0.85), 2)
            rate = sum(self.matches(a, dim, key) for a in self.arts[:total]) / total
            expected = rate * float(self.lam[onset // 3600:end // 3600].sum())
            n0 = sum(onset <= a["sec"] < end and self.matches(a, dim, key) for a in self.arts)
            tk = next((j for j, c in enumerate(COMPANIES) if c[1] == key), None)
            for _ in range(max(3, round(max(n0, expected) * (mult - 1)))):
                sec = rnd.uniform(onset, end)
                if dim == "ticker":
                    home = COMPANIES[tk][2] if COMPANIES[tk][2] in ("energy", "technology") else "markets"
                    self.article(sec, topic=rnd.choice(("markets", "earnings", "earnings", "mergers", home)), ticker=tk)
                else:
                    self.article(sec, **{dim: key})
            hits = [a for a in self.arts if onset <= a["sec"] < end and self.matches(a, dim, key)]
            negative = set(rnd.sample(range(len(hits)), round(share * len(hits))))  # exact share
            for j, a in enumerate(hits):
                base = SENTIMENT_BASE[a["topic"]]
                a["sentiment"] = "negative" if j in negative else rnd.choices(SENTIMENTS[1:], base[1:])[0]
            out.append({"dimension": dim, "key": key, "onset": onset, "end": end,
                        "volume_multiplier": mult, "negative_share": share})
        return out

    def decoys(self, taken: set[str]) -> list[dict[str, Any]]:
        rare = [i for i in sorted(range(len(COMPANIES)), key=lambda i: self.pop[i])
                if COMPANIES[i][1] not in taken][:5]
        out = []
        for _ in range(self.cfg.n_decoys):
            tk, onset = self.rnd.choice(rare), self.rnd.randint(24, self.hours - 2) * 3600
            n = self.rnd.randint(3, 5)
            for _ in range(n):
                self.article(onset + self.rnd.uniform(0, 3599), topic=self.rnd.choice(("markets", "earnings")),
                             ticker=tk, sentiment="negative")
            out.append({"dimension": "ticker", "key": COMPANIES[tk][1], "onset": onset, "end": onset + 3600,
                        "n_articles": n})
        return out

    def render(self, art: dict[str, Any], aid: str) -> dict[str, Any]:
        rnd, tks = self.rnd, art["tickers"]
        ctx = {}
        if tks:
            name, tk, _ = COMPANIES[tks[0]]
            ctx = {"co": name, "tk": tk, "subj": rnd.choice((name, f"{name} ({tk})", tk))}
        if len(tks) > 1:
            ctx["co2"] = COMPANIES[tks[1]][0]
        title = _fill(rnd.choice(_HEADLINE_CHOICES[art["topic"], art["sentiment"], len(tks)]), ctx, rnd)
        fillers = [f for f in BODY_FILLER if ("{co2}" not in f or len(tks) > 1) and ("{co}" not in f or tks)]
        sentences = [_fill(rnd.choice(BODY_SENTIMENT[art["sentiment"]]), ctx, rnd)]
        sentences += [_fill(f, ctx, rnd) for f in rnd.sample(fillers, rnd.randint(1, 3))]
        when = self.cfg.start + timedelta(seconds=art["sec"])
        slug = "-".join("".join(ch for ch in title.lower() if ch.isalnum() or ch == " ").split()[:8])
        return {"id": aid, "source": art["source"], "title": title, "body": " ".join(sentences),
                "published_at": _iso(when), "tickers": [COMPANIES[i][1] for i in tks], "topic": art["topic"],
                "url": f"https://{art['source'].replace('_', '-')}.example/{when:%Y/%m/%d}/{slug}-{aid[4:]}",
                "lang": "en", "_sentences": sentences}


def _bad_line(kind: str, obj: dict[str, Any], rnd: random.Random) -> str:
    obj = dict(obj)
    if kind == "empty_text":
        obj["title"] = obj["body"] = ""
    elif kind == "future_timestamp":
        obj["published_at"] = "2031" + obj["published_at"][4:]
    elif kind == "unparseable_timestamp":
        obj["published_at"] = "yesterday-ish"
    elif kind == "control_char":
        cut = rnd.randint(1, len(obj["title"]) - 1)
        obj["title"] = obj["title"][:cut] + rnd.choice(("\x00", "\x07", "\x1b", "\x0b")) + obj["title"][cut:]
    line = json.dumps(obj, ensure_ascii=False)
    return line[: rnd.randint(10, len(line) - 3)] if kind == "invalid_json" else line


def generate_stream(out_dir: Path, config: SyntheticConfig = SyntheticConfig()) -> GeneratedStream:
    """Write the synthetic stream (articles, labels, click logs, ground truth) into ``out_dir``.

    Deterministic: the same ``config`` (seed included) gives byte-identical files.
    """
    cfg, gen = config, _Gen(config)
    rnd = gen.rnd
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen.baseline()
    episodes = gen.episodes()
    decoys = gen.decoys({e["key"] for e in episodes if e["dimension"] == "ticker"})
    arts = sorted(gen.arts, key=lambda a: a["sec"])  # stable: ties keep generation order
    objs = [gen.render(a, f"syn-{i + 1:06d}") for i, a in enumerate(arts)]
    n_good = len(objs)

    # Bad records: html bodies modify good articles; every other kind is an extra line after an anchor.
    n_bad = round(cfg.bad_record_rate * n_good)
    kinds = [BAD_KINDS[i % len(BAD_KINDS)] for i in range(n_bad)]
    rnd.shuffle(kinds)
    after: dict[int, list[tuple[str, str, str]]] = {}
    html = set(rnd.sample(range(n_good), kinds.count("html_body")))
    for i in sorted(html):
        objs[i]["body"] = "".join(f"<p>{s}</p>" for s in objs[i]["_sentences"])
    lines = [json.dumps({k: v for k, v in o.items() if k != "_sentences"}, ensure_ascii=False) for o in objs]
    extra = n_good
    for kind in kinds:
        if kind == "html_body":
            continue
        anchor = rnd.randrange(n_good)
        if kind == "duplicate":
            while anchor in html:
                anchor = rnd.randrange(n_good)
            dup = (kind, objs[anchor]["id"], lines[anchor])  # an exact copy, a few lines later
            after.setdefault(min(anchor + rnd.randint(0, 40), n_good - 1), []).append(dup)
            continue
        extra += 1
        obj = gen.render(dict(arts[anchor], sec=arts[anchor]["sec"] + rnd.randint(0, 59)), f"syn-{extra:06d}")
        obj.pop("_sentences")
        after.setdefault(anchor, []).append((kind, obj["id"], _bad_line(kind, obj, rnd)))
    out_lines, bad_records = [], []
    for i, line in enumerate(lines):
        out_lines.append(line)
        if i in html:
            bad_records.append({"line_no": len(out_lines), "kind": "html_body", "id": objs[i]["id"]})
        for kind, aid, bad in after.get(i, []):
            out_lines.append(bad)
            bad_records.append({"line_no": len(out_lines), "kind": kind, "id": aid})

    # Gold labels for label_fraction of the good articles (clean text, split by a stable hash of id).
    labelled = sorted(rnd.sample(range(n_good), round(cfg.label_fraction * n_good)))
    label_lines = []
    for i in labelled:
        o, a = objs[i], arts[i]
        for task, label in (("sentiment", a["sentiment"]), ("topic", a["topic"])):
            label_lines.append(json.dumps({"id": o["id"], "source": o["source"], "title": o["title"],
                                           "body": " ".join(o["_sentences"]), "dataset": "synthetic", "task": task,
                                           "label": label, "split": _split(o["id"])}, ensure_ascii=False))

    behavior_lines, users, n_clicks = _behaviors(gen, arts, objs)
    to_iso = lambda s: _iso(cfg.start + timedelta(seconds=s))  # noqa: E731
    for e in episodes:
        hits = [a for a in arts if e["onset"] <= a["sec"] < e["end"] and gen.matches(a, e["dimension"], e["key"])]
        e["n_articles"], e["n_negative"] = len(hits), sum(a["sentiment"] == "negative" for a in hits)
    for item in episodes + decoys:
        item["onset"], item["end"] = to_iso(item["onset"]), to_iso(item["end"])
    counts = {"articles": n_good, "article_lines": len(out_lines), "bad_records": len(bad_records),
              "labelled_articles": len(labelled), "label_rows": len(label_lines),
              "impressions": len(behavior_lines), "users": len(users), "clicks": n_clicks,
              "episodes": len(episodes), "decoys": len(decoys)}
    truth = {"config": {**asdict(cfg), "start": _iso(cfg.start)}, "episodes": episodes, "decoys": decoys,
             "bad_records": bad_records, "users": users, "counts": counts}
    paths = [out_dir / n for n in ("articles.jsonl", "labels.jsonl", "behaviors.tsv", "ground_truth.json")]
    for path, text in zip(paths, (out_lines, label_lines, behavior_lines, None)):
        body = json.dumps(truth, indent=1) + "\n" if text is None else "".join(t + "\n" for t in text)
        path.write_text(body, encoding="utf-8", newline="\n")
    return GeneratedStream(out_dir, *paths, counts=counts)


def _behaviors(gen: _Gen, arts: list[dict[str, Any]], objs: list[dict[str, Any]]
               ) -> tuple[list[str], dict[str, dict[str, Any]], int]:
    """MIND click logs: Dirichlet topic preferences, a favourite ticker, position bias, cold starts."""
    cfg, rnd, rng = gen.cfg, gen.rnd, gen.rng
    secs = np.array([a["sec"] for a in arts])
    topic_idx = np.array([TOPICS.index(a["topic"]) for a in arts])
    total, lo = cfg.days * 86400, min(2 * 86400, cfg.days * 86400 // 2)
    n_cold = max(1, round(0.05 * cfg.n_users)) if cfg.n_users >= 5 else 0
    cold = set(rnd.sample(range(cfg.n_users), n_cold))
    users, prefs, favs, events = {}, [], [], []
    for u in range(cfg.n_users):
        p = rng.dirichlet([0.6] * len(TOPICS))
        fav = rnd.choices(range(len(COMPANIES)), gen.pop)[0]
        prefs.append(p)
        favs.append(fav)
        users[f"U{u + 1:04d}"] = {"topic_preferences": {t: round(float(x), 4) for t, x in zip(TOPICS, p)},
                                  "favorite_ticker": COMPANIES[fav][1], "cold_start": u in cold}
        times = sorted(rnd.randint(lo, total - 1) for _ in range(cfg.impressions_per_user))
        events += [(t, u) for t in times]
    history: dict[int, list[str]] = {}
    lines, n_clicks = [], 0
    for t, u in sorted(events):
        if u not in history:  # pre-period clicks drawn by preference, empty for cold-start users
            pool = int(np.searchsorted(secs, t))
            k = 0 if u in cold else min(rnd.randint(3, 25), pool)
            w = prefs[u][topic_idx[:pool]] + 0.02
            picks = sorted(rng.choice(pool, size=k, replace=False, p=w / w.sum())) if k else []
            history[u] = [objs[i]["id"] for i in picks]
        a, b = int(np.searchsorted(secs, t - 48 * 3600)), int(np.searchsorted(secs, t))
        if b - a < 2:
            continue
        shown = rnd.sample(range(a, b), min(rnd.randint(5, 20), b - a))
        probs = []
        for pos, i in enumerate(shown):
            z = -2.2 + 5.0 * (prefs[u][topic_idx[i]] - 1 / len(TOPICS))
            z += 1.0 if favs[u] in arts[i]["tickers"] else 0.0  # ticker affinity
            probs.append(1 / (1 + math.exp(-(z + rnd.gauss(0, 0.3)))) / (1 + 0.08 * pos))
        clicks = [rnd.random() < p for p in probs]
        if not any(clicks):
            clicks[probs.index(max(probs))] = True
        if all(clicks):
            clicks[probs.index(min(probs))] = False
        n_clicks += sum(clicks)
        hist = "" if u in cold else " ".join(history[u][-50:])
        imps = " ".join(f"{objs[i]['id']}-{int(c)}" for i, c in zip(shown, clicks))
        when = gen.cfg.start + timedelta(seconds=t)
        lines.append(f"{len(lines) + 1}\tU{u + 1:04d}\t{_mind_time(when)}\t{hist}\t{imps}")
        history[u] += [objs[i]["id"] for i, c in zip(shown, clicks) if c]
    return lines, users, n_clicks


def summarize(stream: GeneratedStream) -> dict[str, int]:
    """Counts of a generated stream for the demo's printout (articles, bad records, labels, clicks...)."""
    return dict(stream.counts)
