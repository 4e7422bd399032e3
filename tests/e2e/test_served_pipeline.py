"""End to end, as users run it: a real Prefect server, pools, deployments from prefect.yaml, workers.

One module-scoped stack (``newspulse serve`` on a free loopback port, its own PREFECT_HOME,
warehouse and runtime folder under tmp): set-up is idempotent, the pipeline deployment runs the
whole chain on the demo stream through a process worker, its alerts reach a loopback webhook
receiver through the spike automation, headless Chromium renders the run and our artifacts, and a
worker killed mid-run leaves a run that retries cleanly (no duplicates, nothing lost).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# A pipeline run on a slow CI machine may take minutes: more than the suite's 600 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "e2e"  # screenshots and page dumps (gitignored)
TINY_PIPELINE = {"seed": 7, "days": 4, "articles_per_day": 150, "n_users": 30, "base": "tiny",
                 "pretrain_budget_s": 10.0, "finetune_budget_s": 20.0}
FLOWS = {"ingest", "pretrain", "finetune", "distill", "score", "monitor", "recommend", "pipeline", "triage"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1400", "--virtual-time-budget=15000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``newspulse serve`` with a webhook receiver as the alert channel and automation delivery."""
    from newspulse.receiver import WebhookReceiver
    from newspulse.serve import serve, stop
    from core.settings import Settings, get_settings

    tmp = tmp_path_factory.mktemp("served")
    receiver = WebhookReceiver()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "NEWSPULSE_HOME": str(tmp / "var"), "NEWSPULSE_WAREHOUSE_PATH": str(tmp / "warehouse.duckdb"),
            "NEWSPULSE_SERVE_PORT": str(_free_port()), "NEWSPULSE_SERVE_GPU_WORKERS": "0",
            "NEWSPULSE_ALERT_DELIVERY": "automation", "NEWSPULSE_ALERT_WEBHOOK_URL": receiver.url,
            "NEWSPULSE_ALERT_ALLOW_PRIVATE_URLS": "true",
            # 120 s in production; the kill test waits for it. Two and a half heartbeats (30 s each),
            # so a late beat on a busy machine does not reschedule the healthy pipeline run.
            "NEWSPULSE_SERVE_LOST_RUN_AFTER_S": "75",
            # Schedules are deployed active, but nothing may fire on its own during the test.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",  # flow-run logs for the UI
        }.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        settings = Settings()
        started = time.monotonic()
        info: dict[str, Any] = {}
        try:
            served = serve(settings, root=REPO, log=lambda *_: None)
            info.update(settings=settings, served=served, receiver=receiver, startup_s=time.monotonic() - started)
            yield info
        finally:
            stop(settings)
            _write_measurements(info)
            receiver.close()
            get_settings.cache_clear()


def _write_measurements(info: dict[str, Any]) -> None:
    """What the run measured (start-up, pipeline and automation times, the killed run's state)."""
    import json

    keys = ("startup_s", "pipeline_s", "automation_latency_s", "lost_run_recovered_s", "subflows")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "measurements.json").write_text(json.dumps({k: info.get(k) for k in keys}, indent=2, default=str))


