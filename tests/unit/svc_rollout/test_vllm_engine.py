"""The vLLM engine against the torch engine on the same weights (bash scripts/test_vllm.sh).

One vLLM engine serves the whole module (it takes ~15 s to start on a CPU); each test loads the
weights it needs first, in place, which is itself under test.
"""

from __future__ import annotations

import os
import threading

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm: bash scripts/setup_vllm.sh, then scripts/test_vllm.sh")

from jetrl.policy import encode_prompt, make_char_tokenizer, make_tiny_model, save_policy, state_to_bytes  # noqa: E402
from jetrl.spec_sections import VllmSpec  # noqa: E402
from jetrl.states import FinishReason  # noqa: E402
from svc_rollout.api import GenRequest  # noqa: E402
from svc_rollout.engine import TorchEngine  # noqa: E402
from svc_rollout.vllm_engine import VllmEngine  # noqa: E402

pytestmark = pytest.mark.vllm
TOK = make_char_tokenizer()
PROMPTS = ["12+34=", "7-5+9+13=", "1", "99-98="]
LOGPROB_TOL = 1e-4  # float32 on both sides; vLLM's fused kernels sum in another order


def peaked_model(seed: int):
    """The demo's Llama shape with larger random weights, so greedy paths and log-probs differ by seed."""
    model = make_tiny_model(TOK, seed=seed, max_positions=64)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    return model.eval()


def ids(text: str) -> list[int]:
    return encode_prompt(TOK, text)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two versions' weights as files, and the model directory vLLM starts from (version 0 = A)."""
    root = tmp_path_factory.mktemp("vllm")
    a, b = peaked_model(0), peaked_model(1)
    save_policy(a, TOK, root / "model")
    files = {}
    for name, model in (("a", a), ("b", b)):
        files[name] = root / f"{name}.safetensors"
        files[name].write_bytes(state_to_bytes(model))
    return {"a": a, "b": b, "files": files, "dir": root / "model"}


@pytest.fixture(scope="module")
def vllm_engine(models):
    engine = VllmEngine(models["dir"], TOK, VllmSpec(dtype="float32", memory_fraction=0.1, max_model_len=64))
    yield engine
    engine.close()


def on(engine, models, name: str, version: int):
    engine.load_weights(models["files"][name], version)
    return engine


def greedy(prompt: str, n: int = 8, **kw) -> GenRequest:
    return GenRequest(ids(prompt), n, temperature=0.0, **kw)


