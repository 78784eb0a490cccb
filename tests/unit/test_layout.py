"""The test tree's own rule: tests/ has no __init__.py files, so pytest imports every test module
by its basename; two test modules with one name in different folders stop the whole collection
("import file mismatch"), and so the suite, before any test runs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_basename_of_its_own():
    where: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        where[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1 and name != "conftest.py"} == {}
