"""Character-level tokenizer for the tiny built-in policy, saved as a real Hugging Face tokenizer.

One token per character keeps the vocabulary tiny (about 100 ids) and makes arithmetic
digit-aligned, which is what lets a ~1M-parameter model learn it on a CPU in minutes. It is a
`PreTrainedTokenizerFast`, so every service loads it with `AutoTokenizer.from_pretrained(dir)`
exactly like the tokenizer of any other Hugging Face model.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["BOS", "EOS", "PAD", "UNK", "CHARSET", "make_char_tokenizer"]

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
# Printable ASCII plus newline: enough for arithmetic and for GSM8K-style text; anything else
# becomes <unk> instead of failing.
CHARSET = "\n" + "".join(c for c in string.printable if c.isprintable())


def make_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character tokenizer: ids 0-3 are pad/bos/eos/unk, then one id per character.

    Encoding prepends `<bos>` (like Llama tokenizers) so a prompt's ids can go straight to the
    model; decoding concatenates characters with no inserted spaces.
    """
    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARSET))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # [\s\S] matches every single character, newline included, so each one is its own "word".
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
