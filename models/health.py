"""Label-free model health checks (issue 17 item 1): is the model still seeing what it was built for?

No labels are needed: every check compares a window of served predictions (one UTC day of one
source, or of everything) with a **reference** of the same statistics:

- ``label_psi``: population stability index of the predicted sentiment mix (plus a chi-square
  goodness-of-fit p-value, so a thin window cannot fire on noise);
- ``low_conf``: share of predictions whose top probability is under ``low_confidence`` (and the
  mean confidence, reported);
- ``embedding_auc``: a domain classifier between reference and window embeddings (PCA of the
  reference, nearest-mean direction learnt on one half and scored on the other, both ways):
  0.5 = indistinguishable, 1.0 = another kind of text; the same check also fires on **novelty**
  (``novel_share``: the share of the window's embeddings farther from their nearest reference
  embeddings than 99% of the reference's own), which sees text of another kind that is only a
  minority of the day;
- ``length_psi``: PSI of the token count over the reference's deciles;
- ``unknown_rate``: share of words outside the vocabulary the model was trained on (its TF-IDF
  baseline's words, else the reference texts'; byte-level BPE has no unknown token, so "unknown"
  is measured on words), a shift either way (other text may also be plainer);
- ``disagreement``: share of texts where the served label differs from a second opinion (the
  version's TF-IDF baseline, run on the window's texts).

A check *fires* when its effect passes a size threshold **and** is significant at ``alpha``; a
window is *drifting* when at least ``min_checks`` checks fire, or one fires with a p-value under
``strong_alpha`` (overwhelming on its own: text of another kind that is a minority of the day). A reference is stored as plain files
(``reference_stats.json``, ``reference_embeddings.npy`` loaded with ``allow_pickle=False``,
``reference_vocab.json``), never a pickle. No Prefect and no warehouse import: ``tasks/health.py``
glues this to the warehouse.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATS_FILE = "reference_stats.json"
EMB_FILE = "reference_embeddings.npy"
VOCAB_FILE = "reference_vocab.json"
FORMAT = "newspulse-health-reference/1"
SENTIMENTS = ("negative", "neutral", "positive")
CHECKS = ("label_psi", "low_conf", "embedding_auc", "length_psi", "unknown_rate", "disagreement")
_WORD = re.compile(r"[a-z][a-z']+")


@dataclass(frozen=True)
class HealthParams:
    """Thresholds of the checks (defaults mirror ``Settings.drift_*``)."""

    min_articles: int = 30
    alpha: float = 1e-3
    min_checks: int = 2
    psi: float = 0.2
    length_psi: float = 0.25
    low_confidence: float = 0.5
    low_conf_lift: float = 0.15
    auc: float = 0.75
    novel_lift: float = 0.2
    strong_alpha: float = 1e-9   # one check this sure is enough on its own
    unknown_lift: float = 0.08
    disagreement_lift: float = 0.15
    sample: int = 256          # embeddings and texts per window (a deterministic sample)
    reference_sample: int = 512

    @classmethod
    def from_settings(cls, s: Any) -> HealthParams:
        return cls(min_articles=s.drift_min_articles, alpha=s.drift_alpha, min_checks=s.drift_min_checks,
                   psi=s.drift_label_psi, length_psi=s.drift_length_psi, low_confidence=s.drift_low_confidence,
                   low_conf_lift=s.drift_low_conf_lift, auc=s.drift_auc,
                   novel_lift=getattr(s, "drift_novel_lift", 0.2), strong_alpha=getattr(s, "drift_strong_alpha", 1e-9), unknown_lift=s.drift_unknown_lift,
                   disagreement_lift=s.drift_disagreement_lift, sample=s.drift_sample)


@dataclass
class Reference:
    """What the model's predictions looked like on its reference texts."""

    stats: dict[str, Any]
    embeddings: np.ndarray | None = None
    vocab: frozenset[str] = field(default_factory=frozenset)
    basis: tuple[np.ndarray, np.ndarray] | None = None  # (centre, principal axes) of the embedding checks

    @property
    def origin(self) -> str:
        return str(self.stats.get("origin", "?"))


def words(text: str) -> list[str]:
    """Lower-case words (letters and apostrophes) of ``text``."""
    return _WORD.findall(str(text or "").lower())


def unknown_rates(texts: Sequence[str], vocab: frozenset[str] | set[str]) -> np.ndarray:
    """Per text: the share of its words outside ``vocab`` (NaN for a text without words)."""
    out = np.full(len(texts), np.nan)
    for i, t in enumerate(texts):
        w = words(t)
        if w:
            out[i] = sum(x not in vocab for x in w) / len(w)
    return out


