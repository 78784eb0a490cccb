"""jetrl.policy: the char tokenizer, saving/loading policies, prompt encoding, weight blobs."""

import hashlib

import pytest
import torch
from tokenizers import processors

from jetrl.policy import (
    PolicyLoadError,
    encode_prompt,
    load_policy,
    load_state_bytes,
    load_tokenizer,
    make_char_tokenizer,
    make_tiny_model,
    save_policy,
    sha256,
    state_to_bytes,
)
from jetrl.policy.tokenizer import BOS, CHARSET, EOS, PAD, UNK

TOK = make_char_tokenizer()
TEXTS = [
    "12+34=",
    "7-5+93-10=",
    "82",
    "-17",
    "Question: A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total?\nAnswer:",
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18",
    "1,000.50 (50%) {a} [b] ~`'\"\\ |",
    "  leading and trailing  \n",
    "",
]


def tiny(seed=0):
    return make_tiny_model(TOK, hidden_size=32, layers=1, heads=2, intermediate_size=64, max_positions=64, seed=seed)


# ---- tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_char_tokenizer_round_trip(text):
    ids = TOK(text)["input_ids"]
    assert ids[0] == TOK.bos_token_id
    assert TOK.decode(ids, skip_special_tokens=True) == text
    body = TOK(text, add_special_tokens=False)["input_ids"]
    assert len(body) == len(text)  # one token per character
    assert TOK.decode(body) == text
    assert TOK.unk_token_id not in body


def test_every_charset_character_round_trips():
    assert TOK.decode(TOK(CHARSET, add_special_tokens=False)["input_ids"]) == CHARSET


def test_special_ids_and_vocabulary():
    assert [TOK.convert_tokens_to_ids(t) for t in (PAD, BOS, EOS, UNK)] == [0, 1, 2, 3]
    assert (TOK.pad_token_id, TOK.bos_token_id, TOK.eos_token_id, TOK.unk_token_id) == (0, 1, 2, 3)
    assert len(TOK) == 4 + len(CHARSET)


def test_characters_outside_the_charset_become_unk():
    body = TOK("Janet\u2019s é", add_special_tokens=False)["input_ids"]
    assert len(body) == len("Janet\u2019s é")
    assert body[5] == TOK.unk_token_id and body[-1] == TOK.unk_token_id


# ---- encode_prompt -------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_encode_prompt_starts_with_bos_and_never_ends_with_eos(text):
    ids = encode_prompt(TOK, text)
    assert ids[0] == TOK.bos_token_id
    assert ids[-1] != TOK.eos_token_id
    assert ids == [TOK.bos_token_id] + TOK(text, add_special_tokens=False)["input_ids"]


def _variant(single):
    tok = make_char_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(BOS, 1), (EOS, 2)]
    )
    return tok


def test_encode_prompt_drops_an_eos_the_tokenizer_appends():
    tok = _variant(f"{BOS} $A {EOS}")
    assert tok("12+3=")["input_ids"][-1] == tok.eos_token_id  # the variant really appends EOS
    assert encode_prompt(tok, "12+3=") == [1] + tok("12+3=", add_special_tokens=False)["input_ids"]


def test_encode_prompt_adds_no_bos_when_the_tokenizer_does_not():
    tok = _variant("$A")
    assert encode_prompt(tok, "12+3=") == tok("12+3=", add_special_tokens=False)["input_ids"]


def test_encode_prompt_never_ends_with_eos_even_for_text_that_spells_it():
    assert encode_prompt(TOK, "1+1=<eos>")[-1] != TOK.eos_token_id


# ---- save / load ---------------------------------------------------------------------------


def test_save_and_load_policy_round_trip(tmp_path):
    model = tiny(seed=3).eval()
    path = save_policy(model, TOK, tmp_path / "policy")
    assert path == tmp_path / "policy" and (path / "config.json").is_file()
    loaded, tok = load_policy(path)
    loaded.eval()
    x = torch.tensor([encode_prompt(TOK, "12+34=")])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model(input_ids=x).logits)
    assert next(loaded.parameters()).dtype == torch.float32
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # still tied
    for text in TEXTS:
        assert tok(text)["input_ids"] == TOK(text)["input_ids"]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert load_tokenizer(path)("7+8=")["input_ids"] == TOK("7+8=")["input_ids"]


@pytest.mark.parametrize("loader", [load_tokenizer, load_policy], ids=["load_tokenizer", "load_policy"])
def test_missing_directory_is_a_policy_load_error_naming_the_path(loader, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(PolicyLoadError) as info:
        loader(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("loader", [load_tokenizer, load_policy], ids=["load_tokenizer", "load_policy"])
def test_empty_directory_is_a_policy_load_error_naming_the_path(loader, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PolicyLoadError) as info:
        loader(empty)
    assert str(empty) in str(info.value)


@pytest.mark.parametrize("loader", [load_tokenizer, load_policy], ids=["load_tokenizer", "load_policy"])
def test_config_without_tokenizer_is_a_policy_load_error(loader, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PolicyLoadError) as info:
        loader(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_missing_weights_is_a_policy_load_error(tmp_path):
    path = save_policy(tiny(), TOK, tmp_path / "m")
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(PolicyLoadError) as info:
        load_policy(path)
    assert str(path) in str(info.value)


# ---- weight blobs --------------------------------------------------------------------------


def test_state_bytes_round_trip_gives_identical_weights_and_logits():
    source, target = tiny(seed=1).eval(), tiny(seed=2).eval()
    blob = state_to_bytes(source)
    assert isinstance(blob, bytes)
    load_state_bytes(target, blob)
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert torch.equal(a, b), name
    # the tie survives: the embedding was sent once and the head still shares its storage
    assert target.lm_head.weight.data_ptr() == target.model.embed_tokens.weight.data_ptr()
    x = torch.tensor([encode_prompt(TOK, "99-1=")])
    with torch.no_grad():
        assert torch.equal(target(input_ids=x).logits, source(input_ids=x).logits)


def test_state_bytes_and_sha256_are_stable():
    a = tiny(seed=1)
    blob = state_to_bytes(a)
    assert state_to_bytes(a) == blob
    assert state_to_bytes(tiny(seed=1)) == blob  # same weights, same bytes
    assert sha256(blob) == hashlib.sha256(blob).hexdigest() == sha256(state_to_bytes(a))
    b = tiny(seed=2)
    assert sha256(state_to_bytes(b)) != sha256(blob)
    load_state_bytes(b, blob)
    assert sha256(state_to_bytes(b)) == sha256(blob)
    assert sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_state_bytes_into_a_different_architecture_is_an_error():
    other = make_tiny_model(TOK, hidden_size=32, layers=2, heads=2, intermediate_size=64, max_positions=64)
    with pytest.raises(ValueError, match="weights do not fit"):
        load_state_bytes(other, state_to_bytes(tiny()))
