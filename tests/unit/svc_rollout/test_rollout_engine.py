"""TorchEngine (svc_rollout/engine.py): the KV-cache decode loop against plain full forwards.

(Named test_rollout_engine.py, not test_engine.py: tests/ has no __init__.py files, so two
test modules called test_engine.py in different folders collide under pytest's default import mode.)
"""

import copy
import threading
from functools import partial

import pytest
import torch

from jetrl.policy import encode_prompt, state_to_bytes
from jetrl.tasks import Problem
from svc_rollout.api import GenRequest, GenResult
from svc_rollout.engine import TorchEngine, draw
from tiny_models import TOK, spread_model
from tiny_rollout import in_threads

EOS = TOK.eos_token_id
PROMPTS = ["12+34=", "7-5+9+13=", "1", "Question: how many?\nAnswer:"]


def make_model(seed=0, std=0.3):
    return spread_model(seed, std).eval()


def ids(text):
    return encode_prompt(TOK, text)


def weights_file(model, tmp_path):
    """`model`'s weights as the safetensors file an engine loads a version from."""
    path = tmp_path / f"weights-{len(list(tmp_path.iterdir()))}.safetensors"
    path.write_bytes(state_to_bytes(model))
    return path


@torch.no_grad()
def full_logits(model, seq):
    """Logits of every position of one unpadded sequence: a plain forward, no cache."""
    return model(input_ids=torch.tensor([seq])).logits[0].float()


def reference_greedy(model, prompt, max_new_tokens):
    """Argmax decoding that re-runs the whole sequence each step."""
    seq, out = list(prompt), []
    for _ in range(max_new_tokens):
        tok = int(full_logits(model, seq)[-1].argmax())
        out.append(tok)
        seq.append(tok)
        if tok == EOS:
            break
    return out


