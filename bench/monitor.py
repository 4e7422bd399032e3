"""Detection benchmark for the sentiment monitor: the old tumbling-window test (``windows``,
``warehouse.monitor``) and the scan (``scan``, ``warehouse.scan``), side by side on the same data.

(a) **Synthetic episodes.** ``sources.synthetic`` streams (default config, 4 weeks, ~11.5k articles,
    6 injected negative episodes + 3 tiny decoy bursts) over several seeds, scored with the TRUE
    labels, with a *noisy classifier* (labels flipped by a fixed confusion matrix, ~80% accuracy)
    and, with ``--champion-db``, flipped by a real champion's validation confusion matrix. The scan
    gets each variant's confusion matrix as the registry would store it (every 5th article as the
    validation split).
(b) **Real dated headlines.** CNBC + Guardian business headlines (Dec 2017 - Jul 2020) replayed in
    time order, sentiment from TF-IDF + LR trained on 60% of Financial PhraseBank (66Agree; C and class
    weights picked on another 10%, whose confusion matrix the scan uses), topic
    from a keyword map, a few company names as tickers. Synthetic negative episodes are injected at
    known times and keys (extra headlines drawn from the *held-out* 30% of PhraseBank and scored by
    the same model, so their labels are model predictions). Alerts on the un-injected stream are
    reported separately ("alerts on real data": the truth is unknown).
(c) **Timing.** 10M score rows generated in DuckDB (a year, 8 sources, 6 topics, 50 tickers with
    0-2 per row, no episodes: every alert is a false one), each detector end to end, best of 2.
(d) **The monitor flow** (``--flow-warehouse``): wall time per detector on copies of a demo warehouse.

Matching rule (documented in bench/README.md): a significant window *detects* an episode when it has
the episode's dimension and key and overlaps [onset, end + 6 h). An alert (one per episode after
the cooldown, ``group_episodes``) is a true positive when it detects an episode; it is *related*
(neither true nor false) when it overlaps an episode and at least 30% of its window's negatives
are that episode's articles (the overall or a topic key that contains the episode); otherwise it
is a false alarm. Delay = first detecting window's END minus onset (hours). ``precision`` is that
rule over every alert (old); ``paged precision`` counts only alerts that page, i.e. leaves out
alerts that carry ``explained_by`` (new, because those are never sent: issue 19 item 2). Writes
``bench/results/monitor.json``.

    python bench/monitor.py [--quick] [--seeds 5] [--rows 10000000] [--data-dir ../shared/data]
        [--champion-db WAREHOUSE] [--flow-warehouse WAREHOUSE --flow-truth ground_truth.json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from warehouse.monitor import (MonitorParams, compute_windows, day_cutoff, group_episodes,  # noqa: E402
                               slot_counts, spike_windows)
from warehouse.scan import Confusion, ScanParams, run_scan, scan_spikes  # noqa: E402
from warehouse.scan_alerts import detect, explain  # noqa: E402

console = Console(width=230)
GRACE = timedelta(hours=6)
RELATED_SHARE = 0.3
COOLDOWN = timedelta(hours=12)
SENTS = ("negative", "neutral", "positive")
# Rows: true label; columns: predicted (negative, neutral, positive). ~80% accuracy, errors mostly
# towards neutral, as a financial sentiment model makes them.
CONFUSION = np.array([[0.78, 0.17, 0.05], [0.08, 0.82, 0.10], [0.04, 0.16, 0.80]])
INPUT_COLS = "article_id, ts, source, topic, tickers, neg, pos, score, title"


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


def _pred(where: str, dim: str, key: str) -> str:
    k = key.replace("'", "''")
    return {"overall": "true", "topic": f"{where}topic = '{k}'", "source": f"{where}source = '{k}'",
            "ticker": f"list_contains({where}tickers, '{k}')"}[dim]


def _dt(x) -> datetime:
    return x if isinstance(x, datetime) else datetime.fromisoformat(str(x).replace("Z", "+00:00"))


def run_detector(con, table: str, detector: str, conf: Confusion = Confusion()) -> tuple[list[dict], list[dict]]:
    """(significant windows, alerts) of ``detector`` ('windows': the old tumbling-window test;
    'scan': the scan, whose alerts carry ``explained_by`` when a narrower alert explains them)."""
    if detector == "windows":
        spikes = spike_windows(con, compute_windows(con, MonitorParams(), None, source=table))
        return spikes, group_episodes(spikes, {}, COOLDOWN)[0]
    spikes = detect(con, ScanParams(), day_cutoff(con, None, table), conf, source=table)
    alerts, _ = group_episodes(spikes, {}, COOLDOWN)
    explain(con, alerts, source=table)
    return spikes, alerts


def evaluate(con, table: str, detector: str, episodes: list[dict], ignore: set | None = None,
             conf: Confusion = Confusion()) -> dict:
    """Run ``detector`` over ``table`` and score alerts against ``episodes`` (see the matching rule)."""
    t0 = time.perf_counter()
    spikes, alerts = run_detector(con, table, detector, conf)
    secs = time.perf_counter() - t0
    span = con.execute(f"SELECT min(ts), max(ts) FROM {table}").fetchall()[0]
    weeks = (span[1] - span[0]).total_seconds() / (7 * 86400)

    def detects(s, e):
        return (s["dimension"], s["key"]) == (e["dimension"], e["key"]) and s["window_end"] > _dt(e["onset"]) \
            and s["window_start"] < _dt(e["end"]) + GRACE

    per_ep = []
    for e in episodes:
        hits = [s for s in spikes if detects(s, e)]
        first = min(hits, key=lambda s: s["window_end"]) if hits else None
        delay = (first["window_end"] - _dt(e["onset"])).total_seconds() / 3600 if first else None
        per_ep.append({**{k: e[k] for k in ("dimension", "key", "onset", "end", "n_articles", "n_negative", "n_extra") if k in e},
                       "detected": bool(hits), "granularity": first["granularity"] if first else None,
                       "delay_h": delay})
    tp = related = 0
    false_alarms, preexisting = [], 0
    page = {"tp": 0, "fa": 0, "explained": 0}  # the new rule: explained alerts do not page
    for a in alerts:
        if a.get("explained_by"):
            page["explained"] += 1
        if any(detects(a, e) for e in episodes):
            tp += 1
            page["tp"] += not a.get("explained_by")
            continue
        if ignore and (a["dimension"], a["key"], a["window_start"]) in ignore:
            preexisting += 1
            continue
        rel = False
        for e in episodes:
            if a["window_end"] > _dt(e["onset"]) and a["window_start"] < _dt(e["end"]) + GRACE:
                both = con.execute(
                    f"SELECT count(*) FILTER ({_pred('', e['dimension'], e['key'])} AND ts >= $on AND ts < $end), "
                    f"count(*) FROM {table} WHERE neg AND ts >= $ws AND ts < $we AND {_pred('', a['dimension'], a['key'])}",
                    {"on": _dt(e["onset"]), "end": _dt(e["end"]), "ws": a["window_start"], "we": a["window_end"]},
                ).fetchall()[0]
                rel = rel or (both[1] > 0 and both[0] / both[1] >= RELATED_SHARE)
        if rel:
            related += 1
        else:
            false_alarms.append(a)
            page["fa"] += not a.get("explained_by")
    return {"episodes": per_ep, "n_alerts": len(alerts), "tp_alerts": tp, "related_alerts": related, "page": page,
            "false_alarms": len(false_alarms), "preexisting_alerts": preexisting, "weeks": weeks,
            "seconds": secs, "alerts": alerts, "false_alarm_examples": [_short(a) for a in false_alarms[:5]]}


def _short(a: dict) -> dict:
    return {"granularity": a["granularity"], "dimension": a["dimension"], "key": a["key"],
            "window_start": str(a["window_start"]), "n": a["n"], "n_neg": a["n_neg"],
            "observed": round(a["observed"], 3), "baseline": round(a["baseline"], 3), "p_value": float(a["p_value"])}


def summarize(runs: list[dict]) -> dict:
    eps = [e for r in runs for e in r["episodes"]]
    det = [e for e in eps if e["detected"]]
    delays = [e["delay_h"] for e in det]
    tp, fa = sum(r["tp_alerts"] for r in runs), sum(r["false_alarms"] for r in runs)
    weeks = sum(r["weeks"] for r in runs)
    ptp, pfa = sum(r["page"]["tp"] for r in runs), sum(r["page"]["fa"] for r in runs)
    return {"episodes": len(eps), "detected": len(det), "recall": len(det) / max(len(eps), 1),
            "precision": tp / max(tp + fa, 1), "precision_paged": ptp / max(ptp + pfa, 1), "paged_false_alarms": pfa,
            "explained_alerts": sum(r["page"]["explained"] for r in runs), "alerts": sum(r["n_alerts"] for r in runs),
            "tp_alerts": tp, "related_alerts": sum(r["related_alerts"] for r in runs),
            "false_alarms": fa, "false_alarms_per_week": fa / max(weeks, 1e-9),
            "median_delay_h": float(np.median(delays)) if delays else None,
            "median_delay_1h_windows": float(np.median([math.ceil(d) for d in delays])) if delays else None,
            "by_dimension": {d: f"{sum(e['detected'] for e in eps if e['dimension'] == d)}/"
                                f"{sum(e['dimension'] == d for e in eps)}" for d in ("ticker", "topic", "source", "overall")
                             if any(e["dimension"] == d for e in eps)},
            "detected_at": {g: sum(e["granularity"] == g for e in det)
                            for g in ("15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")}}


# ----------------------------------------------------------------------------- (a) synthetic


def _confusion(true: np.ndarray, pred: np.ndarray, name: str, every: int = 5) -> Confusion:
    """What the registry would store: the validation split's confusion matrix (here every 5th
    article of the stream), through the same parser the monitor flow uses."""
    from warehouse.scan import confusion_from_model

    val = np.arange(len(true)) % every == 0
    cm = np.zeros((3, 3), int)
    np.add.at(cm, (true[val], pred[val]), 1)
    row = {"model_version": name, "served": "gpt", "heads": {"sentiment_labels": list(SENTS)},
           "metrics": {"sentiment": {"validation": {"gpt": {"confusion_matrix": cm.tolist()}}}}}
    return confusion_from_model(row)


def load_synthetic(con, seed: int, work: Path, matrices: dict[str, np.ndarray]) -> dict:
    """Generate one stream into ``work``; table syn_true (true labels) and one syn_<i> per flipping
    matrix (rows true, columns predicted); returns ground truth with each variant's accuracy and
    validation ``Confusion``."""
    from sources.synthetic import SyntheticConfig, generate_stream

    st = generate_stream(work / f"s{seed}", SyntheticConfig(seed=seed, label_fraction=1.0))
    truth = json.loads(st.ground_truth_path.read_text())
    con.execute(f"""CREATE OR REPLACE TABLE syn_arts AS SELECT DISTINCT ON (id) id, source, topic, tickers, title,
        TRY_CAST(published_at AS TIMESTAMPTZ) AS ts FROM read_json('{st.articles_path}', format='newline_delimited',
        ignore_errors=true, columns={{'id':'VARCHAR','source':'VARCHAR','published_at':'VARCHAR',
        'tickers':'VARCHAR[]','topic':'VARCHAR','title':'VARCHAR'}})""")
    lab = con.execute(f"""SELECT a.id, l.label FROM syn_arts a JOIN read_json('{st.labels_path}',
        format='newline_delimited') l USING (id) WHERE l.task = 'sentiment' AND a.ts IS NOT NULL ORDER BY a.id""").df()
    rng = np.random.default_rng(seed + 1000)
    true = lab.label.map(SENTS.index).to_numpy()
    cols = [("syn_true", "label")]
    truth["variants"] = {"true labels": {"table": "syn_true", "accuracy": 1.0, "conf": Confusion()}}
    for i, (name, matrix) in enumerate(matrices.items()):
        u = rng.random(len(true))
        pred = (u[:, None] > np.cumsum(matrix[true], axis=1)).sum(axis=1)
        lab[f"v{i}"] = [SENTS[j] for j in pred]
        cols.append((f"syn_{i}", f"v{i}"))
        truth["variants"][name] = {"table": f"syn_{i}", "accuracy": float((pred == true).mean()),
                                   "conf": _confusion(true, pred, name)}
    con.register("syn_lab", lab)
    for name, col in cols:
        con.execute(f"""CREATE OR REPLACE TABLE {name} AS SELECT a.id AS article_id, ts, source, topic, tickers,
            {col} = 'negative' AS neg, {col} = 'positive' AS pos,
            CASE {col} WHEN 'negative' THEN -1 WHEN 'positive' THEN 1 ELSE 0 END::DOUBLE AS score, title
            FROM syn_arts a JOIN syn_lab l USING (id)""")
    con.unregister("syn_lab")
    return truth


def bench_synthetic(seeds: list[int], matrices: dict[str, np.ndarray], detectors: tuple[str, ...]) -> dict:
    """Every variant (true labels + one per flipping matrix) x detector over the seeds."""
    runs: dict[tuple[str, str], list] = {}
    decoys: dict[tuple[str, str], int] = {}
    accs: dict[str, list[float]] = {}
    confs: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            con = _con()
            truth = load_synthetic(con, seed, Path(tmp), matrices)
            for label, v in truth["variants"].items():
                accs.setdefault(label, []).append(v["accuracy"])
                confs[label] = f"s={v['conf'].sensitivity:.2f} f={v['conf'].false_rate:.3f}"
                for det in detectors:
                    r = evaluate(con, v["table"], det, truth["episodes"], conf=v["conf"])
                    r["seed"] = seed
                    decoys[label, det] = decoys.get((label, det), 0) + sum(
                        1 for a in r["alerts"] for d in truth["decoys"]
                        if (a["dimension"], a["key"]) == (d["dimension"], d["key"])
                        and a["window_start"] < _dt(d["end"]) and a["window_end"] > _dt(d["onset"]))
                    runs.setdefault((label, det), []).append(r)
            con.close()
    out: dict = {"accuracy": {k: float(np.mean(v)) for k, v in accs.items()}, "confusion": confs}
    for (label, det), rs in runs.items():
        out[f"{label} | {det}"] = {**summarize(rs), "decoy_alerts": decoys[label, det], "per_seed": [
            {"seed": r["seed"], "episodes": r["episodes"], "false_alarms": r["false_alarm_examples"]} for r in rs]}
    return out


# ----------------------------------------------------------------------------- (b) real headlines

TOPIC_WORDS = {  # first match wins; anything else is 'other'
    "earnings": r"\b(profits?|earnings|revenues?|results|quarter(ly)?|sales|dividend|guidance)\b",
    "mergers": r"\b(merger|takeover|acqui\w+|buyout|bid for|deal to buy|to buy)\b",
    "energy": r"\b(oil|gas|opec|crude|energy|petrol|coal|power prices?)\b",
    "technology": r"\b(tech\w*|apple|google|amazon|facebook|microsoft|netflix|chips?|ai|software|uber)\b",
    "macro": r"\b(economy|economic|gdp|inflation|interest rates?|fed|bank of england|ecb|brexit|jobs|"
             r"unemployment|recession|growth|tariffs?|trade war|wages?|budget)\b",
    "markets": r"\b(stocks?|shares|markets?|dow|s&p|nasdaq|ftse|index|investors?|wall street|bonds?|sell-?off)\b",
}
ENTITIES = {"AAPL": r"\bapple\b", "AMZN": r"\bamazon\b", "TSLA": r"\btesla\b", "BA": r"\bboeing\b",
            "FB": r"\bfacebook\b", "GOOGL": r"\b(google|alphabet)\b", "NFLX": r"\bnetflix\b", "BP": r"\bbp\b",
            "HSBC": r"\bhsbc\b", "BARC": r"\bbarclays\b", "TSCO": r"\btesco\b", "GE": r"\bgeneral electric\b"}


def _topic(title: str) -> str:
    t = title.lower()
    return next((k for k, rx in TOPIC_WORDS.items() if re.search(rx, t)), "other")


def load_real(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Real headlines scored by a PhraseBank TF-IDF+LR, plus the held-out PhraseBank pool for injection."""
    from models.baseline import TfidfLogReg
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
    g = real.source == "guardian"  # date-only: spread over 06:00-22:00 UTC by a hash of the title
    real.loc[g, "ts"] += pd.to_timedelta([6 * 3600 + zlib.crc32(t.encode()) % (16 * 3600) for t in real.title[g]], unit="s")
    pb = ds.read_phrasebank(data_dir / "financial_phrasebank" / "Sentences_66Agree.txt")
    pb = pb[pb["error"].isna()][["body", "label"]].drop_duplicates("body").reset_index(drop=True)
    held = np.array([zlib.crc32(b.encode()) % 10 >= 7 for b in pb.body])
    t0 = time.perf_counter()
    tr = pb[~held]
    val = np.array([zlib.crc32(b.encode()) % 10 == 6 for b in tr.body])  # C and class weights picked on it
    model = TfidfLogReg(labels=list(SENTS), c_grid=(1.0, 4.0)).fit(tr.body[~val].tolist(), tr.label[~val].tolist(),
                                                tr.body[val].tolist(), tr.label[val].tolist())
    pool = pb[held].reset_index(drop=True)
    pool["pred"] = model.predict(pool.body.tolist())
    real["pred"] = model.predict(real.title.tolist())
    vtrue = np.array([SENTS.index(x) for x in tr.label[val]])
    vpred = np.array([SENTS.index(x) for x in model.predict(tr.body[val].tolist())])
    conf = _confusion(vtrue, vpred, "phrasebank-tfidf", every=1)
    real["topic"] = real.title.map(_topic)
    real["tickers"] = [[k for k, rx in ENTITIES.items() if re.search(rx, t.lower())] for t in real.title]
    info = {"headlines": len(real), "model_fit_s": time.perf_counter() - t0,
            "heldout_accuracy": float((pool.pred == pool.label).mean()),
            "heldout_negative_recall": float((pool.pred[pool.label == "negative"] == "negative").mean()),
            "real_negative_share": float((real.pred == "negative").mean()),
            "span": [str(real.ts.min()), str(real.ts.max())], "conf": conf,
            "confusion": f"s={conf.sensitivity:.2f} f={conf.false_rate:.3f} ({len(vtrue)} validation rows)"}
    return real.sort_values("ts").reset_index(drop=True), pool, info


