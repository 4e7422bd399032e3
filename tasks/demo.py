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
