"""Options the benchmarks declare alike: which arms to run, and where a private stack's lineage,
logs and output go."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from jetrl.bench.report import OUT_HELP

__all__ = ["add_selection", "add_output"]


def add_selection(p: argparse.ArgumentParser, flag: str, names: Iterable[str], metavar: str, what: str) -> None:
    """An option `flag` choosing which of `names` a bench runs, all of them by default."""
    names = list(names)
    p.add_argument(
        flag, nargs="+", choices=names, default=names, metavar=metavar, help=f"{what} (default all: {' '.join(names)})"
    )


def add_output(p: argparse.ArgumentParser, json_help: str, timeout_s: float) -> argparse._ArgumentGroup:
    """The "output" group of a bench on a private stack: --out, --json, --markdown, --database-url,
    --logs, --timeout (one run's limit, default `timeout_s`); returned, for a bench's own options."""
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="DIR", help=OUT_HELP)
    out.add_argument("--json", type=Path, help=json_help)
    out.add_argument("--markdown", type=Path, help="also write the results as markdown here")
    out.add_argument(
        "--database-url",
        help="lineage database of the private stack (default: database jetrl_bench on the JETRL_DATABASE_URL server)",
    )
    out.add_argument(
        "--logs", type=Path, help="copy the services' logs here at the end (else they go with the temp dir)"
    )
    out.add_argument(
        "--timeout", type=float, default=timeout_s, help=f"seconds one run may take (default {timeout_s:g})"
    )
    return out
