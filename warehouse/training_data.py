"""Read training data out of the warehouse: labelled examples with splits, and the LM corpus.

Splits are deterministic and no text sits in two splits (articles are keyed by text or by source
id, and each article gets exactly one split):

- A dataset *ships a split* when its labels include at least one row with split ``train`` (Reuters
  ModApte, the synthetic set). Its own split is kept, and its rows outside it (``unused`` or NULL:
  Reuters documents outside ModApte) are left out of the examples and counted (``attrs``
  ``'excluded'`` of the returned frame, per dataset). Validation is carved from its train part by
  a hash of (seed, article_id) when it ships train/test only.
- Every other dataset is split by us: stratified per label, in a hash-of-(seed, article_id) order.
  That includes a dataset whose labels all come from one published split (AG News ships only its
  ``test`` file): a split without a train part is not a split we can keep.

The LM corpus (:func:`write_corpus`) leaves out every article that carries any label (any dataset,
task or split): which of them land in validation/test depends on the seed, so none may be seen in
domain pretraining.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

SENTIMENT_CLASSES = ("negative", "neutral", "positive")
SPLITS = ("train", "validation", "test")
_PRIORITY = {"test": 0, "validation": 1, "train": 2}  # an article given two splits keeps the held-out one


def _hash_unit(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _datasets_with(labels: pd.DataFrame, split: str) -> set[str]:
    return set(labels.loc[labels.split == split, "dataset"])


def labelled_examples(
    con: duckdb.DuckDBPyConnection,
    sentiment_datasets: list[str],
    topic_datasets: list[str],
    *,
    topic_top_k: int | None = None,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    prefer: Collection[str] = ("relabel",),
) -> pd.DataFrame:
    """One row per article: ``article_id, text, title, sentiment, topic, split, dataset``.

    ``prefer``: datasets whose label of an article wins over another dataset's label of it (the
    human corrections of ``newspulse labels import``); otherwise the first dataset's label counts.

    ``sentiment`` keeps negative/neutral/positive only (the gold set's ``none`` is not a
    sentiment). ``topic_top_k`` keeps the k most frequent topic labels (Reuters top-10) among the
    labels kept. Splits: see the module docstring. ``df.attrs['excluded']`` maps each dataset that
    had labels outside its own split to how many were left out (``{}`` when none).
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

    # Which datasets ship a split is decided on all their labels, before any filtering.
    ships_train = _datasets_with(labels, "train")
    ships_validation = _datasets_with(labels, "validation")
    own = labels.dataset.isin(ships_train)
    outside = own & ~labels.split.isin(SPLITS)
    excluded = {str(k): int(v) for k, v in labels[outside].groupby("dataset").article_id.nunique().items()}
    labels = labels[~outside].copy()
    labels["given"] = labels.split.where(own[~outside])  # other datasets' published split is not kept

    if topic_top_k:
        top = labels[labels.task == "topic"].label.value_counts().head(topic_top_k).index
        labels = labels[(labels.task != "topic") | labels.label.isin(top)]
    if labels.empty:
        raise ValueError(f"no labels for sentiment={sentiment_datasets} topic={topic_datasets}")

    # A preferred dataset's label comes first, so "first" below takes it (stable: others keep their order).
    labels = labels.iloc[(~labels.dataset.isin(set(prefer))).to_numpy().argsort(kind="stable")]
    wide = labels.pivot_table(index="article_id", columns="task", values="label", aggfunc="first")
    dataset = labels.groupby("article_id").dataset.agg(lambda s: "+".join(sorted(set(s))))
    # The split an article is given, and by which dataset (the held-out one when two disagree).
    given = (labels[labels.given.notna()].assign(p=lambda f: f.given.map(_PRIORITY))
             .sort_values(["article_id", "p", "dataset"]).drop_duplicates("article_id")
             .set_index("article_id"))
    out = pd.DataFrame({"sentiment": wide.get("sentiment"), "topic": wide.get("topic"),
                        "given_split": given.given, "split_dataset": given.dataset,
                        "dataset": dataset}).reset_index(names="article_id")
    texts = con.execute(
        "SELECT article_id, concat_ws(' ', title, body) AS text, title FROM articles "
        "WHERE article_id IN (SELECT unnest($ids))",
        {"ids": out.article_id.tolist()},
    ).df()
    out = out.merge(texts, on="article_id", how="inner")
    out["split"] = assign_splits(
        out.assign(dataset=out.split_dataset.fillna(out.dataset)), seed, val_frac, test_frac,
        ships_train=ships_train, ships_validation=ships_validation)
    cols = ["article_id", "text", "title", "sentiment", "topic", "split", "dataset"]
    result = out[cols].sort_values(["split", "article_id"]).reset_index(drop=True)
    result.attrs["excluded"] = excluded
    return result


