"""Model health in the monitor flow (issue 17 item 1): label-free checks per day, drift alerts.

:func:`run_health` (plain, testable, used by ``bench/drift.py``) runs inside the monitor's
``detect-spikes`` task (:func:`model_health_step`: its writer session, no extra task or slot);
:func:`registration_reference` runs when a model is registered. The statistics are
``models/health.py``'s, the reads and writes ``warehouse/health.py``'s.

**Which reference** (``drift_reference``). ``'trailing'`` (default): each day of a key (overall, a
source) against the same key's previous ``drift_reference_days`` days of the model's own scores,
the way the sentiment monitor keeps per-key baselines: a sudden change of the kind of text pages,
slow topical drift over months does not (measured in bench/drift.py). ``'serving'``: the first
``drift_reference_days`` days of its own scores (built and stored once, at the first monitor run
after those days exist; until then the run says it is warming up and leaves the watermark alone,
so no day is lost). ``'training'``: the reference stored at registration from the validation
texts; an older champion without one is backfilled at its first monitor run: from its registered
data (its own scores of its training sets' validation/test rows) when the warehouse has them,
else from the first days of its own scores (the ``reference`` column says which). Files go to the
version directory, or to ``<home>/health/<version>/`` when that is missing or read-only. The
vocabulary behind the unknown-word share is the version's TF-IDF baseline's (its training words).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger

from models import health as mh
from core.settings import Settings
from warehouse import alerts as db_alerts
from warehouse import health as wh

SERVING_PREFIX = "serving_"
MIN_REFERENCE_ROWS = 50


def _dirs(settings: Any, model: dict[str, Any]) -> list[Path]:
    """Where a version's reference may live: its version directory, then the health cache."""
    out = []
    if model.get("artifact_path") and Path(model["artifact_path"]).is_dir():
        out.append(Path(model["artifact_path"]))
    out.append(Path(settings.home) / "health" / str(model["model_version"]))
    return out


def _save(settings: Any, model: dict[str, Any], ref: mh.Reference, prefix: str = "") -> Path:
    for folder in _dirs(settings, model):
        try:
            return mh.save_reference(folder, ref, prefix)
        except OSError:
            continue
    raise OSError(f"no writable place for the reference of {model['model_version']}")


def _load(settings: Any, model: dict[str, Any], prefix: str = "") -> mh.Reference | None:
    for folder in _dirs(settings, model):
        ref = mh.load_reference(folder, prefix)
        if ref is not None:
            return ref
    return None


def baseline_vocab(model: dict[str, Any]) -> frozenset[str]:
    """The words the version's TF-IDF baseline was trained on (its ``vocab.json`` word unigrams),
    read without loading the model; empty without a baseline."""
    import json

    path = Path(model.get("artifact_path") or "/nonexistent") / "baseline" / "sentiment" / "vocab.json"
    try:
        return frozenset(t for t in json.loads(path.read_text(encoding="utf-8")).get("word", []) if " " not in t)
    except (OSError, ValueError, AttributeError):
        return frozenset()


def second_opinion(model: dict[str, Any]) -> Any | None:
    """The version's TF-IDF sentiment baseline, or None (:func:`models.baseline.load_version_baseline`)."""
    from models.baseline import load_version_baseline

    return load_version_baseline(model.get("artifact_path"))


def _stack(col) -> np.ndarray | None:
    vals = [v for v in col if v is not None]
    if not vals or len(vals) < len(col) * 0.5:
        return None
    dim = len(vals[0])
    vals = [v for v in vals if len(v) == dim]
    return np.stack(vals).astype(np.float32) if vals else None


def reference_from_frame(df: pd.DataFrame, origin: str, baseline: Any | None,
                         params: mh.HealthParams) -> mh.Reference:
    """A reference from warehouse rows (label, confidence, n_tokens, text, embedding)."""
    texts = df["text"].fillna("").astype(str).tolist()
    second = list(baseline.predict(texts)) if baseline is not None and texts else None
    return mh.build_reference(labels=df["label"].astype(str).tolist(), confidence=df["confidence"].to_numpy(float),
                              n_tokens=df["n_tokens"].to_numpy(float), texts=texts, embeddings=_stack(df["embedding"]),
                              second_labels=second, origin=origin, vocab=training_vocab(baseline), params=params)


def training_vocab(baseline: Any | None) -> list[str] | None:
    """The words the version was trained on: its TF-IDF baseline's word unigrams (None: no baseline;
    the reference then learns its vocabulary from half of its own texts)."""
    vec = getattr(baseline, "word_vec", None)
    if vec is None or not getattr(vec, "vocabulary_", None):
        return None
    return [t for t in vec.vocabulary_ if " " not in t]


