"""Collapse in sight (docs/rewards.md): a version's warning when its policy piles onto one answer
or stops being unsure, by the bounds the run's `metrics` section sets.

The scheduler shows it in every run's progress (`jetrl run`, `jetrl watch`, `jetrl runs`) and
logs it when it records a version that crosses a bound; `jetrl bench rewards` records where each
of its runs first crossed one. Here, not in the scheduler, so that both can use it.
"""

from __future__ import annotations

from jetrl.lineage.reports import VersionPoint
from jetrl.spec_sections import MetricsSpec

__all__ = ["collapse_warning"]


def collapse_warning(point: VersionPoint, bounds: MetricsSpec) -> str:
    """What in this version looks like collapse, or "" when nothing does (or nothing is known)."""
    found = []
    share = point.top_answer_share
    if bounds.warn_answer_share is not None and share is not None and share > bounds.warn_answer_share:
        found.append(
            f"one answer is {share:.0%} of v{point.version}'s trained samples "
            f"(metrics.warn_answer_share {bounds.warn_answer_share:g})"
        )
    entropy = point.metrics.get("entropy")
    if bounds.warn_entropy is not None and entropy is not None and entropy < bounds.warn_entropy:
        found.append(f"v{point.version}'s entropy is {entropy:.3g} nats (metrics.warn_entropy {bounds.warn_entropy:g})")
    if not found:
        return ""
    return "collapse? " + "; ".join(found) + ": label-free rewards may be rewarding a constant answer (docs/rewards.md)"
