"""Which process a pid names: its start time (psutil), so a recycled pid is not taken for ours.

Shared by ``newspulse serve`` (its pid files) and ``warehouse.staging`` (the owner of a staging
folder). psutil reads ``/proc`` on Linux and the OS's own tables elsewhere.
"""

from __future__ import annotations

import psutil


def start_ticks(pid: int) -> str | None:
    """``pid``'s start time (seconds since the epoch, 2 decimals, as text): with the pid, a process's identity.

    A recycled pid has another start time. ``""`` when there is no such live process (none, or a
    zombie that has exited but is not reaped); None when the OS will not tell us.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return ""
        return f"{proc.create_time():.2f}"
    except psutil.NoSuchProcess:
        return ""
    except (psutil.AccessDenied, OSError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, children before grandchildren (empty when it is gone)."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []

    def level(p: psutil.Process) -> int:  # generations below ``pid``
        n, cur = 0, p
        try:
            while cur is not None and cur.pid != pid and n < 64:
                cur, n = cur.parent(), n + 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        return n
    return [p.pid for p in sorted(found, key=level)]
