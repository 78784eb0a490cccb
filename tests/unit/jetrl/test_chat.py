"""Chat templates (jetrl/policy/chat.py): one rendering for the scheduler (no transformers) and the
rollout workers (a transformers tokenizer), and the same text as transformers' own rendering."""

import pytest

from jetrl.policy import make_char_tokenizer
from jetrl.policy.load import PolicyLoadError, encode_prompt
from jetrl.policy.prompts import PromptTokenizer
from tiny_models import CHATML

# Llama 3's habit: the template writes the BOS itself
WITH_BOS = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] "
PROMPT = "Question: 12+34=?\nAnswer:"


def chat_tokenizer(template):
    tokenizer = make_char_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("template", [CHATML, WITH_BOS])
def test_the_scheduler_and_the_workers_encode_alike_and_as_transformers_renders(tmp_path, template):
    tokenizer = chat_tokenizer(template)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    scheduler = PromptTokenizer.load(tmp_path, chat=True).encode(PROMPT)
    worker = encode_prompt(tokenizer, PROMPT, chat=True)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    assert scheduler == worker == tokenizer.encode(rendered, add_special_tokens=False)
    assert worker != encode_prompt(tokenizer, PROMPT)  # the template is really applied


def test_the_turn_markers_are_control_tokens():
    tokenizer = chat_tokenizer(CHATML)
    ids = encode_prompt(tokenizer, PROMPT, chat=True)
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids[0] == start and ids.count(start) == 3  # system, user, assistant turns
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")


def test_asking_for_a_template_the_model_lacks_is_refused(tmp_path):
    tokenizer = make_char_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PolicyLoadError, match="ships no chat template; set task.chat_template: false"):
        PromptTokenizer.load(tmp_path, chat=True)
    with pytest.raises(PolicyLoadError, match="no chat template"):
        encode_prompt(tokenizer, PROMPT, chat=True)