def _to_table(con, name: str, df: pd.DataFrame) -> None:
    d = pd.DataFrame({"article_id": np.arange(len(df)).astype(str), "ts": df.ts.values, "source": df.source.values,
                      "topic": df.topic.values, "tickers": df.tickers.values, "neg": (df.pred == "negative").values,
                      "pos": (df.pred == "positive").values,
                      "score": df.pred.map({"negative": -1.0, "neutral": 0.0, "positive": 1.0}).values,
                      "title": df.title.values})
    con.register("tmp_df", d)
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {INPUT_COLS.replace('ts,', 'ts::TIMESTAMPTZ AS ts,')} FROM tmp_df")
    con.unregister("tmp_df")


def inject(real: pd.DataFrame, pool: pd.DataFrame, n_eps: int, seed: int, sized: bool) -> tuple[pd.DataFrame, list]:
    """Add ``n_eps`` negative episodes (>= 10 days apart, after a 3-week warm-up).

    Volume x2-4 of the key's expected volume in the 2-12 h span (its rate over the previous 28 days);
    with ``sized`` the extra volume is (x-1) times the key's *daily* volume instead (a visible event
    in a thin feed). Negative share of the span's articles 0.6-0.85 (by true PhraseBank label).
    """
    rng = np.random.default_rng(seed)
    trng = np.random.default_rng(seed + 7919)  # topics of injected rows: own stream, same episodes as before
    keys = [("overall", "*")] * 2 + [("source", "cnbc"), ("source", "guardian")] * 2 + \
           [("topic", t) for t in ("markets", "macro", "earnings", "energy", "technology", "other")]
    t_lo, t_hi = real.ts.min() + pd.Timedelta(days=21), real.ts.max() - pd.Timedelta(days=2)
    slots = (t_hi - t_lo) / n_eps
    neg_pool, oth_pool = pool[pool.label == "negative"], pool[pool.label != "negative"]
    rows, eps = [], []
    for i in range(n_eps):
        dim, key = keys[rng.integers(len(keys))]
        start = t_lo + slots * i + (slots - pd.Timedelta(days=10)) * rng.random()
        onset = start.floor("min") + pd.Timedelta(hours=int(rng.integers(0, 24)))
        hours = int(rng.integers(2, 13))
        end = onset + pd.Timedelta(hours=hours)
        mult, share = rng.uniform(2, 4), rng.uniform(0.6, 0.85)
        m = pd.Series(True, index=real.index) if dim == "overall" else real[dim] == key
        hist = real[m & (real.ts >= onset - pd.Timedelta(days=28)) & (real.ts < onset)]
        per_h = len(hist) / (28 * 24)
        inside = real[m & (real.ts >= onset) & (real.ts < end)]
        expected = max(len(inside), per_h * hours)
        extra = max(3, round((per_h * 24 if sized else expected) * (mult - 1)))
        total = len(inside) + extra
        k0 = int((inside.pred == "negative").sum())
        x_neg = int(min(extra, max(0, round(share * total) - k0)))
        picks = pd.concat([neg_pool.sample(x_neg, replace=True, random_state=int(rng.integers(1 << 31))),
                           oth_pool.sample(extra - x_neg, replace=True, random_state=int(rng.integers(1 << 31)))])
        srcs, tops = real.source.value_counts(normalize=True), real.topic.value_counts(normalize=True)
        for body, pred in zip(picks.body, picks.pred, strict=True):
            # Topics of source/overall episodes follow the stream's mix (until 2026-12-04 they were all
            # 'other', which made every such episode a topic:other episode too).
            rows.append({"title": body, "ts": onset + pd.Timedelta(seconds=float(rng.uniform(0, hours * 3600))),
                         "source": key if dim == "source" else rng.choice(srcs.index, p=srcs.values),
                         "topic": key if dim == "topic" else trng.choice(tops.index, p=tops.values),
                         "tickers": [], "pred": pred})
        eps.append({"dimension": dim, "key": key, "onset": onset.to_pydatetime(), "end": end.to_pydatetime(),
                    "n_articles": total, "n_negative": k0 + x_neg, "n_extra": extra})
    return pd.concat([real, pd.DataFrame(rows)], ignore_index=True).sort_values("ts"), eps


