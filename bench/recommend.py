"""Recommendation benchmark: our click model vs popularity, embedding cosine and random on real MIND.

Data: the real MIND-small *train* sample in ``$NEWSPULSE_DATA_DIR`` (default ``../shared/data``):
5,000 impressions of 9-14 Nov 2019 (``mind_small_sample/behaviors.tsv``) and the titles and
categories of all 51,282 MIND-small news ids (``mind_small_titles``), ingested with
``ingest_flow`` into a fresh warehouse in a temporary home, plus Financial PhraseBank for the
sentiment head.

Item vectors, two encoders on the same items:

- **5M GPT (the previous item vectors)**: ``--model <registered version dir>`` registers an
  existing model as champion; otherwise one is trained here as the pipeline does it: the MIND
  topic labels are cut to a fixed hash sample of ``--topic-examples`` = 10,000 of 51,282 (the
  fine-tune's evaluation and TF-IDF grid cost grow with the labelled set), ``pretrain_flow``
  (preset ``small``) on the MIND titles left unlabelled (pretraining leaves labelled texts out),
  then ``finetune_flow`` with those categories as the topic head and PhraseBank 50Agree as the
  sentiment head, both with a time budget. ``score_flow`` embeds every article; these vectors are
  the champion's stored ``embeddings`` rows.
- **SmolLM2-135M, frozen** (``bench/recommend_vectors.py``): the shipped pretrained backbone
  (offline), one forward pass per item title and pass (bare title; the sentiment prompt a
  frozen-recipe champion's score flow embeds with; a PromptEOL title prompt), pooled mean and
  last token over six layers, cached as float16 in ``bench/results/rec_item_vectors/`` (only the
  ~22.6k items the impressions touch). Every pooling choice is cut from those features; each one,
  then a few click-model settings on the best, is trained on *fit* and judged on *valid* (below);
  the test day is scored for the record but the pick reads valid AUC only.

Method, all in one process on the same inputs:

1. ``export_rec_inputs`` for source ``mind`` (as_of = newest impression, the whole log),
   ``load_rec_inputs``, ``impressions_from_events`` (time order, point-in-time histories: the
   log's history field plus the user's clicks in earlier impressions).
2. Time split: **test** = the impressions of the log's last calendar day (2019-11-14); **train** =
   every earlier impression; the newest 10% of train (by time) is the click model's validation
   set for early stopping and for picking the SmolLM2 pooling and click-model settings (it is
   still "train" for the popularity counts). Three slices in time order: fit, valid, test day.
3. Rankers, each scored with ``models.rank_metrics.evaluate_impressions`` (MIND's group AUC, MRR,
   nDCG@5, nDCG@10 over test impressions with a click and a non-click):

   - **click model** as the nightly flow trains it by default (``tasks.recommend``):
     ``train_click_model`` (seed fixed): the NRMS-style user encoder over the frozen item vectors
     (SmolLM2 with the picked pooling and settings; ``click_model_gpt`` over the 5M GPT ones with
     default ``ClickConfig``; ``click_model_stored`` over SmolLM2 as a frozen champion stores it),
     no side features;
   - **+ nightly side features** (``NEWSPULSE_REC_SIDE_FEATURES=true``): a wide part over the
     candidate's clicks, smoothed click rate and age as a nightly run serves them
     (``streaming_features(cut_hours=24)`` freezes the counts at the midnight before each
     impression, so every test impression sees the train log only);
   - **+ live side features**: the same with ``cut_hours=0`` (counters that keep updating through
     the test day: what request-time scoring could reach; not built);
   - **popularity, nightly**: ``models.recommend.popularity_scores`` on the nightly features (the
     flow's baseline: clicks before the test day's midnight); **popularity, live**: the same on
     live features (clicks before each impression); **popularity, last 24 h**: the clicks of the
     24 h before the test day (the flow's ``rec_popularity_hours``);
   - **embedding cosine**: cosine of the mean history vector and the candidate's vector (SmolLM2
     picked pooling, and the 5M GPT vectors);
   - **random**: seeded uniform scores, the floor (AUC 0.5 in expectation).

   95% intervals: bootstrap over test impressions (1,000 resamples, seeded), also for paired AUC
   differences (``PAIRS``).
4. New items: test candidates never shown in any train impression (popularity gives them 0).
5. The nightly ``recommend_flow(sources=["mind"])`` end to end on the same warehouse (export,
   its own click model fit, ranking, commit): seconds, rows written, users, cold-start users.

    python bench/recommend.py                 # pretrain 180 s + finetune 150 s + SmolLM2 passes (cached after
                                              # the first run) + ~20 click-model fits
    python bench/recommend.py --quick         # 30 s + 30 s budgets, 2 click epochs (smoke run, ~4 min)
    python bench/recommend.py --model var/registry/versions/<version>   # reuse a trained backbone
    python bench/recommend.py --keep /tmp/rec --passes bare               # keep the home; one SmolLM2 pass

Writes ``bench/results/recommend.json``. Published bands for orientation (MIND-small, full
training set): NRMS AUC 0.64, NAML 0.67; MINDdemo NRMS 0.61.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (python bench/x.py): the repository on the path
    sys.path.insert(0, str(ROOT))
from core.settings import use_local_env  # noqa: E402  (no Prefect import inside)

use_local_env(PREFECT_LOGGING_LEVEL="WARNING")  # before anything imports Prefect or transformers

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(width=160)
SOURCE = "mind"
METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")
PUBLISHED = {"NRMS, MIND-small": 0.64, "NAML, MIND-small": 0.67, "NRMS, MINDdemo": 0.61}
METHODS = ("click_model", "click_model_nightly", "click_model_live", "click_model_stored", "click_model_gpt",
           "click_model_gpt_picked", "popularity", "popularity_pit", "popularity_24h", "cosine", "cosine_gpt", "random")
LABELS = {"click_model": "click model as the flow trains it (NRMS over the item vectors)",
          "click_model_nightly": "  + side features frozen at midnight (NEWSPULSE_REC_SIDE_FEATURES)",
          "click_model_live": "  + live side features (request-time scoring, not built)",
          "click_model_stored": "click model, SmolLM2 as a frozen champion's score flow stores it "
                                "(mean, last layer, sentiment prompt), picked settings",
          "click_model_gpt": "click model, 5M GPT item vectors (the previous ones), default settings",
          "click_model_gpt_picked": "click model, 5M GPT item vectors, the settings picked for SmolLM2",
          "popularity": "popularity, nightly (train clicks, frozen at midnight)",
          "popularity_pit": "popularity, live (clicks before each impression)",
          "popularity_24h": "popularity, last 24 h before the test day",
          "cosine": "embedding cosine (mean history vector)", "cosine_gpt": "embedding cosine, 5M GPT vectors",
          "random": "random (seeded floor)"}
PAIRS = (("click_model", "popularity"), ("click_model", "cosine"), ("click_model", "click_model_gpt"),
         ("click_model", "click_model_gpt_picked"),
         ("click_model", "click_model_stored"), ("click_model", "random"), ("click_model_nightly", "click_model"),
         ("click_model_live", "popularity_pit"))
# Click-model settings tried on the picked pooling (each alone, against the defaults).
# The pooling search runs with PICK_BASE: in the first run (bare pass, default settings) the
# z-scored item vectors lifted the picked pooling's valid AUC from 0.6025 to 0.6324 (d_model 256:
# 0.5908, lr 5e-4 x 8 epochs: 0.6206, dropout 0.3: 0.6080), so every pooling is judged with them.
PICK_BASE = {"standardize": True}
CLICK_GRID = ({"standardize": False}, {"lr": 5e-4, "epochs": 8})


def _over(overrides: dict) -> str:
    return "".join(f", {k}={v}" for k, v in overrides.items())


class Clock:
    """Wall-clock sections, in order."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str, since: float) -> float:
        self.seconds[name] = round(time.perf_counter() - since, 2)
        console.print(f"[dim]{name}: {self.seconds[name]:.1f} s (total {time.perf_counter() - self.t0:.0f} s)")
        return self.seconds[name]


