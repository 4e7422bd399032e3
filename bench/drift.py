"""Drift benchmark (issue 17 item 5): does the monitor's model health notice text of another kind,
how fast, and how often does it cry wolf on a stable stream?

**Model.** A cheap CPU stand-in for the served GPT, trained on Financial PhraseBank (66Agree, 60%
train / 10% validation by a hash of the text): a "backbone" of TF-IDF (words + case-kept
character 2-4-grams) -> 64-dim LSA (TruncatedSVD) fitted on AG News (7.6k news texts, the
"pretraining") plus the PhraseBank training texts = the embedding, and a logistic-regression head
on it = the served sentiment; the version's second
opinion is the product's own TF-IDF baseline (``models.baseline.TfidfLogReg``, word + char
n-grams) saved as ``baseline/sentiment`` in a registered version directory, so the monitor's code
loads it the way it loads a real version's. ``n_tokens`` is the word count.

**Stream.** The dated CNBC + Guardian business headlines (Dec 2017 - Jul 2020, ~20.6k) replayed in
time order into a real warehouse (articles, scores, embeddings; the Guardian's date-only rows
spread over 06-22 UTC by a hash of the title, as in bench/monitor.py).

**What runs.** ``tasks.health.run_health`` - the monitor flow's code path (warehouse reads,
reference building and storing, checks, ``model_health`` rows, drift alerts with the alerts table's
dedup and cooldown) - with the product's defaults except ``--min-articles`` (the data has ~22
headlines a day; the default 30 would judge no day).

1. **Stable part**: every headline, one run over all days: drift alerts and drifting days per week
   (every one is false: nothing was switched), per check how often it fired. Both references:
   ``trailing`` (each day against the same key's previous 14 days; the default), ``serving``
   (the first 14 days of own scores) and ``training`` (the PhraseBank validation rows, what
   registration stores).
2. **Switches**: at ``--switches`` known times (noon UTC, spread over the replay), part of the
   stream becomes another kind of text: ``banking77`` (BANKING77 customer queries replace every
   Guardian headline from then on, the same times and volume), ``banking77-30pct`` (30% of all
   headlines), ``shuffled`` (the Guardian headlines' words shuffled). The stream's last 15 days
   before the switch are loaded, then the monitor runs every hour of the next 3 days with that hour's articles added
   (incremental runs, as scheduled) until a drift alert opens. Delay = that run's time minus the
   switch; which checks fired on the alert's day.
3. ``--overhead WAREHOUSE``: the monitor flow on copies of a demo warehouse with the health checks
   on and off, alternating, in one process (first run over everything, a run after the last day's
   scores were re-committed, a run with nothing new); median of ``--reps``.

Writes ``bench/results/drift.json``.

    nice -n 19 python bench/drift.py [--data-dir ../shared/data] [--switches 6] [--min-articles 15]
        [--overhead /path/demo.duckdb] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "drift.json"
MODEL = "m20171201-000000-drift"
SENTS = ("negative", "neutral", "positive")


# ----------------------------------------------------------------------------- model and data


class LsaModel:
    """A frozen-backbone-plus-head stand-in: the "backbone" is TF-IDF (lower-cased words and
    case-kept character 2-4-grams, so style shows) -> 64-dim LSA, "pretrained" on AG News plus the
    PhraseBank training texts; the head a logistic regression on the embedding."""

    def __init__(self, dims: int = 64, seed: int = 0) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion

        self.vec = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=False, min_df=3,
                                     sublinear_tf=True, max_features=50_000))])
        self.svd = TruncatedSVD(dims, random_state=seed)
        self.clf = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")

    def fit(self, texts: list[str], labels: list[str], corpus: list[str]) -> LsaModel:
        self.svd.fit(self.vec.fit_transform(list(corpus) + list(texts)))
        self.clf.fit(self.embed(texts), labels)
        return self

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.svd.transform(self.vec.transform(texts)).astype(np.float32)

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities in SENTS order, embeddings)."""
        emb = self.embed(texts)
        raw = self.clf.predict_proba(emb)
        probs = np.zeros((len(texts), 3))
        for j, c in enumerate(self.clf.classes_):
            probs[:, SENTS.index(c)] = raw[:, j]
        return probs, emb


