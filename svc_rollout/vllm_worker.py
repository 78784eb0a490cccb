"""Runs inside vLLM's worker processes (vLLM's `worker_extension_cls`): loads a jetrl version's
weights into the live model in place, from the local safetensors file the rollout worker verified.

Only the tensors are read (safetensors' mmap, one at a time): no engine restart, no reload of the
config or tokenizer. vLLM's in-place reload maps Hugging Face names onto its fused layers
(qkv, gate/up), converts dtypes and redoes the kernel-format processing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from jetrl.weights import version_files

if TYPE_CHECKING:
    import torch


class WeightLoader:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    model_runner: object  # vLLM's model runner (set by the worker class this is mixed into)

    def jetrl_load_weights(self, path: str) -> None:
        """Reload the model in place from the tensors of the version at `path` (its file, or its
        index's shards; checkpoint names and layout, which the caller checked). vLLM's reload
        re-runs the per-layer processing its loader did at start (fused layers, the CPU backend's
        repacked GEMM weights)."""
        runner = self.model_runner
        runner.reload_weights(weights_iterator=_tensors(version_files(Path(path))))  # type: ignore[attr-defined]
        model = runner.get_model()  # type: ignore[attr-defined]
        if runner.model_config.hf_config.get_text_config().tie_word_embeddings:  # type: ignore[attr-defined]
            # The reload restores each layer on its own: a head tied to the embeddings loads no
            # tensor of its own (the checkpoint has none) and is put back on its old one, so it
            # is tied again and its kernel-format copy (the CPU backend's packed GEMM) remade.
            head = model.lm_head
            head.weight = model.model.embed_tokens.weight  # the Llama, Qwen2 and Mistral layout
            head.quant_method.process_weights_after_loading(head)


def _tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of `files`, one at a time (safetensors' mmap)."""
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
