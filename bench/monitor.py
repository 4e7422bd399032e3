"""Detection benchmark for the sentiment monitor (``warehouse.monitor``): quality and speed.

(a) **Synthetic episodes.** ``sources.synthetic`` streams (default config, 4 weeks, ~11.5k articles,
    6 injected negative episodes + 3 tiny decoy bursts) over several seeds, scored with the TRUE
    labels and with a *noisy classifier* (labels flipped by a fixed confusion matrix, ~80% accuracy).
(b) **Real dated headlines.** CNBC + Guardian business headlines (Dec 2017 - Jul 2020) replayed in
    time order, sentiment from TF-IDF + LR trained on 60% of Financial PhraseBank (66Agree; C and class
    weights picked on another 10%), topic
    from a keyword map, a few company names as tickers. Synthetic negative episodes are injected at
    known times and keys (extra headlines drawn from the *held-out* 30% of PhraseBank and scored by
    the same model, so their labels are model predictions). Alerts on the un-injected stream are
    reported separately ("alerts on real data": the truth is unknown).
(c) **Timing.** 10M score rows generated in DuckDB (a year, 8 sources, 6 topics, 50 tickers with
    0-2 per row) through ``compute_windows`` + ``spike_windows``, best of 2.

Matching rule (documented in bench/README.md): a significant window *detects* an episode when it has
the episode's dimension and key and overlaps [onset, end + 6 h). An alert (one per episode after
the cooldown, ``group_episodes``) is a true positive when it detects an episode; it is *related*
(neither true nor false) when it overlaps an episode and at least 30% of its window's negatives
are that episode's articles (the overall or a topic key that contains the episode); otherwise it
is a false alarm. Delay = first detecting window's END minus onset (hours; also in 1 h windows,
rounded up). Writes ``bench/results/monitor.json``.

    python bench/monitor.py [--quick] [--seeds 5] [--rows 10000000] [--data-dir ../shared/data]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from warehouse.monitor import MonitorParams, compute_windows, group_episodes, spike_windows  # noqa: E402

console = Console(width=160)
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


def evaluate(con, table: str, params: MonitorParams, episodes: list[dict], ignore: set | None = None) -> dict:
    """Run the monitor over ``table`` and score alerts against ``episodes`` (see the matching rule)."""
    t0 = time.perf_counter()
    cut = compute_windows(con, params, None, source=table)
    spikes = spike_windows(con, cut)
    alerts, _ = group_episodes(spikes, {}, COOLDOWN)
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
    for a in alerts:
        if any(detects(a, e) for e in episodes):
            tp += 1
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
    return {"episodes": per_ep, "n_alerts": len(alerts), "tp_alerts": tp, "related_alerts": related,
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
    return {"episodes": len(eps), "detected": len(det), "recall": len(det) / max(len(eps), 1),
            "precision": tp / max(tp + fa, 1), "tp_alerts": tp, "related_alerts": sum(r["related_alerts"] for r in runs),
            "false_alarms": fa, "false_alarms_per_week": fa / max(weeks, 1e-9),
            "median_delay_h": float(np.median(delays)) if delays else None,
            "median_delay_1h_windows": float(np.median([math.ceil(d) for d in delays])) if delays else None,
            "by_dimension": {d: f"{sum(e['detected'] for e in eps if e['dimension'] == d)}/"
                                f"{sum(e['dimension'] == d for e in eps)}" for d in ("ticker", "topic", "source", "overall")
                             if any(e["dimension"] == d for e in eps)},
            "detected_at": {g: sum(e["granularity"] == g for e in det) for g in ("15m", "1h", "4h", "1d")}}


# ----------------------------------------------------------------------------- (a) synthetic


def load_synthetic(con, seed: int, work: Path) -> dict:
    """Generate one stream into ``work``; tables syn_true and syn_noisy; returns ground truth."""
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
    u = rng.random(len(true))
    noisy = (u[:, None] > np.cumsum(CONFUSION[true], axis=1)).sum(axis=1)
    lab["noisy"] = [SENTS[i] for i in noisy]
    con.register("syn_lab", lab)
    for name, col in (("syn_true", "label"), ("syn_noisy", "noisy")):
        con.execute(f"""CREATE OR REPLACE TABLE {name} AS SELECT a.id AS article_id, ts, source, topic, tickers,
            {col} = 'negative' AS neg, {col} = 'positive' AS pos,
            CASE {col} WHEN 'negative' THEN -1 WHEN 'positive' THEN 1 ELSE 0 END::DOUBLE AS score, title
            FROM syn_arts a JOIN syn_lab l USING (id)""")
    con.unregister("syn_lab")
    truth["accuracy_noisy"] = float((noisy == true).mean())
    return truth


def bench_synthetic(seeds: list[int], params: MonitorParams) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"true labels": [], "noisy classifier": []}
        decoy_alerts = {"true labels": 0, "noisy classifier": 0}
        accs = []
        for seed in seeds:
            con = _con()
            truth = load_synthetic(con, seed, Path(tmp))
            accs.append(truth["accuracy_noisy"])
            for label, table in (("true labels", "syn_true"), ("noisy classifier", "syn_noisy")):
                r = evaluate(con, table, params, truth["episodes"])
                r["seed"] = seed
                decoy_alerts[label] += sum(1 for a in r["alerts"] for d in truth["decoys"]
                                           if (a["dimension"], a["key"]) == (d["dimension"], d["key"])
                                           and a["window_start"] < _dt(d["end"]) and a["window_end"] > _dt(d["onset"]))
                runs[label].append(r)
            con.close()
    for label, rs in runs.items():
        out[label] = {**summarize(rs), "decoy_alerts": decoy_alerts[label],
                      "per_seed": [{"seed": r["seed"], "episodes": r["episodes"], "false_alarms": r["false_alarm_examples"]}
                                   for r in rs]}
    out["noisy_accuracy"] = float(np.mean(accs))
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
    real["topic"] = real.title.map(_topic)
    real["tickers"] = [[k for k, rx in ENTITIES.items() if re.search(rx, t.lower())] for t in real.title]
    info = {"headlines": len(real), "model_fit_s": time.perf_counter() - t0,
            "heldout_accuracy": float((pool.pred == pool.label).mean()),
            "heldout_negative_recall": float((pool.pred[pool.label == "negative"] == "negative").mean()),
            "real_negative_share": float((real.pred == "negative").mean()),
            "span": [str(real.ts.min()), str(real.ts.max())]}
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
        srcs = real.source.value_counts(normalize=True)
        for body, pred in zip(picks.body, picks.pred, strict=True):
            rows.append({"title": body, "ts": onset + pd.Timedelta(seconds=float(rng.uniform(0, hours * 3600))),
                         "source": key if dim == "source" else rng.choice(srcs.index, p=srcs.values),
                         "topic": key if dim == "topic" else "other", "tickers": [], "pred": pred})
        eps.append({"dimension": dim, "key": key, "onset": onset.to_pydatetime(), "end": end.to_pydatetime(),
                    "n_articles": total, "n_negative": k0 + x_neg, "n_extra": extra})
    return pd.concat([real, pd.DataFrame(rows)], ignore_index=True).sort_values("ts"), eps


def bench_real(data_dir: Path, params: MonitorParams, replays: int, n_eps: int) -> dict:
    real, pool, info = load_real(data_dir)
    con = _con()
    _to_table(con, "real_clean", real)
    clean = evaluate(con, "real_clean", params, [])
    ignore = {(a["dimension"], a["key"], a["window_start"]) for a in clean["alerts"]}
    out = {"data": info, "clean": {"alerts": clean["n_alerts"], "weeks": clean["weeks"],
                                   "alerts_per_week": clean["n_alerts"] / clean["weeks"],
                                   "by_key": pd.Series([f"{a['dimension']}:{a['key']}" for a in clean["alerts"]])
                                   .value_counts().to_dict() if clean["alerts"] else {},
                                   "examples": [], "seconds": clean["seconds"]}}
    worst = sorted(clean["alerts"], key=lambda a: a["p_value"])[:6]
    for a in worst:
        ev = con.execute(f"SELECT title FROM real_clean WHERE neg AND ts >= $a AND ts < $b AND "
                         f"{_pred('', a['dimension'], a['key'])} ORDER BY article_id LIMIT 2",
                         {"a": a["window_start"], "b": a["window_end"]}).fetchall()
        out["clean"]["examples"].append({**_short(a), "evidence": [t[0][:90] for t in ev]})
    for sized in (False, True):
        runs = []
        for rep in range(replays):
            df, eps = inject(real, pool, n_eps, seed=100 + rep, sized=sized)
            _to_table(con, "real_inj", df)
            r = evaluate(con, "real_inj", params, eps, ignore=ignore)
            runs.append(r)
        label = "daily-sized episodes" if sized else "span-sized episodes (x2-4)"
        s = summarize(runs)
        sizes = [e["n_extra"] for r in runs for e in r["episodes"]]
        s["median_extra_articles"] = float(np.median(sizes))
        s["preexisting_alerts"] = sum(r["preexisting_alerts"] for r in runs)
        s["false_alarm_examples"] = [x for r in runs for x in r["false_alarm_examples"]][:5]
        out[label] = s
    con.close()
    return out


# ----------------------------------------------------------------------------- (c) timing


def bench_timing(rows: int, params: MonitorParams) -> dict:
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
    best = None
    for _ in range(2):
        t0 = time.perf_counter()
        cut = compute_windows(con, params, None, source="big")
        t1 = time.perf_counter()
        spikes = spike_windows(con, cut)
        t2 = time.perf_counter()
        if best is None or t2 - t0 < best["total_s"]:
            best = {"compute_windows_s": t1 - t0, "spike_windows_s": t2 - t1, "total_s": t2 - t0}
    best.update(rows=rows, generate_s=gen_s, windows=con.execute("SELECT count(*) FROM mon_windows").fetchall()[0][0],
                tested=con.execute("SELECT count(*) FROM mon_windows WHERE p_value IS NOT NULL").fetchall()[0][0],
                spikes=len(spikes), threads=con.execute("SELECT current_setting('threads')").fetchall()[0][0])
    con.close()
    return best


# ----------------------------------------------------------------------------- main


def _fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def quality_table(title: str, rows: dict[str, dict]) -> None:
    t = Table(title=title)
    for c in ("variant", "episodes", "recall", "precision", "TP alerts", "related", "false alarms", "FA/week",
              "median delay h", "median delay 1h-win", "by dimension", "detected at", "decoy alerts"):
        t.add_column(c)
    for name, s in rows.items():
        t.add_row(name, str(s["episodes"]), f"{s['detected']}/{s['episodes']} ({s['recall']:.0%})",
                  f"{s['precision']:.0%}", str(s["tp_alerts"]), str(s["related_alerts"]), str(s["false_alarms"]),
                  _fmt(s["false_alarms_per_week"]), _fmt(s["median_delay_h"], 1), _fmt(s["median_delay_1h_windows"], 0),
                  " ".join(f"{k}:{v}" for k, v in s["by_dimension"].items()),
                  " ".join(f"{k}:{v}" for k, v in s["detected_at"].items() if v), str(s.get("decoy_alerts", "-")))
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 1 replay, 200k timing rows")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--replays", type=int, default=3, help="injected replays of the real stream")
    ap.add_argument("--episodes", type=int, default=30, help="episodes per real replay")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "real", "timing"])
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.replays, args.episodes, args.rows = 2, 1, 12, 200_000
    params = MonitorParams()
    results: dict = {"params": params.__dict__ | {"cooldown_h": COOLDOWN.total_seconds() / 3600},
                     "run_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if "synthetic" not in args.skip:
        syn = bench_synthetic(list(range(1, args.seeds + 1)), params)
        results["synthetic"] = syn
        quality_table(f"(a) synthetic, seeds 1-{args.seeds}, noisy accuracy {syn['noisy_accuracy']:.1%}",
                      {k: v for k, v in syn.items() if isinstance(v, dict)})
        for label in ("true labels", "noisy classifier"):
            for ps in syn[label]["per_seed"]:
                miss = [f"{e['dimension']}:{e['key']} ({e['n_articles']}/{e['n_negative']} neg)"
                        for e in ps["episodes"] if not e["detected"]]
                fas = [f"{a['granularity']} {a['dimension']}:{a['key']} {a['n_neg']}/{a['n']}" for a in ps["false_alarms"]]
                if miss or fas:
                    console.print(f"  {label} seed {ps['seed']}: missed {miss or '-'}; false alarms {fas or '-'}")
    if "real" not in args.skip and (args.data_dir / "financial_news_headlines").is_dir():
        real = bench_real(args.data_dir, params, args.replays, args.episodes)
        results["real"] = real
        d = real["data"]
        console.print(f"(b) real: {d['headlines']} headlines {d['span'][0][:10]}..{d['span'][1][:10]}, PhraseBank model "
                      f"held-out accuracy {d['heldout_accuracy']:.1%} (negative recall {d['heldout_negative_recall']:.1%}), "
                      f"predicted negative share of real headlines {d['real_negative_share']:.1%}")
        quality_table(f"(b) real headlines + injected episodes ({args.replays} replays x {args.episodes})",
                      {k: real[k] for k in ("span-sized episodes (x2-4)", "daily-sized episodes")})
        for k in ("span-sized episodes (x2-4)", "daily-sized episodes"):
            console.print(f"  {k}: median extra articles {real[k]['median_extra_articles']:.0f}, "
                          f"alerts also on the clean stream {real[k]['preexisting_alerts']}")
        c = real["clean"]
        console.print(f"  alerts on real data (no injection): {c['alerts']} in {c['weeks']:.0f} weeks "
                      f"({c['alerts_per_week']:.2f}/week): {c['by_key']}")
        for ex in c["examples"]:
            console.print(f"    {ex['granularity']} {ex['dimension']}:{ex['key']} {ex['window_start'][:16]} "
                          f"{ex['n_neg']}/{ex['n']} neg (baseline {ex['baseline']:.2f}, p={ex['p_value']:.1e}) "
                          f"e.g. {ex['evidence']}")
    if "timing" not in args.skip:
        tm = bench_timing(args.rows, params)
        results["timing"] = tm
        t = Table(title=f"(c) timing: {tm['rows']:,} score rows, best of 2, {tm['threads']} DuckDB threads")
        for c in ("compute_windows", "spike_windows", "total", "target", "windows", "tested", "spikes"):
            t.add_column(c)
        t.add_row(f"{tm['compute_windows_s']:.2f} s", f"{tm['spike_windows_s']:.3f} s", f"{tm['total_s']:.2f} s",
                  "< 5 s", f"{tm['windows']:,}", f"{tm['tested']:,}", str(tm["spikes"]))
        console.print(t)
    out = Path(__file__).resolve().parent / "results" / "monitor.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
