"""Loading and saving policies, and moving their weights between services.

Any Hugging Face causal LM in a local directory is a policy; nothing is ever downloaded
(`local_files_only=True`). Weights travel between services as one safetensors blob, which is
safe to load (no pickle) and identical in bytes for identical weights, so a sha256 checks it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from jetrl.policy.chat import ChatTemplate
from jetrl.policy.prompts import PolicyLoadError, model_dir, prompt_ids
from jetrl.weights import version_files

__all__ = [
    "PolicyLoadError",
    "encode_prompt",
    "load_policy",
    "load_tokenizer",
    "save_policy",
    "state_to_bytes",
    "weight_tensors",
    "config_dtype",
    "load_state_bytes",
    "read_state_file",
    "copy_state",
    "sha256",
]


# from_pretrained builds a model on the meta device under a process-wide switch: two loads on two
# threads at once (a rollout worker's policy and teacher engines) could leave one with no data
_LOADING = threading.Lock()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local Hugging Face model directory (for services that never run the model)."""
    p = model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise PolicyLoadError(f"cannot load a tokenizer from {p}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        # Batched generation and training need a pad id; EOS is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str | Path, device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a local Hugging Face model directory, in float32 on `device`."""
    p = model_dir(path)
    tokenizer = load_tokenizer(p)
    try:
        with _LOADING:
            model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise PolicyLoadError(f"cannot load a causal LM from {p}: {exc}") from exc
    # transformers wraps PreTrainedModel.to with functools.wraps, whose signature the checker then misreads
    return model.to(device), tokenizer  # type: ignore[arg-type]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str, chat: bool = False) -> list[int]:
    """The token ids of a prompt (jetrl.policy.prompts.prompt_ids, the one rule), from a transformers
    fast tokenizer's own backend; with `chat`, through the tokenizer's chat template."""
    if not tokenizer.is_fast:
        raise PolicyLoadError(f"{type(tokenizer).__name__} is not a fast tokenizer; jetrl needs tokenizer.json")
    template = None
    if chat:
        source = tokenizer.chat_template
        if not isinstance(source, str):
            raise PolicyLoadError("the model's tokenizer has no chat template; set task.chat_template: false")
        template = ChatTemplate(source, tokenizer.bos_token, tokenizer.eos_token)
    return prompt_ids(tokenizer.backend_tokenizer, tokenizer.bos_token_id, text, template)


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Write model (safetensors) and tokenizer to `path` so `load_policy(path)` restores both."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p)
    tokenizer.save_pretrained(p)
    return p


def weight_tensors(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All weights by name, on CPU and contiguous, tied tensors once, floating ones in `dtype`
    (None: as they are). What a version's safetensors file holds."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        # safetensors refuses shared storage; tied weights (embeddings/lm_head) are sent once
        # and `copy_state` restores the tie by copying into the storage both names share.
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().to("cpu")
        tensors[name] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()
    return tensors


def state_to_bytes(model: torch.nn.Module) -> bytes:
    """All weights as one safetensors blob (tests and small models; services write files)."""
    return st_save(weight_tensors(model))


def config_dtype(model_dir: str | Path) -> torch.dtype | None:
    """The dtype a model directory's config.json declares (`dtype`, or the older `torch_dtype`)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype")
    found = getattr(torch, name, None) if isinstance(name, str) else None
    return found if isinstance(found, torch.dtype) else None


def read_state_file(model: torch.nn.Module, version: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a version's safetensors file, or of every shard its index names, checked to
    fit `model`; the model is not touched.

    The slow half of a weight load (reading, checking). It only reads the model's parameter
    names and shapes, which never change, so it may run while the model is generating.
    """
    tensors: dict[str, torch.Tensor] = {}
    for path in version_files(Path(version)):
        tensors |= st_load_file(str(path))
    return _fitting(model, tensors)


def _fitting(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    # Missing keys are only acceptable for tied parameters that share storage with a loaded one.
    loaded = {state[n].data_ptr() for n in tensors if n in state}
    missing = [n for n, t in state.items() if n not in tensors and t.data_ptr() not in loaded]
    unexpected = [n for n in tensors if n not in state]
    wrong_shape = [n for n, t in tensors.items() if n in state and t.shape != state[n].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"weights do not fit the model: missing {missing}, unexpected {unexpected}, wrong shape {wrong_shape}"
        )
    return tensors


@torch.no_grad()
def copy_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `read_state_file` tensors into `model`'s parameters in place: the fast half of a load."""
    state = model.state_dict()  # detached views of the parameters: copying into them updates the model
    for name, tensor in tensors.items():
        state[name].copy_(tensor)  # a tied parameter shares storage, so it follows its loaded twin


def load_state_bytes(model: torch.nn.Module, data: bytes) -> None:
    """Copy the weights in a `state_to_bytes` blob into `model` in place (same architecture)."""
    copy_state(model, _fitting(model, st_load(data)))


def sha256(data: bytes) -> str:
    """Hex sha256 of a weights blob, announced with each version so receivers can verify it."""
    return hashlib.sha256(data).hexdigest()
