"""The measurements of `jetrl bench rewards` after its runs: the pseudo-labels each run trained
on (read back from lineage) and the summary over seeds; version 0's, before the runs, are in
jetrl.bench.rewards_v0.

The answer rule is the label-free servers' (svc_reward/consensus.py, docs/design.md §6): a completion's
answer is its last number, compared as an exact fraction; no number, no answer, never a winner;
ties go to the smallest value (`jetrl.tasks.answers.answer_of` and `majority_answer`, which
the servers use too).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence

from jetrl.spec_sections import MetricsSpec
from jetrl.states import GroupState
from jetrl.tasks.answers import answer_of, majority_answer
from jetrl.views import ANALOGOUS, MAIN, TEACHER

__all__ = [
    "correct",
    "GroupRecord",
    "label_of",
    "label_stats",
    "read_groups",
    "read_dynamics",
    "mean_series",
    "summarize",
    "mean_curve",
]


def correct(answer: str | None, reference: str) -> bool:
    return answer is not None and answer == answer_of(reference)


# ---- what the runs trained on, from lineage ------------------------------------------------------

GroupRecord = tuple[int, str, dict[str, list[tuple[str, float | None]]]]
"""(admitted version, reference answer, view -> [(text, reward)]) of one trained group."""


def label_of(reward: str, view: str, views: dict[str, list[tuple[str, float | None]]], reference: str) -> str | None:
    """The label `reward` scored `view`'s samples against: the reference (`verify`), the majority
    of the same view (`majority`), of the other trained view (`co_reward`), of the teacher's
    samples (`teacher`)."""

    def vote(name: str) -> str | None:
        return majority_answer(answer_of(t) for t, _ in views.get(name, []))

    if reward == "verify":
        return answer_of(reference)
    if reward == "majority":
        return vote(view)
    if reward == "co_reward":
        return vote(ANALOGOUS if view == MAIN else MAIN)
    if reward == "teacher":
        return vote(TEACHER)
    raise ValueError(f"unknown reward {reward!r}")


def label_stats(groups: Sequence[GroupRecord], reward: str, split_version: int) -> dict:
    """Figures of the trained groups of one run, overall and for groups admitted before / from
    `split_version` (early / late): the share of trained samples that are right (accuracy at the
    rollout temperature), of pseudo-labels that equal the reference, of groups without one, of
    rewards that equal the sample's correctness, and the precision (right among rewarded) and
    recall (rewarded among right) of the reward actually recorded; and the run's most frequent
    answer over all its questions with its share of the samples (a policy that answers every
    question alike agrees with itself: the label-free rewards' degenerate optimum)."""

    def figures(subset: Sequence[GroupRecord]) -> dict:
        n = right = labels = labels_right = no_label = agree = rewarded = rewarded_right = 0
        own_right = 0
        answers: Counter = Counter()
        for _, reference, views in subset:
            for view, rows in views.items():
                if view == TEACHER:
                    continue  # context for the reward, never trained
                label = label_of(reward, view, views, reference)
                labels += 1
                labels_right += correct(label, reference)
                no_label += label is None
                own_right += correct(majority_answer(answer_of(t) for t, _ in rows), reference)
                for text, r in rows:
                    answer = answer_of(text)
                    answers[answer] += 1
                    ok = correct(answer, reference)
                    got = r is not None and r > 0.5
                    n += 1
                    right += ok
                    agree += got == ok
                    rewarded += got
                    rewarded_right += got and ok

        def ratio(a: float, b: float) -> float | None:
            return a / b if b else None

        top = next(((a, c) for a, c in answers.most_common() if a is not None), None)
        return {
            "groups": len(subset),
            "samples": n,
            "sample_accuracy": ratio(right, n),
            "label_accuracy": ratio(labels_right, labels),
            "own_majority_accuracy": ratio(own_right, labels),
            "no_label": ratio(no_label, labels),
            "reward_agreement": ratio(agree, n),
            "reward_precision": ratio(rewarded_right, rewarded),
            "reward_recall": ratio(rewarded_right, right),
            "top_answer": top[0] if top else None,
            "top_answer_share": ratio(top[1], n) if top else None,
        }

    return {
        "all": figures(groups),
        "early": figures([g for g in groups if g[0] < split_version]),
        "late": figures([g for g in groups if g[0] >= split_version]),
    }


def read_groups(database_url: str, run_id: str) -> list[GroupRecord]:
    """Every trained group of `run_id` with its reference and its samples' texts and rewards."""
    from sqlalchemy import create_engine, select

    from jetrl.lineage.models import Prompt, PromptGroup, Sample

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    Sample.group_id,
                    Sample.view,
                    Sample.text,
                    Sample.reward,
                    PromptGroup.admitted_version,
                    Prompt.reference,
                )
                .join(PromptGroup, PromptGroup.group_id == Sample.group_id)
                .join(Prompt, (Prompt.run_id == PromptGroup.run_id) & (Prompt.prompt_id == PromptGroup.prompt_id))
                .where(Sample.run_id == run_id, PromptGroup.run_id == run_id, PromptGroup.state == GroupState.TRAINED)
                .order_by(Sample.group_id, Sample.index)
            ).all()
    finally:
        engine.dispose()
    groups: dict[str, tuple[int, str, dict]] = {}
    for group_id, view, text, reward, admitted, reference in rows:
        entry = groups.setdefault(group_id, (admitted, reference, defaultdict(list)))
        entry[2][view].append((text, reward))
    return [(admitted, reference, dict(views)) for admitted, reference, views in groups.values()]


