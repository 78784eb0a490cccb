"""CPU seconds of the private stack's processes over one run, and py-spy profiles of its services.

A process's CPU is read from /proc/<pid>/stat: utime + stime of it and of every live descendant
(the reward service scores in a process pool), plus cutime + cstime (descendants that ended and
were waited for). A run's figure is the difference between snapshots taken before it was
created and after it ended, per pid file of the stack (data_dir/pids: each service, each extra
rollout worker, nats-server). Postgres is not the stack's: its row sums every process named
postgres on the machine, i.e. the whole server, whatever else it served meanwhile.

`--profile DIR` attaches `py-spy record -f raw -r 50` to each service for the run (sampling
pauses the process, so a profiled run is a little slower) and leaves DIR/<service>-w<N>.txt,
collapsed stacks for flame graphs (py-spy's own messages: .log beside them), and
DIR/summary-w<N>.txt, each service's top inclusive frames over its busy samples (those whose
innermost frame is not a wait: IDLE).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "POSTGRES",
    "Proc",
    "parse_stat",
    "tree_ticks",
    "cpu_snapshot",
    "cpu_delta",
    "py_spy",
    "Profile",
    "read_profile",
    "summary",
    "profiling",
]

POSTGRES = "postgres (whole server)"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# innermost frames of a thread waiting for work, which py-spy's own idle detection lets through
IDLE = re.compile(
    r"^(\w*Selector\.select \((\S*/)?selectors\.py"
    r"|(Condition|Event)\.wait \((\S*/)?threading\.py"
    r"|Thread\.run \((\S*/)?threading\.py"  # in a native thread target: no Python frame to blame
    r"|Queue\.get \((\S*/)?queue\.py"
    r"|_worker \((\S*/)?concurrent/futures/thread\.py)"
)
OURS = re.compile(r"\((jetrl|svc_\w+)/")  # a frame of the project's own code
TOP = 12  # frames of each kind per service in the summary


@dataclass(frozen=True)
class Proc:
    comm: str
    ppid: int
    ticks: int  # utime + stime + cutime + cstime, in clock ticks


def parse_stat(text: str) -> Proc:
    """One /proc/<pid>/stat line. The command name is in parentheses and may hold spaces or
    parentheses itself, so the fields are counted from the last ')': field 3 (state) first."""
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    return Proc(head.partition("(")[2], int(fields[1]), sum(int(f) for f in fields[11:15]))


def _process_table() -> dict[int, Proc]:
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            table[int(stat.parent.name)] = parse_stat(stat.read_text())
        except (OSError, ValueError, IndexError):  # gone between listing and reading
            continue
    return table


def tree_ticks(table: dict[int, Proc], pid: int) -> int:
    """Ticks of `pid` and its live descendants in `table`."""
    children: dict[int, list[int]] = {}
    for child, proc in table.items():
        children.setdefault(proc.ppid, []).append(child)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += table[p].ticks
        todo += children.get(p, [])
    return total


def cpu_snapshot(pids: Path) -> dict[str, float]:
    """CPU seconds so far of each live process with a pid file in `pids`, and of Postgres."""
    table = _process_table()
    snapshot = {}
    for pid_file in sorted(pids.glob("*.pid")):
        pid = int(pid_file.read_text())
        if pid in table:
            snapshot[pid_file.stem] = tree_ticks(table, pid) / CLK_TCK
    snapshot[POSTGRES] = sum(p.ticks for p in table.values() if p.comm == "postgres") / CLK_TCK
    return snapshot


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two snapshots, for the processes in both."""
    return {name: after[name] - before[name] for name in after if name in before}


def py_spy() -> str:
    """The py-spy executable (beside this Python, else on PATH); exits saying how to install it."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("jetrl bench control-plane --profile needs py-spy: pip install py-spy")
    return found


@dataclass
class Profile:
    """What py-spy saw of one service: its busy samples, and on how many of them each frame was
    (inclusive) or was the innermost one (self)."""

    busy: int = 0
    inclusive: Counter[str] = field(default_factory=Counter)
    self: Counter[str] = field(default_factory=Counter)


def read_profile(lines: Iterable[str]) -> Profile:
    """A Profile from py-spy's raw output (`frame;frame;... count` per line): samples whose
    innermost frame is IDLE are left out, and so are the `process ...` roots --subprocesses adds."""
    profile = Profile()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames or IDLE.search(frames[-1]):
            continue
        profile.busy += int(count)
        profile.inclusive.update(dict.fromkeys(set(frames), int(count)))
        profile.self[frames[-1]] += int(count)
    return profile


def summary(service: str, profile: Profile, n: int = TOP) -> str:
    """The project's frames on most busy samples (inclusive), then the innermost frames (self)."""
    lines = [f"{service}: {profile.busy} busy samples"]
    ours = [(f, c) for f, c in profile.inclusive.most_common() if OURS.search(f)][:n]
    for title, frames in (("inclusive, project code", ours), ("self", profile.self.most_common(n))):
        lines.append(f"  {title}:")
        lines += [f"    {count / profile.busy:6.1%}  {frame}" for frame, count in frames]
    return "\n".join(lines)


@contextmanager
def profiling(exe: str, out: Path, pids: Path, workers: int) -> Iterator[None]:
    """py-spy on every service (svc_* pid files) while the body runs; then its collapsed stacks in
    `out`/<service>-w<workers>.txt and their top frames in `out`/summary-w<workers>.txt."""
    out.mkdir(parents=True, exist_ok=True)
    spies = {}
    for pid_file in sorted(pids.glob("svc_*.pid")):
        target = out / f"{pid_file.stem}-w{workers}.txt"
        command = [exe, "record", "-f", "raw", "-r", "50", "--subprocesses", "-p", pid_file.read_text().strip()]
        with open(target.with_suffix(".log"), "wb") as log:
            spies[pid_file.stem] = (subprocess.Popen([*command, "-o", str(target)], stdout=log, stderr=log), target)
    try:
        yield
    finally:
        for proc, _ in spies.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        for proc, _ in spies.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        summaries = [
            summary(name, read_profile(target.read_text().splitlines() if target.exists() else []))
            for name, (_, target) in spies.items()
        ]
        (out / f"summary-w{workers}.txt").write_text(
            f"# {workers} rollout worker(s)\n\n" + "\n\n".join(summaries) + "\n"
        )
