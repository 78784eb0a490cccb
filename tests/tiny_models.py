"""A tiny random policy whose distributions are far from uniform, for the engine tests of both
sides (the rollout engine samples from it, the trainer's computes its log-probs)."""

from __future__ import annotations

import torch

from jetrl.policy import make_char_tokenizer, make_tiny_model

TOK = make_char_tokenizer()


def spread_model(seed=0, std=0.3):
    """A tiny Llama with larger-than-default random weights (in train mode, as made)."""
    model = make_tiny_model(TOK, hidden_size=32, layers=2, heads=2, intermediate_size=64, max_positions=64, seed=seed)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    return model


# Qwen2's ChatML template, shortened: a system turn when none is given, the turns, the assistant's
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def scratch_qwen2(out, texts, vocab_size: int = 512, seed: int = 0):
    """A randomly initialised Qwen2-architecture model with a byte-level BPE tokenizer trained on
    the spot from `texts` (no download of any kind) and Qwen's ChatML turn markers and template,
    saved to `out` as a standard model directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHATML
    model = small_model("qwen2", tokenizer, max_positions=512, tie=True, seed=seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def small_model(family: str, tokenizer, *, max_positions: int, tie: bool, seed: int = 0):
    """A small randomly initialised model of another family than the built-in Llama: `qwen2`
    (attention biases, grouped KV heads) or `mistral`, sized for vLLM's CPU kernels (head dim 32)."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}[
        family
    ]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_cls(config).eval()
