"""Incident spikes: detection delay of the demo's support outage across seeds (issue 16 item 5).

For each seed: generate the demo's support stream (``sources.synthetic_support``, 14 days,
~200 messages a day, one outage of card_not_working / declined_card_payment / declined_transfer),
load it into an in-memory warehouse, label every message with an intent model *simulated* at a
given accuracy (the true intent, or with probability 1 - accuracy a uniformly drawn wrong one: no
model is trained here, so the bench runs in seconds), run the intent monitor
(``warehouse.intent_monitor.run_intent_monitor`` with the settings' knobs) and record:

- delay = end of the first alerting window on an outage intent - ground-truth onset (minutes);
- false alarms = intent alerts on other intents, or on outage intents outside [onset, end + 12 h].

Texts do not matter to the simulated model; with ``--banking77`` the stream has BANKING77's 77
intents (its everyday mix: each outage intent ~0.8 % of the inbox) instead of the 16 templated
ones (~4.7 % each). Prints a table, writes ``bench/results/intent_outage.json``.

    python bench/intent_outage.py --seeds 10 --accuracy 1.0 0.9 0.8 --factor 1.5 0.75
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import duckdb

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))

from sources.synthetic_support import generate_support_stream  # noqa: E402
from warehouse.intent_monitor import intent_scan_params, run_intent_monitor  # noqa: E402
from warehouse.migrate import migrate  # noqa: E402

SCORES = """CREATE TABLE IF NOT EXISTS support_scores (message_id VARCHAR, model_version VARCHAR, intent_label VARCHAR,
    intent_confidence FLOAT, queue VARCHAR, priority INTEGER, urgent BOOLEAN, decision VARCHAR,
    scored_at TIMESTAMPTZ, committed_at TIMESTAMPTZ DEFAULT now())"""


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def one(seed: int, accuracy: float, factor: float, data_dir: str | None, settings) -> dict:
    with TemporaryDirectory() as tmp:
        got = generate_support_stream(tmp, seed=seed, days=14, data_dir=data_dir, outage_factor=factor)
        truth = got["ground_truth"]["outage"]
        con = duckdb.connect(":memory:")
        migrate(con)
        con.execute(SCORES)
        con.execute("""INSERT INTO support_messages BY NAME SELECT message_id, 'bench' AS source,
            message_id AS source_message_id, channel, customer_id, created_at::TIMESTAMPTZ AS created_at, text,
            'b' AS batch_id, now() AS ingested_at FROM read_json(?)""", [got["paths"]["inbox"]])
        gold = con.execute("SELECT message_id, intent FROM read_csv(?)", [got["paths"]["intents"]]).fetchall()
    intents = sorted({g for _, g in gold})
    r = random.Random(f"model-{seed}-{accuracy}")
    labels = [(m, g if r.random() < accuracy else r.choice([i for i in intents if i != g]),
               round(r.uniform(0.5, 1.0), 3)) for m, g in gold]
    con.executemany("INSERT INTO support_scores (message_id, model_version, intent_label, intent_confidence, queue, "
                    "priority, urgent, decision, scored_at) VALUES (?, 'sim', ?, ?, 'q', 3, false, 'human', now())", labels)
    t0 = time.perf_counter()
    run_intent_monitor(con, intent_scan_params(settings), cooldown=timedelta(hours=settings.monitor_cooldown_h))
    secs = time.perf_counter() - t0
    onset, end = _ts(truth["onset"]), _ts(truth["end"])
    alerts = con.execute("SELECT key, window_start, window_end FROM alerts WHERE dimension = 'intent' "
                         "ORDER BY window_end").fetchall()
    hits = [a for a in alerts if a[0] in truth["intents"] and a[2] > onset and a[1] < end + timedelta(hours=12)]
    return {"seed": seed, "accuracy": accuracy, "factor": factor, "onset": truth["onset"],
            "share_during": truth["outage_intent_share_during"], "share_usual": truth["outage_intent_share_usual"],
            "messages": len(gold), "delay_min": (hits[0][2] - onset).total_seconds() / 60 if hits else None,
            "first_key": hits[0][0] if hits else None, "outage_alerts": len(hits),
            "false_alarms": len(alerts) - len(hits), "monitor_s": round(secs, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--accuracy", type=float, nargs="+", default=[1.0, 0.9, 0.8])
    ap.add_argument("--factor", type=float, nargs="+", default=[1.5, 0.75],
                    help="outage traffic on top of the usual, as a multiple of the usual rate")
    ap.add_argument("--banking77", action="store_true", help="77 intents (needs <data_dir>/banking77/test.csv)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    from core.settings import Settings

    settings = Settings()
    rows = [one(seed, acc, f, args.data_dir if args.banking77 else None, settings)
            for f in args.factor for acc in args.accuracy for seed in range(1, args.seeds + 1)]
    print(f"{'factor':>6} {'acc':>5} {'detected':>9} {'median delay':>13} {'max delay':>10} {'<=60 min':>9} "
          f"{'false alarms':>13} {'share during/usual':>19}")
    summary = []
    for f in args.factor:
        for acc in args.accuracy:
            sel = [x for x in rows if x["factor"] == f and x["accuracy"] == acc]
            d = [x["delay_min"] for x in sel if x["delay_min"] is not None]
            s = {"factor": f, "accuracy": acc, "runs": len(sel), "detected": len(d),
                 "median_delay_min": statistics.median(d) if d else None, "max_delay_min": max(d) if d else None,
                 "within_60": sum(x <= 60 for x in d), "false_alarms": sum(x["false_alarms"] for x in sel),
                 "share_during": statistics.mean(x["share_during"] for x in sel),
                 "share_usual": statistics.mean(x["share_usual"] for x in sel)}
            summary.append(s)
            print(f"{f:>6} {acc:>5} {s['detected']:>4}/{s['runs']:<4} {s['median_delay_min'] or float('nan'):>10.0f} m "
                  f"{s['max_delay_min'] or float('nan'):>8.0f} m {s['within_60']:>4}/{s['runs']:<4} {s['false_alarms']:>13} "
                  f"{s['share_during']:>10.2f}/{s['share_usual']:.3f}")
    out = ROOT / "bench" / "results" / ("intent_outage_b77.json" if args.banking77 else "intent_outage.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
