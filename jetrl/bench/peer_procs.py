"""Peak memory of a bench's processes: VmHWM from /proc/<pid>/status, beside the CPU seconds
jetrl/bench/control_plane_procs.py reads from /proc/<pid>/stat.

VmHWM is a process's peak resident set since it started, or since "5" was last written to its
/proc/<pid>/clear_refs (Linux >= 4.0; only that counter is reset, no page is touched). The stack's
services outlive a run, so `reset_peaks` clears theirs before each run and `stack_peaks` reads
them after it: each pid file's process plus its live descendants (the reward service scores in a
process pool). A sum of peaks is an upper bound of the peak of the sum: processes need not peak
at the same moment. Postgres is left out: it is a shared server, not the stack's.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from jetrl.bench.control_plane_procs import Proc, _process_table

__all__ = ["parse_hwm_kb", "peak_rss_mb", "reset_peak", "descendants", "reset_peaks", "stack_peaks", "own_usage"]


def parse_hwm_kb(status: str) -> int | None:
    """The VmHWM line of a /proc/<pid>/status text, in kB; None when it has none (a kernel thread,
    a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            fields = line.split()
            return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set of `pid` in MiB; None when it is gone or has no such figure."""
    try:
        kb = parse_hwm_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return None if kb is None else kb / 1024


def reset_peak(pid: int) -> bool:
    """Start `pid`'s VmHWM again from its current resident set; False when that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def descendants(table: dict[int, Proc], pid: int) -> list[int]:
    """`pid` and every live descendant of it in `table` (control_plane_procs' process table)."""
    children: dict[int, list[int]] = {}
    for child, proc in table.items():
        children.setdefault(proc.ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in table:
            found.append(p)
            todo += children.get(p, [])
    return found


def _trees(pids: Path) -> dict[str, list[int]]:
    table = _process_table()
    return {f.stem: descendants(table, int(f.read_text())) for f in sorted(pids.glob("*.pid"))}


def reset_peaks(pids: Path) -> bool:
    """Reset the peak of every process (and live descendant) with a pid file in `pids`; False when
    any reset was refused (the figures are then peaks since those processes started)."""
    return all([reset_peak(p) for tree in _trees(pids).values() for p in tree])


def stack_peaks(pids: Path) -> dict[str, float]:
    """Peak resident MiB of each pid file's process tree in `pids` (the sum over the tree)."""
    return {
        name: sum(mb for p in tree if (mb := peak_rss_mb(p)) is not None) for name, tree in _trees(pids).items() if tree
    }


def own_usage() -> dict[str, float]:
    """This process's CPU seconds so far (user + system, every thread, and its waited-for children)
    and its peak resident MiB: what a bench arm run as a subprocess reports about itself."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {"cpu_s": cpu, "peak_rss_mb": peak_rss_mb(os.getpid()) or me.ru_maxrss / 1024}
