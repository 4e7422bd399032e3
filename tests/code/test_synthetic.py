"""Tests for the seeded synthetic news/finance stream (sources/synthetic.py)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sources.synthetic import BAD_KINDS, COMPANIES, TOPICS, SyntheticConfig, generate_stream, summarize

SMALL = SyntheticConfig(seed=11, days=10, articles_per_day=250, n_users=80, impressions_per_user=6,
                        bad_record_rate=0.02, label_fraction=1.0)
FILES = ("articles.jsonl", "labels.jsonl", "behaviors.tsv", "ground_truth.json")
FIELDS = ("id", "source", "title", "body", "published_at", "tickers", "topic", "url", "lang")


def _digests(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in FILES}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Stream:
    """The generated files, parsed once."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.truth = json.loads((out / "ground_truth.json").read_text())
        self.lines = (out / "articles.jsonl").read_text(encoding="utf-8").splitlines()
        self.bad = {b["line_no"]: b for b in self.truth["bad_records"]}
        good_lines = [(n, line) for n, line in enumerate(self.lines, 1)
                      if n not in self.bad or self.bad[n]["kind"] == "html_body"]
        self.articles = [json.loads(line) for _, line in good_lines]
        self.by_id = {a["id"]: a for a in self.articles}
        self.labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
        self.sentiment = {r["id"]: r["label"] for r in self.labels if r["task"] == "sentiment"}
        self.behaviors = (out / "behaviors.tsv").read_text().splitlines()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    out = tmp_path_factory.mktemp("small")
    stream = generate_stream(out, SMALL)
    assert summarize(stream)["articles"] == len(Stream(out).articles)
    return Stream(out)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, float]:
    out = tmp_path_factory.mktemp("default")
    t0 = time.perf_counter()
    generate_stream(out)
    return Stream(out), time.perf_counter() - t0


def test_same_seed_same_bytes_other_seed_differs(small: Stream, tmp_path: Path) -> None:
    again = generate_stream(tmp_path / "again", SMALL)
    assert _digests(again.out_dir) == _digests(small.out)
    other = generate_stream(tmp_path / "other", replace(SMALL, seed=12))
    assert all(a != b for a, b in zip(_digests(other.out_dir).values(), _digests(small.out).values()))


def test_default_config_size_speed_and_variety(default_run: tuple[Stream, float]) -> None:
    stream, seconds = default_run
    cfg = SyntheticConfig()
    assert seconds < 6.0  # budget is 3 s on an idle machine; slack for loaded CI
    n = len(stream.articles)
    assert 0.9 * cfg.articles_per_day * cfg.days < n < 1.15 * cfg.articles_per_day * cfg.days
    assert stream.truth["counts"]["articles"] == n
    assert abs(stream.truth["counts"]["labelled_articles"] / n - cfg.label_fraction) < 0.01
    titles: dict[str, set[str]] = defaultdict(set)
    for a in stream.articles:
        titles[a["topic"]].add(a["title"])
    assert set(titles) == set(TOPICS)
    assert all(len(t) >= 300 for t in titles.values()), {k: len(v) for k, v in titles.items()}
    volumes = Counter(a["source"] for a in stream.articles)
    assert 6 <= len(volumes) <= 8 and max(volumes.values()) > 3 * min(volumes.values())
    splits = Counter(r["split"] for r in stream.labels)
    assert abs(splits["train"] / len(stream.labels) - 0.8) < 0.03
    assert len(stream.behaviors) == cfg.n_users * cfg.impressions_per_user


