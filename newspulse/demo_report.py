"""What ``newspulse demo`` prints after the pipeline ran: scoring, alerts judged against the
stream's injected episodes, the support outage's detection delay, and recommendations.

Presentation only: reads the warehouse read-only and the demo's ground-truth files; the judging
itself is :mod:`newspulse.demo_scoring`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from newspulse.terminal import console, print_result

def cli_name() -> str:
    """How the user can type this CLI: ``newspulse`` when it is on PATH, else its path (``.venv/bin/newspulse``)."""
    import shutil
    import sys

    exe = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if exe is None or exe.name != "newspulse" or shutil.which("newspulse") == str(exe.resolve()):
        return "newspulse"
    try:
        return str(exe.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def print_monitoring(out: dict[str, Any], settings: Any, receiver: Any) -> None:
    """Scoring throughput, alerts, and how the alerts compare with the injected episodes."""
    from newspulse.demo_scoring import score_detection
    from warehouse.query import run_readonly

    console.rule("[bold]Scoring and monitoring")
    sc, mon = out["score"], out["monitor"]
    if sc.get("rows_inserted"):
        console.print(f"scored {sc['rows_inserted']} articles with {sc['model_version']} in {sc['shards']} shard(s), "
                      f"{sc['docs_per_s']} docs/s")
    else:
        console.print(f"scoring: {sc.get('reason', 'nothing new')}")
    console.print(f"monitor: {mon.get('windows', 0)} windows, {mon.get('spikes', 0)} significant, "
                  f"{len(mon.get('new_alerts', []))} new alert(s); report picture: {mon.get('report_png') or '-'}")
    if receiver is not None:
        console.print(f"the demo's webhook receiver on {receiver.url.split('?')[0]} got {len(receiver.posts)} alert(s)")
    # Short columns so the table fits a terminal: ids and times never wrap; shares rounded for people.
    alerts = run_readonly(settings, "SELECT alert_id, severity, dimension, key, strftime(window_start, '%m-%d %H:%M') "
                                    "AS window, round(observed_negative_share, 3) AS observed, "
                                    "round(baseline_negative_share, 3) AS usual, n_negative AS n_hit, n_articles AS n, "
                                    "explained_by FROM v_alerts ORDER BY window_start")
    if alerts.rows:
        print_result(alerts, "table")
    truth_path = Path(out["paths"]["ground_truth"])
    if not truth_path.exists() or not mon.get("model_version"):
        print_outage_detection(out, settings)
        return
    # Judged on the alerts that page: one explained by a narrower alert (explained_by) is never sent.
    found = run_readonly(settings, "SELECT dimension, key, window_start, window_end, explained_by FROM v_alerts "
                                   "WHERE dimension <> 'drift'")  # model drift alerts are not sentiment detections
    rows = [dict(zip(found.columns, r, strict=True)) for r in found.rows]
    det = score_detection([r for r in rows if r["explained_by"] is None], json.loads(truth_path.read_text(encoding="utf-8")))
    explained = sum(r["explained_by"] is not None for r in rows)
    delay = f"{det['median_delay_h']:.1f} h" if det["median_delay_h"] is not None else "-"
    console.print(f"[bold]Injected episodes detected: {det['detected']} of {det['episodes']}[/bold]; "
                  f"false alarms: {det['false_alarms']} (plus {det['related_alerts']} related alert(s) on other keys "
                  f"during an episode, and {explained} explained by a narrower alert, not paged); decoy bursts alerted: {det['decoys_alerted']} of {det['decoys']}; "
                  f"median delay {delay} from onset to the end of the first alerting window"
                  + (f"; missed: {', '.join(det['missed'])}" if det["missed"] else ""))
    print_outage_detection(out, settings)


def print_outage_detection(out: dict[str, Any], settings: Any) -> None:
    """The support stream's injected outage: the first intent alert on an outage intent, and its
    delay from the ground-truth onset (target: at most an hour); other intent alerts are false alarms."""
    from datetime import UTC, datetime, timedelta

    from warehouse.query import run_readonly

    sup = out.get("support")
    if not sup:
        return
    truth = sup["ground_truth"]["outage"]
    onset = datetime.fromisoformat(truth["onset"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(truth["end"].replace("Z", "+00:00"))
    intent = out.get("monitor", {}).get("intent") or {}
    if not intent.get("model_version"):
        console.print(f"support outage ({', '.join(truth['intents'])} from {onset:%Y-%m-%d %H:%M} UTC): "
                      "[yellow]not monitored: no triaged support messages (no intent model serves triage yet)")
        return
    from sources.synthetic_support import intent_accuracy

    try:  # how right the serving intent model was on the stream (its true intents are ground truth)
        pred = run_readonly(settings, "SELECT m.source_message_id, t.intent_label FROM v_support_triage t JOIN "
                                      "support_messages m USING (message_id) WHERE m.source = 'demo_support'", limit=None)
        acc = intent_accuracy(sup["paths"]["intents"], {str(k): str(v) for k, v in pred.rows})
    except Exception:  # noqa: BLE001 - a report line, never a reason to fail the demo
        acc = {"messages": 0, "accuracy": None}
    if acc["accuracy"] is not None:
        console.print(f"intent model {intent['model_version']} on the support stream: {acc['accuracy']:.1%} of "
                      f"{acc['messages']} messages given their true intent")
    rows = run_readonly(settings, "SELECT key, granularity, window_start, window_end, observed_negative_share AS share, "
                                  "baseline_negative_share AS usual, n_negative AS n_intent, n_articles AS n_messages "
                                  "FROM v_alerts WHERE dimension = 'intent' ORDER BY window_end", limit=None)
    alerts = [dict(zip(rows.columns, r, strict=True)) for r in rows.rows]
    hits = [a for a in alerts if a["key"] in truth["intents"] and onset < a["window_end"]
            and a["window_start"] < end + timedelta(hours=12)]
    false = len(alerts) - len(hits)
    if not hits:
        console.print(f"[bold red]Support outage not detected[/bold red] ({', '.join(truth['intents'])} from "
                      f"{onset:%Y-%m-%d %H:%M} UTC, intent model {intent['model_version']}); "
                      f"{false} other intent alert(s)")
        return
    first = hits[0]
    first["window_end"] = first["window_end"].astimezone(UTC)
    delay_min = (first["window_end"] - onset).total_seconds() / 60
    ok = "[green]within[/green]" if delay_min <= 60 else "[red]over[/red]"
    console.print(f"[bold]Support outage detected[/bold]: intent alert on {first['key']} ({first['share']:.0%} of "
                  f"support messages in the {first['granularity']} to {first['window_end']:%H:%M} UTC vs "
                  f"{first['usual']:.0%} usual), [bold]delay {delay_min:.0f} min[/bold] after the ground-truth onset "
                  f"{onset:%Y-%m-%d %H:%M} UTC ({ok} the 1-hour target); {len(hits)} alert(s) on outage intents, "
                  f"{false} false alarm(s) on other intents or times (intent model {intent['model_version']})")


def print_recommendations(out: dict[str, Any], settings: Any) -> None:
    """Each click log's recommend run, and how well the demo users' latent topic tastes were recovered."""
    from newspulse.demo_scoring import article_topics, score_recommendations
    from warehouse.query import run_readonly

    console.rule("[bold]Recommendations")
    for source, summary in (out.get("recommend") or {}).items():
        print_recommend_summary(source, summary)
    truth_path = Path(out["paths"]["ground_truth"])
    if "synthetic" not in (out.get("recommend") or {}) or not truth_path.exists():
        return
    rows = run_readonly(settings, "SELECT r.user_id, a.source_id AS item FROM v_user_recommendations r "
                                  "JOIN v_articles a USING (article_id) WHERE r.source = 'synthetic'", limit=None)
    got = score_recommendations([dict(zip(rows.columns, r, strict=True)) for r in rows.rows],
                                json.loads(truth_path.read_text(encoding="utf-8")),
                                article_topics(out["paths"]["articles"]))
    if got["users"]:
        console.print(f"[bold]Latent topic preferences recovered[/bold] for {got['users']} demo users: their favourite "
                      f"topic gets {got['favourite_topic_share']:.0%} of their recommendations (vs "
                      f"{got['unpersonalised_share']:.0%} if the ranking ignored them); Spearman correlation of "
                      f"preferences and recommended topic shares {got['spearman']:.2f} (mean over users)")
    console.print(f"Try: [cyan]{cli_name()} recs U0001[/cyan]   |   "
                  f"[cyan]{cli_name()} sql \"SELECT * FROM v_user_recommendations WHERE rank <= 3 LIMIT 20\"[/cyan]")


def print_recommend_summary(source: str, summary: dict[str, Any]) -> None:
    """One source's recommend run: rows, users, and the held-out ranking metrics when a model was fit."""
    if summary.get("reason"):
        console.print(f"{source}: nothing done: {summary['reason']}")
        return
    console.print(f"[bold]{source}[/bold]: {summary['rows_written']} recommendations for {summary['users']} users "
                  f"({summary['cold_start_users']} cold start) from {summary['candidates']} candidates, as of "
                  f"{summary['as_of']}")
    metrics = summary.get("metrics") or {}
    if isinstance(metrics.get("click_model"), dict):
        held = metrics.get("heldout_impressions", metrics.get("valid_impressions"))
        table = Table(title=f"{source}: " + (metrics.get("evaluated_on") or f"newest {held} impressions held out"))
        for col in ("ranker", "AUC", "MRR", "nDCG@5", "nDCG@10"):
            table.add_column(col, justify="left" if col == "ranker" else "right")
        for name in ("click_model", "popularity", "cosine"):
            r = metrics[name]
            table.add_row(name, *(f"{r[k]:.4f}" for k in ("auc", "mrr", "ndcg@5", "ndcg@10")))
        console.print(table)