def data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("NEWSPULSE_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


def set_threads(threads: int | None) -> dict:
    n = threads or int(os.environ.get("NEWSPULSE_TORCH_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available()}


def use_home(home: Path, data: Path) -> object:
    """Point the settings at a fresh home + warehouse under ``home``; returns the Settings."""
    from core.settings import get_settings

    os.environ["NEWSPULSE_HOME"] = str(home / "var")
    os.environ["NEWSPULSE_WAREHOUSE_PATH"] = str(home / "warehouse.duckdb")
    os.environ["NEWSPULSE_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    return settings


# ----------------------------------------------------------------------------- warehouse + backbone
def section_ingest(results: dict, data: Path, clock: Clock) -> None:
    from flows.ingest import ingest_flow

    t = time.perf_counter()
    batches = ingest_flow(datasets=["mind_titles", "mind_behaviors", "financial_phrasebank"], data_dir=str(data))
    results["ingest"] = {"batches": [{k: b.get(k) for k in ("source", "input", "rows_read", "rows_inserted",
                                                            "rows_quarantined", "labels_inserted", "status")}
                                     for b in batches]}
    results["ingest"]["seconds"] = clock.lap("ingest", t)


def register_existing(settings, model_dir: Path) -> str:
    """Copy a registered version folder into this home's registry and make it champion."""
    from models.registry import load_manifest, new_version, store_version
    from warehouse import registry as db_registry
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    version = new_version()
    vdir = store_version(settings.registry_dir, version, model_dir)
    info = load_manifest(vdir) if (vdir / "card.json").exists() else {}
    with connect(settings) as con:
        migrate(con)
        db_registry.record_model(con, {"model_version": version, "backbone": info.get("backbone_name", "given"),
                                       "heads": info.get("heads", {}), "metrics": info.get("metrics", {}),
                                       "val_score": info.get("val_score", 0.0), "served": "gpt",
                                       "val_split_id": info.get("val_split_id", "bench"),
                                       "artifact_path": str(vdir)})
        db_registry.promote(con, version, f"bench/recommend.py --model {model_dir}")
    return version


def limit_topic_labels(settings, n: int, seed: int) -> dict:
    """Keep ``n`` of the MIND topic labels (a fixed hash sample) in this bench's own warehouse.

    Fine-tuning's fixed costs grow with the labelled set, not with the time budget: evaluating
    val + test and fitting the TF-IDF baseline's C x class-weight grid on 41k titles took ~15 min
    on 2 shared cores. Every title is still ingested, pretrained on and embedded.
    """
    from warehouse.connection import connect

    with connect(settings) as con:
        before = con.execute("SELECT count(*) FROM labels WHERE dataset = ? AND task = 'topic'", [SOURCE]).fetchone()[0]
        if n and before > n:
            con.execute(
                "DELETE FROM labels WHERE dataset = $ds AND task = 'topic' AND item NOT IN (SELECT item FROM labels "
                "WHERE dataset = $ds AND task = 'topic' ORDER BY hash(item || $salt), item LIMIT $n)",
                {"ds": SOURCE, "salt": f":bench-recommend:{seed}", "n": int(n)})
        after = con.execute("SELECT count(*) FROM labels WHERE dataset = ? AND task = 'topic'", [SOURCE]).fetchone()[0]
    return {"available": int(before), "used": int(after)}


def section_backbone(results: dict, args, settings, clock: Clock) -> None:
    """Register ``--model`` or pretrain + fine-tune one here; then embed every article."""
    from flows.finetune import finetune_flow
    from flows.pretrain import pretrain_flow
    from flows.score import score_flow

    from warehouse import registry as db_registry
    from warehouse.connection import connect

    b: dict = {}
    with connect(settings) as con:
        existing = db_registry.champion(con)
    if existing is not None:  # --keep on a home that already holds a champion (debugging reruns)
        b["model_version"], b["reused_champion"] = existing["model_version"], True
        console.print(f"[yellow]reusing the champion {existing['model_version']} already in {settings.warehouse_path}")
    elif args.model:
        t = time.perf_counter()
        b["given"] = str(args.model)
        b["model_version"] = register_existing(settings, Path(args.model))
        b["seconds_register"] = clock.lap("register model", t)
    else:
        t = time.perf_counter()
        # Labels first: pretraining leaves every labelled text out of its corpus (they may be
        # validation or test), so with all 51,282 MIND titles labelled the corpus would be empty.
        # The 41k titles without a kept label are the pretraining corpus.
        b["topic_labels"] = limit_topic_labels(settings, args.topic_examples, args.seed)
        pre = pretrain_flow(run_name="bench-rec-pretrain", preset=args.preset, sources=[SOURCE],
                            max_steps=args.pretrain_steps, time_budget_s=args.pretrain_s, seed=args.seed)
        b["pretrain"] = {k: pre.get(k) for k in ("steps", "train_loss", "val_loss", "val_perplexity", "tokens_per_s",
                                                  "seconds", "preset")}
        b["pretrain"]["seconds_wall"] = clock.lap("pretrain", t)
        t = time.perf_counter()
        ft = finetune_flow(sentiment_datasets=["phrasebank_50agree"], topic_datasets=[SOURCE], base=pre["model_dir"],
                           epochs=args.finetune_epochs, time_budget_s=args.finetune_s, seed=args.seed,
                           run_name="bench-rec-finetune")
        b["finetune"] = {"model_version": ft["model_version"], "promoted": ft["promoted"], "reason": ft["reason"],
                         "val_scores": ft.get("val_scores"), "served": ft.get("served")}
        b["finetune"]["seconds_wall"] = clock.lap("finetune", t)
        b["model_version"] = ft["model_version"]
        if not ft["promoted"]:
            raise RuntimeError(f"the fine-tuned model was not promoted: {ft['reason']}")
    t = time.perf_counter()
    sc = score_flow(limit=10_000_000)
    b["score"] = {k: sc.get(k) for k in ("rows_inserted", "embeddings_inserted", "shards", "score_seconds",
                                          "docs_per_s", "reason")}
    b["score"]["seconds_wall"] = clock.lap("score", t)

    with connect(settings) as con:
        n_mind, n_emb = con.execute(
            "SELECT count(DISTINCT a.article_id), count(DISTINCT e.article_id) FROM articles a "
            "LEFT JOIN embeddings e ON e.article_id = a.article_id AND e.model_version = ? WHERE a.source = ?",
            [b["model_version"], SOURCE]).fetchone()
        width = con.execute("SELECT len(embedding) FROM embeddings WHERE model_version = ? LIMIT 1",
                            [b["model_version"]]).fetchone()
    b["mind_articles"], b["mind_embedded"], b["embedding_dim"] = int(n_mind), int(n_emb), int(width[0]) if width else 0
    console.print(f"backbone {b['model_version']}: {n_emb:,} of {n_mind:,} MIND titles embedded "
                  f"(dim {b['embedding_dim']})")
    if n_emb < n_mind:
        console.print(f"[yellow]{n_mind - n_emb} MIND titles have no embedding")
    results["backbone"] = b


# ----------------------------------------------------------------------------- offline evaluation
def _subset(imps, idx):
    from models.click import Impressions

    idx = list(idx)
    return Impressions([imps.history[i] for i in idx], [imps.candidates[i] for i in idx],
                       [imps.labels[i] for i in idx],
                       None if imps.features is None else [imps.features[i] for i in idx])


def _sizes(imps, meta: pd.DataFrame) -> dict:
    n_cand = sum(len(c) for c in imps.candidates)
    clicks = sum(int(lab.sum()) for lab in imps.labels)
    usable = sum(1 for lab in imps.labels if 0 < lab.sum() < len(lab))
    return {"impressions": len(imps), "usable_impressions": usable, "candidates": n_cand, "clicks": clicks,
            "ctr": clicks / max(n_cand, 1), "users": int(meta["user_id"].nunique()),
            "empty_history": sum(1 for h in imps.history if len(h) == 0),
            "distinct_items_shown": len(np.unique(np.concatenate(imps.candidates))) if n_cand else 0,
            "first": str(meta["time"].min()), "last": str(meta["time"].max())}


def _clicks(imps, n_items: int) -> np.ndarray:
    out = np.zeros(n_items, dtype=np.float64)
    for c, lab in zip(imps.candidates, imps.labels, strict=True):
        np.add.at(out, c[lab == 1], 1)
    return out


def per_impression(labels: list[np.ndarray], scores: list[np.ndarray]) -> np.ndarray:
    """(n_usable, 4) AUC, MRR, nDCG@5, nDCG@10 per impression with a click and a non-click."""
    from models.rank_metrics import auc, mrr, ndcg

    rows = [(auc(y, s), mrr(y, s), ndcg(y, s, 5), ndcg(y, s, 10))
            for y, s in zip(labels, scores, strict=True) if 0 < int(np.sum(y)) < len(y)]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def bootstrap(per: dict[str, np.ndarray], n: int, seed: int) -> tuple[dict, dict]:
    """95% bootstrap intervals of each method's mean metrics and of the paired AUC differences (PAIRS)."""
    rng = np.random.default_rng(seed)
    m = len(next(iter(per.values())))
    idx = rng.integers(0, m, size=(n, m))
    ci = {}
    for name, x in per.items():
        means = x[idx].mean(axis=1)  # (n, 4)
        lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
        ci[name] = {k: [float(lo[j]), float(hi[j])] for j, k in enumerate(METRICS)}
    diffs = {}
    for a, b in PAIRS:
        if a in per and b in per:
            x = per[a][:, 0] - per[b][:, 0]
            d = x[idx].mean(axis=1)
            diffs[f"{a} - {b}"] = {"auc_diff": float(x.mean()),
                                   "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]}
    return ci, diffs


def item_texts(settings, item_ids: np.ndarray) -> list[str]:
    """The text the score flow embeds (``title || ' ' || body``) of each item, in ``item_ids`` order."""
    from warehouse.connection import connect

    with connect(settings) as con:
        con.register("want", pd.DataFrame({"article_id": list(item_ids)}))
        rows = con.execute(
            "SELECT a.article_id, concat_ws(' ', a.title, a.body) FROM want w JOIN "
            "(SELECT DISTINCT ON (article_id) * FROM articles ORDER BY article_id, ingested_at) a USING (article_id)"
        ).fetchall()
        con.unregister("want")
    text = dict(rows)
    return [text.get(i, "") for i in item_ids]


def fit_score(vectors, fit, valid, test, cfg, args) -> tuple[dict, list[np.ndarray], float]:
    """Train on ``fit`` with early stopping on ``valid``; ``(stats, test logits, seconds)``."""
    from models.click import score_impressions
    from models.train_click import train_click_model

    t = time.perf_counter()
    model, stats = train_click_model(vectors, fit, cfg, valid=valid, time_budget_s=args.click_budget_s,
                                     device="cpu", progress=False)
    return stats, score_impressions(model, vectors, test, device="cpu", logits=True), time.perf_counter() - t


def pick_smollm2(results: dict, args, settings, inputs, fit, valid, test, clock: Clock) -> dict:
    """SmolLM2 item vectors (cached passes), every pooling variant and a few click-model settings,
    each trained on ``fit`` and judged on ``valid`` (the early-stopping slice); the test day is
    scored for the record but never read by the pick. Returns the vector sets the table needs."""
    from dataclasses import replace

    from models.click import ClickConfig
    from models.rank_metrics import evaluate_impressions
    from bench import recommend_vectors as rv

    t = time.perf_counter()
    texts = item_texts(settings, inputs.item_ids)
    passes = [p for p in args.passes.split(",") if p]
    feats, pass_stats = {}, {}
    for name in passes:
        feats[name], pass_stats[name] = rv.pass_features(texts, name, log=console.print)
        clock.lap(f"smollm2 {name} ({pass_stats[name]['computed']:,} computed, "
                  f"{pass_stats[name]['cached']:,} cached)", t)
        t = time.perf_counter()
    epochs = {"epochs": args.click_epochs} if args.click_epochs else {}
    trials, vec_of = [], {}

    def trial(label: str, pass_name: str, pooling, overrides: dict) -> dict:
        vecs = vec_of.setdefault((pass_name, pooling), rv.variant_vectors(feats, pass_name, pooling))
        cfg = replace(ClickConfig(d_item=vecs.shape[1], seed=args.seed, **epochs), **overrides)
        stats, test_scores, sec = fit_score(vecs, fit, valid, test, cfg, args)
        row = {"label": label, "pass": pass_name, "pooling": pooling.name(), "overrides": overrides,
               "d_item": int(vecs.shape[1]), "valid_auc": float((stats.get("best_valid") or {}).get("auc", np.nan)),
               "best_epoch": stats["best_epoch"], "epochs_run": stats["epochs_run"], "seconds": round(sec, 1),
               # Recorded, never used to pick: the pick reads valid_auc only.
               "test_auc_not_used_for_pick": evaluate_impressions(test.labels, test_scores)["auc"]}
        trials.append(row)
        console.print(f"[dim]  {label} {overrides or ''}: valid AUC {row['valid_auc']:.4f} "
                      f"(epoch {row['best_epoch']}, {sec:.0f} s)")
        return row

    for label, pass_name, pooling in rv.VARIANTS:  # 1. pooling, default click-model settings
        if pass_name in feats:
            trial(label, pass_name, pooling, dict(PICK_BASE))
    best = max(trials, key=lambda r: r["valid_auc"])
    pooling = next(p for lab, _, p in rv.VARIANTS if lab == best["label"])
    for overrides in CLICK_GRID:  # 2. click-model settings on the picked pooling
        trial(best["label"], best["pass"], pooling, {**PICK_BASE, **overrides})
    best = max(trials, key=lambda r: r["valid_auc"])
    clock.lap("smollm2 pooling + settings pick", t)
    stored = next(((p, pl) for lab, p, pl in rv.VARIANTS if lab.startswith("as stored") and p in feats), None)
    results["smollm2"] = {"passes": pass_stats, "trials": trials, "picked": best, "grid": CLICK_GRID,
                          "pick_base": PICK_BASE}
    out = {"vectors": vec_of[(best["pass"], pooling)], "overrides": best["overrides"], "label": best["label"]}
    if stored is not None:
        out["stored_vectors"] = rv.variant_vectors(feats, *stored)
    return out


def section_offline(results: dict, args, settings, clock: Clock) -> None:
    from dataclasses import replace

    from models.click import ClickConfig, Impressions
    from models.rank_metrics import evaluate_impressions
    from models.recommend import (
        FEATURE_NAMES, cosine_scores, impressions_from_events, load_rec_inputs, log_click_rate, popularity_scores,
        streaming_features)
    from warehouse import registry as db_registry
    from warehouse.connection import connect
    from warehouse.recommend import export_rec_inputs, newest_impression

    t = time.perf_counter()
    out_dir = settings.staging_dir / "bench-recommend"
    with connect(settings) as con:
        version = db_registry.champion(con)["model_version"]
        as_of = newest_impression(con, SOURCE)
        as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        first = con.execute("SELECT min(time) FROM behaviors WHERE source = ?", [SOURCE]).fetchone()[0]
        first = first if first.tzinfo else first.replace(tzinfo=UTC)
        history_days = (as_of - first).total_seconds() / 86400 + 1.0  # the whole log
        counts = export_rec_inputs(con, source=SOURCE, model_version=version, as_of=as_of, history_days=history_days,
                                   candidate_hours=settings.rec_candidate_hours, out_dir=out_dir)
    inputs = load_rec_inputs(counts["events_path"], counts["items_path"])
    imps, meta = impressions_from_events(inputs)
    export = {k: v for k, v in counts.items() if not k.endswith("_path")}
    export.update(as_of=as_of.isoformat(), history_days=round(history_days, 3), model_version=version,
                  items_with_vector=int(inputs.has_vector.sum()), vector_dim=int(inputs.vectors.shape[1]))
    clock.lap("export + load", t)

    # Time split: the last calendar day is test; the newest 10% of the rest validates the click model.
    times = pd.DatetimeIndex(meta["time"])
    test_day = times.max().normalize()
    is_test = np.asarray(times >= test_day)
    train_idx = np.flatnonzero(~is_test)  # meta is in time order
    test_idx = np.flatnonzero(is_test)
    n_valid = max(1, int(round(len(train_idx) * args.valid_frac)))
    fit_idx, valid_idx = train_idx[:-n_valid], train_idx[-n_valid:]
    # Side features as the nightly flow computes them (counts frozen at each impression's midnight),
    # and live (every earlier impression); the click-rate prior comes from the fit impressions.
    ctr0 = log_click_rate(imps, fit_idx)
    features = {cut: streaming_features(inputs, imps, meta, ctr0=ctr0, cut_hours=cut) for cut in (24.0, 0.0)}
    imps.features = features[24.0]
    train, fit, valid, test = (_subset(imps, i) for i in (train_idx, fit_idx, valid_idx, test_idx))
    splits = {"train (all before test day)": _sizes(train, meta.iloc[train_idx]),
              "  of which fit": _sizes(fit, meta.iloc[fit_idx]),
              "  of which valid (newest 10%: early stopping, picks)": _sizes(valid, meta.iloc[valid_idx]),
              "test (last day)": _sizes(test, meta.iloc[test_idx])}
    n_items = len(inputs.item_ids)

    # New items: test candidates never shown in train.
    shown_train = np.zeros(n_items, dtype=bool)
    for c in train.candidates:
        shown_train[c] = True
    clicks_train = _clicks(train, n_items)
    test_flat = np.concatenate(test.candidates)
    test_lab = np.concatenate(test.labels)
    test_items = np.unique(test_flat)
    new_items = {
        "test_distinct_candidates": int(len(test_items)),
        "never_shown_in_train": int((~shown_train[test_items]).sum()),
        "never_clicked_in_train": int((clicks_train[test_items] == 0).sum()),
        "candidate_slots": int(len(test_flat)),
        "slots_never_shown_in_train": int((~shown_train[test_flat]).sum()),
        "slots_zero_train_clicks": int((clicks_train[test_flat] == 0).sum()),
        "test_clicks": int(test_lab.sum()),
        "clicks_on_items_never_shown_in_train": int(test_lab[~shown_train[test_flat]].sum()),
        "clicks_on_items_zero_train_clicks": int(test_lab[clicks_train[test_flat] == 0].sum()),
        "test_impressions_all_candidates_new": int(sum(1 for c in test.candidates if not shown_train[c].any())),
    }
    old_slots = shown_train[test_flat]
    new_items["ctr_slots_shown_in_train"] = float(test_lab[old_slots].mean()) if old_slots.any() else None
    new_items["ctr_slots_never_shown_in_train"] = float(test_lab[~old_slots].mean()) if (~old_slots).any() else None

    # --- rankers
    scores: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    epochs = {"epochs": args.click_epochs} if args.click_epochs else {}
    train_stats, cfgs = {}, {}
    # Item vectors: the champion's stored embeddings (the 5M GPT trained above: the previous item
    # vectors) and SmolLM2's, pooling and click-model settings picked on the early-stopping slice.
    gpt = inputs.vectors
    smol = None if args.no_smollm2 else pick_smollm2(results, args, settings, inputs, fit, valid, test, clock)
    vectors = gpt if smol is None else smol["vectors"]
    overrides = {} if smol is None else smol["overrides"]

    # Our click model as the nightly flow trains and serves it (NRMS user encoder + the wide part
    # over the nightly side features), the same on live features, and the content-only ablation.
    def with_features(split, idx, cut):
        return Impressions(split.history, split.candidates, split.labels, [features[cut][i] for i in idx])

    live = {k: with_features(s_, i_, 0.0) for k, s_, i_ in (("fit", fit, fit_idx), ("valid", valid, valid_idx),
                                                            ("test", test, test_idx))}
    runs = [("click_model", vectors, overrides, 0, fit, valid, test),
            ("click_model_nightly", vectors, overrides, len(FEATURE_NAMES), fit, valid, test),
            ("click_model_live", vectors, overrides, len(FEATURE_NAMES), live["fit"], live["valid"], live["test"])]
    if smol is not None:  # the previous vectors with the previous (default) settings and with the picked ones
        runs.append(("click_model_gpt", gpt, {}, 0, fit, valid, test))
        runs.append(("click_model_gpt_picked", gpt, overrides, 0, fit, valid, test))
        if "stored_vectors" in smol:
            runs.append(("click_model_stored", smol["stored_vectors"], overrides, 0, fit, valid, test))
    for name, vecs, over, n_features, fit_s, valid_s, test_s in runs:
        cfg = replace(ClickConfig(d_item=int(vecs.shape[1]), seed=args.seed, n_features=n_features, **epochs), **over)
        stats, scores[name], sec = fit_score(vecs, fit_s, valid_s, test_s, cfg, args)
        seconds[name] = round(sec, 2)
        train_stats[name], cfgs[name] = stats, cfg
        console.print(f"[dim]{name} train + score: {sec:.1f} s")

    t = time.perf_counter()
    scores["popularity"] = popularity_scores(test)  # the flow's baseline: clicks before the test day
    seconds["popularity"] = round(time.perf_counter() - t, 3)
    scores["popularity_pit"] = popularity_scores(live["test"])  # clicks before each impression
    last24 = np.flatnonzero(np.asarray((times < test_day) & (times >= test_day - pd.Timedelta(hours=24))))
    clicks_24h = _clicks(_subset(imps, last24), n_items)
    scores["popularity_24h"] = [clicks_24h[c] for c in test.candidates]
    scores["cosine"] = cosine_scores(test, vectors)
    if smol is not None:
        scores["cosine_gpt"] = cosine_scores(test, gpt)
    rng = np.random.default_rng(args.seed)
    scores["random"] = [rng.random(len(c)) for c in test.candidates]
    methods = [m for m in METHODS if m in scores]
    labels = dict(LABELS)
    if smol is not None:
        labels["click_model"] = f"click model, SmolLM2 item vectors ({smol['label']}{_over(overrides)})"
        labels["cosine"] = f"embedding cosine, SmolLM2 ({smol['label']})"

    metrics = {name: evaluate_impressions(test.labels, scores[name]) for name in methods}
    per = {name: per_impression(test.labels, scores[name]) for name in methods}
    ci, diffs = bootstrap(per, args.bootstrap, args.seed)
    # Test users with and without any history (cold users get the learned empty vector).
    hist_len = np.array([len(h) for h in test.history])
    groups = {}
    for gname, mask in (("history", hist_len > 0), ("no history", hist_len == 0)):
        idx = np.flatnonzero(mask)
        groups[gname] = {m: evaluate_impressions([test.labels[i] for i in idx], [scores[m][i] for i in idx])
                         for m in ("click_model", "click_model_nightly", "popularity", "cosine")}
    results["offline"] = {
        "export": export, "test_day": str(test_day.date()), "splits": splits, "new_items": new_items,
        "side_features": list(FEATURE_NAMES),
        "click_config": {n: {k: getattr(c, k) for k in c.__dataclass_fields__} for n, c in cfgs.items()},
        "click_training": {n: {k: v for k, v in st.items() if k not in ("valid_metrics", "best_valid")} | {
            "valid_auc_per_epoch": [round(m["auc"], 4) for m in st.get("valid_metrics", [])]}
            for n, st in train_stats.items()},
        "metrics": metrics, "ci95": ci, "paired": diffs, "by_history": groups, "seconds": seconds,
        "published_auc": PUBLISHED, "methods": methods, "labels": {m: labels[m] for m in methods},
    }


# ----------------------------------------------------------------------------- the nightly flow
def section_flow(results: dict, settings, clock: Clock) -> None:
    from flows.recommend import recommend_flow
    from warehouse.connection import connect

    t = time.perf_counter()
    out = recommend_flow(sources=[SOURCE])
    seconds = clock.lap("recommend_flow", t)
    r = out.get(SOURCE, {})
    with connect(settings) as con:
        rows, users = con.execute("SELECT count(*), count(DISTINCT user_id) FROM rec_features WHERE source = ?",
                                  [SOURCE]).fetchone()
        runs = con.execute("SELECT count(*) FROM rec_runs WHERE source = ?", [SOURCE]).fetchone()[0]
    results["flow"] = {"seconds": seconds, "summary": {k: v for k, v in r.items() if k != "metrics"},
                       "flow_metrics": r.get("metrics"), "rec_features_rows": int(rows),
                       "rec_features_users": int(users), "rec_runs": int(runs),
                       "settings": {k: getattr(settings, k) for k in (
                           "rec_history_days", "rec_candidate_hours", "rec_popularity_hours", "rec_max_candidates",
                           "rec_top_k", "rec_click_epochs", "rec_click_time_budget_s")}}


# ----------------------------------------------------------------------------- printing
def _f(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.4f}"


def print_results(r: dict) -> None:
    if "backbone" in r:
        b = r["backbone"]
        if "pretrain" in b:
            p, f = b["pretrain"], b["finetune"]
            console.print(f"pretrain: {p['steps']} steps, val perplexity {p['val_perplexity']:.1f}, "
                          f"{p['tokens_per_s']:.0f} tokens/s, {p['seconds_wall']:.0f} s; finetune: val "
                          f"{ {k: round(v, 3) for k, v in (f['val_scores'] or {}).items()} }, served {f['served']}, "
                          f"{f['seconds_wall']:.0f} s")
        s = b["score"]
        console.print(f"score_flow: {s['rows_inserted']:,} articles in {s['seconds_wall']:.0f} s "
                      f"({s['docs_per_s']} docs/s); {b['mind_embedded']:,} / {b['mind_articles']:,} MIND titles embedded")
    if "offline" not in r:
        return
    o = r["offline"]
    e = o["export"]
    console.print(f"export: {e['impressions']:,} impressions, {e['users']:,} users, {e['events']:,} events "
                  f"({e['events_unmapped']} unmapped), {e['items']:,} items ({e['items_without_embedding']} without "
                  f"embedding), as_of {e['as_of']}")
    t = Table(title=f"Time split (test day {o['test_day']})")
    for c in ("split", "impressions", "usable", "candidates", "clicks", "CTR", "users", "empty history",
              "distinct items", "from", "to"):
        t.add_column(c, justify="left" if c in ("split", "from", "to") else "right")
    for name, s in o["splits"].items():
        t.add_row(name, f"{s['impressions']:,}", f"{s['usable_impressions']:,}", f"{s['candidates']:,}",
                  f"{s['clicks']:,}", f"{s['ctr']:.2%}", f"{s['users']:,}", f"{s['empty_history']:,}",
                  f"{s['distinct_items_shown']:,}", s["first"][:16], s["last"][:16])
    console.print(t)
    n = o["new_items"]
    console.print(f"new items: {n['never_shown_in_train']:,} of {n['test_distinct_candidates']:,} distinct test "
                  f"candidates ({n['never_shown_in_train'] / n['test_distinct_candidates']:.0%}) were never shown in "
                  f"train, {n['never_clicked_in_train']:,} never clicked; {n['slots_never_shown_in_train']:,} of "
                  f"{n['candidate_slots']:,} candidate slots; {n['clicks_on_items_never_shown_in_train']:,} of "
                  f"{n['test_clicks']:,} test clicks ({n['clicks_on_items_never_shown_in_train'] / max(n['test_clicks'], 1):.0%}) "
                  f"went to never-shown items, {n['clicks_on_items_zero_train_clicks']:,} to items with no train click; CTR "
                  f"of slots shown in train {n['ctr_slots_shown_in_train']:.2%} vs never shown "
                  f"{n['ctr_slots_never_shown_in_train']:.2%}")
    m = o["metrics"]
    used = m["random"]["impressions"]
    t = Table(title=f"Test day: {used:,} impressions with a click and a non-click "
                    f"({m['random']['skipped']} skipped); 95% bootstrap intervals")
    t.add_column("ranker")
    for c in ("AUC", "MRR", "nDCG@5", "nDCG@10", "AUC 95% CI"):
        t.add_column(c, justify="right")
    for name in o["methods"]:
        x, ci = m[name], o["ci95"][name]["auc"]
        t.add_row(o["labels"][name], *[_f(x[k]) for k in METRICS], f"{ci[0]:.3f}-{ci[1]:.3f}")
    for name, auc in PUBLISHED.items():
        t.add_row(f"[dim]published {name} (AUC only)", f"[dim]{auc:.2f}", "", "", "", "")
    console.print(t)
    if "smollm2" in r:
        sm = r["smollm2"]
        for name, st in sm["passes"].items():
            rate = f", {st['titles_per_s']} titles/s" if st.get("titles_per_s") else ""
            console.print(f"SmolLM2 pass {name}: {st['texts']:,} item texts, {st['cached']:,} from the cache, "
                          f"{st['computed']:,} computed in {st['seconds']:.0f} s{rate}")
        t = Table(title="SmolLM2 item vectors: picked on the early-stopping slice (valid AUC); test AUC only recorded")
        for c in ("pooling", "settings", "d_item", "valid AUC", "best epoch", "s", "test AUC (not used)"):
            t.add_column(c, justify="left" if c in ("pooling", "settings") else "right")
        for row in sm["trials"]:
            mark = " *" if row is sm["picked"] or row == sm["picked"] else ""
            t.add_row(row["label"] + mark, _over(row["overrides"]).lstrip(", ") or "defaults", str(row["d_item"]),
                      _f(row["valid_auc"]), str(row["best_epoch"]), f"{row['seconds']:.0f}",
                      _f(row["test_auc_not_used_for_pick"]))
        console.print(t)
    for name, d in o["paired"].items():
        console.print(f"paired AUC {name}: {d['auc_diff']:+.4f} (95% CI {d['ci95'][0]:+.4f} to {d['ci95'][1]:+.4f})")
    for name, ct in o["click_training"].items():
        console.print(f"{name}: {ct['epochs_run']} epochs ({ct['stopped']}), best epoch {ct['best_epoch']}, valid AUC "
                      f"per epoch {ct['valid_auc_per_epoch']}, {ct['train_samples']:,} samples, {ct['seconds']:.1f} s")
    g = o["by_history"]
    console.print("by history: " + "; ".join(
        f"{k} ({v['click_model']['impressions']} imps): " + ", ".join(f"{n} {_f(x['auc'])}" for n, x in v.items())
        for k, v in g.items()))
    if "flow" in r:
        f = r["flow"]
        s = f["summary"]
        t = Table(title="Nightly recommend_flow(sources=['mind']) on the same warehouse")
        for c in ("seconds", "rows written", "users", "cold-start users", "candidates", "click model valid AUC",
                  "popularity", "cosine"):
            t.add_column(c, justify="right")
        fm = f.get("flow_metrics") or {}
        auc = lambda k: _f(fm[k]["auc"]) if isinstance(fm.get(k), dict) else "-"  # noqa: E731
        t.add_row(f"{f['seconds']:.1f}", f"{s.get('rows_written', 0):,}", f"{s.get('users', 0):,}",
                  f"{s.get('cold_start_users', 0):,}", f"{s.get('candidates', 0):,}", auc("click_model"),
                  auc("popularity"), auc("cosine"))
        console.print(t)
        if s.get("reason"):
            console.print(f"[yellow]flow: {s['reason']}")


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 s pretrain, 30 s finetune on 2,000 "
                    "MIND labels, 2 click epochs")
    ap.add_argument("--model", type=Path, default=None, help="a registered model version folder to use as backbone")
    ap.add_argument("--data-dir", default=None, help="datasets root (default $NEWSPULSE_DATA_DIR or ../shared/data)")
    ap.add_argument("--preset", default="small", help="backbone preset when training one here")
    ap.add_argument("--pretrain-s", type=float, default=180.0, help="pretraining time budget (s)")
    ap.add_argument("--pretrain-steps", type=int, default=300, help="pretraining steps (LR schedule length)")
    ap.add_argument("--finetune-s", type=float, default=150.0, help="fine-tuning time budget (s)")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--topic-examples", type=int, default=10_000,
                    help="MIND category labels kept for fine-tuning (hash sample; 0 = all 51,282)")
    ap.add_argument("--click-epochs", type=int, default=None, help="click model epochs (default ClickConfig's)")
    ap.add_argument("--click-budget-s", type=float, default=300.0, help="click model time budget (s)")
    ap.add_argument("--valid-frac", type=float, default=0.1, help="newest share of train used for early stopping")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default $NEWSPULSE_TORCH_THREADS or cpu count)")
    ap.add_argument("--no-smollm2", action="store_true", help="only the champion's stored vectors (no SmolLM2)")
    ap.add_argument("--passes", default="bare,sentiment_prompt,title_prompt",
                    help="SmolLM2 passes to compute/read (bench/recommend_vectors.py PASSES), comma-separated")
    ap.add_argument("--skip-offline", action="store_true", help="only build the home (ingest, backbone, "
                    "embeddings): with --keep, a later run reuses it")
    ap.add_argument("--skip-flow", action="store_true", help="skip timing the nightly recommend_flow")
    ap.add_argument("--keep", type=Path, default=None, help="use (and keep) this folder as the home instead of a temp one")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recommend.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.pretrain_s, args.pretrain_steps = min(args.pretrain_s, 30.0), min(args.pretrain_steps, 40)
        args.finetune_s, args.finetune_epochs = min(args.finetune_s, 30.0), 1
        args.topic_examples = min(args.topic_examples or 2_000, 2_000)
        args.click_epochs = args.click_epochs or 2
        args.click_budget_s = min(args.click_budget_s, 60.0)
        os.environ.setdefault("NEWSPULSE_REC_CLICK_EPOCHS", "2")

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "args": {k: str(v) for k, v in vars(args).items()}}
    results["env"] = set_threads(args.threads)
    load = [os.getloadavg()[0]]
    clock = Clock()
    data = data_dir(args.data_dir)
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        home = args.keep or Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        settings = use_home(home, data)
        console.print(f"home {home}; data {data}; torch threads {results['env']['torch_threads']}")
        t = time.perf_counter()
        with prefect_test_harness(server_startup_timeout=180):
            clock.lap("prefect test server", t)
            section_ingest(results, data, clock)
            load.append(os.getloadavg()[0])
            section_backbone(results, args, settings, clock)
            load.append(os.getloadavg()[0])
            if not args.skip_offline:
                section_offline(results, args, settings, clock)
                load.append(os.getloadavg()[0])
            if not args.skip_flow:
                section_flow(results, settings, clock)
                load.append(os.getloadavg()[0])
    results["seconds"] = {**clock.seconds, "total": round(time.perf_counter() - clock.t0, 1)}
    results["load_avg_1min"] = load
    print_results(results)
    console.print(f"total {results['seconds']['total']:.0f} s; 1-min load average {min(load):.1f}-{max(load):.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=_json_default), encoding="utf-8")
    console.print(f"wrote {args.out}")
    return results


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (datetime, pd.Timestamp, timedelta, Path)):
        return str(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


if __name__ == "__main__":
    main()
