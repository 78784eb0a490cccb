"""The synthetic arithmetic task: `37+45=` -> `82`, or short chains like `12+7-5=` -> `14`.

Every problem also has an analogous rephrasing with the same answer (Co-Reward's second view):
the terms in another order, each keeping its sign, or with `task.rephrase: words` the same
expression in words (`37 plus 45 =`). The order starts with an added term wherever one can, since
no prompt of the task starts with a sign and a view the policy cannot read gives poor labels: the
terms rotate to the next added term (`12+7-5=` -> `7-5+12=`); with no other added term the
subtracted ones are reversed (`12-7-5=` -> `12-5-7=`); only when that changes nothing (`37-45=`,
`9-4-4=`) do they rotate by one (`-45+37=`).

Everything is a pure function of the task spec: the held-out set comes from its own seeded
stream, and training problem `i` from a stream keyed by (seed, i), so any service can recompute
any problem from its index alone. Held-out expressions are rejected from the training stream,
so the evaluation set is never trained on.
"""

from __future__ import annotations

import random

from jetrl.spec_sections import TaskSpec
from jetrl.tasks.problem import Problem

__all__ = ["ArithmeticTask"]


class ArithmeticTask:
    """Deterministic stream of `a+b-c=` problems; answers are plain integers."""

    name = "arithmetic"

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        lo = 0 if spec.digits == 1 else 10 ** (spec.digits - 1)
        self._operand_range = (lo, 10**spec.digits - 1)
        distinct = (self._operand_range[1] - lo + 1) ** spec.terms * 2 ** (spec.terms - 1)
        # Leave most of the space for training, otherwise rejection sampling would starve.
        if spec.heldout_size > distinct // 2:
            raise ValueError(
                f"heldout_size {spec.heldout_size} is too large for {spec.terms} terms of "
                f"{spec.digits} digits ({distinct} distinct problems; at most half may be held out)"
            )
        self._heldout = self._make_heldout()
        self._heldout_prompts = frozenset(p.prompt for p in self._heldout)

    has_analogous = True

    def _terms(self, rng: random.Random) -> list[tuple[str, int]]:
        """(sign, operand) of each term; the first is always +."""
        lo, hi = self._operand_range
        terms = [("+", rng.randint(lo, hi))]
        for _ in range(self.spec.terms - 1):
            operand = rng.randint(lo, hi)  # drawn before its sign: the stream of problems predates views
            terms.append((rng.choice("+-"), operand))
        return terms

    def _expression(self, rng: random.Random) -> tuple[str, int, list[tuple[str, int]]]:
        terms = self._terms(rng)
        return _write(terms), sum(n if sign == "+" else -n for sign, n in terms), terms

    def _analogous(self, terms: list[tuple[str, int]]) -> str:
        if self.spec.rephrase == "words":
            words = " ".join(f"{'plus' if s == '+' else 'minus'} {n}" for s, n in terms[1:])
            return f"{terms[0][1]} {words} ="
        return _write(_reorder(terms))

    def _make_heldout(self) -> list[Problem]:
        rng = random.Random(f"arithmetic:{self.spec.seed}:heldout")
        seen: set[str] = set()
        problems: list[Problem] = []
        while len(problems) < self.spec.heldout_size:
            prompt, value, _ = self._expression(rng)
            if prompt not in seen:  # distinct, so accuracy counts each problem once
                seen.add(prompt)
                problems.append(Problem(f"heldout-{len(problems)}", prompt, str(value)))
        return problems

    def train_problem(self, index: int) -> Problem:
        """Training problem number `index` (any index >= 0; the stream is infinite)."""
        if index < 0:
            raise ValueError("problem index must be >= 0")
        rng = random.Random(f"arithmetic:{self.spec.seed}:train:{index}")
        while True:
            prompt, value, terms = self._expression(rng)
            if prompt not in self._heldout_prompts:
                return Problem(f"train-{index}", prompt, str(value), self._analogous(terms))

    def heldout(self) -> list[Problem]:
        """The fixed evaluation set: `heldout_size` distinct problems, never trained on."""
        return list(self._heldout)


def _reorder(terms: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The same terms in another order that starts with + where possible (module docstring)."""
    added = next((k for k in range(1, len(terms)) if terms[k][0] == "+"), None)
    if added is not None:
        return terms[added:] + terms[:added]
    reversed_tail = terms[:1] + terms[:0:-1]
    return reversed_tail if reversed_tail != terms else terms[1:] + terms[:1]


def _write(terms: list[tuple[str, int]]) -> str:
    """`a+b-c=`; a leading + is left out, a leading - kept (`-45+37=`)."""
    text = "".join(f"{sign}{n}" for sign, n in terms)
    return text.removeprefix("+") + "="