def load_data(data_dir: Path) -> dict[str, Any]:
    from sources import datasets as ds

    hd = data_dir / "financial_news_headlines"
    frames = []
    for src, reader, f in (("cnbc", ds.read_cnbc, "cnbc_headlines.csv"),
                           ("guardian", ds.read_guardian, "guardian_headlines.csv")):
        df = reader(hd / f)
        df = df[df["error"].isna() & df["published_at"].notna() & df["title"].notna()][["title", "published_at"]]
        df["source"] = src
        frames.append(df)
    real = pd.concat(frames, ignore_index=True).drop_duplicates(["source", "title"])
    real["ts"] = pd.to_datetime(real.published_at, utc=True)
    g = real.source == "guardian"
    real.loc[g, "ts"] += pd.to_timedelta([6 * 3600 + zlib.crc32(t.encode()) % (16 * 3600) for t in real.title[g]],
                                         unit="s")
    real = real.sort_values("ts").reset_index(drop=True)
    real["article_id"] = [f"h{i:06d}" for i in range(len(real))]
    pb = ds.read_phrasebank(data_dir / "financial_phrasebank" / "Sentences_66Agree.txt")
    pb = pb[pb["error"].isna()][["body", "label"]].drop_duplicates("body").reset_index(drop=True)
    bucket = np.array([zlib.crc32(b.encode()) % 10 for b in pb.body])
    b77 = pd.read_csv(data_dir / "banking77" / "train.csv")
    ag = ds.read_ag_news(data_dir / "ag_news" / "test.csv")
    ag = [f"{t or ''} {b or ''}".strip() for t, b in zip(ag.get("title", [None] * len(ag)), ag.get("body", [None] * len(ag)))]
    return {"real": real, "pb_train": pb[bucket < 6], "pb_val": pb[bucket == 6], "b77": b77["text"].astype(str).tolist(),
            "corpus": [t for t in ag if t]}


def train(data: dict[str, Any], version_dir: Path) -> tuple[LsaModel, Any, dict[str, Any]]:
    """The served stand-in and the TF-IDF baseline (saved as the version's ``baseline/sentiment``)."""
    from models.baseline import TfidfLogReg

    t0 = time.perf_counter()
    tr, va = data["pb_train"], data["pb_val"]
    model = LsaModel().fit(tr.body.tolist(), tr.label.tolist(), data["corpus"])
    base = TfidfLogReg(labels=list(SENTS), c_grid=(1.0, 4.0)).fit(tr.body.tolist(), tr.label.tolist(),
                                                                 va.body.tolist(), va.label.tolist())
    base.save(version_dir / "baseline" / "sentiment")
    probs, _ = model.score(va.body.tolist())
    acc = float((np.array(SENTS)[probs.argmax(1)] == va.label.to_numpy()).mean())
    return model, base, {"fit_s": round(time.perf_counter() - t0, 1), "val_accuracy_served": round(acc, 3),
                         "val_accuracy_baseline": round(float(base.val_score or 0), 3),
                         "train_rows": len(tr), "val_rows": len(va)}


def training_reference(model: LsaModel, base: Any, data: dict[str, Any], version_dir: Path) -> dict[str, Any]:
    """What registration stores (``tasks.health.registration_reference``), for this stand-in."""
    from models import health as mh

    va = data["pb_val"].body.tolist()
    probs, emb = model.score(va)
    ref = mh.build_reference(labels=list(np.array(SENTS)[probs.argmax(1)]), confidence=probs.max(1),
                             n_tokens=np.array([len(t.split()) for t in va]), texts=va, embeddings=emb,
                             second_labels=list(base.predict(va)), origin=f"registration: {len(va)} validation texts",
                             vocab_texts=data["pb_train"].body.tolist())
    mh.save_reference(version_dir, ref)
    return ref.stats


