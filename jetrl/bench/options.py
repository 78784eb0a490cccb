"""Options `jetrl bench async` and `jetrl bench rewards` declare alike."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

__all__ = ["add_selection"]


def add_selection(p: argparse.ArgumentParser, flag: str, names: Iterable[str], metavar: str, what: str) -> None:
    """An option `flag` choosing which of `names` a bench runs, all of them by default."""
    names = list(names)
    p.add_argument(
        flag, nargs="+", choices=names, default=names, metavar=metavar, help=f"{what} (default all: {' '.join(names)})"
    )
