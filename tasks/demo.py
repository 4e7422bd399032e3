"""Demo tasks: generate the seeded synthetic stream the demo and tests run on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from sources.synthetic import SyntheticConfig, generate_stream, summarize


@task(name="generate-demo-stream", cache_policy=NO_CACHE)
def generate_demo_stream(out_dir: str, seed: int = 7, days: int = 28, articles_per_day: int = 400,
                         n_users: int = 300, start: str = "2026-10-01") -> dict[str, str]:
    """Write the synthetic articles, labels, click logs and ground truth; returns their paths."""
    config = SyntheticConfig(
        seed=seed, days=days, articles_per_day=articles_per_day, n_users=n_users,
        start=datetime.fromisoformat(start).replace(tzinfo=UTC),
    )
    stream = generate_stream(Path(out_dir), config)
    counts = summarize(stream)
    get_run_logger().info("generated %s", counts)
    create_markdown_artifact(
        key="demo-stream",
        markdown="# Synthetic demo stream\n\n| what | count |\n|---|---:|\n"
        + "".join(f"| {k} | {v} |\n" for k, v in counts.items()),
    )
    return {
        "articles": str(stream.articles_path),
        "labels": str(stream.labels_path),
        "behaviors": str(stream.behaviors_path),
        "ground_truth": str(stream.ground_truth_path),
    }


@task(name="generate-support-stream", cache_policy=NO_CACHE)
def generate_support_demo_stream(out_dir: str, seed: int = 7, days: int = 14, messages_per_day: int = 200,
                                 start: str = "2026-10-01", data_dir: str | None = None) -> dict:
    """The demo's support inbox over the news stream's days, with one injected outage (its onset is
    the ground truth the intent monitor's delay is measured on); BANKING77 test texts when
    ``data_dir`` holds the dataset, else templates plus a labelled training file. Returns
    ``{"paths": {...}, "ground_truth": {...}}`` (:func:`sources.synthetic_support.generate_support_stream`)."""
    from sources.synthetic_support import generate_support_stream

    got = generate_support_stream(Path(out_dir) / "support", seed=seed, days=days, messages_per_day=messages_per_day,
                                  start=datetime.fromisoformat(start).replace(tzinfo=UTC), data_dir=data_dir)
    truth = got["ground_truth"]
    outage = truth["outage"]
    get_run_logger().info("support stream: %d messages (%s texts), outage %s to %s on %s",
                          truth["counts"]["messages"], truth["texts"], outage["onset"], outage["end"],
                          ", ".join(outage["intents"]))
    create_markdown_artifact(
        key="demo-support-stream",
        markdown="# Synthetic support stream\n\n| what | value |\n|---|---|\n"
        + "".join(f"| {k} | {v} |\n" for k, v in {**truth["counts"], "texts": truth["texts"],
                                                   "outage onset (ground truth)": outage["onset"],
                                                   "outage end": outage["end"],
                                                   "outage intents": ", ".join(outage["intents"])}.items()),
    )
    return got
