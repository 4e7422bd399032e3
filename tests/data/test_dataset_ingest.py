"""Public datasets through the real ingest flow: counts, quirks, identity, idempotence."""

from __future__ import annotations

import duckdb
import pytest

from tests.conftest import shared_data_dir

DATA = shared_data_dir()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.skipif(DATA is None, reason="public datasets not found: set NEWSPULSE_DATA_DIR or add ../shared/data"),
]


def _query(settings, sql: str) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_public_datasets_ingest(settings) -> None:
    from flows.ingest import ingest_flow

    names = ["financial_phrasebank", "bbc", "cnbc", "gold_news", "mind_behaviors"]
    batches = ingest_flow(datasets=names, data_dir=str(DATA))
    assert len(batches) == 4 + 5 + 1 + 1 + 1
    for b in batches:
        assert b["rows_read"] == b["rows_inserted"] + b["rows_duplicate"] + b["rows_quarantined"], b
        assert b["status"] == "succeeded", b

    by_source = dict(_query(settings, "SELECT source, count(*) FROM articles GROUP BY 1"))
    # PhraseBank: 4,846 lines in 50Agree with 8 repeated sentences; the stricter files are subsets.
    assert by_source["financial_phrasebank"] == 4838
    labels = dict(_query(settings, "SELECT dataset, count(*) FROM labels GROUP BY 1"))
    assert labels["phrasebank_50agree"] == 4838 and labels["phrasebank_allagree"] == 2259
    # BBC: 2,225 files, 98 byte-identical copies -> 2,127 distinct texts; one more pair differs
    # only in case/whitespace, which the normalised-text id treats as the same article.
    assert by_source["bbc"] == 2126
    # CNBC: the 280 blank `,,` rows are quarantined with a reason, 12 repeated headlines -> duplicates.
    cnbc = _query(settings, "SELECT rows_read, rows_inserted, rows_duplicate, rows_quarantined FROM ingest_batches WHERE source='cnbc'")
    assert cnbc == [(3080, 2790, 10, 280)]
    assert _query(settings, "SELECT count(*) FROM quarantine WHERE source='cnbc' AND list_contains(reasons, 'blank record')") == [(280,)]
    # CNBC times are US/Eastern in the file; stored in UTC (2020-07-17 7:51 PM ET = 23:51 UTC).
    assert _query(settings, "SELECT max(published_at)::VARCHAR FROM articles WHERE source='cnbc'") == [("2020-07-17 23:51:00+00",)]
    # Gold: garbled dates keep the labelled row, with the raw date in meta.
    assert _query(settings, "SELECT count(*) FROM articles WHERE source='gold_news' AND published_at IS NULL AND meta->>'date_raw' IS NOT NULL") == [(165,)]
    assert dict(_query(settings, "SELECT label, count(*) FROM labels WHERE dataset='gold_news' GROUP BY 1")) == {
        "positive": 4412, "negative": 3814, "none": 1968, "neutral": 376}
    # MIND behaviors: 5,000 impressions, 189,359 shown items, 7,542 clicks.
    assert _query(settings, "SELECT count(*), count(DISTINCT impression_id) FROM behaviors") == [(5000, 5000)]
    assert _query(settings, "SELECT count(*), sum(clicked::INT) FROM v_impressions") == [(189359, 7542)]
    # No id appears twice, whatever the overlaps between files.
    assert _query(settings, "SELECT count(*) FROM (SELECT article_id FROM articles GROUP BY 1 HAVING count(*) > 1)") == [(0,)]

    # Second run: every file version is known, nothing is read or written.
    assert ingest_flow(datasets=names, data_dir=str(DATA)) == []


def test_ag_news_and_reuters_training_splits(settings) -> None:
    """AG News ships only its test file, so it is split by us and trains on something; Reuters keeps
    ModApte: its test rows are exactly the ModApte test documents, ``unused`` ones are left out."""
    import pandas as pd

    from flows.ingest import ingest_flow
    from sources.datasets import DATASETS, dataset_files, read_dataset_file
    from warehouse.connection import connect
    from warehouse.training_data import labelled_examples

    batches = ingest_flow(datasets=["ag_news", "reuters"], data_dir=str(DATA))
    assert all(b["status"] == "succeeded" for b in batches)
    with connect(settings) as con:
        ag = labelled_examples(con, [], ["ag_news"])
        rt = labelled_examples(con, [], ["reuters"])
        source_id = dict(con.execute("SELECT article_id, source_id FROM articles WHERE source = 'reuters'").fetchall())

    sizes = ag.split.value_counts()
    assert sizes["train"] > 0.75 * len(ag) and 0.08 * len(ag) < sizes["validation"] < 0.12 * len(ag)
    assert 0.08 * len(ag) < sizes["test"] < 0.12 * len(ag)
    per_label = ag.groupby(["topic", "split"]).size().unstack()
    assert (per_label["test"] / per_label.sum(axis=1)).between(0.09, 0.11).all()  # stratified
    assert ag.attrs["excluded"] == {}

    raw = pd.concat([read_dataset_file(DATASETS["reuters"], p) for p in dataset_files(DATASETS["reuters"], DATA)])
    raw = raw[raw.error.isna() & raw.label.notna()]
    modapte = {s: set(raw.loc[raw.split == s, "source_id"]) for s in ("train", "test", "unused")}
    by_split = {s: {source_id[a] for a in g.article_id} for s, g in rt.groupby("split")}
    assert by_split["test"] == modapte["test"]
    assert by_split["train"] | by_split["validation"] == modapte["train"]
    assert 0.08 < len(by_split["validation"]) / len(modapte["train"]) < 0.14
    assert rt.attrs["excluded"] == {"reuters": len(modapte["unused"])} and modapte["unused"]
    assert rt.article_id.is_unique and ag.article_id.is_unique
