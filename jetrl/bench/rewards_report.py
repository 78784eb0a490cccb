"""What `jetrl bench rewards` shows and writes: its tables (version 0, per arm, per run), the
plots of held-out accuracy and of entropy, KL and top-answer share over versions, and the
experiment's criterion as measured.
"""

from __future__ import annotations

from pathlib import Path

from jetrl.bench.report import pyplot
from jetrl.bench.rewards_metrics import mean_curve, mean_series

__all__ = [
    "LABEL_COLUMNS",
    "RUN_COLUMNS",
    "SUMMARY_COLUMNS",
    "V0_COLUMNS",
    "criterion",
    "flat_run_rows",
    "plot_curves",
    "plot_dynamics",
    "summary_rows",
    "v0_rows",
]


def _pm(spread: dict, points: bool = False) -> str:
    scale = 100.0
    sign = "+" if points and spread["mean"] >= 0 else ""
    return f"{sign}{spread['mean'] * scale:.1f} ± {spread['std'] * scale:.1f}"


SUMMARY_COLUMNS = [
    ("arm", "arm", "{}"),
    ("labels", "labels", "{}"),
    ("setup", "G, estimator", "{}"),
    ("runs", "seeds", "{}"),
    ("v0", "v0 %", "{:.1f}"),
    ("final", "final % (mean ± sd)", "{}"),
    ("range", "final % (min–max)", "{}"),
    ("gain", "gain, points", "{}"),
    ("of_verify", "gain / verify's", "{:.0%}"),
    ("label_accuracy", "pseudo-label right", "{:.1%}"),
    ("warned", "collapse warned", "{}"),
    ("wall_s", "wall s / run", "{:,.0f}"),
]
RUN_COLUMNS = [
    ("arm", "arm", "{}"),
    ("seed", "seed", "{}"),
    ("v0_accuracy", "v0", "{:.1%}"),
    ("final_accuracy", "final", "{:.1%}"),
    ("final_version", "version", "{}"),
    ("gain_points", "gain, points", "{:+.1f}"),
    ("sample_accuracy", "samples right", "{:.1%}"),
    ("label_accuracy", "label right", "{:.1%}"),
    ("label_early", "label right (early)", "{:.1%}"),
    ("label_late", "label right (late)", "{:.1%}"),
    ("reward_precision", "reward precision", "{:.1%}"),
    ("reward_recall", "reward recall", "{:.1%}"),
    ("top_late", "top answer (late)", "{}"),
    ("entropy_late", "entropy (late), nats", "{:.2f}"),
    ("warned", "collapse warned", "{}"),
    ("wall_s", "wall s", "{:,.0f}"),
    ("state", "state", "{}"),
]
V0_COLUMNS = [
    ("set", "prompts", "{}"),
    ("greedy", "greedy", "{:.1%}"),
    ("single", "one sample", "{:.1%}"),
    ("majority", "majority of n", "{:.1%}"),
    ("pass", "any of n", "{:.1%}"),
]
LABEL_COLUMNS = [
    ("rule", "rule (pseudo-label = majority of …)", "{}"),
    ("label_accuracy", "label right", "{:.1%}"),
    ("no_label", "no label", "{:.1%}"),
    ("reward_agreement", "reward = correctness", "{:.1%}"),
]


def summary_rows(summary: list[dict]) -> list[dict]:
    rows = []
    for s in summary:
        size = f"G+1 = {s['group_size']}" if s["advantage"] == "mc_grpo" else f"G = {s['group_size']}"
        rows.append(
            {
                "arm": s["arm"],
                "labels": "yes" if s["labels_used"] else "no",
                "setup": f"{size}, {s['advantage']}",
                "runs": len(s["seeds"]),
                "v0": s["v0"]["mean"] * 100,
                "final": _pm(s["final"]),
                "range": f"{s['final']['min'] * 100:.1f}–{s['final']['max'] * 100:.1f}",
                "gain": _pm(s["gain"], True),
                "of_verify": s["gain_vs_reference"],
                "label_accuracy": s["label_accuracy"],
                "warned": f"{s['warned']} of {len(s['seeds'])}",
                "wall_s": s["wall_s"],
            }
        )
    return rows