def reference_logprobs(model, prompt, completion, temperature=1.0):
    logits = full_logits(model, list(prompt) + list(completion))
    lp = torch.log_softmax(logits / temperature, dim=-1)
    return [float(lp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(completion)]


class Rig:
    """Rig a model's output: add +1e4 to the logit of `target(last_input_token)` (None: no change)."""

    def __init__(self, model, target):
        self.target, self.last_ids = target, None
        self.handles = [
            model.register_forward_pre_hook(self._grab, with_kwargs=True),
            model.lm_head.register_forward_hook(self._boost),
        ]

    def _grab(self, module, args, kwargs):
        self.last_ids = kwargs["input_ids"]

    def _boost(self, module, args, out):
        out = out.clone()
        inputs = self.last_ids[:, -out.shape[1] :]
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                target = self.target(int(inputs[i, j]))
                if target is not None:
                    out[i, j, target] += 1e4
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def test_generate_nothing():
    assert TorchEngine(make_model(), TOK).generate([]) == []


def test_greedy_equals_no_cache_argmax_decode_and_is_deterministic():
    model = make_model()
    engine = TorchEngine(model, TOK)
    requests = [GenRequest(ids(p), max_new_tokens=10, temperature=0.0) for p in PROMPTS]
    first = engine.generate(requests)
    second = engine.generate(requests)
    for p, a, b in zip(PROMPTS, first, second):
        assert isinstance(a, GenResult)
        assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
        assert a.token_ids == reference_greedy(model, ids(p), 10)
    # the rigged-free model must not be degenerate, or this test proves little
    assert len({tuple(r.token_ids) for r in first}) > 1
    assert any(len(set(r.token_ids)) > 1 for r in first)


def test_greedy_logprobs_are_reported_at_temperature_one():
    model = make_model()
    prompt = ids("12+34=")
    res = TorchEngine(model, TOK).generate([GenRequest(prompt, 8, temperature=0.0)])[0]
    assert res.logprobs == pytest.approx(reference_logprobs(model, prompt, res.token_ids, 1.0), abs=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_behaviour_logprobs_equal_full_forward_log_softmax(temperature):
    model = make_model(seed=1)
    engine = TorchEngine(model, TOK)
    requests = [GenRequest(ids(p), 12, temperature=temperature, seed=s) for s, p in enumerate(PROMPTS)]
    for p, res in zip(PROMPTS, engine.generate(requests)):
        assert len(res.logprobs) == len(res.token_ids) == len(res.versions)
        assert res.logprobs == pytest.approx(reference_logprobs(model, ids(p), res.token_ids, temperature), abs=1e-5)


def test_same_seed_same_samples_different_seeds_differ():
    engine = TorchEngine(make_model(), TOK)
    prompt = ids("12+34=")

    def sample(seed):
        return engine.generate([GenRequest(prompt, 12, temperature=1.0, seed=seed)])[0]

    a, b = sample(7), sample(7)
    assert (a.token_ids, a.logprobs) == (b.token_ids, b.logprobs)
    for seed in (8, 9, 10):
        assert sample(seed).token_ids != a.token_ids


def test_sampling_does_not_touch_the_global_rng():
    engine = TorchEngine(make_model(), TOK)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    engine.generate([GenRequest(ids("1+1="), 6, seed=1)])
    assert torch.equal(torch.rand(3), expected)


def test_stops_on_length():
    model = make_model()
    seven = TOK.convert_tokens_to_ids("7")
    rig = Rig(model, lambda last: seven)  # never EOS
    try:
        res = TorchEngine(model, TOK).generate([GenRequest(ids("12+34="), 5, temperature=1.0, seed=2)])[0]
    finally:
        rig.remove()
    assert res.token_ids == [seven] * 5 and res.text == "77777"
    assert res.finish_reason == "length"


def test_zero_max_new_tokens_gives_an_empty_completion():
    res = TorchEngine(make_model(), TOK).generate([GenRequest(ids("1+1="), 0)])[0]
    assert (res.token_ids, res.logprobs, res.versions, res.finish_reason) == ([], [], [], "length")


def test_stops_on_eos_immediately():
    model = make_model()
    rig = Rig(model, lambda last: EOS)
    try:
        res = TorchEngine(model, TOK).generate([GenRequest(ids("12+34="), 8, temperature=1.0, seed=3)])[0]
    finally:
        rig.remove()
    assert res.token_ids == [EOS]
    assert res.finish_reason == "eos"
    assert res.logprobs == pytest.approx([0.0], abs=1e-4)
    assert res.text == ""  # EOS is a special token: not in the text


def test_stops_on_eos_mid_sequence_in_a_mixed_batch():
    model = make_model()
    engine = TorchEngine(model, TOK)
    prompt_a, prompt_b = ids("12+34="), ids("7-5+9+13=")
    plain = reference_greedy(model, prompt_a, 10)
    assert EOS not in plain
    trigger = plain[2]  # after this token is fed, EOS is forced
    cut = plain.index(trigger) + 1
    rig = Rig(model, lambda last: EOS if last == trigger else None)
    try:
        expected_b = reference_greedy(model, prompt_b, 10)
        a, b = engine.generate([GenRequest(prompt_a, 10, temperature=0.0), GenRequest(prompt_b, 10, temperature=0.0)])
    finally:
        rig.remove()
    assert a.token_ids == plain[:cut] + [EOS] and a.finish_reason == "eos"
    assert a.text == TOK.decode(plain[:cut])
    # the other row keeps going after its neighbour stopped, unaffected
    assert b.token_ids == expected_b
    assert b.finish_reason == ("eos" if expected_b[-1:] == [EOS] else "length")


def test_tiny_top_p_equals_greedy():
    engine = TorchEngine(make_model(), TOK)
    greedy = engine.generate([GenRequest(ids(p), 10, temperature=0.0) for p in PROMPTS])
    nucleus = engine.generate(
        [GenRequest(ids(p), 10, temperature=1.0, top_p=1e-6, seed=s) for s, p in enumerate(PROMPTS)]
    )
    for g, n in zip(greedy, nucleus):
        assert n.token_ids == g.token_ids
        # the behaviour log-prob as sampled: a one-token nucleus is certain (greedy's are the
        # full distribution's at temperature 1)
        assert n.logprobs == pytest.approx([0.0] * len(n.token_ids), abs=1e-6)
        assert max(g.logprobs) < -1e-3


def test_draw_samples_each_row_from_its_own_distribution():
    # 20,000 draws per row: a token's frequency is within 4 standard deviations of its mass
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.0, 0.0, 0.3], [0.0, 0.0, 1.0, 0.0]])
    n = 20_000
    counts = torch.zeros_like(probs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(n):
        chosen = draw(probs, torch.rand(3, generator=gen))
        counts[torch.arange(3), chosen] += 1
    freq = counts / n
    sd = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 4 * sd + 1e-9).all(), freq
    assert counts[probs == 0].sum() == 0  # a token with no mass is never drawn


