"""Run NewsPulse as its users do: a Prefect server with its UI, pools, deployments and workers.

``newspulse serve`` (= ``make serve``):

1. starts ``prefect server start`` on ``serve_host:serve_port`` with its own ``PREFECT_HOME``
   (SQLite database) under ``var/serve/prefect`` and telemetry off;
2. waits for ``/api/health``;
3. provisions pools, the DuckDB writer limit, the alert block and the spike automation
   (:mod:`newspulse.provision`, idempotent);
4. deploys every deployment in ``prefect.yaml`` (``prefect --no-prompt deploy --all``);
5. starts process workers for the ``cpu`` and ``gpu`` pools.

Each process starts in a session of its own and its pid (with the process start time, so a
recycled pid is never mistaken for ours) goes to ``var/serve/pids``. ``newspulse stop``
(= ``make stop``) ends exactly those process groups, workers first. Running ``serve`` again while
it runs starts nothing twice: it provisions and deploys again (both idempotent) and tops up
missing workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.processes import descendants, start_ticks
from core.settings import LOCAL_PREFECT_SERVER_ENV, OFFLINE_ENV, Settings

ROOT = Path(__file__).resolve().parent.parent  # the repository: prefect.yaml and the flows


@dataclass
class Served:
    """What ``serve`` started or found running, and where to look."""

    api_url: str
    ui_url: str
    started: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    provisioned: dict[str, str] = field(default_factory=dict)
    deployments: list[str] = field(default_factory=list)


def api_url(settings: Settings) -> str:
    """The served API, e.g. ``http://127.0.0.1:4200/api``."""
    return f"http://{settings.serve_host}:{settings.serve_port}/api"


