"""Read training data out of the warehouse: labelled examples with splits, and the LM corpus.

Splits are deterministic: a dataset's own split (Reuters ModApte, the synthetic set) is kept, and
everything else is split per label by a hash of (seed, article_id), so the same article always
lands in the same split and one text never sits in two splits (articles are keyed by text or by
source id). Validation is carved from train when a dataset ships only train/test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pandas as pd

SENTIMENT_CLASSES = ("negative", "neutral", "positive")


def _hash_unit(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def labelled_examples(
    con: duckdb.DuckDBPyConnection,
    sentiment_datasets: list[str],
    topic_datasets: list[str],
    *,
    topic_top_k: int | None = None,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
) -> pd.DataFrame:
    """One row per article: ``article_id, text, sentiment, topic, split, dataset``.

    ``sentiment`` keeps negative/neutral/positive only (the gold set's ``none`` is not a
    sentiment). ``topic_top_k`` keeps the k most frequent topic labels (Reuters top-10).
    """
    frames = []
    if sentiment_datasets:
        frames.append(con.execute(
            """SELECT l.item AS article_id, l.dataset, 'sentiment' AS task, l.label, l.split
               FROM labels l WHERE l.task = 'sentiment' AND l.dataset IN (SELECT unnest($ds))
                 AND l.label IN ('negative', 'neutral', 'positive')""", {"ds": sentiment_datasets}).df())
    if topic_datasets:
        frames.append(con.execute(
            """SELECT l.item AS article_id, l.dataset, 'topic' AS task, l.label, l.split
               FROM labels l WHERE l.task = 'topic' AND l.dataset IN (SELECT unnest($ds))""",
            {"ds": topic_datasets}).df())
    if not frames:
        raise ValueError("name at least one sentiment or topic dataset")
    labels = pd.concat(frames, ignore_index=True)
    if topic_top_k:
        top = labels[labels.task == "topic"].label.value_counts().head(topic_top_k).index
        labels = labels[(labels.task != "topic") | labels.label.isin(top)]
    if labels.empty:
        raise ValueError(f"no labels for sentiment={sentiment_datasets} topic={topic_datasets}")

    wide = labels.pivot_table(index="article_id", columns="task", values="label", aggfunc="first")
    given = labels.groupby("article_id").split.agg(lambda s: next((x for x in s if x in ("train", "validation", "test")), None))
    dataset = labels.groupby("article_id").dataset.agg(lambda s: "+".join(sorted(set(s))))
    out = pd.DataFrame({"sentiment": wide.get("sentiment"), "topic": wide.get("topic"),
                        "given_split": given, "dataset": dataset}).reset_index()
    texts = con.execute(
        "SELECT article_id, concat_ws(' ', title, body) AS text FROM articles WHERE article_id IN (SELECT unnest($ids))",
        {"ids": out.article_id.tolist()},
    ).df()
    out = out.merge(texts, on="article_id", how="inner")
    out["split"] = assign_splits(out, seed, val_frac, test_frac)
    cols = ["article_id", "text", "sentiment", "topic", "split", "dataset"]
    return out[cols].sort_values(["split", "article_id"]).reset_index(drop=True)


def assign_splits(df: pd.DataFrame, seed: int, val_frac: float, test_frac: float) -> pd.Series:
    """Stratified, hash-ordered split per primary label; a given split wins (val carved from train)."""
    u = df.article_id.map(lambda a: _hash_unit(a, seed))
    stratum = df.sentiment.fillna("") + "|" + df.topic.fillna("")
    split = pd.Series("train", index=df.index)
    for _, idx in df.groupby(stratum).groups.items():
        order = u.loc[idx].sort_values().index  # deterministic order inside the stratum
        n = len(order)
        n_test, n_val = round(n * test_frac), round(n * val_frac)
        split.loc[order[:n_test]] = "test"
        split.loc[order[n_test:n_test + n_val]] = "validation"
    given = df.given_split
    has = given.notna()
    split.loc[has] = given[has]
    # Datasets that ship train/test only (Reuters ModApte): take validation out of their train part.
    with_val = set(df.loc[given == "validation", "dataset"])
    carve = has & (given == "train") & ~df.dataset.isin(with_val) & (u < val_frac / (1 - test_frac))
    split.loc[carve] = "validation"
    return split


def split_fingerprint(df: pd.DataFrame, split: str = "validation") -> str:
    """A short id of the exact rows of one split (promotion compares models on the same one)."""
    ids = "\n".join(sorted(df.loc[df.split == split, "article_id"]))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def write_corpus(con: duckdb.DuckDBPyConnection, out_path: Path, *, sources: list[str] | None = None,
                 max_docs: int | None = None, max_chars: int = 4000) -> int:
    """Write article texts (title + body, capped) to Parquet for LM pretraining; returns the count."""
    where = "WHERE source IN (SELECT unnest($src))" if sources else ""
    limit = f"LIMIT {int(max_docs)}" if max_docs else ""
    params = {"src": sources} if sources else {}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sql = (f"COPY (SELECT article_id, left(concat_ws(' ', title, body), {int(max_chars)}) AS text FROM articles "
           f"{where} ORDER BY hash(article_id) {limit}) TO '{out_path}' (FORMAT parquet)")
    return int(con.execute(sql, params).fetchall()[0][0])