def read_dynamics(database_url: str, run_id: str, bounds: MetricsSpec) -> list[dict]:
    """Per trained version, from lineage as `jetrl report` reads it: the behaviour policy's mean
    token entropy, the KL to the reference (None without one), the share of its trained samples
    that gave the most common answer, and the collapse warning the run's progress showed for it
    (jetrl/collapse.py, by the run's `metrics` bounds)."""
    import asyncio

    from jetrl.collapse import collapse_warning
    from jetrl.lineage.db import make_engine
    from jetrl.lineage.reports import Reports

    async def points():
        engine = make_engine(database_url)
        try:
            return await Reports(engine).version_points(run_id)
        finally:
            await engine.dispose()

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None  # kl is NaN without a reference

    return [
        {
            "version": p.version,
            "entropy": finite(p.metrics.get("entropy")),
            "kl": finite(p.metrics.get("kl")),
            "top_answer_share": p.top_answer_share,
            "warning": collapse_warning(p, bounds),
        }
        for p in asyncio.run(points())
    ]


# ---- over seeds --------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def summarize(rows: Sequence[dict], arms: Sequence[str], reference_arm: str = "verify") -> list[dict]:
    """One entry per arm (in `arms` order) over its completed runs: final held-out accuracy and the
    gain over version 0 (mean, sample std, min, max), the gain as a share of `reference_arm`'s mean
    gain, and the mean pseudo-label accuracy. Arms without a completed run are left out."""
    done = [r for r in rows if r.get("final_accuracy") is not None and r.get("v0_accuracy") is not None]
    by_arm = {a: [r for r in done if r["arm"] == a] for a in arms}
    reference = by_arm.get(reference_arm) or []
    ref_gain = statistics.fmean(r["final_accuracy"] - r["v0_accuracy"] for r in reference) if reference else None
    out = []
    for arm in arms:
        runs = by_arm[arm]
        if not runs:
            continue
        gains = [r["final_accuracy"] - r["v0_accuracy"] for r in runs]
        labels = [
            r["labels"]["all"]["label_accuracy"]
            for r in runs
            if r.get("labels") and r["labels"]["all"]["label_accuracy"] is not None
        ]
        out.append(
            {
                "arm": arm,
                "seeds": [r["seed"] for r in runs],
                "group_size": runs[0].get("group_size"),
                "advantage": runs[0].get("advantage"),
                "labels_used": runs[0].get("labels_used"),
                "v0": _spread([r["v0_accuracy"] for r in runs]),
                "final": _spread([r["final_accuracy"] for r in runs]),
                "gain": _spread(gains),
                "gain_vs_reference": statistics.fmean(gains) / ref_gain if ref_gain else None,
                "label_accuracy": statistics.fmean(labels) if labels else None,
                "warned": sum(r.get("warned_at") is not None for r in runs),
                "wall_s": statistics.fmean(r["wall_s"] for r in runs),
            }
        )
    return out


def mean_curve(rows: Sequence[dict]) -> list[tuple[int, float, float, float]]:
    """(version, mean, min, max) of held-out accuracy over the runs, at the versions every run evaluated."""
    curves = [{p["version"]: p["accuracy"] for p in r["curve"]} for r in rows if r.get("curve")]
    if not curves:
        return []
    versions = sorted(set.intersection(*(set(c) for c in curves)))
    return [
        (v, statistics.fmean(c[v] for c in curves), min(c[v] for c in curves), max(c[v] for c in curves))
        for v in versions
    ]


def mean_series(rows: Sequence[dict], key: str) -> list[tuple[int, float]]:
    """(version, mean over the runs) of one per-version figure of their `dynamics`, at the versions
    where every run has it."""
    series = [{d["version"]: d[key] for d in r.get("dynamics") or [] if d.get(key) is not None} for r in rows]
    if not series or not all(series):
        return []
    versions = sorted(set.intersection(*(set(s) for s in series)))
    return [(v, statistics.fmean(s[v] for s in series)) for v in versions]