def serve_env(settings: Settings, root: Path = ROOT) -> dict[str, str]:
    """Environment of the server and the workers (and so of every flow run they start).

    The current environment (``NEWSPULSE_*`` settings, secrets) passes through; the Prefect home,
    API URL, telemetry switches and the repository root (read by prefect.yaml's pull step) are set.
    """
    env = {**OFFLINE_ENV, **LOCAL_PREFECT_SERVER_ENV, **os.environ}
    if not _is_loopback(settings.serve_host) and not env.get("PREFECT_SERVER_API_AUTH_STRING"):
        # A process worker runs whatever a deployment says: an open API is remote code execution.
        raise ValueError(f"refusing to serve on {settings.serve_host}: set PREFECT_SERVER_API_AUTH_STRING "
                         "(and PREFECT_API_AUTH_STRING for clients) or keep NEWSPULSE_SERVE_HOST on loopback")
    url = api_url(settings)
    env.update({
        "PREFECT_HOME": str((settings.serve_dir / "prefect").resolve()),
        "PREFECT_API_URL": url,
        # The UI calls this address from the browser; without it a port other than 4200 shows an empty UI.
        "PREFECT_SERVER_UI_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "DO_NOT_TRACK": "1",
        # Only the UI's own origin may call the API from a browser, with CSRF tokens: another page
        # open in the same browser cannot create deployments for the worker to run.
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": url.removesuffix("/api"),
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "NEWSPULSE_ROOT": str(root),
        # Heartbeats let the lost-run automation notice a run whose worker died (newspulse/provision.py).
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.serve_heartbeat_s),
    })
    # Relative paths would point elsewhere once the flow run's pull step changes directory.
    env["NEWSPULSE_HOME"] = str(settings.home.resolve())
    env["NEWSPULSE_WAREHOUSE_PATH"] = str(settings.warehouse_path.resolve())
    return env


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def serve(settings: Settings, root: Path = ROOT, deploy: bool = True, log=print) -> Served:
    """Start (or top up) the server, provision it, deploy, start the workers; see the module doc."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from newspulse.provision import provision

    env = serve_env(settings, root)
    served = Served(api_url=env["PREFECT_API_URL"], ui_url=env["PREFECT_API_URL"].removesuffix("/api"))
    (settings.serve_dir / "prefect").mkdir(parents=True, exist_ok=True)
    if _alive(settings, "server") is None:
        if _port_taken(settings.serve_host, settings.serve_port):
            raise RuntimeError(f"{settings.serve_host}:{settings.serve_port} is in use by a process `newspulse serve` "
                               "did not start: stop it, or choose another NEWSPULSE_SERVE_PORT")
        _spawn(settings, "server", [_prefect(), "server", "start", "--host", settings.serve_host,
                                    "--port", str(settings.serve_port), "--analytics-off"], env, root)
        served.started.append("server")
        log(f"starting the Prefect server on {served.ui_url} ...")
    else:
        served.running.append("server")
    wait_healthy(served.api_url, alive=lambda: _alive(settings, "server") is not None,
                 log_path=settings.serve_dir / "logs" / "server.log")
    with temporary_settings({PREFECT_API_URL: served.api_url}):
        served.provisioned = provision(settings)
    for name, status in served.provisioned.items():
        log(f"  {name}: {status}")
    if deploy:
        with temporary_settings({PREFECT_API_URL: served.api_url}):
            served.deployments = deploy_all(env, root, settings.serve_dir / "logs" / "deploy.log")
        log(f"deployed {len(served.deployments)} deployment(s) from prefect.yaml")
    gpu_workers = settings.serve_gpu_workers if settings.serve_gpu_workers is not None else int(_has_nvidia_gpu())
    if gpu_workers == 0:
        log("gpu pool: no worker here (no NVIDIA GPU); its runs wait for a GPU host's worker "
            "(NEWSPULSE_SERVE_GPU_WORKERS=1 runs them on this machine)")
    workers = [("cpu", i) for i in range(settings.serve_cpu_workers)] + [("gpu", i) for i in range(gpu_workers)]
    for pool, i in workers:
        if not served.provisioned.get(f"work-pool/{pool}", "").startswith(("ok", "created", "updated")):
            log(f"no process worker for pool {pool}: {served.provisioned.get(f'work-pool/{pool}')}")
            continue
        name = f"worker-{pool}-{i + 1}"
        if _alive(settings, name) is not None:
            served.running.append(name)
            continue
        worker_env = {**env, **({"CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", str(i))} if pool == "gpu" else {})}
        _spawn(settings, name, [_prefect(), "worker", "start", "--pool", pool, "--type", "process",
                                "--name", f"newspulse-{pool}-{i + 1}",
                                "--limit", "1" if pool == "gpu" else "4"], worker_env, root)
        served.started.append(name)
    return served


def deploy_all(env: dict[str, str], root: Path, log_path: Path) -> list[str]:
    """``prefect --no-prompt deploy --all`` from ``root``; returns ``flow/deployment`` names on the server.

    Call with the served API in the Prefect settings (the names are read back from it).
    """
    from prefect import get_client

    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([_prefect(), "--no-prompt", "deploy", "--all"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after 300 s", encoding="utf-8")
        raise RuntimeError(f"prefect deploy timed out; see {log_path}") from exc
    log_path.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"prefect deploy failed (exit {proc.returncode}); see {log_path}:\n{proc.stderr[-2000:]}")
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in client.read_deployments())


def wait_healthy(url: str, timeout_s: float = 180.0, alive=None, log_path: Path | None = None) -> None:
    """Poll ``<api>/health`` until the server answers (raises TimeoutError, or RuntimeError as soon
    as ``alive()`` says the server process has exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the Prefect server exited while starting; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no Prefect server answered at {url} within {timeout_s:.0f} s")


def stop(settings: Settings, names: list[str] | None = None, timeout_s: float = 30.0) -> list[str]:
    """End the process groups ``serve`` started (all, or ``names``), workers before the server.

    A worker's flow runs live in sessions of their own: they are ended with it (a worker that
    shuts down cleanly ends them itself; whatever is left is signalled after it).
    """
    pid_dir = settings.serve_dir / "pids"
    found = sorted(p.stem for p in pid_dir.glob("*.pid")) if pid_dir.exists() else []
    order = [n for n in found if n != "server"] + (["server"] if "server" in found else [])
    stopped = []
    for name in order:
        if names is not None and name not in names:
            continue
        pid = _alive(settings, name)
        if pid is not None:
            children = _descendants(pid)
            _end_group(pid, timeout_s)
            for child in children:  # flow-run processes in their own sessions, if still there
                _end_group(child, min(timeout_s, 10.0), group=False)
            stopped.append(name)
        (pid_dir / f"{name}.pid").unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> dict[str, int | None]:
    """``{process name: pid or None}`` for every process ``serve`` recorded."""
    pid_dir = settings.serve_dir / "pids"
    return {p.stem: _alive(settings, p.stem) for p in sorted(pid_dir.glob("*.pid"))} if pid_dir.exists() else {}


def _spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str], root: Path) -> int:
    """Start ``argv`` in a new session (its own process group), output to ``logs/<name>.log``."""
    logs, pids = settings.serve_dir / "logs", settings.serve_dir / "pids"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (pids / f"{name}.pid").write_text(f"{proc.pid} {start_ticks(proc.pid) or ''}\n", encoding="utf-8")
    return proc.pid


def _alive(settings: Settings, name: str) -> int | None:
    """The recorded pid of ``name`` if that very process still runs (same start time), else None."""
    path = settings.serve_dir / "pids" / f"{name}.pid"
    try:
        pid_text, started = path.read_text(encoding="utf-8").split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if (start_ticks(pid) or "") == started else None


def _end_group(pid: int, timeout_s: float, group: bool = True) -> None:
    """SIGTERM the process group led by ``pid`` (or the process alone); SIGKILL what is left after
    ``timeout_s``."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            kill(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.2)
    try:
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid`` and every descendant at once (what a lost machine looks like); returns the pids."""
    pids = [pid, *_descendants(pid)]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    _reap(pid)
    return pids


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, children before grandchildren (psutil)."""
    return descendants(pid)


def _port_taken(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_nvidia_gpu() -> bool:
    """An NVIDIA driver is loaded here (no torch import: serve stays quick)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def _reap(pid: int) -> None:
    """Collect our own child's exit status (a zombie still counts as a group member)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
