"""Version 0's diagnostics for `jetrl bench rewards`, in process, no services.

Label-free rewards can only help where a vote is more often right than a single sample, so
version 0 is measured for exactly that: greedy accuracy, the accuracy of one sample at the rollout
temperature, of the majority of n samples, and of the labels each label-free rule would give it
(the majority of the same view, of the analogous view, of other samples of the same question).
The answer rule is jetrl.bench.rewards_metrics' (`correct`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jetrl.bench.rewards_metrics import correct
from jetrl.spec_sections import TaskSpec
from jetrl.tasks import Problem
from jetrl.tasks.answers import answer_of, majority_answer

__all__ = ["sample_texts", "v0_diagnostics"]


def sample_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 1024,
) -> list[list[str]]:
    """`n` completions of each prompt sampled at `temperature` (greedy at 0) by the reference
    decoder (jetrl/policy/generate.py:complete), `batch_size` sequences at a time."""
    import torch

    from jetrl.policy.generate import complete
    from jetrl.policy.load import encode_prompt

    generator = torch.Generator().manual_seed(seed)
    rows = [encode_prompt(tokenizer, p) for p in prompts for _ in range(n)]
    texts: list[str] = []
    for start in range(0, len(rows), batch_size):
        out = complete(
            model,
            rows[start : start + batch_size],
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            generator=generator,
        )
        texts += tokenizer.batch_decode(out, skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def _vote_figures(problems: Sequence[Problem], groups: Sequence[Sequence[str]]) -> dict:
    """single: one sample right; majority: the majority answer right; pass: any sample right."""
    single = majority = any_right = 0.0
    for p, texts in zip(problems, groups):
        answers = [answer_of(t) for t in texts]
        single += sum(correct(a, p.answer) for a in answers) / len(answers)
        majority += correct(majority_answer(answers), p.answer)
        any_right += any(correct(a, p.answer) for a in answers)
    n = max(len(problems), 1)
    return {"single": single / n, "majority": majority / n, "pass": any_right / n}


def _label_figures(
    problems: Sequence[Problem], scored: Sequence[Sequence[str]], labellers: Sequence[Sequence[str]]
) -> dict:
    """How the pseudo-label (the majority of `labellers`) fares: right, missing, and how often the
    reward it gives a sample of `scored` equals that sample's correctness."""
    right = missing = agree = total = 0
    for p, texts, others in zip(problems, scored, labellers):
        label = majority_answer(answer_of(t) for t in others)
        right += correct(label, p.answer)
        missing += label is None
        for t in texts:
            a = answer_of(t)
            agree += (a is not None and a == label) == correct(a, p.answer)
            total += 1
    n = max(len(problems), 1)
    return {"label_accuracy": right / n, "no_label": missing / n, "reward_agreement": agree / max(total, 1)}


def v0_diagnostics(
    model_dir: Path,
    task_spec: TaskSpec,
    *,
    samples: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 6,
    train_prompts: int = 200,
    seed: int = 0,
) -> dict:
    """What version 0 gives each reward to work with (module docstring). Held-out: greedy,
    single, majority-of-n and pass@n accuracy. The first `train_prompts` training prompts (those
    the runs start on): the same for the question and its analogous view, and the pseudo-labels of
    each label-free rule: `majority` (the same n samples), `co_reward` (the majority of the
    analogous view's n samples), `teacher` (n other samples of the question: at version 0 the EMA
    teacher is the policy)."""
    from jetrl.policy.generate import heldout_accuracy
    from jetrl.policy.load import load_policy
    from jetrl.tasks import make_task

    model, tokenizer = load_policy(model_dir)
    model.eval()
    task = make_task(task_spec)
    heldout = task.heldout()
    train = [task.train_problem(i) for i in range(train_prompts)]
    analogous = [Problem(p.prompt_id, p.analogous or p.prompt, p.answer) for p in train]

    def draw(problems: Sequence[Problem], k: int) -> list[list[str]]:
        return sample_texts(
            model,
            tokenizer,
            [p.prompt for p in problems],
            samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed + k,
        )

    held, main, ana, again = draw(heldout, 0), draw(train, 1), draw(analogous, 2), draw(train, 3)

    def figures(problems: Sequence[Problem], groups: Sequence[Sequence[str]]) -> dict:
        return {
            "greedy": heldout_accuracy(model, tokenizer, problems, max_new_tokens=8),
            "prompts": len(problems),
            **_vote_figures(problems, groups),
        }

    return {
        "samples": samples,
        "temperature": temperature,
        "train_prompts": train_prompts,
        "heldout": figures(heldout, held),
        "main": figures(train, main),
        "analogous": figures(analogous, ana),
        "labels": {
            "majority": _label_figures(train, main, main),
            "co_reward": _label_figures(train, main, ana),
            "teacher": _label_figures(train, main, again),
        },
    }