def test_draw_takes_unnormalised_rows_and_the_edges_of_the_unit_interval():
    # a top-p cut leaves the nucleus' mass, not 1: the same tokens as the renormalised row
    kept = torch.tensor([[0.0, 0.3, 0.0, 0.2]])
    for u in (0.0, 0.3, 0.59, 0.61, 0.999999):
        assert draw(kept, torch.tensor([u])).tolist() == draw(kept / 0.5, torch.tensor([u])).tolist()
    assert draw(kept, torch.tensor([0.0])).item() == 1  # the first token with mass
    assert draw(kept, torch.tensor([1.0 - 1e-7])).item() == 3  # the last token with mass


def test_a_request_s_samples_do_not_depend_on_its_batch_neighbours():
    engine = TorchEngine(make_model(seed=4, std=0.5), TOK)
    alone = engine.generate([GenRequest(ids("7-5+9+13="), 9, temperature=1.0, seed=77)])[0]
    others = [GenRequest(ids(p), 12, temperature=1.0, seed=s) for s, p in enumerate(PROMPTS)]
    batched = engine.generate([*others, GenRequest(ids("7-5+9+13="), 9, temperature=1.0, seed=77)])[-1]
    assert batched.token_ids == alone.token_ids
    assert batched.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_top_p_samples_stay_inside_the_nucleus_with_its_renormalised_log_probs():
    model = make_model(std=0.5)
    prompt = ids("12+34=")
    top_p, temperature = 0.6, 0.7
    for seed in range(4):
        request = GenRequest(prompt, 8, temperature=temperature, top_p=top_p, seed=seed)
        res = TorchEngine(model, TOK).generate([request])[0]
        logits = full_logits(model, prompt + res.token_ids)
        for t, tok in enumerate(res.token_ids):
            probs = torch.softmax(logits[len(prompt) - 1 + t] / temperature, -1)
            sorted_p, order = probs.sort(descending=True)
            before = sorted_p.cumsum(0) - sorted_p
            nucleus = order[before < top_p]
            assert tok in set(nucleus.tolist())
            # what the loss needs: the log-prob of the distribution it was drawn from. The cached
            # decode and this full forward differ by float32 rounding (1.2e-5 seen); the full
            # distribution's log-prob would be off by the nucleus' log-mass, |log 0.6| or less
            assert res.logprobs[t] == pytest.approx(float((probs[tok] / probs[nucleus].sum()).log()), abs=1e-4)


def test_batched_equals_one_by_one_left_padding():
    model = make_model(seed=2)
    engine = TorchEngine(model, TOK)
    lengths = sorted({len(ids(p)) for p in PROMPTS})
    assert len(lengths) == len(PROMPTS)  # really different prompt lengths
    for temperature in (0.0, 1.0):
        requests = [GenRequest(ids(p), 9, temperature=temperature, seed=10 + s) for s, p in enumerate(PROMPTS)]
        batched = engine.generate(requests)
        for req, res in zip(requests, batched):
            alone = engine.generate([req])[0]
            assert res.token_ids == alone.token_ids
            assert res.logprobs == pytest.approx(alone.logprobs, abs=1e-5)
            assert res.finish_reason == alone.finish_reason and res.text == alone.text