@contextmanager
def _client(stack: dict[str, Any]) -> Iterator[Any]:
    """A sync client on the served API (not the session's test harness)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack["served"].api_url}), get_client(sync_client=True) as client:
        yield client


def _snapshot(stack: dict[str, Any]) -> dict[str, Any]:
    """What set-up leaves on the server: pools, limits, automations, deployments (ids included)."""
    with _client(stack) as c:
        return {
            "pools": sorted((p.name, p.type, p.concurrency_limit) for p in c.read_work_pools()),
            "limits": sorted((g.name, g.limit) for g in c.read_global_concurrency_limits() if not g.name.startswith("deployment:")),
            "automations": sorted((str(a.id), a.name, a.enabled) for a in c.read_automations()),
            "deployments": sorted((str(d.id), d.name, d.work_pool_name, str(d.entrypoint),
                                   tuple(str(s.schedule) for s in d.schedules), repr(sorted(d.parameters.items())))
                                  for d in c.read_deployments()),
        }


def test_setup_is_idempotent_and_deploys_every_flow(stack: dict[str, Any]) -> None:
    from newspulse.provision import provision
    from newspulse.serve import deploy_all, serve_env
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = stack["settings"]
    first = _snapshot(stack)
    with temporary_settings({PREFECT_API_URL: stack["served"].api_url}):
        again = provision(settings)
    assert set(again.values()) == {"ok"}, again
    deploy_all(serve_env(settings, REPO), REPO, settings.serve_dir / "logs" / "deploy-again.log")
    assert _snapshot(stack) == first  # same objects, same ids: nothing created twice

    assert [p[:2] for p in first["pools"]] == [("cpu", "process"), ("gpu", "process")]
    assert ("gpu", "process", settings.serve_gpu_pool_limit) in first["pools"]
    assert (settings.writer_limit, 1) in first["limits"]
    assert sorted(a[1:] for a in first["automations"]) == [("newspulse-reschedule-lost-runs", True),
                                                            ("newspulse-sentiment-spike", True)]
    deployments = {d[1]: d for d in first["deployments"]}
    assert {d[3].split(":")[1].removesuffix("_flow") for d in first["deployments"]} == FLOWS
    assert deployments["pretrain-weekly"][2] == deployments["finetune-weekly"][2] == "gpu"
    assert deployments["monitor-every-15-min"][2] == "cpu"
    assert "interval=datetime.timedelta(seconds=900)" in deployments["monitor-every-15-min"][4][0]
    assert "cron='30 2 * * *'" in deployments["recommend-nightly"][4][0]
    assert deployments["pipeline-demo"][4] == ()
    assert deployments["triage-every-5-min"][2] == "cpu" and "*/5 * * * *" in deployments["triage-every-5-min"][4][0]
    assert stack["served"].started == ["server", "worker-cpu-1"]


def test_pipeline_deployment_runs_the_whole_chain(stack: dict[str, Any]) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from warehouse.query import run_readonly

    settings, receiver = stack["settings"], stack["receiver"]
    started = time.monotonic()
    with temporary_settings({PREFECT_API_URL: stack["served"].api_url}):
        run = run_deployment("pipeline/pipeline-demo", parameters=TINY_PIPELINE, timeout=900)
    stack["pipeline_s"] = time.monotonic() - started
    stack["pipeline_run"] = run
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.name == "pipeline-seed7-4d"

    with _client(stack) as c:
        children = c.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
        artifacts = {a.key: a for a in c.read_artifacts() if a.key}
    # Every stage ran as a subflow of the pipeline run, completed, and says what it did in its name.
    names = sorted(r.name for r in children)
    stack["subflows"] = names
    assert all(r.state.is_completed() for r in children), [(r.name, r.state.type) for r in children]
    for prefix in ("ingest-synthetic-", "pretrain-demo-tiny", "finetune-demo-finetune", "finetune-demo-intent",
                   "score-cpu-champion", "triage-", "monitor-", "recommend-"):
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    for key in ("demo-stream", "ingest-summary", "ingest-batches", "validation-synthetic", "pretrain-history",
                "model-card", "intent-model-card", "score-run", "sentiment-monitor", "recommend-report-synthetic"):
        assert key in artifacts, f"artifact {key} missing: {sorted(artifacts)}"
    stack["artifacts"] = {k: str(a.id) for k, a in artifacts.items()}

    counts = run_readonly(settings, """
        SELECT (SELECT count(*) FROM articles) AS articles,
               (SELECT count(*) FROM v_scores) AS scored,
               (SELECT count(*) FROM model_registry WHERE stage = 'champion') AS champions,
               (SELECT count(*) FROM quarantine) AS quarantined,
               (SELECT count(*) FROM rec_features) AS recs,
               (SELECT count(*) FROM alerts WHERE explained_by IS NULL) AS alerts,  -- explained ones never page
               (SELECT count(*) FROM alerts WHERE delivery_channel = 'automation:newspulse-sentiment-spike') AS handed
    """).rows[0]
    articles, scored, champions, quarantined, recs, alerts, handed = counts
    assert articles > 400 and scored == articles and champions == 1
    assert quarantined > 0 and recs > 0
    # The demo stream carries injected negative episodes: they become alerts, and every alert's
    # event goes through the automation to the webhook (the flow itself sends nothing).
    assert alerts > 0 and handed == alerts
    deadline = time.monotonic() + 60
    while len(receiver.posts) < alerts and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(receiver.posts) == alerts, f"{len(receiver.posts)} of {alerts} alerts reached the webhook"
    # News sentiment spikes, incident spikes of the triaged support inbox (its injected outage), and
    # the model-health check's drift alerts: all three go through the same automation and webhook.
    kinds = ("Negative sentiment spike", "Incident spike", "Model drift")
    assert all(any(k in p.get("subject", "") for k in kinds) for p in receiver.posts), \
        [p.get("subject") for p in receiver.posts]
    triaged = run_readonly(settings, "SELECT count(*) FROM support_scores").rows[0][0]
    assert triaged > 0
    # Every analyst query the README shows returns rows on the demo pipeline's warehouse (issue 18, "Docs").
    from tests.code.test_readme_queries import readme_queries

    empty = [c for c, q in readme_queries().items() if not run_readonly(settings, q, limit=1).rows]
    assert not empty, f"README queries with no rows on the demo warehouse: {empty}"


def test_only_page_worthy_events_are_routed(stack: dict[str, Any]) -> None:
    """A spike event marked notify=false (stale backfill) is not sent; a fresh one is, in seconds."""
    from datetime import UTC, datetime, timedelta

    import asyncio

    from prefect.events.clients import PrefectEventsClient

    from tasks.alerts import spike_event

    async def send(*events) -> None:
        # Our own client on the served API: the process-wide events worker may be bound to the
        # session's test server already.
        async with PrefectEventsClient(api_url=stack["served"].api_url) as client:
            for event in events:
                await client.emit(event)

    receiver = stack["receiver"]
    before = len(receiver.posts)
    now = datetime.now(UTC)
    alert = {"alert_id": "a-e2e-stale", "dimension": "ticker", "key": "ZZZT", "severity": "high", "observed": 0.9,
             "baseline": 0.2, "n_articles": 40, "n_negative": 36, "p_value": 1e-9, "granularity": "1h",
             "window_start": now - timedelta(hours=1), "window_end": now, "evidence": []}
    sent = time.monotonic()
    asyncio.run(send(spike_event(alert, notify=False),
                     spike_event({**alert, "alert_id": "a-e2e-fresh", "key": "ZZZF"}, notify=True)))
    deadline = time.monotonic() + 60
    while len(receiver.posts) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    stack["automation_latency_s"] = time.monotonic() - sent
    time.sleep(2)  # give the stale one every chance to arrive too (it must not)
    new = receiver.posts[before:]
    assert [p["subject"].split()[-1] for p in new] == ["ZZZF"], new


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browse(url: str, name: str, tmp: Path) -> str:
    """Render ``url`` in headless Chromium: save a screenshot, return the rendered DOM."""
    exe = _chromium()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{name}.png").unlink(missing_ok=True)  # never judge an earlier run's picture
    for what in ("screenshot", "dom"):
        profile = tmp / f"profile-{name}-{what}"  # a fresh profile every time
        mode = [f"--screenshot={OUTPUT / f'{name}.png'}"] if what == "screenshot" else ["--dump-dom"]
        proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, url],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"chromium failed on {url}: {proc.stderr[-1000:]}"
        if what == "dom":
            (OUTPUT / f"{name}.html").write_text(proc.stdout, encoding="utf-8")
            return proc.stdout
    raise AssertionError("unreachable")


def test_ui_renders_the_run_and_our_artifacts(stack: dict[str, Any], tmp_path: Path) -> None:
    if _chromium() is None:
        if os.environ.get("NEWSPULSE_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (NEWSPULSE_REQUIRE_BROWSER) but not installed")
        pytest.skip("no chromium: `apt-get install chromium` (the CI script installs it)")
    if "pipeline_run" not in stack:
        pytest.skip("the pipeline run did not happen")
    ui, run, arts = stack["served"].ui_url, stack["pipeline_run"], stack["artifacts"]

    page = _browse(f"{ui}/runs/flow-run/{run.id}", "flow-run", tmp_path)
    assert "pipeline-seed7-4d" in page and "Completed" in page

    page = _browse(f"{ui}/artifacts/artifact/{arts['score-run']}", "artifact-score-run", tmp_path)
    assert "docs_per_s" in page and "rows_inserted" in page and "Scoring run s" in page

    page = _browse(f"{ui}/artifacts/artifact/{arts['model-card']}", "artifact-model-card", tmp_path)
    assert "Model card: m" in page and "GPT vs TF-IDF baseline" in page
    assert page.count('src="data:image/png;base64,') == 2  # both confusion matrices, inline

    page = _browse(f"{ui}/artifacts/artifact/{arts['sentiment-monitor']}", "artifact-sentiment-monitor", tmp_path)
    assert "Sentiment monitor" in page and "Open alerts" in page and 'src="data:image/png;base64,' in page
    for name in ("flow-run", "artifact-score-run", "artifact-model-card", "artifact-sentiment-monitor"):
        assert (OUTPUT / f"{name}.png").stat().st_size > 10_000


def test_worker_killed_mid_run_is_rescheduled_and_finishes(stack: dict[str, Any], tmp_path: Path) -> None:
    """``kill -9`` the cpu worker and its flow-run process mid-ingest (a lost machine: nobody tells
    the server): the run goes silent, the lost-run automation reschedules it, the restarted worker
    re-runs it, and the warehouse holds every record once."""
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from newspulse.provision import LOST_RUNS
    from newspulse.serve import _alive, kill_tree, serve
    from sources.synthetic import SyntheticConfig, generate_stream
    from warehouse.query import run_readonly

    settings = stack["settings"]
    stream = generate_stream(tmp_path / "kill", SyntheticConfig(seed=23, days=8, articles_per_day=400, n_users=5))
    params = {"files": [str(stream.articles_path)], "source": "killtest", "fail_on_invalid_batch": False}
    with temporary_settings({PREFECT_API_URL: stack["served"].api_url}):
        run = run_deployment("ingest/ingest-every-15-min", parameters=params, timeout=0)
    with _client(stack) as c:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not c.read_task_runs(flow_run_filter=_run_filter(run.id)):
            time.sleep(0.2)  # wait until the run is really working (a task has started)
    worker = _alive(settings, "worker-cpu-1")
    assert worker is not None
    killed = kill_tree(worker)
    assert len(killed) >= 2  # the worker and the flow-run process it started
    killed_at = time.monotonic()
    with _client(stack) as c:
        assert c.read_flow_run(run.id).state.type == StateType.RUNNING  # nobody told the server
    serve(settings, root=REPO, deploy=False, log=lambda *_: None)  # the worker comes back
    with _client(stack) as c:
        final = _wait_final(c, run.id, 300)
        states = c.read_flow_run_states(run.id)
    stack["lost_run_recovered_s"] = time.monotonic() - killed_at
    assert final is not None and final.type == StateType.COMPLETED, final
    rescheduled = [s for s in states if s.name == "AwaitingRetry"]
    assert rescheduled and LOST_RUNS in (rescheduled[0].message or ""), [(s.name, s.message) for s in states]
    batches = run_readonly(settings, """
        SELECT b.rows_read, b.rows_inserted, b.rows_duplicate, b.rows_quarantined,
               (SELECT count(*) FROM articles a WHERE a.batch_id = b.batch_id) AS stored
        FROM ingest_batches b WHERE b.input LIKE '%/kill/articles.jsonl'
    """).rows
    assert len(batches) == 1, batches  # the retry did not ingest the file a second time
    read, inserted, duplicate, quarantined, stored = batches[0]
    lines = sum(1 for line in stream.articles_path.open(encoding="utf-8", errors="replace") if line.strip())
    assert read + 1 >= lines and read == inserted + duplicate + quarantined  # every record accounted for
    assert stored == inserted > 0.9 * read
    rows, distinct = run_readonly(settings, "SELECT count(*), count(DISTINCT article_id) FROM articles").rows[0]
    assert rows == distinct  # no duplicates anywhere


def _run_filter(run_id: Any):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))


def _wait_final(client: Any, run_id: Any, timeout_s: float):
    """The run's state once final (or None after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return state
        time.sleep(0.5)
    return None
