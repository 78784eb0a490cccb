"""Output of `jetrl bench peer`: the arms' table, where jetrl's wall time went, the issue's criteria
as measured, the differences between the arms that could not be removed; JSON and markdown.

Rows are the arms' flat dicts (peer_jetrl.arm_row and the TRL result); `add_ratios` adds each
jetrl arm's wall time over the TRL arm's of the same seed.
"""

from __future__ import annotations

import statistics
from typing import Any

from jetrl.bench.report import markdown_table, rich_table, show
from jetrl.bench.stack import console

__all__ = ["DIFFERENCES", "TRL", "columns", "curve_text", "add_ratios", "criteria", "report_text", "show_report"]

TRL = "TRL"
WALL_LIMIT = 1.5  # the issue: jetrl's wall time at most 1.5 × TRL's in the same invocation

DIFFERENCES = [
    "Sampling: jetrl's rollout worker decodes with its own KV-cache loop and draws each sample's tokens by inverse "
    "CDF from uniforms of a torch.Generator seeded from (run seed, group, index); TRL samples with transformers' "
    "generate (do_sample, top_k 0, top_p 1, temperature 1) "
    "from the global torch RNG seeded with the seed. Same distribution, different draws: the arms see different "
    "samples from the first step on, so their curves can only agree within seed noise.",
    "Generation batching: TRL generates the step's 128 completions in one generate call; jetrl's worker takes up to "
    "`rollout_concurrency` tasks (groups of 8) at once, each its own generate call, and its torch engine decodes the "
    "calls in flight as one batch (svc_rollout/coalesce.py); the JSON records the stack's rollout_concurrency.",
    "Advantage: both (r - group mean) / (unbiased group std + eps); eps is 1e-6 in jetrl, 1e-4 in TRL (fixed). "
    "With 0/1 rewards at G = 8 the smallest non-zero std is 0.354: a non-zero advantage differs by at most 3e-4 "
    "relative.",
    "Loss: jetrl's decoupled PPO weights each token by w = exp(p - b), b the behaviour log-prob the rollout engine "
    "reported; at η = 0 with one minibatch w is 1 up to the engine's numerical gap, and tokens with w > 5 are masked "
    "(behaviour_weight_cap). TRL without vLLM takes the ratio against its own detached log-probs: exactly 1, no cap. "
    "Both average over the batch's completion tokens (TRL loss_type bnpo = jetrl token_mean, one minibatch). TRL also "
    "computes per-token entropies for its logs (time, no gradient).",
    "Staleness: TRL is synchronous; the η = 2 arm trains on samples up to 2 versions old (importance-weighted by w) "
    "and is compared with the same TRL run. At η = 2 a batch takes the oldest complete groups, so a prompt may be "
    "trained a step later than in TRL, where step k is always problems 16k..16k+15 (as jetrl's η = 0).",
    "Reward: jetrl scores in its reward process, which takes each group off the bus and calls the verify server it "
    "serves directly (exact number, then math-verify for a completion with \\boxed); TRL's reward function runs in "
    "the trainer process with the exact rule only (jetrl.tasks.answers.is_correct). The same verdict on every "
    "6-token completion of an arithmetic problem unless it holds \\boxed.",
    "Evaluation: both score greedy completions of the same 200 held-out problems (max_new_tokens 6) with "
    "jetrl.policy.generate.greedy_score at versions 0, 10, ..., 50; jetrl's worker decodes with its KV-cache engine, "
    "TRL's callback with the no-cache reference decoder (`complete`; the engine tests hold the two token-identical). "
    "With η = 2 the worker scores the version it holds when the request arrives, which may be a newer one (the table "
    "shows accuracy@version then).",
    "Evaluation time: jetrl's evaluations run on the rollout worker beside training and are inside its wall time "
    "(on two cores they compete with generation); TRL's run between steps and are taken out of its wall time.",
    "Wall time: jetrl's from CreateRun (Run.created_at) to the last version's announcement, lineage timestamps; it "
    "includes each run's model loads in the trainer and worker, writing and loading every version's weights, lineage "
    "writes. TRL's is trainer.train() less its evaluations; GRPOTrainer's construction is outside it, as are the start "
    "of jetrl's stack and a short unmeasured warm-up run on it (the services' first model load).",
    "CPU: jetrl's is every stack process (four services and their children, nats-server) plus the whole Postgres "
    "server, whatever else it served meanwhile; TRL's is its own process over train(), evaluations included (as "
    "jetrl's are). Peak RSS: jetrl's is the sum of each stack process's peak (VmHWM reset before the run; Postgres "
    "left out), an upper bound since the peaks need not coincide; TRL's is its process's peak over its whole life.",
    "Threads: both take torch's default intra-op threads unless --torch-threads N, which the jetrl trainer and rollout "
    "worker each get (they share the cores) and TRL's single process gets.",
    "Optimizer and precision: both torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0, not fused), constant "
    "lr 2e-4, grad-norm clip 1.0, float32 on CPU (TRL's bf16 and gradient checkpointing defaults turned off); TRL's "
    "Trainer splits the parameters into decay and no-decay groups, the same at weight decay 0.",
]


