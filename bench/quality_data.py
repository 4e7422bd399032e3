"""Data for ``bench/quality.py``: the four benchmarks, their per-seed splits and the product's parts.

* Financial PhraseBank 50Agree and AllAgree (sentiment): stratified 80/10/10 per seed;
* AG News (topic): the shared test file split by us, 70/10/20 (train/validation/test), stratified;
* Reuters-21578 ModApte, documents whose first topic is one of the 10 most frequent in ModApte
  train (topic): the ModApte test split stays the test split, validation is carved from ModApte train.

Splits come from :func:`warehouse.training_data.assign_splits` (hash-ordered, stratified per label,
one split per distinct text). :func:`product_parts` then cuts validation exactly as
:func:`models.experiment.run_experiment` does: ``tune`` (hyper-parameters, early stopping) and
``select`` (ensemble weight and served choice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sources import datasets as ds
from warehouse.training_data import assign_splits

BENCHMARKS = ("phrasebank_50agree", "phrasebank_allagree", "ag_news", "reuters_top10")


@dataclass
class Benchmark:
    """One labelled dataset: which head it trains, its rows (no split yet) and its test fraction."""

    name: str
    head: str  # "sentiment" | "topic"
    frame: pd.DataFrame  # text, article_id, given_split, dataset, sentiment, topic
    test_frac: float  # 0.0: the dataset ships its own test split (Reuters ModApte)

    @property
    def labels(self) -> list[str]:
        """Label names in the order the product uses (sentiment: fixed; topic: sorted)."""
        from models.multihead import SENTIMENT_LABELS

        return list(SENTIMENT_LABELS) if self.head == "sentiment" else sorted(self.frame[self.head].unique())


def text_id(text: str) -> str:
    """The id of a text: sha256 of its lower-cased, whitespace-normalised form (one text, one split)."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:32]


def _frame(texts: list[str], labels: list[str], head: str, given: list[str | None] | None = None) -> pd.DataFrame:
    """Examples in the product's layout, duplicates of a text dropped (first label kept)."""
    df = pd.DataFrame({"text": texts, head: labels})
    df["article_id"] = df.text.map(text_id)
    df["given_split"] = given if given is not None else None
    df["dataset"] = "bench"
    df = df.drop_duplicates("article_id").reset_index(drop=True)
    df["topic" if head == "sentiment" else "sentiment"] = None
    return df


def read_reuters(data_dir: Path) -> pd.DataFrame:
    """Every Reuters-21578 record (all 22 SGML files)."""
    return pd.concat([ds.read_reuters(p) for p in sorted((data_dir / "reuters21578").glob("reut2-*.sgm"))])


def load_benchmarks(data_dir: Path, reuters: pd.DataFrame | None = None) -> dict[str, Benchmark]:
    """The four benchmarks from the shared data folder (see the module docstring)."""
    out: dict[str, Benchmark] = {}
    for name, file in (("phrasebank_50agree", "Sentences_50Agree.txt"), ("phrasebank_allagree", "Sentences_AllAgree.txt")):
        f = ds.read_phrasebank(data_dir / "financial_phrasebank" / file)
        f = f[f.error.isna()]
        out[name] = Benchmark(name, "sentiment", _frame(f.body.tolist(), f.label.tolist(), "sentiment"), 0.1)
    ag = ds.read_ag_news(data_dir / "ag_news" / "test.csv")
    text = (ag.title.fillna("") + " " + ag.body.fillna("")).str.strip()
    out["ag_news"] = Benchmark("ag_news", "topic", _frame(text.tolist(), ag.label.tolist(), "topic"), 0.2)
    rt = read_reuters(data_dir) if reuters is None else reuters
    rt = rt[rt.split.isin(["train", "test"]) & rt.label.notna()].copy()
    rt["first"] = rt.label.str.split("|").str[0]
    top = rt[rt.split == "train"]["first"].value_counts().head(10).index
    rt = rt[rt["first"].isin(top)]
    text = (rt.title.fillna("") + " " + rt.body.fillna("")).str.strip()
    out["reuters_top10"] = Benchmark("reuters_top10", "topic",
                                     _frame(text.tolist(), rt["first"].tolist(), "topic", rt.split.tolist()), 0.0)
    return out


def subsample(bench: Benchmark, n: int, seed: int = 0) -> Benchmark:
    """A smaller copy of ``bench`` (``n`` rows at random, for ``--quick``), its splits still the bench's rule."""
    if len(bench.frame) <= n:
        return bench
    return Benchmark(bench.name, bench.head, bench.frame.sample(n=n, random_state=seed).reset_index(drop=True),
                     bench.test_frac)


def split(bench: Benchmark, seed: int) -> pd.DataFrame:
    """The benchmark's rows with a ``split`` column for ``seed`` (validation 10%; test per dataset)."""
    df = bench.frame.copy()
    df["split"] = assign_splits(df, seed, 0.1, bench.test_frac if bench.test_frac else 0.1)
    return df


@dataclass
class Parts:
    """Row positions (into the benchmark frame) of the four parts the product uses."""

    train: np.ndarray
    tune: np.ndarray
    select: np.ndarray
    test: np.ndarray


def product_parts(df: pd.DataFrame) -> Parts:
    """train / tune / select / test positions of a split frame, cut as ``run_experiment`` cuts them.

    Validation is halved by :func:`models.experiment.selection_halves` (a hash of the article id);
    with fewer than 20 validation rows the product lets both halves be the whole validation split.
    """
    from models.experiment import selection_halves

    pos = np.arange(len(df))
    val = pos[(df.split == "validation").to_numpy()]
    in_select = selection_halves(df.article_id.iloc[val]) if len(val) >= 20 else np.ones(len(val), dtype=bool)
    tune = val[~in_select] if (~in_select).any() else val
    return Parts(train=pos[(df.split == "train").to_numpy()], tune=tune, select=val[in_select],
                 test=pos[(df.split == "test").to_numpy()])


def pretraining_corpus(data_dir: Path, exclude: set[str], reuters: pd.DataFrame | None = None) -> list[str]:
    """Texts of the shared corpora (Reuters, BBC, CNBC, Guardian, gold news, MIND titles), minus ``exclude`` ids."""
    rt = read_reuters(data_dir) if reuters is None else reuters
    texts = (rt.title.fillna("") + " " + rt.body.fillna("")).str.strip().tolist()
    for folder in sorted((data_dir / "bbc_news" / "bbc").glob("*/")):
        f = ds.read_bbc(folder)
        texts += (f.title.fillna("") + " " + f.body.fillna("")).tolist()
    for reader, path in ((ds.read_cnbc, "financial_news_headlines/cnbc_headlines.csv"),
                         (ds.read_guardian, "financial_news_headlines/guardian_headlines.csv"),
                         (ds.read_gold_news, "gold_commodity_news/gold-dataset-sinha-khandait.csv")):
        f = reader(data_dir / path)
        texts += (f.title.fillna("") + " " + f.body.fillna("")).str.strip().tolist()
    texts += ds.read_mind_titles_folder(data_dir / "mind_small_titles").title.dropna().tolist()
    return [t for t in texts if t and text_id(t) not in exclude]
