"""Judge what the demo produced against its generated ground truth: were the injected sentiment
episodes alerted, how late, how many false alarms; do recommendations follow the users' latent
topic preferences. Used by ``newspulse demo`` (:mod:`newspulse.demo_report`) and
``bench/monitor.py``; plain Python over alert rows and the stream's truth files.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from sources.synthetic import TOPICS


def score_detection(alerts: list[dict[str, Any]], truth: dict[str, Any], grace_h: float = 12.0) -> dict[str, Any]:
    """Compare alerts with the injected episodes and decoys of a generated stream.

    An alert *detects* an episode when it is on the episode's dimension and key and its first
    window overlaps [onset, end + ``grace_h``]. An alert on another key whose window overlaps an
    episode is *related* (an episode on a source also moves the overall share, for example): it
    counts neither as a hit nor as a false alarm. Every other alert is a false alarm. Delay is the
    end of the first detecting window minus the onset, in hours.
    """
    def ts(value: Any) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))

    grace = timedelta(hours=grace_h)
    spans = [(ts(e["onset"]), ts(e["end"]) + grace, e) for e in truth["episodes"]]
    hits: dict[int, float] = {}
    true_alerts = related = 0
    false_alarms: list[dict[str, Any]] = []
    for a in alerts:
        start, end = ts(a["window_start"]), ts(a["window_end"])
        same = [i for i, (on, off, e) in enumerate(spans)
                if e["dimension"] == a["dimension"] and e["key"] == a["key"] and start < off and end > on]
        if same:
            true_alerts += 1
            for i in same:
                delay = (end - spans[i][0]).total_seconds() / 3600
                hits[i] = min(hits.get(i, delay), delay)
        elif any(start < off and end > on for on, off, _ in spans):
            related += 1
        else:
            false_alarms.append(a)
    decoys_alerted = sum(any(a["dimension"] == d["dimension"] and a["key"] == d["key"]
                             and ts(a["window_start"]) < ts(d["end"]) + grace and ts(a["window_end"]) > ts(d["onset"])
                             for a in alerts) for d in truth.get("decoys", []))
    delays = sorted(hits.values())
    n_eval = true_alerts + len(false_alarms)
    return {"episodes": len(spans), "detected": len(hits), "recall": len(hits) / len(spans) if spans else None,
            "alerts": len(alerts), "true_alerts": true_alerts, "related_alerts": related,
            "false_alarms": len(false_alarms), "precision": true_alerts / n_eval if n_eval else None,
            "median_delay_h": float(np.median(delays)) if delays else None, "delays_h": delays,
            "decoys": len(truth.get("decoys", [])), "decoys_alerted": decoys_alerted,
            "missed": [f"{e['dimension']} {e['key']}" for i, (_, _, e) in enumerate(spans) if i not in hits]}


def article_topics(articles_jsonl: Path | str) -> dict[str, str]:
    """``{article id: true topic}`` from a generated ``articles.jsonl`` (broken lines are skipped)."""
    out: dict[str, str] = {}
    for line in Path(articles_jsonl).read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj.get("topic") in TOPICS:
            out[obj["id"]] = obj["topic"]
    return out


def score_recommendations(recs: list[dict[str, Any]], truth: dict[str, Any], topic_of: dict[str, str]) -> dict[str, Any]:
    """How well recommendations recover the users' latent topic preferences.

    ``recs`` rows have ``user_id`` and ``item`` (the generated article id). Per warm user (not a
    cold start in ``truth``): the share of their recommendations on their favourite latent topic,
    against the share that topic has among *all* users' recommendations (what they would get if
    the ranking ignored them), and the Spearman correlation between the latent preference vector
    and the recommended topic shares. Means over users.
    """
    from scipy.stats import spearmanr

    users = truth["users"]
    by_user: dict[str, list[str]] = {}
    for r in recs:
        if r["item"] in topic_of:
            by_user.setdefault(r["user_id"], []).append(topic_of[r["item"]])
    overall = np.array([sum(t == topic for ts in by_user.values() for t in ts) for topic in TOPICS], dtype=float)
    overall /= max(overall.sum(), 1.0)
    fav_share, base_share, rhos = [], [], []
    for user, topics in by_user.items():
        info = users.get(user)
        if info is None or info["cold_start"]:
            continue
        prefs = np.array([info["topic_preferences"][t] for t in TOPICS])
        shares = np.array([topics.count(t) for t in TOPICS], dtype=float) / len(topics)
        fav = int(np.argmax(prefs))
        fav_share.append(shares[fav])
        base_share.append(overall[fav])
        if shares.std() > 0:
            rhos.append(float(spearmanr(prefs, shares).statistic))
    return {"users": len(fav_share),
            "favourite_topic_share": float(np.mean(fav_share)) if fav_share else None,
            "unpersonalised_share": float(np.mean(base_share)) if base_share else None,
            "spearman": float(np.mean(rhos)) if rhos else None}