def test_a_group_s_shared_prompt_is_prefilled_once_and_each_sample_equals_its_own_generation():
    model = make_model(seed=2)
    engine = TorchEngine(model, TOK)
    prompts = [ids("12+34="), ids("7-5+9+13=")]
    requests = [
        GenRequest(p, 8, temperature=1.0, seed=100 + 8 * g + i) for g, p in enumerate(prompts) for i in range(8)
    ]
    rows_seen: list[tuple[int, int]] = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, args, out: rows_seen.append(tuple(args[0].shape)))
    try:
        batched = engine.generate(requests)
    finally:
        hook.remove()
    # the prefill is one forward over the 2 distinct prompts, the decode steps over all 16 rows
    assert rows_seen[0][0] == 2 and rows_seen[0][1] > 1
    assert all(shape == (16, 1) for shape in rows_seen[1:])
    assert len({tuple(r.token_ids) for r in batched}) > 2  # the samples of a group still differ
    for req, res in zip(requests, batched):
        alone = engine.generate([req])[0]
        assert res.token_ids == alone.token_ids
        assert res.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_mixed_greedy_and_sampled_rows_in_one_batch_equal_one_by_one():
    engine = TorchEngine(make_model(seed=3), TOK)
    temps = [0.0, 1.0, 0.7, 0.0]
    requests = [GenRequest(ids(p), 7, temperature=t, seed=20 + s) for s, (p, t) in enumerate(zip(PROMPTS, temps))]
    for req, res in zip(requests, engine.generate(requests)):
        alone = engine.generate([req])[0]
        assert res.token_ids == alone.token_ids
        assert res.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_result_text_is_the_decoded_completion():
    engine = TorchEngine(make_model(), TOK)
    for res in engine.generate([GenRequest(ids(p), 6, temperature=1.0, seed=4) for p in PROMPTS]):
        assert res.text == TOK.decode(res.token_ids, skip_special_tokens=True)


def test_load_weights_changes_version_outputs_and_recorded_versions(tmp_path):
    model, other = make_model(seed=0), make_model(seed=5)
    engine = TorchEngine(model, TOK, version=0)
    request = GenRequest(ids("12+34="), 8, temperature=0.0)
    before = engine.generate([request])[0]
    assert engine.version == 0 and before.versions == [0] * len(before.token_ids)
    engine.load_weights(weights_file(other, tmp_path), version=3)
    assert engine.version == 3
    after = engine.generate([request])[0]
    assert after.versions == [3] * len(after.token_ids)
    assert after.token_ids == reference_greedy(other, ids("12+34="), 8)
    assert after.token_ids != before.token_ids


def test_initial_version_is_recorded():
    engine = TorchEngine(make_model(), TOK, version=11)
    res = engine.generate([GenRequest(ids("1+2="), 3, temperature=1.0)])[0]
    assert res.versions == [11, 11, 11]


def test_evaluate_returns_correct_and_total():
    model = make_model()
    # rig: always answer "4" then EOS
    four = TOK.convert_tokens_to_ids("4")
    rig = Rig(model, lambda last: EOS if last == four else four)
    engine = TorchEngine(model, TOK)
    problems = [
        Problem("a", "2+2=", "4"),
        Problem("b", "2+3=", "5"),
        Problem("c", "1+3=", "4.0"),
        Problem("d", "9-5=", "4"),
        Problem("e", "9-3=", "-4"),
    ]
    try:
        assert engine.evaluate(problems, max_new_tokens=4, batch_size=2) == (3, 5)
        assert engine.evaluate(problems, max_new_tokens=4) == (3, 5)
        assert engine.evaluate([], max_new_tokens=4) == (0, 0)
    finally:
        rig.remove()


def test_evaluate_on_an_unrigged_model_counts_like_the_reference_decoder():
    from jetrl.policy.generate import heldout_accuracy

    model = make_model()
    problems = [Problem(str(i), f"{i}+{i}=", str(2 * i)) for i in range(6)]
    correct, total = TorchEngine(copy.deepcopy(model), TOK).evaluate(problems, max_new_tokens=5)
    assert total == 6 and 0 <= correct <= total
    assert correct / total == heldout_accuracy(model, TOK, problems, max_new_tokens=5)


# ---- resumed samples (token-in prefixes) and aborts ---------------------------------------


def stop_after(steps):
    """A should_stop that lets exactly `steps` decode steps run (it is asked before each one)."""
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > steps

    return should_stop


