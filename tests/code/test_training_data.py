"""Training data out of the warehouse: who keeps its own split, who gets ours, and an LM corpus that
never sees a labelled text.

Each test builds a small warehouse with the project's migrations and inserts articles and labels
directly (the readers and the ingest path have their own tests).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from warehouse.connection import connect
from warehouse.migrate import migrate
from warehouse.training_data import CorpusCounts, assign_splits, labelled_examples, write_corpus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = ("world", "sports", "business", "sci_tech")


def _load(settings, articles: list[dict], labels: list[dict]) -> None:
    """Insert ``articles`` (article_id, source, [title, body, ingested_at]) and ``labels``
    (dataset, item, task, label, split) into a freshly migrated warehouse."""
    arts = pd.DataFrame([{"title": f"title {a['article_id']}", "body": f"body of {a['article_id']}",
                          "ingested_at": T0, "batch_id": "test", **a} for a in articles])
    labs = pd.DataFrame([{"batch_id": "test", "created_at": T0, **lab} for lab in labels],
                        columns=["dataset", "item", "task", "label", "split", "batch_id", "created_at"])
    with connect(settings) as con:
        migrate(con)
        con.register("arts", arts)
        con.execute("INSERT INTO articles BY NAME SELECT * FROM arts")
        if len(labs):
            con.register("labs", labs)
            con.execute("INSERT INTO labels BY NAME SELECT * FROM labs")


def _examples(settings, sentiment: list[str], topic: list[str], **kwargs) -> pd.DataFrame:
    with connect(settings) as con:
        return labelled_examples(con, sentiment, topic, **kwargs)


def _test_only_dataset(n_per_label: int = 250) -> tuple[list[dict], list[dict]]:
    """An AG-News-like topic set: every label row comes from its one published file, ``test``."""
    ids = [(f"ag-{label}-{i:04d}", label) for label in TOPICS for i in range(n_per_label)]
    return ([{"article_id": a, "source": "ag"} for a, _ in ids],
            [{"dataset": "ag", "item": a, "task": "topic", "label": label, "split": "test"} for a, label in ids])


def _modapte_like() -> tuple[list[dict], list[dict], dict[str, set[str]]]:
    """A Reuters-like topic set: 600 train, 200 test, 150 unused and 50 without a split."""
    groups = {"train": 600, "test": 200, "unused": 150, None: 50}
    articles, labels, ids = [], [], {}
    for split, n in groups.items():
        name = split or "none"
        ids[name] = {f"rt-{name}-{i:04d}" for i in range(n)}
        for i, a in enumerate(sorted(ids[name])):
            articles.append({"article_id": a, "source": "rt"})
            labels.append({"dataset": "rt", "item": a, "task": "topic", "label": ("earn", "acq", "grain")[i % 3],
                           "split": split})
    return articles, labels, ids


def test_published_test_split_only_is_split_by_us_stratified(settings) -> None:
    articles, labels = _test_only_dataset(250)
    _load(settings, articles, labels)
    df = _examples(settings, [], ["ag"])
    assert len(df) == 1000 and df.article_id.is_unique
    assert df.split.value_counts().to_dict() == {"train": 800, "validation": 100, "test": 100}
    # Stratified: every label is split 80/10/10 on its own.
    per_label = df.groupby(["topic", "split"]).size().unstack()
    assert (per_label["train"] == 200).all() and (per_label["validation"] == 25).all() and (per_label["test"] == 25).all()
    assert df.attrs["excluded"] == {}


def test_own_split_is_kept_rows_outside_it_excluded_and_validation_carved_from_train(settings) -> None:
    articles, labels, ids = _modapte_like()
    _load(settings, articles, labels)
    df = _examples(settings, [], ["rt"])
    assert df.article_id.is_unique
    by_split = {s: set(g.article_id) for s, g in df.groupby("split")}
    assert by_split["test"] == ids["test"]  # the dataset's test split, exactly
    assert by_split["train"] | by_split["validation"] == ids["train"]
    assert 40 <= len(by_split["validation"]) <= 95  # ~ 0.1 / 0.9 of 600, chosen by hash
    assert not set(df.article_id) & (ids["unused"] | ids["none"])
    assert df.attrs["excluded"] == {"rt": 200}


def test_datasets_mixed_one_row_per_article_and_no_article_in_two_splits(settings) -> None:
    ag_articles, ag_labels = _test_only_dataset(50)
    rt_articles, rt_labels, ids = _modapte_like()
    # A sentiment set with no split at all, sharing some articles with both topic sets.
    shared = sorted(ids["test"])[:20] + sorted(ids["train"])[:20] + [a["article_id"] for a in ag_articles[:20]]
    own = [f"pb-{i:04d}" for i in range(300)]
    pb_labels = [{"dataset": "pb", "item": a, "task": "sentiment", "label": ("negative", "neutral", "positive")[i % 3],
                  "split": None} for i, a in enumerate(shared + own)]
    # An article that two split-shipping datasets put in different splits: the held-out one wins.
    conflict = sorted(ids["train"])[-1]
    syn_labels = [{"dataset": "syn", "item": conflict, "task": "sentiment", "label": "positive", "split": "test"},
                  {"dataset": "syn", "item": "syn-0001", "task": "sentiment", "label": "negative", "split": "train"}]
    _load(settings, ag_articles + rt_articles + [{"article_id": a, "source": "pb"} for a in own]
          + [{"article_id": "syn-0001", "source": "syn"}],
          ag_labels + rt_labels + pb_labels + syn_labels)
    df = _examples(settings, ["pb", "syn"], ["ag", "rt"])
    assert df.article_id.is_unique  # one article, one row, one split
    assert df.split.isin(["train", "validation", "test"]).all()
    row = df.set_index("article_id")
    # An article labelled by two sets carries both labels.
    both = sorted(ids["test"])[0]
    assert row.loc[both, "dataset"] == "pb+rt" and row.loc[both, "topic"] in ("earn", "acq", "grain")
    assert pd.notna(row.loc[both, "sentiment"])
    # The ModApte-like test articles stay test even though pb has no split of its own.
    assert set(df[df.split == "test"].article_id) >= ids["test"]
    assert row.loc[conflict, "split"] == "test"
    assert not set(df.article_id) & (ids["unused"] | ids["none"])
    assert df.attrs["excluded"] == {"rt": 200}


def test_split_is_deterministic_for_a_seed(settings) -> None:
    articles, labels = _test_only_dataset(100)
    rt_articles, rt_labels, ids = _modapte_like()
    _load(settings, articles + rt_articles, labels + rt_labels)
    a = _examples(settings, [], ["ag", "rt"], seed=3)
    b = _examples(settings, [], ["ag", "rt"], seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = _examples(settings, [], ["ag", "rt"], seed=4)
    a_split, c_split = a.set_index("article_id").split, c.set_index("article_id").split
    assert (a_split != c_split.reindex(a_split.index)).any()
    assert set(c[c.split == "test"].article_id) & ids["test"] == ids["test"]  # a given split ignores the seed


def test_assign_splits_without_labelled_examples() -> None:
    """bench/quality.py calls assign_splits on its own frames: the same rule applies there."""
    n = 400
    df = pd.DataFrame({"article_id": [f"a{i}" for i in range(n)], "sentiment": None,
                       "topic": [TOPICS[i % 4] for i in range(n)], "given_split": "test", "dataset": "x"})
    split = assign_splits(df, 0, 0.1, 0.1)
    assert split.value_counts().to_dict() == {"train": 320, "validation": 40, "test": 40}
    df["given_split"] = ["train" if i % 4 else "test" for i in range(n)]
    df.loc[0, "given_split"] = "unused"
    split = assign_splits(df, 0, 0.1, 0.1)
    assert pd.isna(split[0])  # outside the dataset's split: the caller leaves it out
    assert (split[df.given_split == "test"] == "test").all()
    assert set(split[df.given_split == "train"]) == {"train", "validation"}


def test_corpus_excludes_every_labelled_article_and_honours_since(settings, tmp_path) -> None:
    articles = [{"article_id": f"u{i:03d}", "source": "feed" if i % 2 else "wire",
                 "ingested_at": T0 + timedelta(hours=i)} for i in range(40)]
    labelled = {"l-train": "train", "l-val": "validation", "l-test": "test", "l-unused": "unused", "l-none": None}
    articles += [{"article_id": a, "source": "feed", "ingested_at": T0 + timedelta(hours=50)} for a in labelled]
    labels = [{"dataset": "d", "item": a, "task": "topic", "label": "x", "split": s} for a, s in labelled.items()]
    labels.append({"dataset": "other", "item": "l-test", "task": "sentiment", "label": "positive", "split": None})
    _load(settings, articles, labels)
    unlabelled = {a["article_id"] for a in articles} - set(labelled)

    with connect(settings) as con:
        out = tmp_path / "corpus" / "all.parquet"
        counts = write_corpus(con, out)
        assert counts == CorpusCounts(written=40, excluded=5)
        written = pd.read_parquet(out)
        assert set(written.article_id) == unlabelled and list(written.columns) == ["article_id", "text"]
        assert written.text.str.startswith("title ").all()

        since = T0 + timedelta(hours=29, minutes=30)  # u030 .. u039 and the labelled ones
        counts = write_corpus(con, tmp_path / "since.parquet", since=since)
        assert counts == CorpusCounts(written=10, excluded=5)
        assert set(pd.read_parquet(tmp_path / "since.parquet").article_id) == {f"u{i:03d}" for i in range(30, 40)}
        naive = write_corpus(con, tmp_path / "naive.parquet", since=since.replace(tzinfo=None))
        assert naive == counts  # a naive time is UTC
        assert write_corpus(con, tmp_path / "late.parquet", since=T0 + timedelta(hours=60)) == CorpusCounts(0, 0)

        counts = write_corpus(con, tmp_path / "wire.parquet", sources=["wire"], since=since)
        assert counts == CorpusCounts(written=5, excluded=0)
        counts = write_corpus(con, tmp_path / "capped.parquet", max_docs=7, max_chars=5)
        capped = pd.read_parquet(tmp_path / "capped.parquet")
        assert counts == CorpusCounts(written=7, excluded=5) and len(capped) == 7
        assert set(capped.article_id) <= unlabelled and (capped.text.str.len() <= 5).all()
        assert write_corpus(con, tmp_path / "again.parquet", max_docs=7).written == 7
        assert list(pd.read_parquet(tmp_path / "again.parquet").article_id) == list(capped.article_id)

        counts = write_corpus(con, tmp_path / "everything.parquet", exclude_labelled=False)
        assert counts == CorpusCounts(written=45, excluded=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_hash_split_proportions_hold_for_uneven_strata(settings, seed: int) -> None:
    """Strata of different sizes each get round(n * frac) test and validation rows."""
    sizes = {"world": 37, "sports": 120, "business": 8, "sci_tech": 400}
    arts, labs = [], []
    for label, n in sizes.items():
        for i in range(n):
            a = f"{label}-{i}"
            arts.append({"article_id": a, "source": "ag"})
            labs.append({"dataset": "ag", "item": a, "task": "topic", "label": label, "split": "test"})
    _load(settings, arts, labs)
    df = _examples(settings, [], ["ag"], seed=seed)
    counts = df.groupby(["topic", "split"]).size().unstack(fill_value=0)
    for label, n in sizes.items():
        assert counts.loc[label, "test"] == round(n * 0.1) and counts.loc[label, "validation"] == round(n * 0.1)
        assert counts.loc[label].sum() == n
