"""The relabel queue and human label import/export (issue 17 item 2).

Ranking and batch rules (models/active.py) on small arrays; the queue fill (tasks/label_queue.fill)
on a migrated warehouse with a registered model and hand-made scores; export (CSV, Label Studio
JSON) and import (GX-validated: unknown ids/labels quarantined with reasons, corrections with
history, re-import a no-op) through the CLI.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from models import active
from warehouse.connection import connect
from warehouse.migrate import migrate

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
LABELS = ["negative", "neutral", "positive"]

# ------------------------------------------------------------------ models/active.py


def test_uncertainty_measures() -> None:
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    assert np.allclose(active.margin_uncertainty(p), [0.0, 1.0, 1.0, 0.7])
    ent = active.entropy_uncertainty(p)
    assert ent[0] == pytest.approx(0.0) and ent[2] == pytest.approx(1.0) and 0 < ent[3] < 1
    assert np.allclose(active.disagreement(p, p), 0.0)
    assert active.disagreement(np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]]))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        active.disagreement(p, p[:2])
    # The committee (what the queue ranks by): sure and agreeing -> 0; sure but at odds -> unsure.
    sure, odds = np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]])
    assert active.committee_entropy(sure, sure)[0] == pytest.approx(0.0)
    assert active.committee_entropy(sure, odds)[0] == pytest.approx(np.log(2) / np.log(3))


def test_queue_ranks_by_committee_with_alert_and_drift_bonuses() -> None:
    frame = pd.DataFrame({"article_id": ["sure", "odds", "unsure", "alerted"], "source": ["a", "b", "c", "d"],
                          "text": ["w one x", "w two y", "w three z", "w four q"],
                          "p_negative": [0.9, 0.9, 0.4, 0.9], "p_neutral": [0.05, 0.05, 0.35, 0.05],
                          "p_positive": [0.05, 0.05, 0.25, 0.05],
                          "alert_ids": [[], [], [], ["al-1"]], "drifted": [False, False, False, False]})
    base = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05]])
    q = active.build_queue(frame, 10, baseline_probs=base, max_share=1.0)
    # unsure: entropy 0.98; alerted: 0.36 + 0.5 alert bonus; odds: the averaged (0.48, 0.05, 0.48) 0.79;
    # 'sure' (agreeing, confident, no alert) has no reason to be asked
    assert list(q.article_id) == ["unsure", "alerted", "odds"]
    assert q.set_index("article_id").reasons.to_dict() == {"alerted": ["alert"], "odds": ["disagreement"],
                                                            "unsure": ["uncertain"]}


def test_near_duplicates_collapse_onto_the_best_scored() -> None:
    texts = ["Nokia shares fell 5% after the profit warning on Monday",  # 0
             "NOKIA shares fell 7% after the profit warning on Monday!",  # 1: same words, other number
             "Oil prices rose as OPEC agreed to cut output",  # 2
             "Nokia shares fell 5 % after the profit warning on Monday morning",  # 3: one word more
             "Bank of England holds rates"]  # 4
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.3])
    picks = active.select_batch(scores, 10, texts=texts)
    assert [i for i, _ in picks] == [1, 2, 4]
    assert sorted(picks[0][1]) == [0, 3]
    assert active.select_batch(scores, 10)[0] == (1, [])  # without texts nothing collapses


def test_batch_caps_one_source_and_fills_when_others_run_out() -> None:
    scores = np.linspace(1.0, 0.0, 20)
    groups = ["wire"] * 15 + ["blog"] * 3 + ["feed"] * 2  # the wire has the best 15
    picks = [i for i, _ in active.select_batch(scores, 8, groups=groups, max_share=0.25)]
    assert len(picks) == 8
    by = pd.Series([groups[i] for i in picks]).value_counts().to_dict()
    # ceil(0.25 * 8) = 2 per source: 2 + 2 + 2 = 6 < 8, so the two slots left go to the best
    # capped candidates (the wire's next two), not to nobody
    assert by == {"wire": 4, "blog": 2, "feed": 2}
    assert picks[:2] == [0, 1] and picks[-2:] == [2, 3]
    only = [i for i, _ in active.select_batch(scores[:15], 5, groups=groups[:15], max_share=0.25)]
    assert only == [0, 1, 2, 3, 4]  # one source only: the cap cannot leave the batch empty


# ------------------------------------------------------------------ queue fill on a warehouse


class FakeBaseline:
    """A TF-IDF stand-in: says 'positive' for texts with 'rose', else 'negative'."""

    labels = LABELS

    def predict_proba(self, texts):
        return np.array([[0.05, 0.05, 0.9] if "rose" in t else [0.9, 0.05, 0.05] for t in texts])


def _word(n: int) -> str:
    """A distinct letters-only word per ``n`` (numbers would normalise to one token)."""
    return "".join(chr(97 + (n // 26**j) % 26) for j in range(4))


def _warehouse(settings, n_per_source: dict[str, int], *, uncertain: bool = True) -> list[str]:
    """Articles per source, a champion model and its scores (all unsure unless ``uncertain`` is off)."""
    arts, scores = [], []
    k = 0
    for source, n in n_per_source.items():
        for i in range(n):
            aid = f"{source}-{i:04d}"
            # distinct texts (no near-duplicates) unless a test adds some
            arts.append({"article_id": aid, "source": source, "title": f"{source} story about {_word(k)}",
                         "body": " ".join(_word(k * 7 + j + 100_000) for j in range(8)),
                         "ingested_at": NOW - timedelta(hours=2), "batch_id": "t"})
            p = [0.34, 0.33, 0.33] if uncertain else [0.01, 0.98, 0.01]
            scores.append({"article_id": aid, "model_version": "v1", "sentiment_label": "negative",
                           "sentiment_p_negative": p[0], "sentiment_p_neutral": p[1], "sentiment_p_positive": p[2],
                           "sentiment_score": 0.0, "n_tokens": 10, "truncated": False, "scored_at": NOW - timedelta(hours=1),
                           "committed_at": NOW - timedelta(hours=1), "score_run_id": "r"})
            k += 1
    with connect(settings) as con:
        migrate(con)
        con.register("a", pd.DataFrame(arts))
        con.execute("INSERT INTO articles BY NAME SELECT * FROM a")
        con.register("s", pd.DataFrame(scores))
        con.execute("INSERT INTO scores BY NAME SELECT * FROM s")
        con.execute("""INSERT INTO model_registry (model_version, created_at, backbone, heads, metrics, val_score, served,
                       val_split_id, artifact_path, stage) VALUES ('v1', now(), 'tiny', '{}', '{}', 0.5, 'gpt', 'x',
                       '/nonexistent', 'champion')""")
    return [a["article_id"] for a in arts]


def _fill(settings, **kw):
    from tasks.label_queue import fill

    with connect(settings) as con:
        return fill(con, settings, now=kw.pop("now", NOW), baseline=kw.pop("baseline", None), **kw)


def _queue(settings) -> pd.DataFrame:
    with connect(settings) as con:
        return con.execute("SELECT * FROM label_queue ORDER BY priority DESC, article_id").df()


def test_fill_caps_per_day_stratifies_and_reruns_idempotent(settings) -> None:
    settings.label_queue_per_day = 20
    settings.label_queue_max_source_share = 0.25
    _warehouse(settings, {"wire": 100, "blog": 4, "feed": 30})
    out = _fill(settings)
    q = _queue(settings)
    assert out["queued"] == len(q) == 20
    counts = q.source.value_counts().to_dict()
    assert counts["wire"] <= 20 and counts["blog"] == 4  # every blog candidate gets in
    assert counts["feed"] >= 5 and max(counts.values()) <= 11  # no source fills it: 5 + 4 + 5, rest filled
    assert set(q.reasons.map(tuple)) == {("uncertain",)} and (q.queue_day.dt.date == NOW.date()).all()
    # Same day again: the cap is full, nothing is queued twice.
    again = _fill(settings)
    assert again["queued"] == 0 and "cap" in again["reason"] and len(_queue(settings)) == 20
    # Next day: more room, still no article twice.
    nxt = _fill(settings, now=NOW + timedelta(days=1))
    q2 = _queue(settings)
    assert nxt["queued"] == 20 and q2.article_id.is_unique and len(q2) == 40


def test_fill_reasons_alerts_drift_disagreement_and_sure_ones_left_out(settings) -> None:
    from warehouse.alerts import insert_alerts

    ids = _warehouse(settings, {"wire": 10, "blog": 10}, uncertain=False)  # every score sure: no 'uncertain'
    with connect(settings) as con:
        insert_alerts(con, [{"dimension": "source", "key": "wire", "granularity": "1h", "window_start": NOW - timedelta(hours=3),
                             "window_end": NOW - timedelta(hours=2), "last_window_end": NOW - timedelta(hours=2),
                             "observed": 0.5, "baseline": 0.1, "n": 10, "n_neg": 5, "p_value": 1e-5, "severity": "high",
                             "evidence": [{"article_id": "wire-0003", "title": "x"}]}], model_version="v1", flow_run_id=None)
        con.execute("UPDATE articles SET title = 'Oil rose ' || title WHERE article_id = 'blog-0001'")
    out = _fill(settings, drifted_sources=["blog"], baseline=FakeBaseline())
    q = _queue(settings).set_index("article_id")
    assert "alert" in q.loc["wire-0003", "reasons"] and list(q.loc["wire-0003", "alert_ids"])
    assert all("drifted_source" in r for r in q[q.source == "blog"].reasons)
    # the fake baseline says negative for all but blog-0001 while the model says neutral: disagreement everywhere
    assert q.loc["blog-0001", "baseline_label"] == "positive" and "disagreement" in q.loc["blog-0001", "reasons"]
    assert out["drifted_sources"] == ["blog"] and out["queued"] == len(q)
    # Without a baseline, alerts or drift, sure predictions give no reason to ask anyone.
    with connect(settings) as con:
        con.execute("DELETE FROM label_queue")
        con.execute("DELETE FROM alerts")
    assert _fill(settings)["queued"] == 0
    assert set(ids) >= set(q.index)


def test_fill_collapses_near_duplicates_and_skips_labelled(settings) -> None:
    _warehouse(settings, {"wire": 6})
    with connect(settings) as con:
        for aid in ("wire-0001", "wire-0002"):  # reprints of wire-0000
            con.execute("UPDATE articles SET title = (SELECT title FROM articles WHERE article_id = 'wire-0000'), "
                        "body = (SELECT body FROM articles WHERE article_id = 'wire-0000') WHERE article_id = ?", [aid])
        con.execute("INSERT INTO labels (dataset, item, task, label, batch_id, created_at) "
                    "VALUES ('relabel', 'wire-0005', 'sentiment', 'neutral', 'b', now())")
    _fill(settings)
    q = _queue(settings)
    assert "wire-0005" not in set(q.article_id)  # labelled already
    assert len(q) == 3  # 0000 (with 0001, 0002 collapsed onto it), 0003, 0004
    lead = q[q.article_id == "wire-0000"].iloc[0]
    assert sorted(lead.duplicates) == ["wire-0001", "wire-0002"]
    # Next day the reprints are still not queued on their own.
    assert _fill(settings, now=NOW + timedelta(days=1))["queued"] == 0


# ------------------------------------------------------------------ export / import through the CLI


@pytest.fixture
def cli(settings):
    from newspulse.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def test_export_csv_and_labelstudio(settings, cli, tmp_path) -> None:
    _warehouse(settings, {"wire": 3})
    _fill(settings)
    out = tmp_path / "queue.csv"
    res = cli("labels", "export", "--format", "csv", "--output", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and {"article_id", "task", "label", "annotator", "labelled_at", "text",
                               "predicted_label", "reasons"} <= set(rows[0])
    assert all(r["label"] == "" and r["task"] == "sentiment" for r in rows)
    res = cli("labels", "export", "--format", "labelstudio")
    assert res.exit_code == 0
    tasks = json.loads(res.stdout)
    assert len(tasks) == 3
    t = tasks[0]
    assert set(t["data"]) >= {"text", "article_id", "task"}
    assert t["predictions"][0]["result"][0]["value"]["choices"] == ["negative"]
    assert t["predictions"][0]["result"][0]["from_name"] == "sentiment" and t["meta"]["reasons"] == "uncertain"
    bad = cli("labels", "export", "--format", "xml")
    assert bad.exit_code == 2 and "csv or labelstudio" in bad.output
    empty = cli("labels", "export", "--status", "labelled")
    assert empty.exit_code == 1 and len(empty.output.strip().splitlines()) == 1


def test_exported_csv_round_trips_through_import(settings, cli, tmp_path) -> None:
    _warehouse(settings, {"wire": 3})
    with connect(settings) as con:  # a text with commas, quotes and a line break survives the CSV
        con.execute("""UPDATE articles SET body = 'Profit, he said, was "flat"' || chr(10) || 'again' """
                    "WHERE article_id = 'wire-0001'")
    _fill(settings)
    out = tmp_path / "queue.csv"
    assert cli("labels", "export", "-o", str(out)).exit_code == 0
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    df.loc[df.article_id == "wire-0001", "label"] = "neutral"
    df.to_csv(out, index=False)
    s = json.loads(cli("labels", "import", str(out), "--annotator", "ana", "--json").stdout)
    assert (s["rows_read"], s["rows_inserted"], s["rows_unlabelled"], s["rows_quarantined"]) == (3, 1, 2, 0)
    with connect(settings) as con:
        assert con.execute("SELECT item, label, annotator FROM labels").fetchall() == [("wire-0001", "neutral", "ana")]


def _write_csv(path, rows) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["article_id", "label", "annotator", "labelled_at"])
        w.writeheader()
        w.writerows(rows)


def test_import_quarantines_unknown_ids_and_labels_nothing_lost(settings, cli, tmp_path) -> None:
    _warehouse(settings, {"wire": 3})
    _fill(settings)
    f = tmp_path / "labelled.csv"
    _write_csv(f, [
        {"article_id": "wire-0000", "label": "positive", "annotator": "ann", "labelled_at": "2026-12-01T10:00:00Z"},
        {"article_id": "nope-1", "label": "negative", "annotator": "ann", "labelled_at": "2026-12-01T10:00:00Z"},
        {"article_id": "wire-0001", "label": "bullish", "annotator": "ann", "labelled_at": "2026-12-01T10:00:00Z"},
        {"article_id": "wire-0002", "label": "neutral", "annotator": "", "labelled_at": "yesterday-ish"},
        {"article_id": "wire-0002", "label": "", "annotator": "", "labelled_at": ""},  # not labelled: skipped
    ])
    res = cli("labels", "import", str(f), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows_read"] == 5 and summary["rows_unlabelled"] == 1
    assert summary["rows_inserted"] == 1 and summary["rows_quarantined"] == 3
    with connect(settings) as con:
        q = con.execute("SELECT record_no, reasons, raw, target_table, source FROM quarantine WHERE batch_id = ? "
                        "ORDER BY record_no", [summary["batch_id"]]).fetchall()
        codes = con.execute("SELECT DISTINCT reason_code FROM v_quarantine_reasons WHERE batch_id = ? ORDER BY 1",
                            [summary["batch_id"]]).fetchall()
        lab = con.execute("SELECT dataset, label, annotator, labelled_at FROM labels WHERE item = 'wire-0000'").fetchall()
        status = dict(con.execute("SELECT article_id, status FROM label_queue").fetchall())
    assert [r[0] for r in q] == [2, 3, 4] and {r[3] for r in q} == {"labels"} and {r[4] for r in q} == {"labels-import"}
    assert q[0][1] == ["unknown article id: nope-1"]
    assert q[1][1] == ["unknown label: bullish (task sentiment)"]
    assert sorted(q[2][1]) == ["missing annotator", "unparseable labelled_at: yesterday-ish"]
    assert all(json.loads(r[2])["article_id"] for r in q)  # the record as received is kept
    assert ("unknown article id",) in codes and ("unknown label",) in codes
    assert lab == [("relabel", "positive", "ann", datetime(2026, 12, 1, 10, tzinfo=UTC))]
    assert status == {"wire-0000": "labelled", "wire-0001": "queued", "wire-0002": "queued"}
    # The same file again: one line, nothing changes.
    again = cli("labels", "import", str(f))
    assert again.exit_code == 0 and "imported before" in again.output
    with connect(settings) as con:
        assert con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == 3
    # Mistakes are one red line with exit 2.
    assert cli("labels", "import", str(tmp_path / "missing.csv")).exit_code == 2
    nolabel = tmp_path / "x.csv"
    nolabel.write_text("article_id,sentiment\nwire-0000,positive\n")
    res = cli("labels", "import", str(nolabel))
    assert res.exit_code == 2 and "no label column" in res.output


def test_corrected_label_replaces_old_one_with_history(settings, cli, tmp_path) -> None:
    _warehouse(settings, {"wire": 2})
    first, second, stale = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    _write_csv(first, [{"article_id": "wire-0000", "label": "negative", "annotator": "ann",
                        "labelled_at": "2026-12-01T09:00:00Z"}])
    _write_csv(second, [{"article_id": "wire-0000", "label": "neutral", "annotator": "bob",
                         "labelled_at": "2026-12-02T09:00:00Z"},
                        {"article_id": "wire-0001", "label": "negative", "annotator": "bob",
                         "labelled_at": "2026-12-02T09:00:00Z"},
                        {"article_id": "wire-0001", "label": "positive", "annotator": "cat",
                         "labelled_at": "2026-12-02T10:00:00Z"}])  # same file, later: wins
    _write_csv(stale, [{"article_id": "wire-0000", "label": "positive", "annotator": "dan",
                        "labelled_at": "2026-11-30T09:00:00Z"}])  # older than what is stored
    assert json.loads(cli("labels", "import", str(first), "--json").stdout)["rows_inserted"] == 1
    s2 = json.loads(cli("labels", "import", str(second), "--json").stdout)
    assert (s2["rows_replaced"], s2["rows_inserted"], s2["rows_superseded"]) == (1, 1, 1)
    s3 = json.loads(cli("labels", "import", str(stale), "--json").stdout)
    assert (s3["rows_replaced"], s3["rows_superseded"]) == (0, 1)
    with connect(settings) as con:
        labels = dict(con.execute("SELECT item, label || '/' || annotator FROM labels WHERE dataset = 'relabel'").fetchall())
        hist = con.execute("SELECT item, label, annotator, replaced_label FROM label_history ORDER BY replaced_at, item, label"
                           ).fetchall()
    assert labels == {"wire-0000": "neutral/bob", "wire-0001": "positive/cat"}
    assert sorted(hist) == [("wire-0000", "negative", "ann", "neutral"), ("wire-0000", "positive", "dan", "neutral"),
                            ("wire-0001", "negative", "bob", "positive")]


def test_labelstudio_import_keeps_annotator_and_time(settings, cli, tmp_path) -> None:
    _warehouse(settings, {"wire": 2})
    export = [
        {"id": 1, "data": {"text": "x", "article_id": "wire-0000", "task": "sentiment"},
         "annotations": [{"completed_by": {"id": 3, "email": "eve@desk"}, "updated_at": "2026-12-04T08:00:00Z",
                          "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices",
                                      "value": {"choices": ["negative"]}}]}]},
        {"id": 2, "data": {"text": "y", "article_id": "wire-0001", "task": "sentiment"}, "annotations": []},
        {"id": 3, "data": {"text": "z", "article_id": "ghost", "task": "sentiment"},
         "annotations": [{"completed_by": 4, "created_at": "2026-12-04T08:00:00Z",
                          "result": [{"type": "choices", "value": {"choices": ["positive"]}}]}]},
    ]
    f = tmp_path / "ls.json"
    f.write_text(json.dumps(export))
    s = json.loads(cli("labels", "import", str(f), "--json").stdout)
    assert (s["format"], s["rows_inserted"], s["rows_unlabelled"], s["rows_quarantined"]) == ("labelstudio", 1, 1, 1)
    with connect(settings) as con:
        row = con.execute("SELECT label, annotator, labelled_at FROM labels WHERE item = 'wire-0000'").fetchall()[0]
    assert row == ("negative", "eve@desk", datetime(2026, 12, 4, 8, tzinfo=UTC))


def test_relabel_wins_in_training_data(settings) -> None:
    from warehouse.training_data import labelled_examples

    _warehouse(settings, {"wire": 40})
    with connect(settings) as con:
        con.execute("INSERT INTO labels (dataset, item, task, label, batch_id, created_at) "
                    "SELECT 'pb', article_id, 'sentiment', 'negative', 'b', now() FROM articles")
        con.execute("INSERT INTO labels (dataset, item, task, label, batch_id, created_at) "
                    "VALUES ('relabel', 'wire-0007', 'sentiment', 'positive', 'b', now())")
        df = labelled_examples(con, ["pb", "relabel"], []).set_index("article_id")
        plain = labelled_examples(con, ["relabel", "pb"], [], prefer=()).set_index("article_id")
    assert df.loc["wire-0007", "sentiment"] == "positive" and df.loc["wire-0007", "dataset"] == "pb+relabel"
    assert (df.drop("wire-0007").sentiment == "negative").all() and len(plain) == 40


def test_finetune_weekly_trains_on_relabel() -> None:
    import yaml

    from tests.conftest import REPO_ROOT

    deps = {d["name"]: d for d in yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]}
    assert "relabel" in deps["finetune-weekly"]["parameters"]["sentiment_datasets"]


def test_monitor_flow_fills_the_queue_last(settings, prefect_harness) -> None:
    from flows.monitor import monitor_flow

    settings_env_ids = _warehouse(settings, {"wire": 12, "blog": 12})
    summary = monitor_flow()
    assert summary["label_queue"]["queued"] == len(_queue(settings)) > 0
    assert set(_queue(settings).article_id) <= set(settings_env_ids)
    assert monitor_flow()["label_queue"]["queued"] == 0  # a re-run queues nothing twice


def test_reingested_dataset_with_a_corrected_label_replaces_it_with_history(settings, prefect_harness, tmp_path) -> None:
    """Dataset ingest used to keep the first label forever (ON CONFLICT DO NOTHING)."""
    from flows.ingest import ingest_flow

    texts = ["Profits rose sharply at the bank", "The mill closed and cut jobs", "The board met on Tuesday"]
    kw = {"source": "mine", "column_map": {"body": "text", "label": "label"},
          "defaults": {"dataset": "mine", "task": "sentiment"}}
    first, second = tmp_path / "v1.csv", tmp_path / "v2.csv"
    pd.DataFrame({"text": texts, "label": ["positive", "negative", "positive"]}).to_csv(first, index=False)
    pd.DataFrame({"text": texts, "label": ["positive", "negative", "neutral"]}).to_csv(second, index=False)
    ingest_flow(files=[str(first)], **kw)
    ingest_flow(files=[str(first)], **kw)  # the same file again: nothing changes
    with connect(settings) as con:
        assert con.execute("SELECT count(*) FROM label_history").fetchall()[0][0] == 0
    ingest_flow(files=[str(second)], **kw)
    with connect(settings) as con:
        labels = sorted(r[0] for r in con.execute("SELECT label FROM labels WHERE dataset = 'mine'").fetchall())
        hist = con.execute("SELECT label, replaced_label FROM label_history").fetchall()
    assert labels == ["negative", "neutral", "positive"] and hist == [("positive", "neutral")]