def resume(request, partial, max_new_tokens):
    """`request` continued from `partial`'s tokens, as the worker builds it for a later attempt."""
    return GenRequest(
        request.prompt_token_ids,
        max_new_tokens,
        request.temperature,
        request.top_p,
        request.seed,
        prefix_token_ids=partial.token_ids,
        prefix_logprobs=partial.logprobs,
        prefix_versions=partial.versions,
    )


class ForwardCounter:
    """Counts the model's forwards (one per decode step); `on_step(n)` runs at the n-th."""

    def __init__(self, model, on_step=lambda n: None):
        self.n, self.on_step = 0, on_step
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.n += 1
        self.on_step(self.n)

    def remove(self):
        self.handle.remove()


@pytest.mark.parametrize("k", [1, 4])
def test_resumed_greedy_sample_equals_the_uninterrupted_one(k):
    engine = TorchEngine(make_model(), TOK)
    request = GenRequest(ids("12+34="), 10, temperature=0.0)
    whole = engine.generate([request])[0]
    assert len(whole.token_ids) > k + 1 and EOS not in whole.token_ids[:k]
    partial = engine.generate([request], should_stop=stop_after(k))[0]
    assert partial.finish_reason == "aborted" and partial.token_ids == whole.token_ids[:k]
    # resumed next to a fresh row of another prompt: left padding over prompt + prefix
    other = GenRequest(ids("7-5+9+13="), 6, temperature=0.0)
    resumed, fresh = engine.generate([resume(request, partial, 10 - k), other])
    assert resumed.token_ids == whole.token_ids
    assert resumed.logprobs == pytest.approx(whole.logprobs, abs=1e-5)
    assert resumed.versions == whole.versions and resumed.finish_reason == whole.finish_reason
    assert resumed.text == whole.text
    assert fresh.token_ids == engine.generate([other])[0].token_ids


def test_should_stop_takes_effect_before_the_next_decode_step():
    model = make_model(seed=1)
    engine = TorchEngine(model, TOK)
    seven = TOK.convert_tokens_to_ids("7")
    aborted = threading.Event()
    # an ABORT arrives while the 3rd step is computing: no 4th step may run
    counter = ForwardCounter(model, on_step=lambda n: n == 3 and aborted.set())
    rig = Rig(model, lambda last: seven)  # never EOS: only the abort or the length cap stop a row
    try:
        short, long_a, long_b = engine.generate(
            [
                GenRequest(ids("1+1="), 2, seed=1),
                GenRequest(ids("12+34="), 20, seed=2),
                GenRequest(ids("9="), 20, temperature=0.0),
            ],
            should_stop=aborted.is_set,
        )
    finally:
        rig.remove()
        counter.remove()
    assert counter.n == 3
    assert (short.token_ids, short.finish_reason) == ([seven] * 2, "length")  # done before the abort
    for res in (long_a, long_b):
        assert (res.token_ids, res.finish_reason) == ([seven] * 3, "aborted")
        assert len(res.logprobs) == len(res.versions) == 3


def test_an_abort_before_the_first_step_returns_the_prefixes_untouched():
    model = make_model()
    engine = TorchEngine(model, TOK)
    counter = ForwardCounter(model)
    prefix = GenResult(ids("42"), [-0.5, -1.5], [2, 3], "aborted", "")
    try:
        res = engine.generate([resume(GenRequest(ids("1+1="), 0), prefix, 6)], should_stop=lambda: True)[0]
    finally:
        counter.remove()
    assert counter.n == 0
    assert (res.token_ids, res.logprobs, res.versions, res.finish_reason, res.text) == (
        ids("42"),
        [-0.5, -1.5],
        [2, 3],
        "aborted",
        "42",
    )


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_prefix_logprobs_and_versions_are_carried_over_not_recomputed(temperature):
    model = make_model(seed=2)
    engine = TorchEngine(model, TOK, version=9)
    prompt, prefix_ids = ids("12+34="), ids("4")[-1:] + ids("6")[-1:]
    prefix = GenResult(prefix_ids, [-0.125, -4.5], [7, 8], "aborted", "")  # not what this model would say
    res = engine.generate([resume(GenRequest(prompt, 0, temperature=temperature, seed=5), prefix, 5)])[0]
    assert res.token_ids[:2] == prefix_ids and res.logprobs[:2] == [-0.125, -4.5] and res.versions[:2] == [7, 8]
    new = res.token_ids[2:]
    assert 1 <= len(new) <= 5 and res.versions[2:] == [9] * len(new)
    # the new tokens are conditioned on prompt + prefix: the model saw the prefix as input
    assert res.logprobs[2:] == pytest.approx(
        reference_logprobs(model, prompt + prefix_ids, new, temperature or 1.0), abs=1e-5
    )


