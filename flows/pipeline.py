"""The whole chain once: what ``make demo`` / ``newspulse demo`` runs.

Today: generate the seeded demo stream -> ingest articles, gold labels and click logs (each a
validated ingest run) -> optionally the public datasets. Later stages (training, scoring,
monitoring, recommendations) join this flow as they land.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.ingest import ingest_flow
from newspulse.settings import get_settings
from tasks.demo import generate_demo_stream

DEFAULT_DATASETS = [
    "financial_phrasebank", "ag_news", "bbc", "reuters", "cnbc", "guardian", "gold_news",
    "mind_titles", "mind_behaviors",
]


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    seed: int = 7,
    days: int = 28,
    articles_per_day: int = 400,
    n_users: int = 300,
    datasets: list[str] | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Generate the demo stream and ingest it (plus ``datasets`` from ``data_dir`` if given)."""
    settings = get_settings()
    paths = generate_demo_stream(str(settings.demo_dir), seed, days, articles_per_day, n_users)

    # The stream, its gold labels and its click logs are separate inputs of one source.
    # Bad records are part of the demo: the run must not fail on them, they go to quarantine.
    batches = ingest_flow(files=[paths["articles"], paths["labels"]], source="synthetic")
    batches += ingest_flow(files=[paths["behaviors"]], source="synthetic", file_format="mind_behaviors")
    if datasets:
        batches += ingest_flow(datasets=datasets, data_dir=data_dir or str(settings.data_dir))
    return {"paths": paths, "batches": batches}
