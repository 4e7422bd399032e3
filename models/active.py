"""Which unlabelled texts are worth a human label: uncertainty, disagreement, near-duplicates, quotas.

Pure numpy (no Prefect, no warehouse): the monitor's relabel queue (``warehouse/label_queue.py``)
and ``bench/active_learning.py`` call the same functions, so the benchmark measures the strategy
the product runs.

* :func:`margin_uncertainty` / :func:`entropy_uncertainty`: how unsure one model is (0 = sure,
  1 = a coin toss), from its class probabilities;
* :func:`disagreement`: how far two models' probabilities are apart (total variation, 0..1), e.g.
  the served GPT head and the TF-IDF baseline trained on the same labels;
* :func:`committee_entropy`: the entropy of two models' averaged probabilities (unsure or at odds);
* :func:`priority`: the queue's one number per candidate, an uncertainty plus bonuses for alert
  evidence and drifted sources;
* :func:`near_duplicate_groups`: texts that say the same thing (word 3-shingle Jaccard, after
  normalising case, digits and punctuation), so a batch spends one label on them;
* :func:`select_batch`: the top of a ranking, near-duplicates collapsed, at most ``max_share`` of
  the batch from one group (source), the rest filled from the other groups.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z]+|\d+")


def _probs(p: np.ndarray) -> np.ndarray:
    """``p`` as a float64 (n, k) array of rows summing to one (rows of zeros stay uniform)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"class probabilities must be (n, k>=2), got {p.shape}")
    p = np.clip(p, 0.0, None)
    s = p.sum(axis=1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 1.0 / p.shape[1])


