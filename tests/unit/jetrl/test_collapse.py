"""jetrl/collapse.py: a version's collapse warning against the run's `metrics` bounds."""

from datetime import datetime

from jetrl.collapse import collapse_warning
from jetrl.lineage.reports import VersionPoint
from jetrl.spec_sections import MetricsSpec


def point(share: float | None, entropy: float | None = None) -> VersionPoint:
    metrics = {} if entropy is None else {"entropy": entropy}
    return VersionPoint(7, datetime(2026, 1, 1), 64, metrics, 0.5, 0.0, 0, share)


def test_one_answer_over_the_bound_warns_and_says_which_option():
    warning = collapse_warning(point(0.86), MetricsSpec())  # docs/rewards.md's collapsed runs: 74-86%
    assert warning.startswith("collapse? ") and "86% of v7" in warning and "metrics.warn_answer_share 0.5" in warning
    assert collapse_warning(point(0.3), MetricsSpec()) == ""  # a task with many answers
    assert collapse_warning(point(None), MetricsSpec()) == ""  # nothing scored with an answer yet
    assert collapse_warning(point(0.99), MetricsSpec(warn_answer_share=None)) == ""


def test_entropy_warns_only_below_a_bound_the_run_sets():
    assert collapse_warning(point(0.3, entropy=0.01), MetricsSpec()) == ""  # off by default: a sure policy is fine
    warning = collapse_warning(point(0.9, entropy=0.01), MetricsSpec(warn_entropy=0.1))
    assert "90% of v7" in warning and "entropy is 0.01 nats (metrics.warn_entropy 0.1)" in warning
