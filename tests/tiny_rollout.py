"""The rollout worker's tests, unit and integration: a tiny random policy's engine and tasks of
run `RUN` on the prompt "12+34=" with the character tokenizer, and generate calls made from
several threads at once (`in_threads`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from jetrl.policy import encode_prompt, make_char_tokenizer, make_tiny_model
from jetrl.v1 import events_pb2 as ev
from svc_rollout.engine import TorchEngine

TOK = make_char_tokenizer()
RUN = "run1"


def tiny_engine(cls=TorchEngine, **kwargs):
    model = make_tiny_model(TOK, hidden_size=32, layers=2, heads=2, intermediate_size=64, max_positions=64, seed=0)
    return cls(model, TOK, **kwargs)


def make_task(group_id, attempt=0, resume=(), num_samples=4, max_new_tokens=8, temperature=1.0):
    return ev.Task(
        run_id=RUN,
        group_id=group_id,
        prompt_id="p0",
        prompt="12+34=",
        prompt_token_ids=encode_prompt(TOK, "12+34="),
        num_samples=num_samples,
        sampling=ev.SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens, seed=3),
        attempt=attempt,
        resume=list(resume),
    )


def in_threads(calls: list[Callable[[], None]], timeout: float) -> None:
    """Run each call on a thread of its own, all at once; fail if one is still running after `timeout`."""
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads)