# ----------------------------------------------------------------------------- the warehouse


def new_warehouse(path: Path, version_dir: Path) -> duckdb.DuckDBPyConnection:
    from warehouse import registry as db_registry
    from warehouse.migrate import migrate

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    migrate(con)
    db_registry.record_model(con, {"model_version": MODEL, "backbone": "lsa-stand-in", "heads": {}, "metrics": {},
                                   "val_score": 0.0, "served": "gpt", "val_split_id": "pb",
                                   "artifact_path": str(version_dir)})
    db_registry.promote(con, MODEL, "bench")
    return con


def load_rows(con: duckdb.DuckDBPyConnection, df: pd.DataFrame, model: LsaModel, committed: datetime | None = None) -> None:
    """Articles, scores and embeddings of ``df`` (article_id, source, title, ts)."""
    if not len(df):
        return
    probs, emb = model.score(df.title.tolist())
    labels = np.array(SENTS)[probs.argmax(1)]
    arts = pd.DataFrame({"article_id": df.article_id.values, "source": df.source.values, "title": df.title.values,
                         "body": "", "published_at": df.ts.values, "ingested_at": df.ts.values, "batch_id": "replay"})
    scores = pd.DataFrame({"article_id": df.article_id.values, "model_version": MODEL, "sentiment_label": labels,
                           "sentiment_p_negative": probs[:, 0], "sentiment_p_neutral": probs[:, 1],
                           "sentiment_p_positive": probs[:, 2], "sentiment_score": probs[:, 2] - probs[:, 0],
                           "n_tokens": [len(t.split()) for t in df.title], "truncated": False,
                           "scored_at": committed or datetime.now(UTC), "committed_at": committed or datetime.now(UTC),
                           "score_run_id": "replay"})
    embs = pd.DataFrame({"article_id": df.article_id.values, "model_version": MODEL, "embedding": list(emb)})
    for name, frame, table in (("a", arts, "articles"), ("s", scores, "scores"), ("e", embs, "embeddings")):
        con.register(name, frame)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
        con.unregister(name)


def health_settings(home: Path, reference: str, min_articles: int) -> Any:
    from core.settings import Settings

    return Settings(home=home, drift_reference=reference, drift_min_articles=min_articles)


