"""The prompt encoding without torch (jetrl.policy.prompts) gives what transformers gives."""

import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from jetrl.policy import PolicyLoadError, encode_prompt, make_char_tokenizer, make_tiny_model, save_policy
from jetrl.policy.prompts import PromptTokenizer

TEXTS = ["12+34=", "-17", "1+1=<eos>", "<bos>2*3=", "Question: 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 9", ""]


def _old_rule(tokenizer, text: str) -> list[int]:
    """encode_prompt as it was written against transformers' call, kept here as the reference."""
    body = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and body[:1] != [bos] and tokenizer(text, split_special_tokens=True)["input_ids"][:1] == [bos]:
        return [bos, *body]
    return body


def _bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the spot, with a Llama-style BOS and an appended EOS."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [t for t in TEXTS if t] * 20 + ["The answer is 42. How many bolts in total?"] * 20
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", backend.token_to_id("<s>")), ("</s>", backend.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("make", [make_char_tokenizer, _bpe_tokenizer], ids=["char", "bpe"])
def test_the_scheduler_encodes_prompts_as_the_rollout_does(tmp_path, make):
    tokenizer = make()
    save_policy(
        make_tiny_model(make_char_tokenizer(), hidden_size=16, layers=1, heads=2, intermediate_size=16),
        tokenizer,
        tmp_path / "m",
    )
    light = PromptTokenizer.load(tmp_path / "m")
    assert light.bos_id == tokenizer.bos_token_id and light.eos_id == tokenizer.eos_token_id
    for text in TEXTS:
        assert light.encode(text) == encode_prompt(tokenizer, text) == _old_rule(tokenizer, text), text


def test_a_directory_without_a_fast_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PolicyLoadError, match="tokenizer.json"):
        PromptTokenizer.load(tmp_path)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        PromptTokenizer.load(tmp_path / "nowhere")


def test_the_scheduler_process_does_not_import_torch():
    code = "import sys, svc_scheduler.app, svc_scheduler.server; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