def bench_real(data_dir: Path, replays: int, n_eps: int, detectors: tuple[str, ...]) -> dict:
    """Clean replay and injected replays (span- and daily-sized episodes), each detector."""
    real, pool, info = load_real(data_dir)
    conf = info.pop("conf")
    con = _con()
    _to_table(con, "real_clean", real)
    out: dict = {"data": info}
    ignore: dict[str, set] = {}
    for det in detectors:
        clean = evaluate(con, "real_clean", det, [], conf=conf)
        ignore[det] = {(a["dimension"], a["key"], a["window_start"]) for a in clean["alerts"]}
        paged = [a for a in clean["alerts"] if not a.get("explained_by")]
        c = {"alerts": clean["n_alerts"], "paged": len(paged), "weeks": clean["weeks"],
             "alerts_per_week": clean["n_alerts"] / clean["weeks"], "examples": [], "seconds": clean["seconds"],
             "by_key": pd.Series([f"{a['dimension']}:{a['key']}" for a in clean["alerts"]]).value_counts().to_dict()
             if clean["alerts"] else {}}
        for a in sorted(clean["alerts"], key=lambda a: a["p_value"])[:6]:
            ev = con.execute(f"SELECT title FROM real_clean WHERE neg AND ts >= $a AND ts < $b AND "
                             f"{_pred('', a['dimension'], a['key'])} ORDER BY article_id LIMIT 2",
                             {"a": a["window_start"], "b": a["window_end"]}).fetchall()
            c["examples"].append({**_short(a), "explained_by": a.get("explained_by"), "evidence": [t[0][:90] for t in ev]})
        out[f"clean | {det}"] = c
    for sized in (False, True):
        runs: dict[str, list] = {d: [] for d in detectors}
        for rep in range(replays):
            df, eps = inject(real, pool, n_eps, seed=100 + rep, sized=sized)
            _to_table(con, "real_inj", df)
            for det in detectors:
                runs[det].append(evaluate(con, "real_inj", det, eps, ignore=ignore[det], conf=conf))
        label = "daily-sized episodes" if sized else "span-sized episodes (x2-4)"
        for det, rs in runs.items():
            sm = summarize(rs)
            sm["median_extra_articles"] = float(np.median([e["n_extra"] for r in rs for e in r["episodes"]]))
            sm["preexisting_alerts"] = sum(r["preexisting_alerts"] for r in rs)
            sm["false_alarm_examples"] = [x for r in rs for x in r["false_alarm_examples"]][:5]
            out[f"{label} | {det}"] = sm
    con.close()
    return out