def ensure_reference(con, settings: Any, model: dict[str, Any], params: mh.HealthParams,
                     baseline: Any | None) -> tuple[mh.Reference | None, str]:
    """The reference the checks compare with (building and storing it when needed), or
    ``(None, why)`` while there is none yet."""
    version = str(model["model_version"])
    lag = getattr(settings, "monitor_live_lag_h", wh.LIVE_LAG_H)
    days = int(getattr(settings, "drift_reference_days", 7))
    if getattr(settings, "drift_reference", "serving") == "serving":
        ref = _load(settings, model, SERVING_PREFIX)
        if ref is not None:
            return ref, "stored"
        first, last = wh.stream_days(con, version, lag)
        if first is None or last - first < days:
            have = 0 if first is None else last - first
            return None, f"warming up: the serving reference needs {days} complete day(s) of scores, {have} so far"
        df, origin = wh.reference_frame(con, version, first_days=days, live_lag_h=lag)
        ref = reference_from_frame(df, f"serving: {origin}", baseline, params)
        _save(settings, model, ref, SERVING_PREFIX)
        return ref, "built"
    ref = _load(settings, model)
    if ref is not None:
        return ref, "stored"
    datasets = list(((model.get("data_snapshot") or {}).get("datasets") or {}).get("sentiment") or [])
    df, origin = wh.reference_frame(con, version, datasets=datasets, live_lag_h=lag) if datasets else (pd.DataFrame(), None)
    if origin is None or len(df) < MIN_REFERENCE_ROWS:
        first, last = wh.stream_days(con, version, lag)
        if first is None or last - first < days:
            have = 0 if first is None else last - first
            return None, (f"no reference stored at registration and no scored registered data: waiting for "
                          f"{days} day(s) of its own scores ({have} so far)")
        df, origin = wh.reference_frame(con, version, first_days=days, live_lag_h=lag)
        origin = f"backfilled from {origin} (no reference stored at registration, no scored registered data)"
    else:
        origin = f"backfilled from {origin}"
    ref = reference_from_frame(df, origin, baseline, params)
    _save(settings, model, ref)
    return ref, "backfilled"


def _emb_matrix(frame: pd.DataFrame) -> np.ndarray | None:
    """One row per frame row (NaN where the row has no embedding or was not sampled), or None."""
    vals = [v for v in frame["embedding"] if v is not None]
    if not vals:
        return None
    dim = len(vals[0])
    out = np.full((len(frame), dim), np.nan, dtype=np.float32)
    for i, v in enumerate(frame["embedding"]):
        if v is not None and len(v) == dim:
            out[i] = v
    return out


