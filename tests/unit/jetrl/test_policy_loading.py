"""Loading policies from several threads at once (jetrl/policy/load.py): a rollout worker builds a
run's policy and teacher engines, and the evaluation's, on threads of its own. transformers'
from_pretrained builds the model on the meta device under a process-wide switch, so two loads at
once could hand one of them a model with no data ("Cannot copy out of meta tensor")."""

from concurrent.futures import ThreadPoolExecutor

import torch

from jetrl.policy import make_char_tokenizer, make_tiny_model, save_policy
from jetrl.policy.load import load_policy


def test_loads_from_many_threads_at_once_each_get_the_real_weights(tmp_path):
    tokenizer = make_char_tokenizer()
    saved = make_tiny_model(tokenizer, hidden_size=16, layers=1, heads=2, intermediate_size=16)
    path = save_policy(saved, tokenizer, tmp_path / "m")
    with ThreadPoolExecutor(8) as pool:
        models = list(pool.map(lambda _: load_policy(path)[0], range(16)))
    for model in models:
        for (name, p), q in zip(model.named_parameters(), saved.parameters()):
            assert p.device.type == "cpu" and torch.equal(p, q), name