# ----------------------------------------------------------------------------- (c) timing


def bench_timing(rows: int, detectors: tuple[str, ...]) -> dict:
    """Each detector over ``rows`` random score rows (a year; no episodes: every alert is false)."""
    con = _con()
    t0 = time.perf_counter()
    con.execute(f"""
        CREATE TABLE big AS
        SELECT i AS article_id, TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_microseconds((random() * 365 * 86400e6)::BIGINT) AS ts,
          's' || (random() * 8)::INT % 8 AS source,
          ['markets','earnings','mergers','macro','energy','technology'][1 + (random() * 6)::INT % 6] AS topic,
          CASE WHEN r < 0.4 THEN []::VARCHAR[] WHEN r < 0.85 THEN ['T' || (random() * 50)::INT % 50]
               ELSE ['T' || (random() * 50)::INT % 50, 'T' || (random() * 50)::INT % 50] END AS tickers,
          r2 < 0.25 AS neg, r2 > 0.7 AS pos, r2 * 2 - 1 AS score, '' AS title
        FROM (SELECT i, random() AS r, random() AS r2 FROM range({rows}) t(i))""")
    gen_s = time.perf_counter() - t0
    out = {"rows": rows, "generate_s": gen_s, "threads": con.execute("SELECT current_setting('threads')").fetchall()[0][0]}
    for det in detectors:
        best = None
        for _ in range(2):
            t0 = time.perf_counter()
            if det == "windows":
                cut = compute_windows(con, MonitorParams(), None, source="big")
                t1 = time.perf_counter()
                spikes = spike_windows(con, cut)
                table = "mon_windows"
            else:
                sp = ScanParams()
                cut = day_cutoff(con, None, "big")
                slot_counts(con, cut - sp.lookback, "big", measures=False)
                t1 = time.perf_counter()
                run_scan(con, sp, cut)
                spikes = scan_spikes(con, cut)
                table = "mon_scan"
            t2 = time.perf_counter()
            if best is None or t2 - t0 < best["total_s"]:
                best = {"aggregate_s": t1 - t0, "test_s": t2 - t1, "total_s": t2 - t0}
        alerts, _ = group_episodes(spikes, {}, COOLDOWN)
        best.update(evaluated=con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0],
                    tested=con.execute(f"SELECT count(*) FROM {table} WHERE p_value IS NOT NULL").fetchall()[0][0],
                    spikes=len(spikes), alerts=len(alerts))
        out[det] = best
    con.close()
    return out