def _emb(E: np.ndarray | None, pos: np.ndarray) -> np.ndarray | None:
    if E is None or not len(pos):
        return None
    x = E[pos]
    x = x[np.isfinite(x).all(axis=1)]
    return x if len(x) >= max(8, len(pos) // 2) else None


def run_health(con, settings: Any, model: dict[str, Any] | None, *, full: bool = False,
               flow_run_id: str | None = None, cooldown: timedelta | None = None) -> dict[str, Any]:
    """Health rows for the days touched by new scores of ``model``, and drift alerts; the caller
    holds the writer slot. Returns a summary (``days``, ``rows``, ``drifting``, ``new_alerts``,
    ``extended``, ``reference``, ``status``, ``health_s``).

    ``drift_reference='trailing'`` (default): each day and key against the same key's previous
    ``drift_reference_days`` days (at least ``drift_min_reference`` articles, else measured, not
    judged), like the sentiment monitor's own baselines; 'serving' / 'training': against one stored
    reference (:func:`ensure_reference`).
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {"model_version": None, "days": 0, "rows": 0, "drifting": [], "new_alerts": [],
                           "extended": 0, "reference": None, "status": "no model"}
    if model is None:
        return out
    version = str(model["model_version"])
    out["model_version"] = version
    params = mh.HealthParams.from_settings(settings)
    lag = getattr(settings, "monitor_live_lag_h", wh.LIVE_LAG_H)
    mode = getattr(settings, "drift_reference", "trailing")
    span = int(getattr(settings, "drift_reference_days", 14))
    min_ref = int(getattr(settings, "drift_min_reference", 100))
    st = wh.state(con, version, lag)
    days = st["all_days"] if full else st["days"]
    if not days:
        out["status"] = "no new scores" if st["all_days"] else "no timed scores"
        return {**out, "health_s": round(time.perf_counter() - t0, 3)}
    fixed, how = None, "trailing"
    if mode != "trailing":
        baseline = second_opinion(model)
        fixed, how = ensure_reference(con, settings, model, params, baseline)
        if fixed is None:
            return {**out, "status": how, "health_s": round(time.perf_counter() - t0, 3)}
        out["reference"] = fixed.origin
        past: list[int] = []
    else:
        baseline = None  # loaded only when an article's baseline label is not cached yet
        have = set(st["all_days"])
        past = sorted({d - k for d in days for k in range(1, span + 1) if d - k in have} - set(days))
        out["reference"] = f"trailing: the previous {span} day(s) of its own scores, per key"
    frame = wh.day_frame(con, version, days, params.sample, lag, past=past,
                         past_sample=max(8, -(-params.reference_sample // span))).reset_index(drop=True)
    frame["unknown_rate"] = pd.to_numeric(frame["unknown_rate"], errors="coerce").astype(np.float64)
    frame["baseline_label"] = frame["baseline_label"].astype(object)
    sampled = frame["sampled"].to_numpy(bool)
    texts = frame["text"].fillna("").astype(str).to_numpy(object)
    labels = frame["label"].astype(str).to_numpy(object)
    vocab = baseline_vocab(model) or (fixed.vocab if fixed is not None else frozenset())
    if not vocab:
        stored = _load(settings, model)
        vocab = stored.vocab if stored is not None else frozenset()
    # Per-article extras, computed once and cached in health_items (the trailing days are re-read every run).
    todo = np.flatnonzero(sampled & ~frame["cached"].to_numpy(bool))
    if len(todo):
        has_base = (Path(model.get("artifact_path") or "/nonexistent") / "baseline" / "sentiment" / "params.json").is_file()
        if baseline is None and has_base:
            baseline = second_opinion(model)
        items = frame.loc[todo, ["article_id"]].copy()
        items["baseline_label"] = list(baseline.predict(list(texts[todo]))) if baseline is not None else None
        items["unknown_rate"] = mh.unknown_rates(list(texts[todo]), vocab) if vocab else np.nan
        frame.loc[todo, "baseline_label"] = items["baseline_label"].to_numpy(object)
        frame.loc[todo, "unknown_rate"] = items["unknown_rate"].to_numpy(float)
        wh.cache_items(con, version, items)
    second = np.where(sampled, frame["baseline_label"].to_numpy(object), None)
    second = np.array([None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in second],
                      dtype=object)
    unknown = np.where(sampled, pd.to_numeric(frame["unknown_rate"], errors="coerce").to_numpy(float), np.nan)
    E = _emb_matrix(frame)
    basis = None
    if fixed is None and E is not None:  # one embedding basis for every trailing reference of the run
        ok = np.flatnonzero(np.isfinite(E).all(axis=1))
        if len(ok) >= 16:
            pick = ok if len(ok) <= 1024 else np.random.default_rng(0).choice(ok, 1024, replace=False)
            basis = mh.fit_basis(E[pick])
    conf, toks = frame["confidence"].to_numpy(float), frame["n_tokens"].to_numpy(float)
    dcol, src = frame["d"].to_numpy(np.int64), frame["source"].astype(str).to_numpy(object)
    horizon = con.execute(f"SELECT max(ts) FROM ({wh._served(version, lag)})").fetchall()[0][0]
    tus = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy() \
        if len(frame) else np.array([], dtype=np.int64)
    h_us = int(pd.Timestamp(horizon).value // 1000) if horizon is not None else None
    h_day = h_us // wh.DAY_US if h_us is not None else None
    rows: list[dict[str, Any]] = []
    for d in sorted(set(days) & set(dcol.tolist())):
        # The newest day is still filling: judge the 24 hours up to the newest article instead of
        # the few hours since midnight (a switch at noon pages the same night, not after the next
        # day has filled up); its reference is then the days before those 24 hours.
        rolling = d == h_day and h_us is not None
        today = (tus > h_us - wh.DAY_US) if rolling else (dcol == d)
        before = (tus <= h_us - wh.DAY_US) if rolling else (dcol < d)
        keys = [("overall", "*", np.ones(len(frame), bool))] + [
            ("source", k, src == k) for k in sorted(set(src[today].tolist()))]
        for dim, key, sel in keys:
            cur = np.flatnonzero(today & sel)
            cur_s = cur[sampled[cur]]
            if dim == "overall" and len(cur_s) > params.sample:
                cur_s = np.sort(np.random.default_rng(int(d)).choice(cur_s, params.sample, replace=False))
            ref, note = fixed, None
            if fixed is None:
                past = np.flatnonzero(sel & (dcol >= d - span) & before)
                past_s = past[sampled[past]]
                ref = mh.reference_from_arrays(
                    labels=labels[past], confidence=conf[past], n_tokens=toks[past], unknown=unknown[past_s],
                    disagree=np.array([a != b for a, b in zip(labels[past_s], second[past_s]) if b is not None]),
                    embeddings=_emb(E, past_s), origin=out["reference"], vocab=vocab, params=params, seed=int(d))
                ref.basis = basis
                if len(past) < min_ref:
                    note = f"trailing reference has {len(past)} article(s), under {min_ref}: measured, not judged"
            has2 = [i for i in cur_s if second[i] is not None]
            r = mh.window_health(ref, labels=labels[cur].tolist(), confidence=conf[cur], n_tokens=toks[cur],
                                 texts=list(texts[cur_s]), embeddings=_emb(E, cur_s),
                                 second_labels=list(second[has2]) if has2 else None,
                                 served_sample=list(labels[has2]) if has2 else None,
                                 unknown=unknown[cur_s] if vocab else None, params=params) \
                if ref.stats["n"] else {"n_articles": len(cur), "fired": [], "drifting": False}
            if note:
                r = {**r, "drifting": False, "fired": [], "note": note}
            elif rolling:
                r = {**r, "note": "; ".join(x for x in (r.get("note"), f"day so far: the 24 h up to {horizon}") if x)}
            rows.append({**r, "d": int(d), "dimension": dim, "key": key, "reference": ref.origin})
    wh.store(con, version, rows, days)
    anchors = {k: v for k, v in db_alerts.last_alert_ends(con).items() if k[0] == wh.DIMENSION}
    new, extended = wh.drift_alerts(rows, anchors, cooldown or timedelta(hours=settings.monitor_cooldown_h),
                                    horizon, params.min_checks)
    con.execute("BEGIN TRANSACTION")
    try:
        inserted = wh.insert_drift_alerts(con, new, extended, version, flow_run_id)
        wh.set_state(con, version, st)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    drifting = [f"{wh.day_start(r['d']).date()} {r['key']}: {', '.join(r['fired'])}" for r in rows if r["drifting"]]
    return {**out, "days": len(days), "rows": len(rows), "drifting": drifting, "new_alerts": inserted,
            "extended": len(extended), "status": f"reference {how}", "health_s": round(time.perf_counter() - t0, 3)}


def model_health_step(con, settings: Settings, model: dict[str, Any] | None, full: bool = False,
                      flow_run_id: str | None = None) -> dict[str, Any]:
    """The monitor's health step (inside ``detect-spikes``, on its writer session, before the
    spikes so a spike on a drifting source can say so): :func:`run_health` for ``cpu-champion``,
    logged; a failure is logged and never stops the sentiment monitor."""
    log = get_run_logger()
    if not settings.drift_enabled:
        return {"status": "disabled", "new_alerts": []}
    try:
        out = run_health(con, settings, model, full=full, flow_run_id=flow_run_id)
    except Exception as exc:  # noqa: BLE001 - the sentiment monitor must run even when this cannot
        log.exception("model health checks failed: %s", exc)
        return {"status": f"failed: {type(exc).__name__}: {exc}", "new_alerts": []}
    log.info("model health (%s): %s; %d day(s), %d row(s), %d drifting, %d new drift alert(s) (%.2f s)",
             out.get("model_version"), out["status"], out["days"], out["rows"], len(out["drifting"]),
             len(out["new_alerts"]), out.get("health_s", 0.0))
    return out


def registration_reference(version_dir: Path, examples_path: str | Path, params: mh.HealthParams | None = None,
                           limit: int = 512) -> dict[str, Any]:
    """Compute and store the training reference of a newly registered version: the served model
    (with its baseline mix) on up to ``limit`` validation texts, the vocabulary of the training
    texts, the baseline's labels as the second opinion. Returns the stats (without embeddings)."""
    from models.serving import ServedModel

    params = params or mh.HealthParams()
    df = pd.read_parquet(examples_path)
    if "sentiment" in df:
        df = df[df["sentiment"].notna()]
    val = df[df["split"].isin(["validation", "val"])]
    val = val.sample(min(limit, len(val)), random_state=0) if len(val) else val
    train = df[df["split"] == "train"]["text"].astype(str).tolist()
    texts = val["text"].astype(str).tolist()
    served = ServedModel(Path(version_dir))
    frame, emb = served.score(texts)
    if "sentiment_label" not in frame:
        return {}
    probs = frame[[c for c in frame.columns if c.startswith("sentiment_p_")]].to_numpy(float)
    base = second_opinion({"artifact_path": str(version_dir)})
    ref = mh.build_reference(labels=frame["sentiment_label"].astype(str).tolist(), confidence=probs.max(axis=1),
                             n_tokens=frame["n_tokens"].to_numpy(float), texts=texts, embeddings=emb,
                             second_labels=list(base.predict(texts)) if base is not None else None,
                             origin=f"registration: {len(texts)} validation texts", vocab_texts=train or None,
                             params=params)
    mh.save_reference(Path(version_dir), ref)
    return ref.stats