def margin_uncertainty(p: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row: 0 when one class has it all, 1 on a tie of the top two."""
    p = np.sort(_probs(p), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


def entropy_uncertainty(p: np.ndarray) -> np.ndarray:
    """Entropy of each row divided by ``log(k)``: 0 = certain, 1 = uniform."""
    p = _probs(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return h / math.log(p.shape[1])


def disagreement(p_a: np.ndarray, p_b: np.ndarray) -> np.ndarray:
    """Total variation distance between two models' rows (0 = same, 1 = disjoint)."""
    a, b = _probs(p_a), _probs(p_b)
    if a.shape != b.shape:
        raise ValueError(f"probabilities differ in shape: {a.shape} vs {b.shape}")
    return 0.5 * np.abs(a - b).sum(axis=1)


def committee_entropy(p_a: np.ndarray, p_b: np.ndarray) -> np.ndarray:
    """Normalised entropy of two models' averaged probabilities: high when either is unsure or
    they disagree (query by committee). What the relabel queue ranks by when the served version
    has its TF-IDF baseline: on PhraseBank it reached random sampling's 800-label macro-F1 with
    400 labels, plain entropy with 500, margin with 600 (bench/active_learning.py)."""
    a, b = _probs(p_a), _probs(p_b)
    if a.shape != b.shape:
        raise ValueError(f"probabilities differ in shape: {a.shape} vs {b.shape}")
    return entropy_uncertainty((a + b) / 2)


def priority(uncertainty: np.ndarray, disagree: np.ndarray | None = None, alert: np.ndarray | None = None,
             drifted: np.ndarray | None = None, *, alert_bonus: float = 0.5, drift_bonus: float = 0.25) -> np.ndarray:
    """One score per candidate: ``max(uncertainty, disagreement) + alert_bonus*alert + drift_bonus*drifted``.

    Texts behind an alert and from a drifted source come before equally unsure others: their labels
    tell whether the alert was real and whether the model still reads that source right.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    score = u.copy() if disagree is None else np.maximum(u, np.asarray(disagree, dtype=np.float64))
    if alert is not None:
        score = score + alert_bonus * np.asarray(alert, dtype=np.float64)
    if drifted is not None:
        score = score + drift_bonus * np.asarray(drifted, dtype=np.float64)
    return score


def normalise(text: str | None) -> str:
    """Lower-case words with every number as ``0``: what near-duplicate detection compares."""
    return " ".join("0" if w.isdigit() else w for w in _WORD.findall(str(text or "").lower()))


def shingles(text: str | None, n: int = 3) -> frozenset[str]:
    """Word ``n``-grams of the normalised text (the whole text when it is shorter)."""
    words = normalise(text).split()
    if len(words) <= n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """``|a & b| / |a | b|`` (two empty sets: 1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_groups(texts: Sequence[str | None], order: Sequence[int] | None = None,
                          threshold: float = 0.8) -> list[list[int]]:
    """Greedy groups of near-duplicate texts, each led by the first of ``order`` (default: input order).

    A text joins the first earlier leader whose shingles overlap it by ``threshold`` (Jaccard) or
    whose normalised text is identical; otherwise it leads a new group. Returns the groups as
    index lists, leader first, in leading order. Cost: texts x leaders set comparisons, meant
    for the few hundred to few thousand candidates of a batch.
    """
    order = list(range(len(texts))) if order is None else [int(i) for i in order]
    exact: dict[str, int] = {}
    leaders: list[tuple[int, frozenset[str]]] = []
    groups: dict[int, list[int]] = {}
    # inverted index shingle -> leaders, so each text compares only with leaders sharing a shingle
    by_shingle: dict[str, list[int]] = {}
    for i in order:
        key = normalise(texts[i])
        if key in exact:
            groups[exact[key]].append(i)
            continue
        sh = shingles(texts[i])
        joined = None
        seen: set[int] = set()
        for s in sh:
            for lead in by_shingle.get(s, ()):
                if lead in seen:
                    continue
                seen.add(lead)
                if jaccard(sh, leaders[lead][1]) >= threshold:
                    joined = leaders[lead][0]
                    break
            if joined is not None:
                break
        if joined is not None:
            groups[joined].append(i)
            exact[key] = joined
            continue
        exact[key] = i
        groups[i] = [i]
        for s in sh:
            by_shingle.setdefault(s, []).append(len(leaders))
        leaders.append((i, sh))
    return list(groups.values())


def select_batch(scores: np.ndarray, k: int, *, texts: Sequence[str | None] | None = None,
                 groups: Sequence[str] | None = None, max_share: float = 1.0, threshold: float = 0.8
                 ) -> list[tuple[int, list[int]]]:
    """The ``k`` best candidates by ``scores`` (ties: lower index first), each with its near-duplicates.

    With ``texts``, near-duplicates collapse onto their best-scored member (one label for the
    group). With ``groups`` (e.g. the source of each candidate), at most ``ceil(max_share * k)``
    picks come from one group while other groups still have candidates; when every other group
    is exhausted the cap is lifted so the batch still fills. Returns ``[(index, [duplicate
    indices]), ...]`` in pick order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if texts is not None:
        clusters = near_duplicate_groups(texts, order, threshold)
        lead_of = {g[0]: g[1:] for g in clusters}
        order = [i for i in order if i in lead_of]
    else:
        lead_of = {i: [] for i in order}
    if k <= 0 or not order:
        return []
    if groups is None or max_share >= 1.0:
        return [(i, lead_of[i]) for i in order[:k]]
    cap = max(1, math.ceil(max_share * k))
    taken: dict[str, int] = {}
    picks: list[int] = []
    overflow: list[int] = []
    for i in order:
        g = str(groups[i])
        if taken.get(g, 0) < cap:
            picks.append(i)
            taken[g] = taken.get(g, 0) + 1
            if len(picks) == k:
                break
        else:
            overflow.append(i)
    if len(picks) < k:  # every other group ran out: fill from the capped ones, best first
        picks.extend(overflow[:k - len(picks)])
    return [(i, lead_of[i]) for i in picks]


def build_queue(frame, k: int, *, baseline_probs: np.ndarray | None = None, baseline_labels: Sequence[str] | None = None,
                labels: Sequence[str] = ("negative", "neutral", "positive"), max_share: float = 0.25,
                uncertain_margin: float = 0.5, known_texts: Sequence[str | None] = (), threshold: float = 0.8):
    """The relabel queue's picks among ``frame``'s candidates (at most ``k``), as a DataFrame.

    ``frame``: ``article_id, source, text`` and ``p_<label>`` per label of the served model, and
    optionally ``alert_ids`` (lists) and ``drifted`` (bool). ``baseline_probs``: the TF-IDF
    baseline's probabilities of the same rows (columns in ``labels`` order), or None. A candidate
    needs a reason to be queued: ``uncertain`` (top-2 margin at most ``uncertain_margin``),
    ``disagreement`` (the baseline's label differs), ``alert`` or ``drifted_source``. Candidates
    that near-duplicate ``known_texts`` (already queued) are dropped; the rest collapse onto
    their best member, and :func:`select_batch` caps each source at ``max_share`` of ``k``. Rank:
    :func:`committee_entropy` of the served and baseline probabilities (the served entropy
    without a baseline) plus the alert and drift bonuses of :func:`priority`.
    Returns the picks in priority order with ``reasons, priority, margin, entropy, disagreement,
    predicted_label, baseline_label, duplicates`` (article ids collapsed onto the pick).
    """
    import pandas as pd

    cols = ["article_id", "source", "reasons", "priority", "margin", "entropy", "disagreement", "predicted_label",
            "baseline_label", "alert_ids", "duplicates"]
    if frame is None or len(frame) == 0 or k <= 0:
        return pd.DataFrame(columns=cols)
    f = frame.reset_index(drop=True)
    p = f[[f"p_{lab}" for lab in labels]].to_numpy(dtype=np.float64)
    unsure = margin_uncertainty(p)
    alert_ids = f["alert_ids"].map(lambda v: list(v) if v is not None and len(v) else []) if "alert_ids" in f \
        else pd.Series([[]] * len(f))
    alert = alert_ids.map(bool).to_numpy()
    drifted = f["drifted"].fillna(False).astype(bool).to_numpy() if "drifted" in f else np.zeros(len(f), dtype=bool)
    predicted = np.asarray(labels)[p.argmax(axis=1)]
    if baseline_probs is not None:
        dis = disagreement(p, baseline_probs)
        base_label = np.asarray(labels)[np.asarray(baseline_probs).argmax(axis=1)]
    elif baseline_labels is not None:
        base_label = np.asarray(baseline_labels, dtype=object)
        dis = (base_label != predicted).astype(np.float64)
    else:
        dis, base_label = None, np.full(len(f), None, dtype=object)
    # Rank: the committee's entropy (served + baseline averaged), else the served model's entropy.
    rank = committee_entropy(p, baseline_probs) if baseline_probs is not None else entropy_uncertainty(p)
    if baseline_probs is None and baseline_labels is not None:
        rank = np.maximum(rank, dis)
    score = priority(rank, None, alert, drifted)
    reasons = []
    for i in range(len(f)):
        r = []
        if unsure[i] >= 1.0 - uncertain_margin:
            r.append("uncertain")
        if base_label[i] is not None and base_label[i] != predicted[i]:
            r.append("disagreement")
        if alert[i]:
            r.append("alert")
        if drifted[i]:
            r.append("drifted_source")
        reasons.append(r)
    eligible = [i for i in range(len(f)) if reasons[i]]
    if not eligible:
        return pd.DataFrame(columns=cols)
    known = list(known_texts)
    texts = known + [f.text.iloc[i] for i in eligible]
    ranked = sorted(range(len(eligible)), key=lambda j: (-score[eligible[j]], eligible[j]))
    groups = near_duplicate_groups(texts, list(range(len(known))) + [len(known) + j for j in ranked], threshold)
    leaders, dups = [], {}
    for g in groups:
        if g[0] < len(known):
            continue  # the same text is queued already
        lead = eligible[g[0] - len(known)]
        leaders.append(lead)
        dups[lead] = [str(f.article_id.iloc[eligible[m - len(known)]]) for m in g[1:] if m >= len(known)]
    picks = select_batch(score[leaders], k, groups=[str(f.source.iloc[i]) for i in leaders], max_share=max_share)
    rows = []
    for j, _ in picks:
        i = leaders[j]
        rows.append({"article_id": str(f.article_id.iloc[i]), "source": f.source.iloc[i], "reasons": reasons[i],
                     "priority": float(score[i]), "margin": float(unsure[i]),
                     "entropy": float(entropy_uncertainty(p[i:i + 1])[0]),
                     "disagreement": None if dis is None else float(dis[i]), "predicted_label": str(predicted[i]),
                     "baseline_label": None if base_label[i] is None else str(base_label[i]),
                     "alert_ids": alert_ids.iloc[i], "duplicates": dups[i]})
    return pd.DataFrame(rows, columns=cols)


def diverse_top(scores: np.ndarray, features: np.ndarray, k: int, *, pool_factor: int = 3, seed: int = 0) -> list[int]:
    """``k`` of the ``pool_factor * k`` best-scored rows, one per k-means cluster of their
    ``features`` (the best-scored member of each): uncertain *and* unlike each other, so a batch
    does not spend its labels on one confusing kind of text. Returns row indices, best first."""
    from sklearn.cluster import KMeans

    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    top = order[:max(k, pool_factor * k)]
    if len(top) <= k:
        return [int(i) for i in top]
    x = np.asarray(features, dtype=np.float64)[top]
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    best: dict[int, int] = {}
    for i, c in zip(top, km.labels_, strict=True):  # top is in score order: the first seen is the best
        best.setdefault(int(c), int(i))
    return sorted(best.values(), key=lambda i: (-scores[i], i))


def balanced_top(scores: np.ndarray, predicted: np.ndarray, k: int) -> list[int]:
    """``k`` rows taken round-robin over the predicted classes, best-scored first within each: a
    batch that is not all the majority class (macro-F1 rewards the rare classes' labels)."""
    scores = np.asarray(scores, dtype=np.float64)
    queues = {c: sorted(np.flatnonzero(predicted == c).tolist(), key=lambda i: (-scores[i], i))
              for c in np.unique(predicted)}
    picks: list[int] = []
    while len(picks) < k and any(queues.values()):
        for c in sorted(queues, key=lambda c: -scores[queues[c][0]] if queues[c] else 0.0):
            if queues[c] and len(picks) < k:
                picks.append(queues[c].pop(0))
    return picks