def reference_logprobs(model, prompt, completion, temperature: float, top_p: float) -> list[float]:
    """Log-probs of `completion` under `model` as sampled: temperature, then the renormalised nucleus."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt) + list(completion)])).logits[0].float()
    out = []
    for t, tok in enumerate(completion):
        probs = torch.softmax(logits[len(prompt) - 1 + t] / temperature, -1)
        sorted_p, order = probs.sort(descending=True)
        nucleus = order[(sorted_p.cumsum(0) - sorted_p) < top_p]
        out.append(float((probs[tok] / probs[nucleus].sum()).log()))
    return out


def test_greedy_tokens_and_log_probs_equal_the_torch_engines(vllm_engine, models):
    on(vllm_engine, models, "a", 1)
    torch_engine = TorchEngine(models["a"], TOK, version=1)
    ours = vllm_engine.generate([greedy(p) for p in PROMPTS])
    theirs = torch_engine.generate([greedy(p) for p in PROMPTS])
    for v, t in zip(ours, theirs):
        assert v.token_ids == t.token_ids and v.finish_reason == t.finish_reason and v.text == t.text
        assert v.logprobs == pytest.approx(t.logprobs, abs=LOGPROB_TOL)
        assert v.versions == [1] * len(v.token_ids)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.8)])
def test_sampled_log_probs_are_the_distribution_sampled_from(vllm_engine, models, temperature, top_p):
    on(vllm_engine, models, "a", 2)
    requests = [GenRequest(ids(p), 8, temperature=temperature, top_p=top_p, seed=s) for s, p in enumerate(PROMPTS)]
    for req, res in zip(requests, vllm_engine.generate(requests)):
        expected = reference_logprobs(models["a"], req.prompt_token_ids, res.token_ids, temperature, top_p)
        assert res.logprobs == pytest.approx(expected, abs=LOGPROB_TOL)
        assert res.versions == [2] * len(res.token_ids)


def test_an_aborted_greedy_sample_resumed_token_in_equals_the_uninterrupted_one(vllm_engine, models):
    on(vllm_engine, models, "a", 3)
    [whole] = vllm_engine.generate([greedy("12+34=", 10)])
    seen = []

    def after_three_tokens():
        seen.append(1)
        return len(seen) > 3

    [part] = vllm_engine.generate([greedy("12+34=", 10)], should_stop=after_three_tokens)
    assert part.finish_reason == FinishReason.ABORTED and 0 < len(part.token_ids) < len(whole.token_ids)
    assert part.token_ids == whole.token_ids[: len(part.token_ids)]
    resume = greedy(
        "12+34=",
        10 - len(part.token_ids),
        prefix_token_ids=part.token_ids,
        prefix_logprobs=part.logprobs,
        prefix_versions=part.versions,
    )
    [rest] = vllm_engine.generate([resume])
    assert rest.token_ids == whole.token_ids and rest.finish_reason == whole.finish_reason
    assert rest.logprobs == pytest.approx(whole.logprobs, abs=LOGPROB_TOL)


@pytest.fixture
def delivered(vllm_engine, monkeypatch):
    """The token ids vLLM has handed the engine so far (every request's), as they arrive."""
    llm, tokens = vllm_engine._llm, []
    add_request = llm.add_request

    async def counting_add_request(*args, **kwargs):
        outputs = await add_request(*args, **kwargs)
        get, get_nowait = outputs.get, outputs.get_nowait

        def count(out):
            if out is not None:
                tokens.extend(out.outputs[0].token_ids)
            return out

        async def counted_get():
            return count(await get())

        monkeypatch.setattr(outputs, "get", counted_get)
        monkeypatch.setattr(outputs, "get_nowait", lambda: count(get_nowait()))
        return outputs

    monkeypatch.setattr(llm, "add_request", counting_add_request)
    return tokens


def test_abort_takes_effect_within_one_decode_step(vllm_engine, models, delivered):
    on(vllm_engine, models, "a", 4)
    [res] = vllm_engine.generate([greedy("7-5+9+13=", 40)], should_stop=lambda: len(delivered) >= 2)
    assert res.finish_reason == FinishReason.ABORTED
    # stopped as the second token arrived: nothing after it was taken, and vLLM holds nothing more
    assert len(res.token_ids) == len(delivered) == 2
    assert vllm_engine._llm.get_num_unfinished_requests() == 0


def test_an_in_place_update_gives_the_new_weights_outputs_without_a_restart(vllm_engine, models):
    on(vllm_engine, models, "a", 5)
    before = vllm_engine.generate([greedy(p) for p in PROMPTS])
    llm = vllm_engine._llm
    on(vllm_engine, models, "b", 6)
    assert vllm_engine._llm is llm  # the same running engine
    after = vllm_engine.generate([greedy(p) for p in PROMPTS])
    expected = TorchEngine(models["b"], TOK, version=6).generate([greedy(p) for p in PROMPTS])
    assert [r.token_ids for r in after] == [r.token_ids for r in expected]
    assert [r.token_ids for r in after] != [r.token_ids for r in before]
    for v, t in zip(after, expected):
        assert v.logprobs == pytest.approx(t.logprobs, abs=LOGPROB_TOL) and v.versions == [6] * len(v.token_ids)


def test_a_sharded_version_loads_in_place_like_a_single_file(vllm_engine, models, tmp_path):
    from svc_trainer.checkpoint import save_weights

    on(vllm_engine, models, "a", 15)
    index = save_weights(tmp_path / "v000016.safetensors", models["b"], None, shard_bytes=1 << 20)
    assert index.name.endswith(".index.json")
    vllm_engine.load_weights(index, 16)
    [got] = vllm_engine.generate([greedy("12+34=")])
    [want] = TorchEngine(models["b"], TOK).generate([greedy("12+34=")])
    assert got.token_ids == want.token_ids and got.versions == [16] * len(got.token_ids)


def test_a_load_mid_generation_continues_on_the_new_weights_from_the_tokens_so_far(vllm_engine, models, delivered):
    on(vllm_engine, models, "a", 7)
    loader = threading.Thread(target=vllm_engine.load_weights, args=(models["files"]["b"], 8))

    def load_after_three_tokens():
        if len(delivered) >= 3 and loader.ident is None:
            loader.start()  # should_stop runs on the engine's loop: the load must not be awaited here
        return False

    [res] = vllm_engine.generate([greedy("12+34=", 40)], should_stop=load_after_three_tokens)
    loader.join(60)
    old = res.versions.count(7)
    assert res.versions == [7] * old + [8] * (len(res.token_ids) - old)
    assert 3 <= old < len(res.token_ids), "the load landed mid-generation"
    assert res.token_ids[:old] == TorchEngine(models["a"], TOK).generate([greedy("12+34=", old)])[0].token_ids
    head = ids("12+34=") + res.token_ids[:old]
    [tail] = TorchEngine(models["b"], TOK).generate([GenRequest(head, len(res.token_ids) - old, temperature=0.0)])
    assert res.token_ids[old:] == tail.token_ids  # computed by B over all the tokens so far
    assert res.logprobs[old:] == pytest.approx(tail.logprobs, abs=LOGPROB_TOL)


def test_weights_that_do_not_fit_are_refused_and_the_engine_keeps_its_version(vllm_engine, models, tmp_path):
    on(vllm_engine, models, "a", 9)
    other = make_tiny_model(TOK, hidden_size=64, layers=1, heads=2, intermediate_size=96, max_positions=64)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(state_to_bytes(other))
    with pytest.raises(ValueError, match="does not fit the model"):
        vllm_engine.load_weights(bad, 10)
    assert vllm_engine.version == 9
    [res] = vllm_engine.generate([greedy("1+1=", 4)])
    assert res.versions == [9] * len(res.token_ids)


def test_evaluate_scores_greedy_answers_like_the_torch_engine(vllm_engine, models):
    from jetrl.spec_sections import TaskSpec
    from jetrl.tasks import make_task

    on(vllm_engine, models, "a", 11)
    problems = make_task(TaskSpec(heldout_size=64)).heldout()
    assert vllm_engine.evaluate(problems, max_new_tokens=6, batch_size=16) == TorchEngine(models["a"], TOK).evaluate(
        problems, max_new_tokens=6
    )


def test_the_worker_processes_are_the_same_after_loads(vllm_engine, models):
    pids = {p.pid for p in _children()}
    on(vllm_engine, models, "b", 12)
    assert {p.pid for p in _children()} == pids


def _children():
    import psutil

    return psutil.Process(os.getpid()).children(recursive=True)


def test_in_finish_mode_the_call_in_flight_ends_on_the_old_weights(vllm_engine, models, monkeypatch):
    from svc_rollout.gate import CallGate

    on(vllm_engine, models, "a", 13)
    monkeypatch.setattr(vllm_engine, "_gate", CallGate(interrupt=False))
    asks = []
    loader = threading.Thread(target=vllm_engine.load_weights, args=(models["files"]["b"], 14))

    def load_once_generating():
        asks.append(1)
        if len(asks) == 2:
            loader.start()
        return False

    [res] = vllm_engine.generate([greedy("12+34=", 20)], should_stop=load_once_generating)
    loader.join(60)
    [old] = TorchEngine(models["a"], TOK).generate([greedy("12+34=", 20)])
    assert res.token_ids == old.token_ids and res.versions == [13] * len(res.token_ids)
    assert vllm_engine.version == 14
    [new] = vllm_engine.generate([greedy("12+34=", 20)])
    assert new.versions == [14] * len(new.token_ids)


async def test_a_model_directory_vllm_cannot_serve_is_refused_with_the_reason(tmp_path):
    from jetrl.config import RunSpec
    from svc_rollout.policies import EngineUnavailable, Policies

    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"], "model_type": "nosuch"}')
    TOK.save_pretrained(tmp_path)

    class Specs:
        async def get(self, run_id):
            return RunSpec.model_validate(
                {"name": "v", "model": {"path": str(tmp_path)}, "rollout": {"engine": "vllm"}}
            )

    with pytest.raises(EngineUnavailable, match=f"vLLM cannot serve the model at {tmp_path}"):
        await Policies(Specs()).engine("run1")


def test_an_architecture_vllm_does_not_know_is_refused_before_the_run_starts(tmp_path):
    from jetrl.config import RunSpec
    from svc_rollout.checks import run_problems

    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"], "model_type": "nosuch"}')
    spec = RunSpec.model_validate({"name": "v", "model": {"path": str(tmp_path)}, "rollout": {"engine": "vllm"}})
    [problem] = run_problems(spec)
    assert "vLLM cannot serve its architecture ['NoSuchModelForCausalLM']" in problem
    llama = spec.model_copy(update={"model": spec.model.model_copy(update={"path": str(_llama_dir(tmp_path))})})
    assert run_problems(llama) == []


def _llama_dir(tmp_path):
    return save_policy(make_tiny_model(TOK, max_positions=64), TOK, tmp_path / "llama")


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_other_model_families_generate_as_the_torch_engine_does(family, tmp_path):
    """Qwen2 (attention biases, grouped KV heads) and Mistral, as vLLM and transformers build them."""
    from tiny_models import small_model

    model = small_model(family, TOK, max_positions=64, tie=False, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    save_policy(model, TOK, tmp_path / family)
    engine = VllmEngine(tmp_path / family, TOK, VllmSpec(dtype="float32", memory_fraction=0.1, max_model_len=64))
    try:
        ours = engine.generate([greedy(p) for p in PROMPTS])
    finally:
        engine.close()
    theirs = TorchEngine(model, TOK).generate([greedy(p) for p in PROMPTS])
    assert [r.token_ids for r in ours] == [r.token_ids for r in theirs]
    for v, t in zip(ours, theirs):
        assert v.logprobs == pytest.approx(t.logprobs, abs=LOGPROB_TOL)