def assign_splits(df: pd.DataFrame, seed: int, val_frac: float, test_frac: float, *,
                  ships_train: Collection[str] | None = None,
                  ships_validation: Collection[str] | None = None) -> pd.Series:
    """The split of each row of ``df`` (``article_id, sentiment, topic, given_split, dataset``).

    A row's ``given_split`` is kept only when its dataset ships a split: it is in ``ships_train``
    (default: the datasets with a ``given_split == 'train'`` row in ``df``). Those rows with a given
    split outside train/validation/test get ``None`` (the caller leaves them out); their train
    rows give a hash-chosen ``val_frac / (1 - test_frac)`` to validation unless the dataset is in
    ``ships_validation`` (default: datasets with a given ``validation`` row). Every other row is
    split stratified per (sentiment, topic), in hash order: ``test_frac`` test, ``val_frac``
    validation, the rest train.
    """
    given = df.given_split
    ships_train = set(df.loc[given == "train", "dataset"]) if ships_train is None else set(ships_train)
    if ships_validation is None:
        ships_validation = set(df.loc[given == "validation", "dataset"])
    own = df.dataset.isin(ships_train)
    u = df.article_id.map(lambda a: _hash_unit(a, seed))

    split = pd.Series("train", index=df.index, dtype=object)
    ours = df[~own]
    stratum = ours.sentiment.fillna("") + "|" + ours.topic.fillna("")
    for _, idx in ours.groupby(stratum).groups.items():
        order = u.loc[idx].sort_values(kind="stable").index  # deterministic order inside the stratum
        n = len(order)
        n_test, n_val = round(n * test_frac), round(n * val_frac)
        split.loc[order[:n_test]] = "test"
        split.loc[order[n_test:n_test + n_val]] = "validation"

    split.loc[own] = given[own].where(given[own].isin(SPLITS), None)
    # Datasets that ship train/test only (Reuters ModApte): take validation out of their train part.
    carve = own & (given == "train") & ~df.dataset.isin(set(ships_validation)) & (u < val_frac / (1 - test_frac))
    split.loc[carve] = "validation"
    return split


def split_fingerprint(df: pd.DataFrame, split: str = "validation") -> str:
    """A short id of the exact rows of one split (promotion compares models on the same one)."""
    ids = "\n".join(sorted(df.loc[df.split == split, "article_id"]))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CorpusCounts:
    """What :func:`write_corpus` wrote: ``written`` documents, ``excluded`` labelled ones left out."""

    written: int
    excluded: int


