"""prefect.yaml and the served set-up, without a server: the file parses, every entrypoint imports,
parameters fit the flows, schedules and pools follow DESIGN.md, the GPU job template asks for GPUs,
and the spike automation routes what it should. (tests/e2e deploys it all on a real server.)"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
BY_NAME = {d["name"]: d for d in DEPLOYMENTS}


def test_a_deployment_per_flow() -> None:
    flows = {d["entrypoint"].split(":")[1].removesuffix("_flow") for d in DEPLOYMENTS}
    assert flows == {"ingest", "pretrain", "finetune", "distill", "score", "monitor", "recommend", "pipeline", "triage"}
    assert len(BY_NAME) == len(DEPLOYMENTS)  # names are unique


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_imports_and_parameters_fit(deployment: dict) -> None:
    from prefect.flows import Flow, load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    assert isinstance(flow, Flow)
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment.get("parameters") or {}) <= accepted, deployment["name"]
    env = deployment["work_pool"]["job_variables"]["env"]
    assert env["DO_NOT_TRACK"] == "1" and env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(("name", "pool", "schedule"), [
    ("ingest-every-15-min", "cpu", {"interval": 900}),
    ("pretrain-weekly", "gpu", {"cron": "0 1 * * 0"}),
    ("finetune-weekly", "gpu", {"cron": "0 6 * * 0"}),
    ("distill-weekly", "gpu", {"cron": "0 9 * * 0"}),
    ("score-hourly", "cpu", {"cron": "5 * * * *"}),
    ("score-gpu", "gpu", None),
    ("monitor-every-15-min", "cpu", {"interval": 900}),
    ("triage-every-5-min", "cpu", {"cron": "*/5 * * * *"}),
    ("recommend-nightly", "cpu", {"cron": "30 2 * * *"}),
    ("pipeline-demo", "cpu", None),
])
def test_schedules_and_pools(name: str, pool: str, schedule: dict | None) -> None:
    d = BY_NAME[name]
    assert d["work_pool"]["name"] == pool
    schedules = d.get("schedules") or []
    if schedule is None:
        assert not schedules
        return
    assert len(schedules) == 1 and schedules[0]["timezone"] == "UTC" and schedules[0]["active"]
    assert {k: schedules[0][k] for k in schedule} == schedule
    assert d["concurrency_limit"] == 1  # a slow run is never overtaken by the next one


@pytest.mark.parametrize(("name", "pool", "alias"), [
    ("score-hourly", "cpu", "cpu-champion"),  # the distilled student; the champion while none holds it
    ("score-gpu", "gpu", "champion"),         # the big model, the distillation teacher
])
def test_each_scorer_serves_its_alias(name: str, pool: str, alias: str) -> None:
    from warehouse.registry import ALIASES

    d = BY_NAME[name]
    assert d["work_pool"]["name"] == pool and d["parameters"]["model_version"] == alias
    assert alias in ALIASES  # what plan_score_shards resolves
    assert BY_NAME["distill-weekly"]["parameters"]["teacher"] == "champion"


def test_gpu_deployments_pass_what_a_gpu_worker_needs() -> None:
    for d in DEPLOYMENTS:
        env = d["work_pool"]["job_variables"]["env"]
        # The worker picks the devices: a job env value would override every worker's own.
        assert "CUDA_VISIBLE_DEVICES" not in env
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"  # the lost-run automation needs beats
        if d["work_pool"]["name"] == "gpu":
            assert env["NEWSPULSE_SCORE_DEVICE"] == env["NEWSPULSE_REC_DEVICE"] == "cuda"


def test_finetune_takes_the_weekly_backbone(tmp_path: Path) -> None:
    from core.settings import Settings
    from tasks.train import resolve_base

    assert BY_NAME["finetune-weekly"]["parameters"]["base"] == f"pretrain:{BY_NAME['pretrain-weekly']['parameters']['run_name']}"
    from models.catalogue import BackboneError

    weekly = BY_NAME["pretrain-weekly"]["parameters"]
    assert weekly["base"] == "smollm2-135m" and weekly["incremental"] and weekly["steps_per_run"] > 0
    settings = Settings(home=tmp_path)
    with pytest.raises(BackboneError, match="run that pretrain first"):
        resolve_base(settings, "pretrain:weekly")
    backbone = settings.runs_dir / "weekly" / "checkpoint" / "model"
    backbone.mkdir(parents=True)
    (backbone / "config.json").write_text("{}")
    (backbone / "model.safetensors").write_bytes(b"\0")
    assert resolve_base(settings, "pretrain:weekly") == str(backbone)
    assert resolve_base(settings, "small") == "small"


def test_distill_weekly_distils_the_champion_into_a_student_cut_from_it() -> None:
    from models.distill import check_student

    params = BY_NAME["distill-weekly"]["parameters"]
    check_student(params["student_base"])  # a preset or teacher:N
    assert params["teacher"] == "champion" and params["student_base"] == "teacher:10"
    assert 0 <= params["alpha"] <= 1 and params["temperature"] > 0


def test_kubernetes_gpu_template_requests_gpus() -> None:
    template = json.loads((REPO / "deploy" / "k8s-gpu-job-template.json").read_text(encoding="utf-8"))
    assert template["variables"]["properties"]["gpu_count"]["default"] == 1
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert pod["nodeSelector"] == "{{ node_selector }}"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


@pytest.mark.parametrize(("delivery", "enabled"), [("flow", False), ("automation", True)])
def test_spike_automation(delivery: str, enabled: bool) -> None:
    import uuid

    from newspulse.provision import automation_spec
    from core.settings import Settings

    block_id = uuid.uuid4()
    spec = automation_spec(Settings(alert_delivery=delivery), block_id)
    assert spec.name == "newspulse-sentiment-spike" and spec.enabled is enabled  # never page twice
    assert spec.trigger.expect == {"newspulse.sentiment.spike", "newspulse.model.drift"}  # drift pages the same way
    assert spec.trigger.match.model_dump() == {"prefect.resource.id": "newspulse.*", "newspulse.notify": "true"}
    (action,) = spec.actions
    assert action.block_document_id == block_id and "event.payload.subject" in action.subject


def test_serve_env_switches_telemetry_off_and_pins_paths(tmp_path: Path) -> None:
    from newspulse.serve import serve_env
    from core.settings import Settings

    settings = Settings(home=Path("var"), serve_port=4999)
    env = serve_env(settings, REPO)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_API_URL"] == env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4999/api"
    assert env["NEWSPULSE_ROOT"] == str(REPO)
    assert Path(env["NEWSPULSE_HOME"]).is_absolute() and Path(env["NEWSPULSE_WAREHOUSE_PATH"]).is_absolute()
    assert env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4999"  # the UI only
    with pytest.raises(ValueError, match="PREFECT_SERVER_API_AUTH_STRING"):  # an open API runs code
        serve_env(Settings(serve_host="0.0.0.0"), REPO)
    with pytest.raises(ValueError, match="at least twice"):  # a window of one beat reschedules healthy runs
        Settings(serve_heartbeat_s=30, serve_lost_run_after_s=45)


def test_stop_ends_only_what_serve_recorded(tmp_path: Path) -> None:
    """A recorded process and its descendants end; a pid file whose pid now belongs to another
    process (recycled: its start time differs) is never signalled."""
    import subprocess

    from newspulse.serve import _descendants, _spawn, status, stop
    from core.settings import Settings

    settings = Settings(home=tmp_path)
    # A "worker" whose child runs in a session of its own, like a flow-run process.
    _spawn(settings, "worker", ["bash", "-c", "setsid sleep 60 & sleep 60"], {"PATH": "/usr/bin:/bin"}, tmp_path)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (settings.serve_dir / "pids" / "recycled.pid").write_text(f"{bystander.pid} 12345\n")  # wrong start time
    try:
        time.sleep(0.3)
        worker = status(settings)["worker"]
        assert worker is not None and status(settings)["recycled"] is None
        child = _descendants(worker)
        assert child
        assert stop(settings, timeout_s=5) == ["worker"]
        assert status(settings) == {}
        assert all(not Path(f"/proc/{p}").exists() or "Z" in Path(f"/proc/{p}/stat").read_text().split()[2]
                   for p in child)  # the setsid'd grandchild ended too
        assert bystander.poll() is None  # the recycled pid was left alone
    finally:
        bystander.kill()
        bystander.wait()


def test_lost_run_automation_reschedules_only_our_silent_runs() -> None:
    from prefect.client.schemas.objects import StateType

    from newspulse.provision import lost_run_spec
    from core.settings import Settings

    spec = lost_run_spec(Settings(serve_lost_run_after_s=90))
    trigger = spec.trigger
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 90
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
            "prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"} <= trigger.expect
    assert trigger.match_related.model_dump() == {"prefect.resource.id": "prefect.tag.newspulse"}
    (action,) = spec.actions
    assert action.state == StateType.SCHEDULED and action.name == "AwaitingRetry"
    assert all("newspulse" in d["tags"] for d in DEPLOYMENTS)  # every deployment's runs are covered


def test_spike_automation_without_a_block_is_paused_and_says_how_to_connect_one() -> None:
    """`make serve` without NEWSPULSE_ALERT_WEBHOOK_URL: the main alert is on the Automations page, paused."""
    from newspulse.provision import automation_spec
    from core.settings import Settings

    spec = automation_spec(Settings(alert_delivery="automation"), None)
    assert spec.name == "newspulse-sentiment-spike" and spec.enabled is False
    assert "NEWSPULSE_ALERT_WEBHOOK_URL" in spec.description and "PAUSED" in spec.description
    (action,) = spec.actions
    assert action.type == "do-nothing"
