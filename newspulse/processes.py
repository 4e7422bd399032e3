"""Which process a pid names: start times from ``/proc``, so a recycled pid is not taken for ours.

Shared by ``newspulse serve`` (its pid files) and ``warehouse.staging`` (the owner of a staging
folder). Plain Python, Linux ``/proc`` only; elsewhere every answer is "cannot tell".
"""

from __future__ import annotations

from pathlib import Path


def start_ticks(pid: int) -> str | None:
    """``pid``'s start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Exact and immune to clock steps, unlike wall-clock start times. ``""`` when there is no such
    live process (none, or a zombie that has exited but is not reaped); None when ``/proc``
    cannot tell (no ``/proc``, pids hidden from us).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "" if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return "" if fields[0] == "Z" else fields[19]