# ----------------------------------------------------------------------------- (d) the monitor flow


def bench_flow(warehouse: Path, detectors: tuple[str, ...], truth: Path | None, reps: int = 3) -> dict:
    """Wall time of ``monitor_flow`` per detector on copies of a demo warehouse (never the original),
    its alerts and monitor state cleared first so each detector starts as on a first run: the
    first run (everything), a scheduled run after the newest day's scores were re-committed, and a
    run with nothing new. Alternating detectors, median of ``reps``; no delivery configured; the
    Prefect API is an ephemeral one in a temporary PREFECT_HOME. With the demo's ``truth`` the
    first run's alerts are scored the way ``newspulse demo`` scores them."""
    import os
    import shutil

    from core.settings import settings_env
    from newspulse.demo_scoring import score_detection

    times: dict[str, dict[str, list[float]]] = {d: {"full": [], "last day": [], "nothing new": [], "detect full": [],
                                                    "detect last day": []} for d in detectors}
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"PREFECT_HOME": str(Path(tmp) / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                           "DO_NOT_TRACK": "1"})
        env = {"NEWSPULSE_HOME": str(Path(tmp) / "var"), "NEWSPULSE_ALERT_BLOCK": ""}
        with settings_env({**env, "NEWSPULSE_WAREHOUSE_PATH": str(Path(tmp) / "warm.duckdb")}):
            shutil.copy(warehouse, Path(tmp) / "warm.duckdb")
            from flows.monitor import monitor_flow

            monitor_flow()  # starts Prefect's ephemeral API and imports everything once: not timed
        for rep in range(reps):
            for det in detectors if rep % 2 == 0 else detectors[::-1]:
                db = Path(tmp) / f"{det}-{rep}.duckdb"
                shutil.copy(warehouse, db)
                with duckdb.connect(str(db)) as con:
                    con.execute("DELETE FROM alerts")
                    con.execute("DELETE FROM monitor_state")
                with settings_env({**env, "NEWSPULSE_WAREHOUSE_PATH": str(db), "NEWSPULSE_MONITOR_DETECTOR": det}):
                    t0 = time.perf_counter()
                    out = monitor_flow()
                    times[det]["full"].append(time.perf_counter() - t0)
                    times[det]["detect full"].append(out.get("detect_s", float("nan")))
                    with duckdb.connect(str(db)) as con:
                        rows = con.execute("SELECT dimension, key, window_start, window_end, explained_by FROM alerts"
                                           ).fetchall()
                    got = [dict(zip(("dimension", "key", "window_start", "window_end", "explained_by"), r, strict=True))
                           for r in rows]
                    found[det] = {"alerts": len(got), "paged": sum(not a["explained_by"] for a in got)}
                    if truth is not None and truth.exists():
                        det_all = score_detection(got, json.loads(truth.read_text()))
                        det_paged = score_detection([a for a in got if not a["explained_by"]], json.loads(truth.read_text()))
                        found[det].update({k: det_all[k] for k in ("detected", "episodes", "false_alarms", "related_alerts",
                                                                   "decoys_alerted", "median_delay_h", "missed")},
                                          paged_false_alarms=det_paged["false_alarms"])
                    with duckdb.connect(str(db)) as con:
                        con.execute("UPDATE scores SET committed_at = now() WHERE article_id IN (SELECT article_id "
                                    "FROM articles WHERE published_at >= (SELECT max(published_at) FROM articles) "
                                    "- INTERVAL 1 DAY)")
                    t0 = time.perf_counter()
                    out = monitor_flow()
                    times[det]["last day"].append(time.perf_counter() - t0)
                    times[det]["detect last day"].append(out.get("detect_s", float("nan")))
                    t0 = time.perf_counter()
                    monitor_flow()
                    times[det]["nothing new"].append(time.perf_counter() - t0)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        n = con.execute("SELECT count(*) FROM scores").fetchall()[0][0]
    return {"warehouse": str(warehouse), "scores": n, "reps": reps, "detection": found,
            "median_s": {d: {k: float(np.median(v)) for k, v in t.items()} for d, t in times.items()}, "runs_s": times}