def test_good_lines_parse_with_fields(small: Stream) -> None:
    start, end = SMALL.start, SMALL.start + timedelta(days=SMALL.days)
    tickers = {c[1] for c in COMPANIES}
    assert len(small.by_id) == len(small.articles)  # ids are unique among good lines
    for a in small.articles:
        assert list(a) == list(FIELDS)
        assert re.fullmatch(r"syn-\d{6}", a["id"]) and a["lang"] == "en" and a["topic"] in TOPICS
        assert a["title"] and a["body"] and a["url"].startswith("https://")
        assert start <= _ts(a["published_at"]) < end
        assert len(a["tickers"]) <= 2 and set(a["tickers"]) <= tickers
        assert 2 <= a["body"].count(".") or "<p>" in a["body"]
    times = [_ts(a["published_at"]) for a in small.articles]
    assert times == sorted(times)
    by_hour = Counter((t.weekday() >= 5, t.hour) for t in times)
    assert by_hour[False, 15] > 2 * by_hour[False, 3]  # market hours busier than the night
    assert by_hour[False, 15] > 1.5 * by_hour[True, 15] * 5 / 2  # weekdays busier than weekends


def test_headlines_carry_sentiment(small: Stream) -> None:
    words = {"negative": ("plunges", "misses", "cuts", "probe", "layoffs", "fails"),
             "positive": ("beats", "surges", "raises", "jumps", "does not expect")}
    for label, cues in words.items():
        hits = Counter(small.sentiment[a["id"]] for a in small.articles if any(c in a["title"] for c in cues))
        assert hits[label] > 0.6 * sum(hits.values()), (label, hits)
    negations = [a["title"] for a in small.articles if "does not" in a["title"] or "fails to" in a["title"]]
    assert {small.sentiment[a["id"]] for a in small.articles if a["title"] in negations} >= {"negative", "positive"}


def test_bad_records_rate_and_kinds(small: Stream) -> None:
    bad = small.truth["bad_records"]
    assert 0.5 * SMALL.bad_record_rate < len(bad) / len(small.lines) < 1.5 * SMALL.bad_record_rate
    assert {b["kind"] for b in bad} == set(BAD_KINDS)
    for b in bad:
        line = small.lines[b["line_no"] - 1]
        if b["kind"] == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        obj = json.loads(line)
        assert obj["id"] == b["id"]
        if b["kind"] == "empty_text":
            assert obj["title"] == "" and obj["body"] == ""
        elif b["kind"] == "future_timestamp":
            assert _ts(obj["published_at"]).year == 2031
        elif b["kind"] == "unparseable_timestamp":
            with pytest.raises(ValueError):
                _ts(obj["published_at"])
        elif b["kind"] == "duplicate":
            assert line in small.lines[: b["line_no"] - 1] and obj["id"] in small.by_id
        elif b["kind"] == "html_body":
            assert obj["body"].startswith("<p>")
            clean = re.sub(r"<[^>]+>", " ", obj["body"]).strip()
            assert clean and "<" not in clean and obj["title"]
        elif b["kind"] == "control_char":
            assert any(ord(ch) < 32 for ch in obj["title"])
    extras = {b["id"] for b in bad if b["kind"] not in ("duplicate", "html_body")}
    assert not extras & set(small.by_id)  # broken extra lines never reuse a good article's id


def _key_articles(s: Stream, dim: str, key: str) -> list[dict[str, Any]]:
    if dim == "ticker":
        return [a for a in s.articles if key in a["tickers"]]
    return [a for a in s.articles if a[dim] == key]


def test_episode_windows_have_more_volume_and_negatives(small: Stream) -> None:
    episodes = small.truth["episodes"]
    assert len(episodes) == SMALL.n_episodes
    assert {e["dimension"] for e in episodes} == {"ticker", "topic", "source"}
    windows = [(_ts(e["onset"]), _ts(e["end"])) for e in episodes]
    for e, (onset, end) in zip(episodes, windows):
        assert 2 <= (end - onset).total_seconds() / 3600 <= 12
        rows = _key_articles(small, e["dimension"], e["key"])
        inside = [a for a in rows if onset <= _ts(a["published_at"]) < end]
        outside = [a for a in rows if not any(o <= _ts(a["published_at"]) < x for o, x in windows)]
        assert len(inside) == e["n_articles"]
        share_in = sum(small.sentiment[a["id"]] == "negative" for a in inside) / len(inside)
        share_out = sum(small.sentiment[a["id"]] == "negative" for a in outside) / len(outside)
        assert share_in > 0.45 and share_in > share_out + 0.2, (e, share_in, share_out)
        # Volume against the key's own rate at the same clock hours (weekday/weekend) outside episodes.
        slots = Counter((t.weekday() >= 5, t.hour) for t in (_ts(a["published_at"]) for a in outside))
        days = {False: sum(1 for d in range(SMALL.days) if (SMALL.start + timedelta(d)).weekday() < 5)}
        days[True] = SMALL.days - days[False]
        hour, expected = onset.replace(minute=0), 0.0
        while hour < end:
            frac = (min(end, hour + timedelta(hours=1)) - max(onset, hour)).total_seconds() / 3600
            weekend = hour.weekday() >= 5
            expected += frac * slots[weekend, hour.hour] / max(days[weekend], 1)
            hour += timedelta(hours=1)
        assert len(inside) > 1.5 * expected, (e, len(inside), expected)