def columns(steps: int) -> list[tuple[str, str, str]]:
    return [
        ("arm", "arm", "{}"),
        ("seed", "seed", "{}"),
        ("wall_s", f"{steps}-step wall s", "{:,.1f}"),
        ("first_step_s", "of it 1st step s", "{:,.1f}"),
        ("time_to_target_s", "s to target", "{:,.1f}"),
        ("version_at_target", "v at target", "{}"),
        ("final_accuracy", "final held-out", "{:.1%}"),
        ("curve_text", "held-out % at evals", "{}"),
        ("cpu_s", "CPU s", "{:,.0f}"),
        ("peak_rss_mb", "peak RSS MB", "{:,.0f}"),
        ("wall_vs_trl", "× TRL wall", "{:.2f}"),
    ]


SPLIT_COLUMNS = [
    ("arm", "arm", "{}"),
    ("seed", "seed", "{}"),
    ("waiting_s", "waiting for a batch s", "{:,.1f}"),
    ("training_s", "batch → version s", "{:,.1f}"),
    ("waiting_p50_ms", "waiting p50 ms", "{:,.0f}"),
    ("training_p50_ms", "batch → version p50 ms", "{:,.0f}"),
    ("admission_p50_ms", "batch: admitted p50 ms", "{:,.0f}"),
    ("generation_p50_ms", "→ generated", "{:,.0f}"),
    ("reward_p50_ms", "→ scored", "{:,.0f}"),
    ("sealing_p50_ms", "→ sealed", "{:,.0f}"),
    ("cpu_without_postgres_s", "stack CPU s (no Postgres)", "{:,.0f}"),
]


def curve_text(curve: list[dict[str, float]], expected: list[int]) -> str:
    """Accuracy in % at each evaluation, `@version` where it is not the one expected in that place."""
    cells = []
    for i, point in enumerate(curve):
        cell = f"{point['accuracy'] * 100:.1f}"
        if i >= len(expected) or point["version"] != expected[i]:
            cell += f"@{point['version']}"
        cells.append(cell)
    return " ".join(cells)


def add_ratios(rows: list[dict[str, Any]], expected: list[int]) -> None:
    """Each row's curve text, and each jetrl row's wall time over its seed's TRL wall time."""
    trl = {r["seed"]: r for r in rows if r["arm"] == TRL}
    for row in rows:
        row["curve_text"] = curve_text(row["curve"], expected)
        base = trl.get(row["seed"], {})
        for key, ratio in (("wall_s", "wall_vs_trl"), ("later_steps_s", "later_steps_vs_trl")):
            mine, theirs = row.get(key), base.get(key)
            row[ratio] = mine / theirs if row["arm"] != TRL and mine and theirs else None


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1%} ± {sd:.1%} (n={len(values)})"


