"""Checks of gRPC request fields, shared by every servicer: ids as identifiers, numbers finite and
in range, text bounded.

Each check returns the value or raises InvalidArgument saying which field is wrong and why;
jetrl/service.py answers it with INVALID_ARGUMENT, so a bad request never ends in UNKNOWN (an
unhandled exception) or reaches a file path, a subject or a lineage row.
"""

from __future__ import annotations

import math

from jetrl.bus.topology import check_run_id

MAX_RUN_ID = 128  # lineage's run_id column; a run's group and sample ids add at most ~30 characters
MAX_ID = 192  # lineage's sample_id column, the longest id
MAX_FILE_NAME = 255  # a file name on every file system jetrl writes to
MAX_SPEC = 1 << 20  # a run spec's YAML; real ones are a few KiB
MAX_VERSION = 1_000_000  # a policy version or a count of held-out prompts: train.steps and
# task.heldout_size are bounded by it (jetrl/spec_sections.py)


class InvalidArgument(ValueError):
    """A request field no servicer can act on; the message names the field and what is wrong."""


def run_id(value: str, field: str = "run_id") -> str:
    """A run id: one NATS subject token and one directory name (no '.', path separators, NUL,
    whitespace or wildcards: jetrl/bus/topology.py:check_run_id), at most MAX_RUN_ID characters."""
    if len(value) > MAX_RUN_ID:
        raise InvalidArgument(f"{field}: longer than {MAX_RUN_ID} characters")
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {exc}") from None


def dotted_id(value: str, field: str) -> str:
    """A group or sample id (`<run>.g<n>.<i>`, jetrl/ids.py): parts that are each a valid run id,
    joined by single dots, so never '..', a leading or trailing '.', a separator or NUL."""
    if len(value) > MAX_ID:
        raise InvalidArgument(f"{field}: longer than {MAX_ID} characters")
    if not value or any(not part for part in value.split(".")):
        raise InvalidArgument(f"{field}: {value!r} must be dot-separated non-empty parts")
    for part in value.split("."):
        run_id(part, field)
    return value


def file_name(value: str, field: str) -> str:
    """A bare file name: no directory part, never '.' or '..', no NUL."""
    if len(value) > MAX_FILE_NAME or value in (".", "..") or any(c in value for c in "/\\\x00"):
        raise InvalidArgument(f"{field}: must be a bare file name (no '/', '\\', NUL, '.' or '..')")
    return value


def number(value: float, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number in [low, high] (in (low, high] with `low_open`)."""
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        raise InvalidArgument(f"{field}: {value!r} is not in {'(' if low_open else '['}{low:g}, {high:g}]")
    return value


def integer(value: int, field: str, low: int, high: int) -> int:
    """An integer in [low, high]."""
    if not low <= value <= high:
        raise InvalidArgument(f"{field}: {value} is not in [{low}, {high}]")
    return value


def text(value: str, field: str, max_chars: int) -> str:
    """Free text that Postgres can store (no NUL) and of bounded length."""
    if len(value) > max_chars:
        raise InvalidArgument(f"{field}: longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains NUL")
    return value