def test_finished_prefixes_are_not_generated_further():
    model = make_model()
    engine = TorchEngine(model, TOK)
    counter = ForwardCounter(model)
    ended = GenResult([*ids("7")[-1:], EOS], [-0.1, -0.2], [0, 0], "aborted", "")
    capped = GenResult(ids("77")[-2:], [-0.3, -0.4], [1, 1], "aborted", "")
    try:
        eos, length = engine.generate(
            [resume(GenRequest(ids("1+1="), 0), ended, 4), resume(GenRequest(ids("1+1="), 0), capped, 0)]
        )
    finally:
        counter.remove()
    assert counter.n == 0
    assert (eos.token_ids, eos.logprobs, eos.finish_reason, eos.text) == (ended.token_ids, [-0.1, -0.2], "eos", "7")
    assert (length.token_ids, length.versions, length.finish_reason) == (capped.token_ids, [1, 1], "length")


# ---- new weights mid-generation: interrupt or finish ---------------------------------------


def test_interrupt_mode_switches_weights_between_two_tokens(tmp_path):
    model, other = make_model(seed=0), make_model(seed=5)
    engine = TorchEngine(model, TOK, version=0, interrupt=True)
    path, prompt = weights_file(other, tmp_path), ids("12+34=")
    calls = []

    def load_before_the_4th_step():
        calls.append(1)
        if len(calls) == 4:
            engine.load_weights(path, version=1)  # must not wait for the generate call to end
        return False

    res = engine.generate([GenRequest(prompt, 7, temperature=0.0)], should_stop=load_before_the_4th_step)[0]
    assert res.versions == [0, 0, 0, 1, 1, 1, 1]
    old_weights = reference_greedy(make_model(seed=0), prompt, 7)
    assert res.token_ids[:3] == old_weights[:3] and res.token_ids[3:] != old_weights[3:]
    assert engine.version == 1
    # the tokens after the switch are wholly version 1's: the cache the old weights computed
    # was rebuilt, so they equal the new weights' own continuation, log-probs included
    head = prompt + res.token_ids[:3]
    assert res.token_ids[3:] == reference_greedy(other, head, 4)
    assert res.logprobs[3:] == pytest.approx(reference_logprobs(other, head, res.token_ids[3:], 1.0), abs=1e-5)