def criteria(rows: list[dict[str, Any]], etas: list[int]) -> list[dict[str, Any]]:
    """The issue's criteria as measured: wall ratio per seed (η = min), final accuracy over seeds
    per arm, and whether the largest η reached the target before TRL, per seed."""
    out: list[dict[str, Any]] = []
    trl = {r["seed"]: r for r in rows if r["arm"] == TRL}
    sync, fast = f"jetrl η={min(etas)}", f"jetrl η={max(etas)}"
    for row in rows:
        if row["arm"] == sync and row.get("wall_vs_trl") is not None:
            ratio = row["wall_vs_trl"]
            out.append(
                {
                    "criterion": f"seed {row['seed']}: {sync} wall ≤ {WALL_LIMIT} × TRL's",
                    "measured": f"{ratio:.2f} ×",
                    "met": ratio <= WALL_LIMIT,
                }
            )
            if row.get("later_steps_vs_trl") is not None:
                later = row["later_steps_vs_trl"]
                out.append(
                    {
                        "criterion": f"seed {row['seed']}: the same without the first step (steps 2 on)",
                        "measured": f"{later:.2f} ×",
                        "met": None,
                    }
                )
    for arm in dict.fromkeys(r["arm"] for r in rows):
        finals = [r["final_accuracy"] for r in rows if r["arm"] == arm and r.get("final_accuracy") is not None]
        out.append({"criterion": f"{arm}: final held-out over seeds", "measured": _mean_sd(finals), "met": None})
    if max(etas) > 0:
        for row in rows:
            base = trl.get(row["seed"])
            if row["arm"] != fast or base is None:
                continue
            mine, theirs = row.get("time_to_target_s"), base.get("time_to_target_s")
            met = mine is not None and (theirs is None or mine < theirs)
            measured = f"{_s(mine)} vs TRL {_s(theirs)}"
            out.append(
                {
                    "criterion": f"seed {row['seed']}: {fast} reaches the target before TRL",
                    "measured": measured,
                    "met": met,
                }
            )
    return out


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT met")


def show_report(rows: list[dict[str, Any]], steps: int, target: float, checks: list[dict[str, Any]]) -> None:
    show(
        rich_table(
            "jetrl bench peer: jetrl vs TRL GRPOTrainer, the demo's RL phase", rows, columns(steps), _note(target)
        )
    )
    jetrl = [r for r in rows if r["arm"] != TRL]
    show(rich_table("where jetrl's wall time went", jetrl, SPLIT_COLUMNS, SPLIT_NOTE))
    for check in checks:
        console.print(f"  {check['criterion']}: {check['measured']}  [{_verdict(check['met'])}]")
    console.print("differences between the arms that could not be removed:")
    for line in DIFFERENCES:
        console.print(f"  - {line}")


SPLIT_NOTE = (
    "Per version v: waiting = batch v sealed - version v-1 announced (the trainer had nothing to train); "
    "batch → version = the rest (train step, weights written, announced). They add up to the wall time. "
    "Batch v's path, p50 per hop: its newest group admitted after the version it was admitted at was announced, "
    "→ its newest sample recorded, → their newest reward recorded, → the batch sealed (at η = 0 these add up to "
    "the wait; at η > 0 they overlap earlier versions)."
)


def _note(target: float) -> str:
    return (
        f"Wall: jetrl from CreateRun to the last version announced (its evaluations overlap); TRL trainer.train() "
        f"less its evaluations. Target: first evaluation with held-out accuracy ≥ {target:.0%}. CPU: jetrl's stack and "
        "the whole Postgres server; TRL its process over train(). Peak RSS: sum of the stack's processes' peaks; TRL "
        "its process."
    )


def report_text(rows: list[dict[str, Any]], steps: int, target: float, checks: list[dict[str, Any]]) -> str:
    """The markdown of a run: both tables, the criteria and the differences."""
    lines = [markdown_table(rows, columns(steps), _note(target))]
    lines.append(markdown_table([r for r in rows if r["arm"] != TRL], SPLIT_COLUMNS, SPLIT_NOTE))
    lines += [f"- {c['criterion']}: {c['measured']} ({_verdict(c['met'])})" for c in checks]
    lines += ["", "Differences that could not be removed:", ""] + [f"- {d}" for d in DIFFERENCES]
    return "\n".join(lines) + "\n"
