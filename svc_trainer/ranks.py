"""A trainer's rank processes: started together, fed the same commands, watched, ended together.

A DeepSpeed run trains on N data-parallel ranks, each a process started here (spawn) and joined to
the others by torch.distributed over a TCP store on a local port. The trainer process is none of
them: it sends every rank its command over the rank's pipe and waits for every reply, one command
at a time, so the ranks enter the same collectives in the same order.

A group fails as a whole, since a collective missing a member can only hang or raise; every rank is
killed and every later call raises. Two ways, because they need different cures:
- a rank **raises** (its command failed: a bad config, out of memory on a batch): RankError, a
  fault like any other, which the batch's retries count, so one that fails every time ends its run;
- a rank **exits**, or makes no progress (no reply, no heartbeat) within the timeout: RanksFailed,
  and `on_failure` is told (from a watcher thread, also between commands): the trainer's
  infrastructure is broken, and the trainer exits to be restarted as a whole.
Ranks die with the trainer: the kernel kills them when it exits (PR_SET_PDEATHSIG), and a rank
whose pipe closes stops.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from time import monotonic
from typing import Any

from jetrl.logs import log_fields

__all__ = ["BEAT", "RankError", "RankGroup", "RanksFailed", "die_with_parent"]

log = logging.getLogger(__name__)
CLOSE_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1
BEAT = "beat"  # a rank's "still working" between a command and its reply (one per micro-batch)


class RankError(RuntimeError):
    """A rank raised: its traceback. The group is gone; the run's engine is built again."""


class RanksFailed(ConnectionError):
    """The rank group is gone (a rank died, failed or hung). A ConnectionError: the trainer's
    infrastructure failed, not the batch, so the batch is not held against (jetrl.bus.is_transient);
    the trainer exits and is started again as a whole."""


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent (the trainer) exits (Linux), and leave a
    terminal's Ctrl-C to the trainer, which ends its ranks itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the closed pipe still stops the rank at its next command
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RankGroup:
    """`world` processes running `main(rank, world, port, pipe, timeout_s)`."""

    def __init__(
        self,
        world: int,
        timeout_s: float,
        main: Callable[[int, int, int, Connection, float], None],
        on_failure: Callable[[str], None] | None = None,
    ):
        ctx = multiprocessing.get_context("spawn")  # a fork would copy the trainer's threads and loop
        port = _free_port()
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.failure: str | None = None
        self._state = threading.Lock()
        self._one_command = threading.Lock()
        self._closing = False
        self.pipes: list[Connection] = []
        self.procs = []
        for rank in range(world):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=main, args=(rank, world, port, theirs, timeout_s), name=f"trainer-rank-{rank}")
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)
        threading.Thread(target=self._watch, name="rank-watch", daemon=True).start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(self, command: str, *args: Any, each: Sequence[Any] | None = None) -> list[Any]:
        """Send `(command, *args)` to every rank (with `each[rank]` last when given); every rank's reply."""
        with self._one_command:
            if self.failure:
                raise RanksFailed(self.failure)
            for rank, pipe in enumerate(self.pipes):
                try:
                    pipe.send((command, *args, *([each[rank]] if each is not None else [])))
                except OSError:
                    self._fail(f"rank {rank} is gone (exit code {self.procs[rank].exitcode}) before {command!r}")
            replies: list[Any] = [None] * len(self.pipes)
            pending = dict(enumerate(self.pipes))
            deadline = monotonic() + self.timeout_s  # pushed back by every heartbeat
            while pending:
                ready = wait(list(pending.values()), timeout=max(deadline - monotonic(), 0))
                if not ready:
                    self._fail(
                        f"rank(s) {sorted(pending)} made no progress in {command!r} for {self.timeout_s:g}s "
                        "(JETRL_COLLECTIVE_TIMEOUT_S)"
                    )
                for rank in [r for r, pipe in pending.items() if pipe in ready]:
                    try:
                        status, value = pending[rank].recv()
                    except (EOFError, OSError):
                        self.procs[rank].join(1.0)
                        self._fail(f"rank {rank} exited (code {self.procs[rank].exitcode}) during {command!r}")
                    if status == BEAT:
                        deadline = monotonic() + self.timeout_s
                        continue
                    del pending[rank]
                    if status == "error":
                        self._fail(f"rank {rank} failed in {command!r}: {value}", error=True)
                    replies[rank] = value
            return replies

    def close(self) -> None:
        """Ask every rank to stop, and kill those that do not within a grace period."""
        with self._state:
            self._closing = True
        if not self.failure:
            for pipe in self.pipes:
                try:
                    pipe.send(("close",))
                except OSError:
                    pass
        deadline = monotonic() + CLOSE_GRACE_S
        for proc in self.procs:
            proc.join(max(deadline - monotonic(), 0))
        self._kill()

    def _fail(self, reason: str, error: bool = False) -> None:
        """Fail the group (once): kill every rank; raise RankError when a rank raised (`error`),
        else tell on_failure and raise RanksFailed."""
        with self._state:
            first = self.failure is None and not self._closing
            if self.failure is None:
                self.failure = reason
        if first:
            log.error("trainer ranks failed", extra=log_fields(reason=reason[:2000], pids=self.pids))
            self._kill()
            if self.on_failure is not None and not error:
                self.on_failure(reason)
        if error:
            raise RankError(reason)
        raise RanksFailed(self.failure or reason)

    def _kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()  # one we started, by its handle
            proc.join(5.0)

    def _watch(self) -> None:
        """Fail the group when a rank exits unasked, even between commands."""
        sentinels = {p.sentinel: rank for rank, p in enumerate(self.procs)}
        ended = wait(list(sentinels))
        rank = next(r for sentinel, r in sentinels.items() if sentinel in ended)
        self.procs[rank].join(1.0)  # reaped, so its exit code (e.g. -9: killed) is known for the reason
        with self._state:
            if self._closing or self.failure:
                return  # asked to, or already failed (and killed) by call()
        try:
            self._fail(f"rank {rank} exited (code {self.procs[rank].exitcode})")
        except RanksFailed:
            pass