def wait_for(predicate, timeout=30.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            done.set()
            break
        done.wait(0.01)
    assert done.is_set(), "condition not met in time"


def test_finish_mode_load_waits_for_the_call_in_flight_and_holds_off_new_calls(tmp_path):
    model, other = make_model(seed=0), make_model(seed=5)
    engine = TorchEngine(model, TOK, version=0, interrupt=False)
    prompt = ids("12+34=")
    loader = threading.Thread(target=engine.load_weights, args=(weights_file(other, tmp_path), 1))
    late_results, late_started = [], threading.Event()

    def late_call():
        def started():
            late_started.set()
            return False

        late_results.extend(engine.generate([GenRequest(prompt, 3, temperature=0.0)], should_stop=started))

    late = threading.Thread(target=late_call)
    calls = []

    def mid_generation():
        calls.append(1)
        if len(calls) == 4:
            loader.start()
            wait_for(lambda: engine._gate.pending_loads == 1)  # the load is waiting for this call
            late.start()
            # a call made while a load is pending must not start before it (no starvation)
            assert not late_started.wait(0.3)
            assert engine.version == 0
        return False

    res = engine.generate([GenRequest(prompt, 7, temperature=0.0)], should_stop=mid_generation)[0]
    loader.join(30)
    late.join(30)
    assert not loader.is_alive() and not late.is_alive()
    assert res.versions == [0] * 7 and res.token_ids == reference_greedy(make_model(seed=0), prompt, 7)
    assert engine.version == 1
    [late_res] = late_results
    assert late_res.versions == [1] * 3 and late_res.token_ids == reference_greedy(other, prompt, 3)


@pytest.mark.parametrize("interrupt", [True, False])
def test_a_load_holds_the_weights_lock_only_for_the_copy(monkeypatch, interrupt, tmp_path):
    import svc_rollout.engine as engine_module

    model, other = make_model(seed=0), make_model(seed=5)
    engine = TorchEngine(model, TOK, interrupt=interrupt)
    read, copy_state = engine_module.read_state_file, engine_module.copy_state
    during_read = []

    def read_while_generating(m, path):
        # generation must go on while the file is read: a blocked generate never returns here
        worker = threading.Thread(
            target=lambda: during_read.extend(engine.generate([GenRequest(ids("1+1="), 3, temperature=0.0)]))
        )
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "generation was blocked during the read"
        return read(m, path)

    def copy_under_the_lock(m, tensors):
        assert engine._weights_lock.locked()
        copy_state(m, tensors)

    monkeypatch.setattr(engine_module, "read_state_file", read_while_generating)
    monkeypatch.setattr(engine_module, "copy_state", copy_under_the_lock)
    engine.load_weights(weights_file(other, tmp_path), version=4)
    assert engine.version == 4 and during_read[0].versions == [0, 0, 0]
    assert engine.generate([GenRequest(ids("1+1="), 3, temperature=0.0)])[0].versions == [4, 4, 4]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_busy_seconds_counts_wall_time_with_any_call_decoding_not_the_sum(monkeypatch):
    import svc_rollout.gate as gate_module

    clock = FakeClock()
    monkeypatch.setattr(gate_module, "time", clock)
    gate = gate_module.CallGate(interrupt=True)  # the torch engine's calls share batches; vLLM's overlap
    with gate.call():  # busy from t=0
        clock.now = 1.0
        with gate.call():  # overlaps the first
            clock.now = 2.0
        assert gate.busy_seconds == 2.0
        clock.now = 3.0
    assert gate.busy_seconds == 3.0  # 0..3 once, not the sum of both calls
    clock.now = 10.0
    assert gate.busy_seconds == 3.0  # idle time is not busy
    engine = TorchEngine(make_model(), TOK)
    monkeypatch.setattr(engine, "_gate", gate)
    engine.generate([GenRequest(ids("1+1="), 3, temperature=0.0)], should_stop=stop_after(0))
    assert gate.busy_seconds == 3.0  # a batch aborted before its first step still went through the gate at no cost


def concurrently(engine, calls):
    """Run each (requests, should_stop) as its own generate call on its own thread, all at once."""
    out, go = [None] * len(calls), threading.Barrier(len(calls))

    def one(i, requests, should_stop):
        go.wait(30)
        out[i] = engine.generate(requests, should_stop=should_stop)

    in_threads([partial(one, i, *c) for i, c in enumerate(calls)], timeout=60)
    return out


def test_concurrent_calls_decode_as_one_batch_with_the_tokens_each_would_get_alone():
    model = make_model(seed=3)
    engine = TorchEngine(model, TOK)
    engine._coalescer._gather_s = 0.5  # generous: the threads of the burst all arrive well within it
    calls = [
        ([GenRequest(ids(p), 5, seed=k), GenRequest(ids(p), 5, temperature=0.0)], None) for k, p in enumerate(PROMPTS)
    ]
    counter = ForwardCounter(model)
    try:
        together = concurrently(engine, calls)
    finally:
        counter.remove()
    assert counter.n <= 5  # one batch of 8 rows: at most 5 decode steps, not 5 per call
    for (requests, _), results in zip(calls, together):
        alone = TorchEngine(make_model(seed=3), TOK).generate(requests)
        assert [r.token_ids for r in results] == [r.token_ids for r in alone]
        for r, a in zip(results, alone):
            assert r.logprobs == pytest.approx(a.logprobs, abs=1e-5)


def test_in_a_shared_batch_only_the_aborted_calls_rows_stop():
    model = make_model(seed=1)
    engine = TorchEngine(model, TOK)
    engine._coalescer._gather_s = 0.5
    seven = TOK.convert_tokens_to_ids("7")
    rig = Rig(model, lambda last: seven)  # never EOS
    try:
        kept, aborted = concurrently(
            engine,
            [
                ([GenRequest(ids("1+1="), 6, seed=1)], lambda: False),
                ([GenRequest(ids("12+34="), 6, seed=2)], stop_after(2)),
            ],
        )
    finally:
        rig.remove()
    assert (kept[0].token_ids, kept[0].finish_reason) == ([seven] * 6, "length")
    assert (aborted[0].token_ids, aborted[0].finish_reason) == ([seven] * 2, "aborted")


def test_a_failed_batch_fails_every_call_in_it(monkeypatch):
    engine = TorchEngine(make_model(), TOK)
    engine._coalescer._gather_s = 0.5

    def broken(*args):
        raise RuntimeError("decode failed")

    monkeypatch.setattr(engine._coalescer, "_decode", broken)
    errors = []

    def call():
        try:
            engine.generate([GenRequest(ids("1+1="), 3)])
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == ["decode failed"] * 3
    monkeypatch.undo()
    assert engine.generate([GenRequest(ids("1+1="), 3)])[0].token_ids  # the lead was handed back: the next call runs


# ---- on a GPU ---------------------------------------------------------------------------------

# float32 logits closer than this may swap places under bfloat16's rounding, and the greedy rows
# part there (measured in bfloat16 on the CPU: swaps within 0.02 for the tiny policy, 0.11 for
# the random models above)
NEAR_TIE = 0.25


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is false)")
def test_bfloat16_on_cuda_gives_the_greedy_tokens_of_float32_on_the_cpu(tmp_path):
    """The tiny policy (a 60-step bootstrap, as the e2e tests' model) answers the held-out problems
    greedily on the GPU in bfloat16 as on the CPU in float32: the same tokens except after a near
    tie of float32's top two logits, where either may win; log-probs within bfloat16's error."""
    from jetrl.policy.bootstrap import bootstrap
    from jetrl.policy.load import load_policy
    from jetrl.spec_sections import TaskSpec
    from jetrl.tasks import make_task

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this CUDA device has no bfloat16")
    task = TaskSpec(heldout_size=40)
    bootstrap(tmp_path / "tiny", task, steps=60)
    model, tokenizer = load_policy(tmp_path / "tiny")
    requests = [GenRequest(encode_prompt(tokenizer, p.prompt), 8, temperature=0.0) for p in make_task(task).heldout()]
    cpu = TorchEngine(model, tokenizer).generate(requests)
    gpu = TorchEngine(copy.deepcopy(model).to("cuda", torch.bfloat16), tokenizer).generate(requests)
    compared = identical = 0
    for request, want, got in zip(requests, cpu, gpu):
        prompt = list(request.prompt_token_ids)
        top2 = full_logits(model, prompt + want.token_ids)[len(prompt) - 1 : -1].topk(2, dim=-1).values
        for t, margin in enumerate((top2[:, 0] - top2[:, 1]).tolist()):
            if got.token_ids[t : t + 1] != want.token_ids[t : t + 1]:
                assert margin < NEAR_TIE, (
                    f"{tokenizer.decode(prompt)!r}: token {t} is {got.token_ids[t : t + 1]} in "
                    f"bfloat16, {want.token_ids[t]} in float32, whose margin is {margin:.3f}"
                )
                break
            assert got.logprobs[t] == pytest.approx(want.logprobs[t], abs=0.15)
            compared += 1
        identical += got.token_ids == want.token_ids
    # the near ties are rare: most tokens are compared, most answers are the same
    assert compared >= 0.75 * sum(len(r.token_ids) for r in cpu) and identical >= 0.75 * len(requests)
