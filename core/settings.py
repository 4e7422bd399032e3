"""One typed settings object for the whole project.

Every knob lives here and is read from the environment once (prefix ``NEWSPULSE_``, or a ``.env``
file in the working directory). Code below the CLI and the flows receives a ``Settings`` instance
as an argument; nothing deep inside reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


# Environment for a local, SQLite-backed Prefect server (the ephemeral one, the tests' one). Its
# task-run recorder otherwise commits every event on its own, and a `duckdb-writer` acquisition
# that lands meanwhile waits ~2 s on SQLite's lock (bench/README.md, scoring). Read by the CLI,
# the tests and bench/score.py before a server starts; a Postgres-backed server does not need it.
LOCAL_PREFECT_SERVER_ENV: dict[str, str] = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


# What a local process (the CLI, the tests, the benchmarks) sets before anything imports Prefect or
# transformers: no hub downloads, no telemetry, quiet tokenizers. Only where the environment has
# no value yet, so a user can still point HF_HUB_OFFLINE=0 at the hub.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


def use_local_env(**extra: str) -> None:
    """Set :data:`OFFLINE_ENV`, :data:`LOCAL_PREFECT_SERVER_ENV` and ``extra`` where still unset."""
    for key, value in {**OFFLINE_ENV, **LOCAL_PREFECT_SERVER_ENV, **extra}.items():
        os.environ.setdefault(key, value)


class Settings(BaseSettings):
    """Runtime configuration. Override any field with ``NEWSPULSE_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="NEWSPULSE_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    warehouse_path: Path = Field(
        Path("warehouse/newspulse.duckdb"), description="DuckDB file holding every table and view."
    )
    home: Path = Field(Path("var"), description="Runtime folder: staging files, demo data, reports.")
    data_dir: Path | None = Field(
        None, description="Folder with the public datasets (../shared/data layout); optional."
    )

    # --- DuckDB ------------------------------------------------------------------------------
    duckdb_threads: int | None = Field(None, description="DuckDB worker threads (default: all cores).")
    duckdb_memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. '4GB'.")
    writer_limit: str = Field(
        "duckdb-writer", description="Prefect global concurrency limit that serialises writers."
    )
    writer_timeout_s: float = Field(900.0, description="Longest wait for the writer slot.")
    reader_retries: int = Field(8, description="Read-only connections retry this often on a lock.")
    writer_lock_wait_s: float = Field(
        60.0, description="A writer waits this long (jittered backoff) for readers in other processes to "
        "let go of the file before its run fails.",
    )

    staging_retention_h: float = Field(
        24.0, description="Staging folders of crashed runs whose owner process this machine cannot check "
        "(another host, no owner file) are removed when older than this; a gone local owner's at once."
    )

    # --- validation (Great Expectations) -----------------------------------------------------
    min_text_chars: int = Field(3, description="Shorter texts are quarantined.")
    max_text_chars: int = Field(200_000, description="Longer texts are quarantined.")
    max_title_chars: int = Field(2_000, description="Longer titles are quarantined.")
    min_published_at: str = Field("1900-01-01", description="Earlier timestamps are quarantined.")
    future_tolerance_s: int = Field(
        3600, description="Timestamps later than now + this are quarantined (clock skew allowance)."
    )
    support_max_text_chars: int = Field(
        5_000, description="Support messages with longer texts are quarantined (an empty one always is)."
    )
    max_quarantine_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Batch-level severity: a batch quarantining more than this share of its rows "
        "is marked failed and fails the flow run (its good rows are still kept).",
    )

    # --- ingestion sources -------------------------------------------------------------------
    http_timeout_s: float = Field(20.0, description="Timeout for RSS/Atom requests.")
    http_max_bytes: int = Field(20_000_000, description="Largest feed body accepted.")
    user_agent: str = Field("NewsPulse/0.1 (+https://github.com/newspulse)", description="HTTP UA.")

    # --- training ------------------------------------------------------------------------------
    train_processes: int = Field(
        1, ge=1, description="Data-parallel processes for fine-tuning (one per GPU); >1 launches torchrun.",
    )
    distill_max_gap: float = Field(
        0.03, ge=0.0, le=1.0, description="A distilled student takes the free cpu-champion alias only if its "
        "served validation macro-F1 is at most this far below the champion's (its teacher's) on the same rows.",
    )

    # --- scoring -------------------------------------------------------------------------------
    torch_threads: int | None = Field(None, description="torch CPU threads for scoring (default: all cores).")
    score_device: str | None = Field(None, description="'cuda', 'cpu' or None for CUDA when available.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Compute precision of model forward passes: 'auto' is bf16 autocast on CUDA and, "
        "on a CPU, whatever a short cached matmul probe measures faster (bf16 only with native support); "
        "'fp32' or 'bf16' force it.",
    )
    score_precision: Literal["auto", "fp32", "bf16", "int8"] | None = Field(
        None, description="Precision of the score flow only (default: `precision`). 'int8' scores an int8 "
        "dynamically quantised copy of the backbone on CPU workers: fastest where measured, slightly less "
        "faithful to fp32 (bench/score.py prints its agreement).",
    )
    default_backbone: str = Field(
        "smollm2-135m", description="Backbone fine-tuning starts from when none is named: a catalogue name "
        "(`newspulse backbones list`), a preset, a checkpoint directory or pretrain:<run>.",
    )
    score_shard_size: int = Field(5_000, ge=1, description="Articles per scoring shard (one task each).")
    score_max_rows_per_run: int | None = Field(
        200_000, description="Most articles one score run takes, newest first (a new champion's backlog "
        "is spread over runs, each committing; None: no cap)."
    )
    score_batch_size: int = Field(32, ge=1, description="Texts per forward pass (length-bucketed; 32 was "
                                  "fastest on CPU in bench/score.py).")
    score_task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where score shards run: 'threads' (one shard at a time in the flow's process, "
        "torch on every core) or 'dask' (a local Dask cluster, or the one at score_dask_address)."
    )
    score_dask_workers: int = Field(2, ge=1, description="Worker processes of the local Dask cluster "
                                    "(task runner 'dask'); each uses cpu_count // workers torch threads.")
    score_dask_address: str | None = Field(
        None, description="Scheduler address of an existing Dask cluster (e.g. tcp://10.0.0.5:8786) for "
        "task runner 'dask'; None starts a local cluster for the run."
    )

    # --- support triage (issue 16: flows/triage.py) -------------------------------------------
    routing_table: Path | None = Field(
        None, description="Routing CSV (intent -> queue, priority, urgent, auto_answerable); None: the shipped "
        "models/triage/routing.csv (see models/triage/README.md)."
    )
    reply_kb: Path | None = Field(
        None, description="Approved answers (JSON) reply drafts are built from; None: the shipped "
        "models/triage/answers.json."
    )
    reply_rewrite: bool = Field(
        False, description="Rewrite drafts for the customer's wording with the intent model's backbone when it "
        "has a chat template (kept only if every fact survives); off: the approved text as is."
    )
    triage_auto_answer: bool = Field(
        True, description="Auto-answer (draft) confident messages of auto-answerable intents; false: every "
        "message goes to a person."
    )
    triage_batch_size: int = Field(512, ge=1, description="Messages per triage task (one scoring call each).")
    triage_max_rows_per_run: int | None = Field(
        20_000, description="Most messages one triage run takes, newest first (None: no cap)."
    )

    # --- monitoring and alerts -----------------------------------------------------------------
    monitor_granularities: list[str] = Field(
        ["15m", "1h", "4h", "1d"], description="Window sizes to aggregate and test (15m, 1h, 4h, 1d)."
    )
    monitor_baseline_h: float = Field(
        168.0, description="Trailing hours of a key's own history that form its baseline."
    )
    monitor_min_articles: int = Field(10, description="Windows with fewer articles are never tested.")
    monitor_min_negative: int = Field(6, description="... nor with fewer negative articles.")
    monitor_min_lift: float = Field(
        0.15, description="Negative share must exceed the baseline share by at least this much."
    )
    monitor_alpha: float = Field(
        1e-3,
        description="p-value threshold of the beta-binomial spike test (lower it for high-volume "
        "deployments: on 10M random rows a year over 65 keys, 1e-3 gives ~4 false spikes a week, 1e-4 ~0.3).",
    )
    monitor_baseline_cap: float = Field(
        200.0,
        description="Most pseudo-articles the baseline may weigh (allows for drift and "
        "over-dispersion: a huge baseline must not make every wobble significant).",
    )
    monitor_prior_strength: float = Field(
        20.0, description="Pseudo-articles of the overall share that shrink a thin key baseline."
    )
    monitor_min_history: int = Field(
        100, description="No spike is tested until the overall baseline holds this many articles."
    )
    monitor_cooldown_h: float = Field(
        12.0, description="A key's significant windows closer than this to its last alert extend it."
    )
    # issue 19: the scan detector (warehouse/scan.py); 'windows' keeps the old per-window test for one release.
    monitor_detector: Literal["scan", "windows"] = Field(
        "scan", description="'scan': prospective scan over every window length ending now (15 min to 1 day); "
        "'windows': the previous fixed tumbling windows with a per-window test (kept for one release)."
    )
    monitor_scan_alpha: float = Field(
        1e-4, description="Scan detector: a key alarms when its best window's beta-binomial tail p-value, times "
        "the number of window lengths and tests scanned (Bonferroni), is below this."
    )
    # issue 16 item 5: intent shares of the support inbox (warehouse/intent_monitor.py)
    monitor_intent_min_lift: float = Field(
        0.05, description="Intent surges: an intent's share of support messages must exceed its usual share by "
        "at least this much (2% -> 7%)."
    )
    monitor_intent_alpha: float | None = Field(
        None, description="Intent surges: the scan's alpha (None: monitor_scan_alpha, 1e-4). On the demo's "
        "outage 1e-3 detected no sooner at full strength (median 30 min either way) and only weaker outages "
        "sooner, for 6x the false alerts (bench/intent_outage.py, bench/README.md)."
    )
    monitor_intent_baseline_cap: float = Field(
        1000.0, description="Intent surges: most pseudo-messages an intent's baseline share may weigh (intent "
        "shares are steadier than news sentiment, and a 2% intent must page within the hour)."
    )
    # issue 17 item 3: undated rows of historical datasets must not page (warehouse/monitor.monitor_time_sql)
    monitor_live_lag_h: float = Field(
        48.0, description="An undated article is timed by its ingest time only when its ingest batch's newest "
        "publication time is within this many hours of the ingest (a live feed pull); other undated rows "
        "(historical datasets) are left out of windows and alerts."
    )
    # issue 17 item 1: label-free model health (models/health.py, tasks/health.py)
    drift_enabled: bool = Field(True, description="Run the model health checks in the monitor flow.")
    drift_reference: Literal["trailing", "serving", "training"] = Field(
        "trailing", description="What a day of a key (overall, a source) is compared with: 'trailing' (default): "
        "the same key's previous drift_reference_days days of own scores, like the sentiment baselines (sudden "
        "changes page, slow topical drift does not); 'serving': the first drift_reference_days days of the "
        "champion's own scores, stored at the first monitor run after they exist; 'training': the reference stored "
        "at registration from the validation texts (backfilled for older champions). bench/drift.py measures all three."
    )
    drift_reference_days: int = Field(14, ge=1, description="Days of own scores that form the reference.")
    drift_min_reference: int = Field(
        100, description="Trailing reference: a key with fewer articles in its reference days is measured, not judged."
    )
    drift_min_articles: int = Field(30, description="Days (of a source) with fewer articles are measured, not judged.")
    drift_min_checks: int = Field(2, ge=1, description="A day drifts when at least this many checks fire.")
    drift_alpha: float = Field(1e-3, description="Significance every check needs besides its effect size.")
    drift_strong_alpha: float = Field(
        1e-9, description="One check with a p-value under this makes the day drifting on its own (else "
        "drift_min_checks are needed)."
    )
    drift_label_psi: float = Field(0.2, description="PSI of the predicted sentiment mix that fires.")
    drift_length_psi: float = Field(0.25, description="PSI of the token-count distribution that fires.")
    drift_low_confidence: float = Field(0.5, description="A prediction is low-confidence under this top probability.")
    drift_low_conf_lift: float = Field(0.15, description="Rise of the low-confidence share that fires.")
    drift_auc: float = Field(0.75, description="Domain-classifier AUC (reference vs day embeddings) that fires.")
    drift_novel_lift: float = Field(
        0.2, description="Rise of the share of novel embeddings (farther from the reference than 99% of its own) "
        "that fires the embedding check (also fired by drift_auc)."
    )
    drift_unknown_lift: float = Field(0.08, description="Rise of the share of words unknown to the reference.")
    drift_disagreement_lift: float = Field(0.15, description="Rise of served-vs-TF-IDF-baseline disagreement.")
    drift_sample: int = Field(256, ge=16, description="Embeddings and texts sampled per day and key.")
    # issue 17 item 2: the relabel queue (models/active.py, warehouse/label_queue.py, tasks/label_queue.py)
    label_queue_enabled: bool = Field(True, description="Fill the relabel queue at the end of every monitor run.")
    label_queue_per_day: int = Field(200, ge=0, description="Most articles queued for labelling per UTC day.")
    label_queue_max_source_share: float = Field(
        0.25, gt=0, le=1, description="Most of a day's queue one source may fill while other sources have candidates.")
    label_queue_lookback_h: float = Field(
        72.0, description="Candidates are the served model's scores committed this many hours back; alerts and "
        "drifted sources over the same span; queued texts as old are not queued again as near-duplicates.")
    label_queue_candidates: int = Field(
        5000, ge=1, description="Least sure candidates read per run (plus every alert's and drifted source's).")
    label_queue_uncertain_margin: float = Field(
        0.5, description="A prediction is 'uncertain' when its top two probabilities are this close or closer.")
    label_queue_duplicate_jaccard: float = Field(
        0.8, description="Word 3-shingle Jaccard at which two texts count as near-duplicates (one label for both).")
    relabel_dataset: str = Field(
        "relabel", description="Dataset imported labels land in (`newspulse labels import`); the weekly fine-tune "
        "trains on it, and its labels win over another dataset's label of the same article.")
    alert_block: str = Field(
        "custom-webhook/newspulse-alerts",
        description="Prefect notification block (<block-type-slug>/<name>) alerts are sent through: "
        "a custom-webhook by default, or e.g. slack-webhook/<name>, sendgrid-email/<name>.",
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="Creates or updates the webhook block named by alert_block on each run; the URL "
        "is stored in the block's secrets, never logged."
    )
    alert_allow_private_urls: bool = Field(
        False, description="Let the webhook block post to loopback/private addresses (the demo's receiver)."
    )
    alert_max_age_h: float = Field(
        48.0, description="Alerts about windows older than this are opened without notifying anyone "
        "(first runs over history, a new champion re-scoring the past)."
    )
    alert_claim_timeout_s: float = Field(
        600.0, description="A run's claim on an alert it is delivering expires after this (crashed runs)."
    )
    alert_delivery_attempts: int = Field(3, ge=1, description="Tries per alert within one monitor run.")
    alert_retry_backoff_s: float = Field(1.0, description="First retry delay; doubles each try.")
    alert_delivery: Literal["flow", "automation"] = Field(
        "flow", description="'flow': the monitor flow sends each alert through the block itself (retried, "
        "tracked per alert). 'automation': it only emits the events and the Prefect automation "
        "'newspulse-sentiment-spike' (enabled by `newspulse serve`) sends them through the same block.",
    )

    # --- a served deployment (`newspulse serve`, `make serve`) ----------------------------------
    serve_host: str = Field("127.0.0.1", description="Address `newspulse serve` binds the Prefect server to.")
    serve_port: int = Field(4200, description="Port of the served Prefect API and UI.")
    serve_cpu_workers: int = Field(1, ge=0, description="Process workers `newspulse serve` starts for the cpu pool.")
    serve_gpu_workers: int | None = Field(
        None, ge=0, description="Workers for the gpu pool: default one if this machine has an NVIDIA GPU, else "
        "none (gpu runs wait for the GPU hosts' workers; 1 runs them on this CPU).",
    )
    serve_gpu_pool_limit: int = Field(1, ge=1, description="Flow runs at once in the gpu pool (one per GPU).")
    serve_heartbeat_s: int = Field(30, ge=30, description="Served flow runs send a heartbeat event this often.")
    serve_lost_run_after_s: float = Field(
        120.0, description="A served run silent this long (its worker or machine died) is rescheduled by the "
        "'newspulse-reschedule-lost-runs' automation; every flow is safe to re-run. At least 2 heartbeats.",
    )

    @model_validator(mode="after")
    def _lost_run_window_spans_heartbeats(self) -> Settings:
        # A window of about one heartbeat would reschedule healthy runs whose beat came late.
        if self.serve_lost_run_after_s < 2 * self.serve_heartbeat_s:
            raise ValueError(f"serve_lost_run_after_s ({self.serve_lost_run_after_s}) must be at least twice "
                             f"serve_heartbeat_s ({self.serve_heartbeat_s})")
        return self

    # --- recommendations ----------------------------------------------------------------------
    rec_history_days: float = Field(
        30.0, description="Impressions within this many days before as_of feed profiles and the click model."
    )
    rec_candidate_hours: float = Field(
        48.0, description="Articles published (or first shown) this recently may be recommended."
    )
    rec_click_standardize: bool = Field(
        True, description="z-score item vectors before the click model's news tower (a pretrained LM's few huge "
        "dimensions otherwise swamp the rest; picked on the early-stopping slice in bench/recommend.py).",
    )
    rec_popularity_hours: float = Field(24.0, description="Clicks in this window make an item's popularity.")
    rec_max_candidates: int = Field(2000, ge=1, description="Candidate pool size (most clicked, then newest).")
    rec_top_k: int = Field(20, ge=1, description="Recommendations stored per user.")
    rec_users_per_shard: int = Field(20_000, ge=1, description="Users ranked per task.")
    rec_profile_half_life: float = Field(
        10.0, description="User profile weights halve every this many clicks back."
    )
    rec_topic_prior_strength: float = Field(
        5.0, description="Pseudo-clicks of the global topic share that shrink a thin user's topic affinity."
    )
    rec_cold_popularity_weight: float = Field(
        0.7, ge=0.0, le=1.0, description="Cold-start score = w * popularity + (1 - w) * topic prior."
    )
    rec_side_features: bool = Field(
        False, description="Give the click model a wide part over the candidates' popularity, click rate and "
        "age (bench/README.md: on MIND, counts frozen at the nightly cut lowered held-out AUC; live ones help)."
    )
    rec_feature_cut_hours: float = Field(
        24.0, ge=0.0, description="The click model learns popularity as a run every this many hours serves it "
        "(counts frozen at the last cut); 0: live counts, for request-time scoring."
    )
    rec_min_train_impressions: int = Field(
        50, description="Fewer impressions with a click and a non-click: no click model, a hand-made score."
    )
    rec_click_epochs: int = Field(5, ge=1, description="Click model epochs (early stopping on the newest 10%).")
    rec_click_refit: bool = Field(
        True, description="After validation, refit the click model on every impression (newest included) "
        "for the best epoch count; the reported metrics are the validated fit's."
    )
    rec_click_time_budget_s: float = Field(900.0, description="Longest click model training.")
    rec_device: str | None = Field(None, description="Click model device: 'cuda', 'cpu' or None for CUDA when available.")

    @property
    def staging_dir(self) -> Path:
        """Folder for per-batch staging files (Parquet) written before a commit."""
        return self.home / "staging"

    @property
    def registry_dir(self) -> Path:
        """Versioned model directories (safetensors, tokenizer, card) live under here."""
        return self.home / "registry"

    @property
    def backbones_dir(self) -> Path:
        """Converted pretrained backbones (safetensors model directories with their cards)."""
        return self.home / "backbones"

    @property
    def precision_cache(self) -> Path:
        """Per-machine answers of the bf16-vs-fp32 probe (models.precision)."""
        return self.home / "machine" / "precision.json"

    @property
    def runs_dir(self) -> Path:
        """Working folders of training runs (checkpoints for resume, exported data)."""
        return self.home / "runs"

    @property
    def reports_dir(self) -> Path:
        """Pictures and reports written by flows (sentiment timelines)."""
        return self.home / "reports"

    @property
    def click_models_dir(self) -> Path:
        """Trained click models (safetensors + JSON), one folder per source, backbone and log state."""
        return self.home / "click_models"

    @property
    def serve_dir(self) -> Path:
        """What `newspulse serve` owns: the server's PREFECT_HOME, pid files and process logs."""
        return self.home / "serve"

    @property
    def demo_dir(self) -> Path:
        """Folder where ``newspulse demo`` writes its generated stream."""
        return self.home / "demo"

    def ensure_dirs(self) -> None:
        """Create the runtime folders (idempotent)."""
        self.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


@contextmanager
def settings_env(values: dict[str, str]) -> Iterator[Settings]:
    """Set ``values`` in the environment for a block and yield the fresh :func:`get_settings`;
    the environment and the cached settings are restored afterwards (demo receivers, benchmarks)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