def flat_run_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        labels = r.get("labels") or {}
        every, early, late = (labels.get(k) or {} for k in ("all", "early", "late"))
        gain = None if r.get("gain") is None else r["gain"] * 100
        half = (r.get("final_version") or 0) // 2
        late_entropy = [
            d["entropy"] for d in r.get("dynamics") or [] if d["version"] > half and d["entropy"] is not None
        ]
        out.append(
            {
                **r,
                "gain_points": gain,
                "sample_accuracy": every.get("sample_accuracy"),
                "label_accuracy": every.get("label_accuracy"),
                "label_early": early.get("label_accuracy"),
                "label_late": late.get("label_accuracy"),
                "reward_precision": every.get("reward_precision"),
                "reward_recall": every.get("reward_recall"),
                "top_late": None
                if late.get("top_answer") is None
                else f"{late['top_answer']} ({late['top_answer_share']:.0%})",
                "entropy_late": sum(late_entropy) / len(late_entropy) if late_entropy else None,
                "warned": "no" if r.get("warned_at") is None else f"from v{r['warned_at']}",
            }
        )
    return out


def v0_rows(diag: dict) -> tuple[list[dict], list[dict]]:
    n = diag["samples"]
    sets = [
        {"set": f"held-out ({n} samples at T={diag['temperature']:g})", **diag["heldout"]},
        {"set": f"first {diag['train_prompts']} training prompts", **diag["main"]},
        {"set": "their analogous view (terms reordered)", **diag["analogous"]},
    ]
    names = {
        "majority": "majority: the same n samples",
        "co_reward": "co_reward: n samples of the analogous view",
        "teacher": "teacher: n other samples of the question (v0 teacher = policy)",
    }
    return sets, [{"rule": names[k], **v} for k, v in diag["labels"].items()]


def plot_curves(path: Path, rows: list[dict], arms: list[str], v0: float | None, title: str) -> None:
    """Mean held-out accuracy over versions per arm, min–max over seeds shaded; G = 8 arms on the
    left, the G = 2 estimators (with verify at G = 8 for reference) on the right."""
    plt = pyplot()
    panels = [
        ("rewards (G = 8)", [a for a in arms if a in ("verify", "majority", "co_reward", "teacher")]),
        ("estimators at G = 2 (labels)", [a for a in arms if a in ("grpo-g2", "mc_grpo-g2")]),
    ]
    panels = [(t, names) for t, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (panel, names) in zip(axes[0], panels):
        for name in names + (["verify"] if "g2" in names[0] and "verify" in arms else []):
            curve = mean_curve([r for r in rows if r["arm"] == name])
            if not curve:
                continue
            vs = [c[0] for c in curve]
            style = {"linestyle": ":", "color": "grey"} if "g2" in names[0] and name == "verify" else {}
            (line,) = ax.plot(
                vs,
                [c[1] * 100 for c in curve],
                marker="o",
                markersize=3,
                label=name + (" (G = 8)" if style else ""),
                **style,
            )
            ax.fill_between(
                vs, [c[2] * 100 for c in curve], [c[3] * 100 for c in curve], color=line.get_color(), alpha=0.15
            )
        if v0 is not None:
            ax.axhline(v0 * 100, color="black", linewidth=0.8, linestyle="--", label="version 0")
        ax.set_title(panel)
        ax.set_xlabel("policy version")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    axes[0][0].set_ylabel("held-out accuracy, % (greedy)")
    fig.suptitle(f"{title}; lines: mean over seeds, bands: min–max", fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_dynamics(path: Path, rows: list[dict], arms: list[str], title: str) -> None:
    """Four panels per version, means over seeds per arm: held-out accuracy, the behaviour policy's
    token entropy, the KL to the reference (arms without one have none), and the share of the most
    common answer among the trained samples (collapse: entropy falls, one answer takes over)."""
    plt = pyplot()
    panels = [
        ("held-out accuracy, %", None),
        ("token entropy, nats", "entropy"),
        ("KL to the reference", "kl"),
        ("top answer's share of trained samples", "top_answer_share"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11.0, 7.5), squeeze=False)
    for ax, (label, key) in zip(axes.flat, panels):
        for name in arms:
            runs = [r for r in rows if r["arm"] == name]
            if key is None:
                points = [(v, mean * 100) for v, mean, _, _ in mean_curve(runs)]
            else:
                points = mean_series(runs, key)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="o" if key is None else None)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("policy version")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small", loc="best")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def criterion(summary: list[dict], arm: str = "co_reward", share: float = 0.8) -> str:
    """The done criterion of the experiment, as measured: does `arm` reach `share` of verify's gain?"""
    entry = next((s for s in summary if s["arm"] == arm), None)
    ratio = entry["gain_vs_reference"] if entry is not None else None
    if entry is None or ratio is None:
        return f"criterion: not measured ({arm} and verify both need completed runs)"
    verdict = "met" if ratio >= share else "not met"
    return (
        f"criterion {verdict}: {arm} reaches {ratio:.0%} of verify's held-out gain "
        f"({entry['gain']['mean'] * 100:+.1f} points, need >= {share:.0%})"
    )