def write_corpus(con: duckdb.DuckDBPyConnection, out_path: Path, *, sources: list[str] | None = None,
                 max_docs: int | None = None, max_chars: int = 4000, exclude_labelled: bool = True,
                 since: datetime | None = None) -> CorpusCounts:
    """Write article texts (title + body, capped) to Parquet (``article_id, text``) for LM pretraining.

    ``sources`` and ``since`` (only articles with ``ingested_at > since``; a naive time is UTC)
    choose the articles; with ``exclude_labelled`` every one that carries a row in ``labels`` is
    left out (any dataset, task or split) and counted in ``excluded``. ``max_docs`` caps what is
    written, in a fixed hash order.
    """
    conds, params = [], {}
    if sources:
        conds.append("a.source IN (SELECT unnest($src))")
        params["src"] = list(sources)
    if since is not None:
        conds.append("a.ingested_at > $since::TIMESTAMPTZ")
        params["since"] = since if since.tzinfo else since.replace(tzinfo=UTC)
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    chosen = f"SELECT a.article_id, a.title, a.body FROM articles a {where}"
    keep = (f"SELECT c.* FROM ({chosen}) c ANTI JOIN (SELECT DISTINCT item FROM labels) l ON l.item = c.article_id"
            if exclude_labelled else chosen)
    excluded = int(con.execute(
        f"SELECT count(*) FROM ({chosen}) c SEMI JOIN (SELECT DISTINCT item FROM labels) l ON l.item = c.article_id",
        params).fetchall()[0][0]) if exclude_labelled else 0
    limit = f"LIMIT {int(max_docs)}" if max_docs else ""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    target = str(out_path).replace("'", "''")
    sql = (f"COPY (SELECT article_id, left(concat_ws(' ', title, body), {int(max_chars)}) AS text FROM ({keep}) "
           f"ORDER BY hash(article_id), article_id {limit}) TO '{target}' (FORMAT parquet)")
    written = int(con.execute(sql, params).fetchall()[0][0])
    return CorpusCounts(written=written, excluded=excluded)


def intent_examples(con: duckdb.DuckDBPyConnection, datasets: list[str] | None = None, *, seed: int = 0,
                    val_frac: float = 0.1, test_frac: float = 0.1, max_per_intent: int | None = None) -> pd.DataFrame:
    """Gold intents of support messages: ``message_id, text, intent, split, dataset``, one row each.

    Read from ``labels`` (task ``intent``, item = ``support_messages.message_id``) like the news
    heads' labels. Splits follow :func:`assign_splits` with the intent as the stratum: BANKING77
    ships train/test, so its test file stays test and validation is carved from train by hash;
    a dataset without a shipped train split is split by us, stratified per intent.
    ``datasets``: None for every dataset with intent labels. ``max_per_intent`` keeps at most that
    many train rows per intent, and a third of it (at least 5) per intent in validation and in
    test, chosen by the same seeded hash (a quick model: the demo trains on 30 per intent).
    """
    labels = con.execute(
        """SELECT l.item AS message_id, l.dataset, l.label AS intent, l.split AS given_split, m.text
           FROM labels l JOIN support_messages m ON m.message_id = l.item
           WHERE l.task = 'intent' AND ($ds IS NULL OR l.dataset IN (SELECT unnest($ds)))""",
        {"ds": list(datasets) if datasets else None}).df()
    if labels.empty:
        raise ValueError(f"no intent labels for datasets={datasets}")
    # One label per message (a message labelled by two datasets keeps the first by name).
    labels = labels.sort_values(["message_id", "dataset"]).drop_duplicates("message_id")
    frame = labels.rename(columns={"message_id": "article_id"}).assign(sentiment=None, topic=labels.intent.values)
    labels["split"] = assign_splits(frame, seed, val_frac, test_frac).values
    labels = labels[labels.split.notna()]
    if max_per_intent:
        cap = labels.split.map(lambda sp: max_per_intent if sp == "train" else max(5, max_per_intent // 3))
        order = labels.message_id.map(lambda m: _hash_unit(m, seed))
        rank = labels.assign(u=order).groupby(["split", "intent"]).u.rank(method="first")
        labels = labels[rank <= cap]
    cols = ["message_id", "text", "intent", "split", "dataset"]
    return labels[cols].sort_values(["split", "message_id"]).reset_index(drop=True)