def _mix(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    c = Counter(str(x) for x in labels)
    return np.array([c.get(k, 0) for k in classes], dtype=float)


def build_reference(*, labels: Sequence[str], confidence: np.ndarray, n_tokens: np.ndarray, texts: Sequence[str],
                    embeddings: np.ndarray | None, second_labels: Sequence[str] | None, origin: str,
                    vocab_texts: Sequence[str] | None = None, vocab: Sequence[str] | None = None,
                    params: HealthParams = HealthParams(),
                    classes: Sequence[str] = SENTIMENTS, max_vocab: int = 50_000, seed: int = 0) -> Reference:
    """Reference statistics of served predictions on reference texts.

    ``labels``/``confidence``/``n_tokens``/``embeddings`` are the model's outputs on ``texts``;
    ``second_labels`` the second opinion's labels (None: no disagreement check). The vocabulary
    comes from ``vocab_texts`` (the training texts); without them from half of ``texts``, the
    unknown rate then being measured on the other half (a vocabulary judged on its own texts would
    know every word). ``vocab`` (the words the model was trained on, e.g. its TF-IDF baseline's
    vocabulary) takes precedence over both.
    """
    texts = [str(t or "") for t in texts]
    n = len(texts)
    if vocab is not None:
        vocab_src, rate_src = [], texts
    elif vocab_texts is None:
        half = np.arange(n) % 2 == 0
        vocab_src, rate_src = [t for t, h in zip(texts, half) if h], [t for t, h in zip(texts, half) if not h]
    else:
        vocab_src, rate_src = list(vocab_texts), texts
    if vocab is not None:
        known = frozenset(str(w) for w in vocab)
    else:
        counts = Counter(w for t in vocab_src for w in words(t))
        known = frozenset(w for w, _ in counts.most_common(max_vocab))
    unk = unknown_rates(rate_src, known)
    conf = np.asarray(confidence, dtype=float)
    toks = np.asarray(n_tokens, dtype=float)
    edges = np.unique(np.quantile(toks, np.linspace(0.1, 0.9, 9))) if n else np.array([])
    mix = _mix(labels, classes)
    stats: dict[str, Any] = {
        "format": FORMAT, "origin": origin, "n": n, "classes": list(classes),
        "label_mix": (mix / max(mix.sum(), 1)).tolist(),
        "mean_confidence": float(conf.mean()) if n else None,
        "low_conf_share": float((conf < params.low_confidence).mean()) if n else None,
        "low_confidence": params.low_confidence,
        "length_edges": edges.tolist(),
        "length_mix": (_bins(toks, edges) / max(n, 1)).tolist(),
        "mean_tokens": float(toks.mean()) if n else None,
        "unknown_rate": float(np.nanmean(unk)) if np.isfinite(unk).any() else None,
        "disagreement": (float(np.mean([a != b for a, b in zip(labels, second_labels)]))
                         if second_labels is not None and n else None),
    }
    emb = None
    if embeddings is not None and len(embeddings):
        emb = np.asarray(embeddings, dtype=np.float32)
        if len(emb) > params.reference_sample:
            emb = emb[np.random.default_rng(seed).choice(len(emb), params.reference_sample, replace=False)]
        stats["embedding_dim"] = int(emb.shape[1])
    stats["n_embeddings"] = 0 if emb is None else int(len(emb))
    return Reference(stats=stats, embeddings=emb, vocab=known)


def reference_from_arrays(*, labels: Sequence[str], confidence: np.ndarray, n_tokens: np.ndarray,
                          unknown: np.ndarray | None, disagree: np.ndarray | None, embeddings: np.ndarray | None,
                          origin: str, vocab: frozenset[str] = frozenset(), params: HealthParams = HealthParams(),
                          classes: Sequence[str] = SENTIMENTS, seed: int = 0) -> Reference:
    """A reference from precomputed per-row values (the trailing reference of every day: the
    per-text unknown rates and disagreements are computed once, not once per day that reads them)."""
    conf = np.asarray(confidence, dtype=float)
    toks = np.asarray(n_tokens, dtype=float)
    n = len(conf)
    edges = np.unique(np.quantile(toks, np.linspace(0.1, 0.9, 9))) if n else np.array([])
    mix = _mix(labels, classes)
    unk = np.asarray(unknown, dtype=float) if unknown is not None else np.array([])
    unk = unk[np.isfinite(unk)]
    dis = np.asarray(disagree, dtype=float) if disagree is not None else np.array([])
    emb = None if embeddings is None or not len(embeddings) else np.asarray(embeddings, dtype=np.float32)
    if emb is not None and len(emb) > params.reference_sample:
        emb = emb[np.random.default_rng(seed).choice(len(emb), params.reference_sample, replace=False)]
    stats = {"format": FORMAT, "origin": origin, "n": n, "classes": list(classes),
             "label_mix": (mix / max(mix.sum(), 1)).tolist(),
             "mean_confidence": float(conf.mean()) if n else None,
             "low_conf_share": float((conf < params.low_confidence).mean()) if n else None,
             "low_confidence": params.low_confidence, "length_edges": edges.tolist(),
             "length_mix": (_bins(toks, edges) / max(n, 1)).tolist(), "mean_tokens": float(toks.mean()) if n else None,
             "unknown_rate": float(unk.mean()) if len(unk) else None,
             "disagreement": float(dis.mean()) if len(dis) else None,
             "n_embeddings": 0 if emb is None else int(len(emb))}
    return Reference(stats=stats, embeddings=emb, vocab=vocab)


def save_reference(folder: Path, ref: Reference, prefix: str = "") -> Path:
    """Write the reference's files into ``folder`` (JSON + ``.npy``, no pickle); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (prefix + VOCAB_FILE)).write_text(json.dumps(sorted(ref.vocab)), encoding="utf-8")
    if ref.embeddings is not None:
        np.save(folder / (prefix + EMB_FILE), np.asarray(ref.embeddings, dtype=np.float32), allow_pickle=False)
    tmp = folder / (prefix + STATS_FILE + ".tmp")  # the stats file last: its presence means complete
    tmp.write_text(json.dumps(ref.stats, indent=1), encoding="utf-8")
    tmp.replace(folder / (prefix + STATS_FILE))
    return folder


def load_reference(folder: Path, prefix: str = "") -> Reference | None:
    """The reference stored in ``folder`` by :func:`save_reference`, or None when it has none."""
    folder = Path(folder)
    stats_path = folder / (prefix + STATS_FILE)
    if not stats_path.is_file():
        return None
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    if stats.get("format") != FORMAT:
        return None
    emb_path = folder / (prefix + EMB_FILE)
    emb = np.load(emb_path, allow_pickle=False) if emb_path.is_file() else None
    vocab_path = folder / (prefix + VOCAB_FILE)
    vocab = frozenset(json.loads(vocab_path.read_text(encoding="utf-8"))) if vocab_path.is_file() else frozenset()
    return Reference(stats=stats, embeddings=emb, vocab=vocab)


# ----------------------------------------------------------------------------- statistics


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins that ``edges`` (inner cut points) make."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(float)


def psi(ref_share: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of ``counts`` against ``ref_share`` (both smoothed by half a count)."""
    ref = np.asarray(ref_share, dtype=float)
    n = max(float(counts.sum()), 1.0)
    p = (counts + 0.5) / (n + 0.5 * len(counts))
    q = (ref * 1000 + 0.5) / (1000 + 0.5 * len(ref))  # the reference's shares as ~1000 pseudo-counts
    return float(np.sum((p - q) * np.log(p / q)))


def chi2_p(ref_share: np.ndarray, counts: np.ndarray) -> float:
    """Goodness-of-fit p-value of ``counts`` against the reference shares."""
    from scipy.stats import chi2

    n = float(counts.sum())
    exp = np.maximum(np.asarray(ref_share, dtype=float), 1e-3) * n
    stat = float(np.sum((counts - exp) ** 2 / exp))
    return float(chi2.sf(stat, max(len(counts) - 1, 1)))


def binom_up_p(k: float, n: int, p0: float) -> float:
    """One-sided p-value that a share ``k / n`` exceeds ``p0`` (binomial upper tail)."""
    from scipy.stats import binom

    p0 = min(max(float(p0), 1e-4), 1 - 1e-4)
    return float(binom.sf(math.ceil(k) - 1, n, p0))


def fit_basis(x: np.ndarray, dims: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(centre, top ``dims`` principal axes) of ``x``: the low-dimensional space the embedding checks
    work in (fitted once per run or reference, then shared by every window)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x - mu, full_matrices=False)
    k = max(1, min(dims, int((sv > 1e-8 * max(sv[0], 1e-12)).sum())))
    return mu, vt[:k]


def _whiten(ref: np.ndarray, cur: np.ndarray, basis: tuple[np.ndarray, np.ndarray] | None,
            dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Both sides projected on ``basis`` (None: the reference's own principal axes), then centred
    and scaled by the reference."""
    ref, cur = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    mu, axes = basis if basis is not None else fit_basis(ref, dims)
    a, b = (ref - mu) @ axes.T, (cur - mu) @ axes.T
    centre, scale = a.mean(axis=0), np.maximum(a.std(axis=0, ddof=1) if len(a) > 1 else np.ones(a.shape[1]), 1e-6)
    return (a - centre) / scale, (b - centre) / scale


def domain_auc(ref: np.ndarray, cur: np.ndarray, dims: int = 16, seed: int = 0,
               basis: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float]:
    """(AUC, p-value) of a cheap domain classifier telling ``cur`` embeddings from ``ref`` ones.

    Both sides are centred and whitened on the reference's top ``dims`` principal axes. Two scores:
    the class direction (difference of means), learnt on one half of each side and scoring the
    other half, then the halves swap; and the whitened distance from the reference's centre (text
    the model cannot place often sits far out, or collapsed near the centre: two-sided). AUC is
    the better of the two Mann-Whitney statistics, its p-value the smaller one times two.
    """
    rng = np.random.default_rng(seed)
    ref = np.asarray(ref)
    m = min(len(ref), max(len(cur), 64), 512)
    ref = ref[rng.choice(len(ref), m, replace=False)] if len(ref) > m else ref
    a, b = _whiten(ref, cur, basis, dims)
    fa, fb = rng.permutation(len(a)) % 2, rng.permutation(len(b)) % 2
    sa, sb = np.empty(len(a)), np.empty(len(b))
    for f in (0, 1):
        w = b[fb != f].mean(axis=0) - a[fa != f].mean(axis=0)
        sa[fa == f], sb[fb == f] = a[fa == f] @ w, b[fb == f] @ w
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(sb, sa, alternative="greater")
    auc, p = float(u.statistic / (len(sa) * len(sb))), float(u.pvalue)
    da, db = np.sqrt((a ** 2).sum(axis=1)), np.sqrt((b ** 2).sum(axis=1))
    v = mannwhitneyu(db, da, alternative="two-sided")
    auc_d = float(v.statistic / (len(da) * len(db)))
    auc_d = max(auc_d, 1 - auc_d)
    if auc_d > auc:
        auc, p = auc_d, float(v.pvalue)
    return auc, min(1.0, 2 * p)


def novelty(ref: np.ndarray, cur: np.ndarray, dims: int = 16, k: int = 5, q: float = 0.99,
            basis: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float, float]:
    """(share of ``cur`` that is novel, the reference's own share, binomial p-value).

    Novel = farther from its ``k`` nearest reference embeddings (whitened on the reference's top
    ``dims`` principal axes) than ``q`` of the reference's own points are from theirs (leave one
    out). Text of another kind is novel even when it is a minority of the day, where a classifier's
    AUC is diluted by the ordinary rest.
    """
    a, b = _whiten(ref, cur, basis, dims)

    def knn(x: np.ndarray, y: np.ndarray, skip_self: bool) -> np.ndarray:
        d2 = (x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2 * x @ y.T
        if skip_self:
            np.fill_diagonal(d2, np.inf)
        kk = min(k, d2.shape[1] - (1 if skip_self else 0))
        return np.sqrt(np.maximum(np.partition(d2, kk - 1, axis=1)[:, kk - 1], 0))

    own = knn(a, a, True)
    cut = float(np.quantile(own, q))
    p0 = max(float((own > cut).mean()), 1 - q)
    share = float((knn(b, a, False) > cut).mean())
    return share, p0, binom_up_p(share * len(b), len(b), p0)


def window_health(ref: Reference, *, labels: Sequence[str], confidence: np.ndarray, n_tokens: np.ndarray,
                  texts: Sequence[str] | None = None, embeddings: np.ndarray | None = None,
                  second_labels: Sequence[str] | None = None, served_sample: Sequence[str] | None = None,
                  unknown: np.ndarray | None = None, params: HealthParams = HealthParams()) -> dict[str, Any]:
    """Every check of one window against ``ref``; returns the ``model_health`` row's measures.

    ``labels``/``confidence``/``n_tokens``: every prediction of the window; ``texts``,
    ``embeddings`` and ``second_labels`` (aligned with ``served_sample``, the served labels of the
    same texts) may be a sample; ``unknown``: the sample's per-text unknown-word rates when already
    computed (else from ``texts`` and the reference's vocabulary). Checks without their inputs (no embeddings stored, no baseline)
    stay None and never fire. A window under ``min_articles`` is measured but never drifting.
    """
    st = ref.stats
    n = len(labels)
    conf = np.asarray(confidence, dtype=float)
    toks = np.asarray(n_tokens, dtype=float)
    out: dict[str, Any] = {"n_articles": n, "fired": []}
    if n == 0:
        return {**out, "drifting": False, "note": "empty window"}
    classes = st.get("classes") or list(SENTIMENTS)
    counts = _mix(labels, classes)
    ref_mix = np.asarray(st["label_mix"], dtype=float)
    out["label_psi"] = psi(ref_mix, counts)
    out["label_p"] = chi2_p(ref_mix, counts)
    fire = {"label_psi": out["label_psi"] >= params.psi and out["label_p"] < params.alpha}
    pv: dict[str, float] = {"label_psi": out["label_p"]}
    out["mean_confidence"] = float(conf.mean())
    low = float((conf < float(st.get("low_confidence", params.low_confidence))).mean())
    out["low_conf_share"], out["ref_low_conf_share"] = low, st.get("low_conf_share")
    out["ref_mean_confidence"] = st.get("mean_confidence")
    if st.get("low_conf_share") is not None:
        pv["low_conf"] = binom_up_p(low * n, n, st["low_conf_share"])
        fire["low_conf"] = low - st["low_conf_share"] >= params.low_conf_lift and pv["low_conf"] < params.alpha
    edges = np.asarray(st.get("length_edges") or [], dtype=float)
    if st.get("length_mix"):
        lc = _bins(toks, edges)
        out["length_psi"] = psi(np.asarray(st["length_mix"]), lc)
        pv["length_psi"] = chi2_p(np.asarray(st["length_mix"]), lc)
        fire["length_psi"] = out["length_psi"] >= params.length_psi and pv["length_psi"] < params.alpha
    out["mean_tokens"], out["ref_mean_tokens"] = float(toks.mean()), st.get("mean_tokens")
    if st.get("unknown_rate") is not None and (unknown is not None or (texts is not None and len(texts) and ref.vocab)):
        unk = np.asarray(unknown, dtype=float) if unknown is not None else unknown_rates(list(texts), ref.vocab)
        ok = unk[np.isfinite(unk)]
        if len(ok):
            out["unknown_rate"], out["ref_unknown_rate"] = float(ok.mean()), st["unknown_rate"]
            se = max(float(ok.std(ddof=1)) if len(ok) > 1 else 0.0, 0.02) / math.sqrt(len(ok))
            diff = out["unknown_rate"] - st["unknown_rate"]  # either way: other text may also be plainer
            fire["unknown_rate"] = abs(diff) >= params.unknown_lift and abs(diff) / se > 3.3
    if second_labels is not None and served_sample is not None and len(second_labels):
        d = float(np.mean([a != b for a, b in zip(served_sample, second_labels)]))
        out["disagreement"], out["ref_disagreement"] = d, st.get("disagreement")
        if st.get("disagreement") is not None:
            fire["disagreement"] = (d - st["disagreement"] >= params.disagreement_lift
                                    and binom_up_p(d * len(second_labels), len(second_labels), st["disagreement"])
                                    < params.alpha)
    if embeddings is not None and ref.embeddings is not None and len(embeddings) >= 8 and len(ref.embeddings) >= 8 \
            and np.asarray(embeddings).shape[1] == ref.embeddings.shape[1]:
        if ref.basis is None:  # one basis per reference (a trailing reference gets the run's)
            ref.basis = fit_basis(ref.embeddings)
        out["embedding_auc"], out["embedding_p"] = domain_auc(ref.embeddings, np.asarray(embeddings), basis=ref.basis)
        out["novel_share"], out["ref_novel_share"], novel_p = novelty(ref.embeddings, np.asarray(embeddings),
                                                                      basis=ref.basis)
        by_auc = out["embedding_auc"] >= params.auc and out["embedding_p"] < params.alpha
        by_novelty = out["novel_share"] - out["ref_novel_share"] >= params.novel_lift and novel_p < params.alpha
        fire["embedding_auc"] = by_auc or by_novelty
        pv["embedding_auc"] = min(out["embedding_p"] if by_auc else 1.0, novel_p if by_novelty else 1.0)
        out["embedding_p"] = min(out["embedding_p"], novel_p) if by_novelty else out["embedding_p"]
    out["fired"] = [c for c in CHECKS if fire.get(c)]
    enough = n >= params.min_articles
    strong = [c for c in out["fired"] if pv.get(c, 1.0) < params.strong_alpha]
    out["drifting"] = bool(enough and (len(out["fired"]) >= params.min_checks or strong))
    if not enough:
        out["note"] = f"fewer than {params.min_articles} articles: measured, not judged"
    return out