def drift_alerts(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    from warehouse.alerts import list_alerts

    return [a for a in list_alerts(con, limit=100_000) if a["dimension"] == "drift"]


# ----------------------------------------------------------------------------- 1. the stable stream


def bench_stable(data, model, version_dir: Path, tmp: Path, reference: str, min_articles: int) -> dict[str, Any]:
    from tasks.health import run_health
    from warehouse import registry as db_registry

    real = data["real"]
    home = tmp / f"stable-{reference}"
    con = new_warehouse(home / "wh.duckdb", version_dir)
    load_rows(con, real, model)
    settings = health_settings(home, reference, min_articles)
    t0 = time.perf_counter()
    out = run_health(con, settings, db_registry.get_model(con, "cpu-champion"))
    secs = time.perf_counter() - t0
    alerts = drift_alerts(con)
    h = con.execute("SELECT dimension, key, drifting, checks_fired, n_articles, n_articles >= ? AS judged "
                    "FROM model_health", [min_articles]).df()
    con.close()
    weeks = (real.ts.max() - real.ts.min()).total_seconds() / (7 * 86400)
    if reference != "training":  # the reference days themselves are not judged: count after them
        weeks -= settings.drift_reference_days / 7
    fired: dict[str, int] = {}
    for checks in h.checks_fired:
        for c in checks:
            fired[c] = fired.get(c, 0) + 1
    judged = h[h.judged]
    return {"reference": reference, "reference_origin": out.get("reference"), "weeks": round(weeks, 1),
            "days_checked": out["days"], "rows": int(len(h)), "rows_judged": int(len(judged)),
            "drift_alerts": len(alerts), "false_alerts_per_week": round(len(alerts) / weeks, 3),
            "false_alerts_per_10_weeks": round(10 * len(alerts) / weeks, 2),
            "drifting_rows": int(h.drifting.sum()), "drifting_share_of_judged": round(float(judged.drifting.mean()), 4)
            if len(judged) else None,
            "check_fired_rows": fired, "alerts": [{"key": a["key"], "day": str(a["window_start"].date()),
                                                   "checks": (a["evidence"] or [{}])[0].get("checks_fired")}
                                                  for a in alerts[:30]],
            "health_s": round(secs, 1)}


# ----------------------------------------------------------------------------- 2. switches


def switched(real: pd.DataFrame, kind: str, at: datetime, b77: list[str], seed: int) -> pd.DataFrame:
    """The stream with the part after ``at`` replaced by ``kind`` text (same times, same volume)."""
    rng = np.random.default_rng(seed)
    df = real.copy()
    after = df.ts >= at
    if kind == "banking77":
        part = after & (df.source == "guardian")
    elif kind == "banking77-30pct":
        part = after & (rng.random(len(df)) < 0.3)
    elif kind == "shuffled":
        part = after & (df.source == "guardian")
    else:
        raise ValueError(kind)
    if kind.startswith("banking77"):
        df.loc[part, "title"] = rng.choice(b77, int(part.sum()))
    else:
        df.loc[part, "title"] = [" ".join(rng.permutation(t.split())) for t in df.title[part]]
    return df, part


def bench_switch(data, model, version_dir: Path, tmp: Path, kind: str, at: datetime, min_articles: int,
                 serving_ref: Path, reference: str = "trailing", hours: int = 72) -> dict[str, Any]:
    """Load the stream up to ``at``; then run the monitor's health step every hour with that hour's
    articles added, until a drift alert opens (or ``hours`` pass)."""
    from tasks.health import SERVING_PREFIX, run_health
    from warehouse import registry as db_registry

    df, part = switched(data["real"], kind, at, data["b77"], seed=int(at.timestamp()) % 1000)
    home = tmp / f"{kind}-{at:%Y%m%d}"
    con = new_warehouse(home / "wh.duckdb", version_dir)
    settings = health_settings(home, reference, min_articles)
    cache = home / "health" / MODEL  # the serving reference of the stable replay (the same first days)
    cache.mkdir(parents=True, exist_ok=True)
    for f in serving_ref.glob(SERVING_PREFIX + "*"):
        shutil.copy(f, cache / f.name)
    back = settings.drift_reference_days + 1 if reference == "trailing" else 3
    hist = df[(df.ts < at) & (df.ts >= at - timedelta(days=back))]
    load_rows(con, hist, model, committed=at)
    model_row = db_registry.get_model(con, "cpu-champion")
    run_health(con, settings, model_row)
    found = None
    t0 = time.perf_counter()
    for h in range(1, hours + 1):
        now = at + timedelta(hours=h)
        load_rows(con, df[(df.ts >= now - timedelta(hours=1)) & (df.ts < now)], model, committed=now)
        out = run_health(con, settings, model_row)
        if out["new_alerts"]:
            got = [a for a in drift_alerts(con) if a["alert_id"] in out["new_alerts"]]
            found = {"delay_h": h, "keys": [a["key"] for a in got],
                     "checks": sorted({c for a in got for c in (a["evidence"] or [{}])[0].get("checks_fired", [])}),
                     "switched_articles_seen": int((part & (df.ts < now)).sum())}
            break
    secs = time.perf_counter() - t0
    con.close()
    shutil.rmtree(home, ignore_errors=True)
    return {"kind": kind, "at": str(at), "detected": found is not None, **(found or {"delay_h": None}),
            "switched_per_day": round(float(part.sum()) / max((df.ts.max() - at).total_seconds() / 86400, 1), 1),
            "hourly_runs_s": round(secs, 1)}


# ----------------------------------------------------------------------------- 3. overhead


def bench_overhead(warehouse: Path, reps: int) -> dict[str, Any]:
    """``monitor_flow`` wall time with the health checks on and off on copies of a demo warehouse
    (its champion's version directory copied too, so nothing is written next to the original)."""
    from core.settings import settings_env

    times: dict[str, dict[str, list[float]]] = {m: {"full": [], "last day": [], "nothing new": [], "health_s": []}
                                                for m in ("off", "on")}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"PREFECT_HOME": str(Path(tmp) / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                           "DO_NOT_TRACK": "1"})
        src = duckdb.connect(str(warehouse), read_only=True)
        paths = src.execute("SELECT model_version, artifact_path FROM model_registry").fetchall()
        n_scores = src.execute("SELECT count(*) FROM scores").fetchall()[0][0]
        days = src.execute("SELECT count(DISTINCT published_at::DATE) FROM articles").fetchall()[0][0]
        src.close()
        reg = Path(tmp) / "registry"
        for v, p in paths:
            if p and Path(p).is_dir():
                shutil.copytree(p, reg / v)

        def copy(name: str) -> Path:
            db = Path(tmp) / f"{name}.duckdb"
            shutil.copy(warehouse, db)
            with duckdb.connect(str(db)) as con:
                for v, p in paths:
                    con.execute("UPDATE model_registry SET artifact_path = ? WHERE model_version = ?", [str(reg / v), v])
                con.execute("DELETE FROM alerts")
                con.execute("DELETE FROM monitor_state")
                con.execute("DROP TABLE IF EXISTS model_health")
            for v, _ in paths:  # each run builds its reference afresh
                for f in (reg / v).glob("*reference_*"):
                    f.unlink()
            return db

        env = {"NEWSPULSE_HOME": str(Path(tmp) / "var"), "NEWSPULSE_ALERT_BLOCK": ""}
        with settings_env({**env, "NEWSPULSE_WAREHOUSE_PATH": str(copy("warm"))}):
            from flows.monitor import monitor_flow

            monitor_flow()  # Prefect's ephemeral API and every import: not timed
        for rep in range(reps):
            for mode in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                db = copy(f"{mode}-{rep}")
                shutil.rmtree(Path(tmp) / "var" / "health", ignore_errors=True)
                with settings_env({**env, "NEWSPULSE_WAREHOUSE_PATH": str(db),
                                   "NEWSPULSE_DRIFT_ENABLED": "true" if mode == "on" else "false"}):
                    t0 = time.perf_counter()
                    out = monitor_flow()
                    times[mode]["full"].append(time.perf_counter() - t0)
                    times[mode]["health_s"].append(float((out.get("health") or {}).get("health_s") or 0.0))
                    with duckdb.connect(str(db)) as con:
                        con.execute("UPDATE scores SET committed_at = now() WHERE article_id IN (SELECT article_id "
                                    "FROM articles WHERE published_at >= (SELECT max(published_at) FROM articles) "
                                    "- INTERVAL 1 DAY)")
                    t0 = time.perf_counter()
                    monitor_flow()
                    times[mode]["last day"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    monitor_flow()
                    times[mode]["nothing new"].append(time.perf_counter() - t0)
    med = {m: {k: float(np.median(v)) for k, v in t.items()} for m, t in times.items()}
    ratio = {k: round(med["on"][k] / med["off"][k], 3) for k in ("full", "last day", "nothing new")}
    return {"warehouse": str(warehouse), "scores": int(n_scores), "days": int(days), "reps": reps,
            "median_s": med, "ratio_on_off": ratio, "runs_s": times}


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NEWSPULSE_DATA_DIR", ROOT.parent / "shared" / "data")))
    ap.add_argument("--switches", type=int, default=6, help="switch times per kind, spread over the replay")
    ap.add_argument("--kinds", default="banking77,banking77-30pct,shuffled")
    ap.add_argument("--min-articles", type=int, default=15, help="drift_min_articles (the product default is 30)")
    ap.add_argument("--reference", default="trailing", choices=("trailing", "serving"),
                    help="drift_reference of the switch runs (the stable part is run with every reference)")
    ap.add_argument("--references", default="trailing,serving,training", help="references of the stable part")
    ap.add_argument("--overhead", type=Path, default=None, help="a demo warehouse: health checks on vs off")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--overhead-only", action="store_true", help="only section 3 (needs --overhead)")
    ap.add_argument("--quick", action="store_true", help="2 switches, banking77 only, no training reference")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.switches, args.kinds = 2, "banking77"
    t_all = time.perf_counter()
    result: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    if args.overhead_only:  # keep the replay sections of an earlier run
        prev = json.loads(args.out.read_text()) if args.out.exists() else {}
        result = {**prev, "config_overhead": result["config"]}
    else:
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)
            data = load_data(args.data_dir)
            version_dir = tmp / "registry" / MODEL
            model, base, info = train(data, version_dir)
            result["model"] = {**info, "headlines": len(data["real"]),
                               "span": [str(data["real"].ts.min()), str(data["real"].ts.max())]}
            result["training_reference"] = {k: v for k, v in training_reference(model, base, data, version_dir).items()
                                            if k not in ("length_edges",)}
            print(f"model: {info}", flush=True)
            stable = {}
            for ref in ("trailing", "serving") if args.quick else args.references.split(","):
                stable[ref] = bench_stable(data, model, version_dir, tmp, ref, args.min_articles)
                s = stable[ref]
                print(f"stable ({ref} reference): {s['drift_alerts']} drift alert(s) over {s['weeks']} weeks = "
                      f"{s['false_alerts_per_10_weeks']} per 10 weeks; drifting rows {s['drifting_rows']} "
                      f"({s['drifting_share_of_judged']} of judged); fired {s['check_fired_rows']}; {s['health_s']} s",
                      flush=True)
            result["stable"] = stable
            serving_ref = tmp / "stable-serving" / "health" / MODEL
            real = data["real"]
            t_lo, t_hi = real.ts.min() + timedelta(days=21), real.ts.max() - timedelta(days=4)
            ats = [(t_lo + (t_hi - t_lo) * (i + 0.5) / args.switches).to_pydatetime().replace(hour=12, minute=0, second=0,
                                                                                             microsecond=0)
                   for i in range(args.switches)]
            runs = []
            for kind in args.kinds.split(","):
                for at in ats:
                    r = bench_switch(data, model, version_dir, tmp, kind, at, args.min_articles, serving_ref,
                                     args.reference)
                    runs.append(r)
                    print(f"switch {kind} at {at:%Y-%m-%d %H:%M}: "
                          + (f"alert after {r['delay_h']} h on {r['keys']} ({', '.join(r['checks'])})" if r["detected"]
                             else "not detected in 72 h") + f" [{r['hourly_runs_s']} s]", flush=True)
            summary = {}
            for kind in args.kinds.split(","):
                rs = [r for r in runs if r["kind"] == kind]
                delays = [r["delay_h"] for r in rs if r["detected"]]
                checks: dict[str, int] = {}
                for r in rs:
                    for c in r.get("checks") or []:
                        checks[c] = checks.get(c, 0) + 1
                summary[kind] = {"switches": len(rs), "detected": len(delays),
                                 "detected_within_24h": sum(d <= 24 for d in delays),
                                 "median_delay_h": float(np.median(delays)) if delays else None,
                                 "max_delay_h": max(delays) if delays else None, "checks_fired_on_alert": checks}
                print(f"{kind}: {len(delays)}/{len(rs)} detected, {summary[kind]['detected_within_24h']} within 24 h, "
                      f"median delay {summary[kind]['median_delay_h']} h, max {summary[kind]['max_delay_h']} h; "
                      f"checks {checks}", flush=True)
            result["switches"] = {"runs": runs, "summary": summary}
    if args.overhead:
        result["overhead"] = bench_overhead(args.overhead, args.reps)
        o = result["overhead"]
        print(f"overhead on {o['warehouse']} ({o['scores']} scores, {o['days']} days): on/off wall time "
              f"{o['ratio_on_off']}; medians {json.dumps(o['median_s'])}", flush=True)
    result["total_s"] = round(time.perf_counter() - t_all, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out} ({result['total_s']} s)")


if __name__ == "__main__":
    main()
