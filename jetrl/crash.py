"""Deterministic crash points, for the tests that prove every decision survives a crash.

Each place where a service has recorded a decision and not yet published it calls
`crash_point("<name>")`. With `JETRL_CRASH_AT=<name>` in its environment (for tests only, read
here and nowhere else, so it is not one of the Settings) the process dies right there, as a
SIGKILL would leave it: no cleanup, no ack, no flush. `JETRL_CRASH_AT=<name>@<k>` dies at the
k-th time the point is reached (1-based).
Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

__all__ = ["CRASH_POINTS", "EXIT_CODE", "crash_point"]

EXIT_CODE = 86
# every point, named for the fact just recorded; the crash-point tests cover each one
CRASH_POINTS = (
    "admit.recorded",  # scheduler: a group admitted in lineage, its tasks not yet published
    "resume.recorded",  # scheduler: a buffered group resumed in lineage, its task not yet published
    "abort.recorded",  # scheduler: groups moved to the partial buffer, the ABORT not yet published
    "samples.recorded",  # scheduler: samples committed (a group complete), the group not yet published
    "seal.recorded",  # scheduler: a batch sealed in lineage, not yet published
    "version.head",  # scheduler: a version and its run's head recorded, what it trained not yet
    "end.recorded",  # scheduler: a run's end recorded, the workers not yet told
    "train.saved",  # trainer: a version's weights and state saved, not yet announced
)
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    raw = os.environ.get("JETRL_CRASH_AT", "")
    if not raw:
        return None
    name, _, nth = raw.partition("@")
    return name, int(nth or 1)


def crash_point(name: str) -> None:
    """Die here if the environment asks for it (see the module docstring)."""
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == target[1]:
        sys.stderr.write(f"crash point {name} reached: exiting with {EXIT_CODE} (JETRL_CRASH_AT)\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