# ----------------------------------------------------------------------------- main


def _fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def quality_table(title: str, rows: dict[str, dict]) -> None:
    """One row per variant | detector; 'precision' is the old rule (every alert), 'paged' the new one."""
    t = Table(title=title)
    for c in ("variant | detector", "episodes", "recall", "precision", "paged precision", "TP alerts", "related",
              "false alarms", "explained", "median delay h", "by dimension", "detected at", "decoy alerts"):
        t.add_column(c)
    for name, s in rows.items():
        t.add_row(name, str(s["episodes"]), f"{s['detected']}/{s['episodes']} ({s['recall']:.0%})",
                  f"{s['precision']:.0%}", f"{s['precision_paged']:.0%}", str(s["tp_alerts"]), str(s["related_alerts"]),
                  f"{s['false_alarms']} ({s['paged_false_alarms']} paged)", str(s["explained_alerts"]),
                  _fmt(s["median_delay_h"], 1), " ".join(f"{k}:{v}" for k, v in s["by_dimension"].items()),
                  " ".join(f"{k}:{v}" for k, v in s["detected_at"].items() if v), str(s.get("decoy_alerts", "-")))
    console.print(t)


def champion_matrix(path: Path | None) -> np.ndarray | None:
    """The champion's validation confusion matrix (served kind, row-normalised) from a warehouse."""
    if path is None or not path.exists():
        return None
    from warehouse.registry import champion

    with duckdb.connect(str(path), read_only=True) as con:
        row = champion(con)
    if row is None:
        return None
    served = str(row.get("served") or "gpt")
    served = served.split("sentiment:", 1)[1].split(",")[0] if "sentiment:" in served else served
    kind = "ensemble" if "ensemble" in served else "baseline" if "baseline" in served else "gpt"
    cm = np.asarray(row["metrics"]["sentiment"]["validation"][kind]["confusion_matrix"], float)
    console.print(f"champion {row['model_version']} ({kind}) validation confusion matrix: {cm.astype(int).tolist()}")
    return cm / cm.sum(axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 1 replay, 200k timing rows")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--replays", type=int, default=3, help="injected replays of the real stream")
    ap.add_argument("--episodes", type=int, default=30, help="episodes per real replay")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--champion-db", type=Path, default=None,
                    help="a warehouse whose champion's validation confusion matrix flips the labels of a third variant")
    ap.add_argument("--detectors", nargs="*", default=["windows", "scan"], choices=["windows", "scan"])
    ap.add_argument("--flow-warehouse", type=Path, default=None,
                    help="a demo warehouse: time monitor_flow per detector on copies of it (section d)")
    ap.add_argument("--flow-truth", type=Path, default=None, help="the demo's ground_truth.json (section d)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "real", "timing"])
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.replays, args.episodes, args.rows = 2, 1, 12, 200_000
    dets = tuple(args.detectors)
    results: dict = {"windows_params": MonitorParams().__dict__, "scan_params": ScanParams().__dict__,
                     "cooldown_h": COOLDOWN.total_seconds() / 3600, "run_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if "synthetic" not in args.skip:
        matrices = {"noisy classifier": CONFUSION}
        champ = champion_matrix(args.champion_db)
        if champ is not None:
            matrices["champion's matrix"] = champ
        syn = bench_synthetic(list(range(1, args.seeds + 1)), matrices, dets)
        results["synthetic"] = syn
        quality_table(f"(a) synthetic, seeds 1-{args.seeds}; accuracy "
                      + ", ".join(f"{k} {v:.1%} (validation {syn['confusion'][k]})" for k, v in syn["accuracy"].items()),
                      {k: v for k, v in syn.items() if isinstance(v, dict) and "recall" in v})
        for key, v in syn.items():
            if not (isinstance(v, dict) and "per_seed" in v and key.endswith("scan")):
                continue
            for ps in v["per_seed"]:
                miss = [f"{e['dimension']}:{e['key']}" for e in ps["episodes"] if not e["detected"]]
                fas = [f"{a['granularity']} {a['dimension']}:{a['key']} {a['n_neg']}/{a['n']}" for a in ps["false_alarms"]]
                if miss or fas:
                    console.print(f"  {key} seed {ps['seed']}: missed {miss or '-'}; false alarms {fas or '-'}")
    if "real" not in args.skip and (args.data_dir / "financial_news_headlines").is_dir():
        real = bench_real(args.data_dir, args.replays, args.episodes, dets)
        results["real"] = real
        d = real["data"]
        console.print(f"(b) real: {d['headlines']} headlines {d['span'][0][:10]}..{d['span'][1][:10]}, PhraseBank model "
                      f"held-out accuracy {d['heldout_accuracy']:.1%} (negative recall {d['heldout_negative_recall']:.1%}), "
                      f"predicted negative share {d['real_negative_share']:.1%}, validation confusion {d['confusion']}")
        quality_table(f"(b) real headlines + injected episodes ({args.replays} replays x {args.episodes})",
                      {k: v for k, v in real.items() if "episodes" in k})
        for k, v in real.items():
            if "episodes" in k:
                console.print(f"  {k}: median extra articles {v['median_extra_articles']:.0f}, "
                              f"alerts also on the clean stream {v['preexisting_alerts']}")
        for det in dets:
            c = real[f"clean | {det}"]
            console.print(f"  {det}: alerts on real data (no injection): {c['alerts']} ({c['paged']} paged) in "
                          f"{c['weeks']:.0f} weeks: {c['by_key']}")
            for ex in c["examples"]:
                console.print(f"    {ex['granularity']} {ex['dimension']}:{ex['key']} {ex['window_start'][:16]} "
                              f"{ex['n_neg']}/{ex['n']} neg (expected {ex['baseline']:.2f}, p={ex['p_value']:.1e}"
                              f"{', explained by ' + ex['explained_by'] if ex['explained_by'] else ''}) e.g. {ex['evidence']}")
    if "timing" not in args.skip:
        tm = bench_timing(args.rows, dets)
        results["timing"] = tm
        t = Table(title=f"(c) timing: {tm['rows']:,} random score rows (a year, 65 keys), best of 2, "
                        f"{tm['threads']} DuckDB threads; every alert here is a false one")
        for c in ("detector", "aggregate", "test", "total", "target", "windows evaluated", "tested", "spikes", "alerts"):
            t.add_column(c)
        for det in dets:
            x = tm[det]
            t.add_row(det, f"{x['aggregate_s']:.2f} s", f"{x['test_s']:.2f} s", f"{x['total_s']:.2f} s", "< 5 s",
                      f"{x['evaluated']:,}", f"{x['tested']:,}", str(x["spikes"]), str(x["alerts"]))
        console.print(t)
    if args.flow_warehouse is not None:
        fl = bench_flow(args.flow_warehouse, dets, args.flow_truth)
        results["flow"] = fl
        t = Table(title=f"(d) monitor flow wall time on copies of {args.flow_warehouse} ({fl['scores']:,} scores), "
                        f"median of {fl['reps']}")
        for c in ("detector", "first run (detect-spikes)", "newest day re-committed (detect-spikes)", "nothing new",
                  "alerts (paged)",
                  "episodes detected", "false alarms (paged)", "decoys alerted", "median delay", "missed"):
            t.add_column(c)
        for det in dets:
            m, f = fl["median_s"][det], fl["detection"][det]
            t.add_row(det, f"{m['full']:.2f} s ({m['detect full']:.2f} s)",
                      f"{m['last day']:.2f} s ({m['detect last day']:.2f} s)", f"{m['nothing new']:.2f} s",
                      f"{f['alerts']} ({f['paged']})", f"{f.get('detected', '-')}/{f.get('episodes', '-')}",
                      f"{f.get('false_alarms', '-')} ({f.get('paged_false_alarms', '-')})", str(f.get("decoys_alerted", "-")),
                      _fmt(f.get("median_delay_h"), 1), ", ".join(f.get("missed") or []) or "-")
        console.print(t)
    out = Path(__file__).resolve().parent / "results" / ("monitor_quick.json" if args.quick else "monitor.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