def test_decoys_are_tiny(small: Stream) -> None:
    decoys = small.truth["decoys"]
    assert len(decoys) == SMALL.n_decoys
    episode_keys = {e["key"] for e in small.truth["episodes"]}
    for d in decoys:
        assert d["key"] not in episode_keys and 3 <= d["n_articles"] <= 5
        onset, end = _ts(d["onset"]), _ts(d["end"])
        assert end - onset == timedelta(hours=1)
        inside = [a for a in _key_articles(small, "ticker", d["key"]) if onset <= _ts(a["published_at"]) < end]
        negatives = sum(small.sentiment[a["id"]] == "negative" for a in inside)
        assert d["n_articles"] <= negatives and len(inside) <= d["n_articles"] + 3


def test_labels_join_articles(small: Stream) -> None:
    tasks: dict[str, set[str]] = defaultdict(set)
    for r in small.labels:
        a = small.by_id[r["id"]]
        assert (r["source"], r["title"], r["dataset"]) == (a["source"], a["title"], "synthetic")
        assert "<" not in r["body"] and r["split"] in ("train", "validation", "test")
        if r["task"] == "topic":
            assert r["label"] == a["topic"]
        else:
            assert r["task"] == "sentiment" and r["label"] in ("negative", "neutral", "positive")
        tasks[r["id"]].add(r["task"])
    assert all(t == {"sentiment", "topic"} for t in tasks.values())
    assert len(tasks) == len(small.articles)  # label_fraction=1.0 in SMALL
    split_of = {}
    for r in small.labels:
        assert split_of.setdefault(r["id"], r["split"]) == r["split"]
    assert set(split_of.values()) == {"train", "validation", "test"}


def test_behaviors_mind_format_and_preferences(small: Stream) -> None:
    users = small.truth["users"]
    assert len(users) == SMALL.n_users and any(u["cold_start"] for u in users.values())
    topic_of = {a["id"]: a["topic"] for a in small.articles}
    published = {a["id"]: _ts(a["published_at"]) for a in small.articles}
    shown_by_rank, clicked_by_rank = Counter(), Counter()
    for n, line in enumerate(small.behaviors, 1):
        fields = line.split("\t")
        assert len(fields) == 5 and fields[0] == str(n) and fields[1] in users
        when = datetime.strptime(fields[2], "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC)
        history = fields[3].split()
        assert all(h in topic_of and published[h] < when for h in history)
        if users[fields[1]]["cold_start"]:
            assert history == []
        pairs = [item.rsplit("-", 1) for item in fields[4].split()]
        assert 5 <= len(pairs) <= 20
        assert {c for _, c in pairs} == {"0", "1"}  # at least one click and one skip
        prefs = users[fields[1]]["topic_preferences"]
        rank = {t: r for r, t in enumerate(sorted(prefs, key=lambda t: -prefs[t]))}
        for item, clicked in pairs:
            assert when - timedelta(hours=48) <= published[item] < when
            shown_by_rank[rank[topic_of[item]]] += 1
            clicked_by_rank[rank[topic_of[item]]] += clicked == "1"
    ctr = {r: clicked_by_rank[r] / shown_by_rank[r] for r in shown_by_rank}
    assert ctr[0] > 2 * ctr[len(TOPICS) - 1], ctr
