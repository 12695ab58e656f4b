"""SentencePiece tokenizers (InternLM2 and older Llama checkpoints ship only ``tokenizer.model``), read from the
file itself and from a GGUF ``llama`` vocabulary, against the ``sentencepiece`` library on a model trained on the fly."""

import gguf
import numpy as np
import pytest
import sentencepiece as spm

import circuits
from circuits.convert.tokenizer import TokenizerError

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Induction heads copy the token that followed an earlier occurrence of the current token.",
    "Previous-token heads move each token's identity one position forward.",
    "In-context learning: foo bar baz, foo bar baz, foo bar ...",
    "Weights alone predict circuits; forward passes confirm them.",
] * 40
TEXTS = ["The quick brown fox", "induction heads copy tokens", "naïve café — 3.14 ☃", "  two  spaces", "unseen zqxj words"]


LLAMA_LIKE = dict(normalization_rule_name="identity", remove_extra_whitespaces=False)  # as Llama and InternLM2 were trained


def train(directory, kind: str, **options) -> spm.SentencePieceProcessor:
    """A tiny SentencePiece model of ``kind`` (bpe | unigram) with byte fallback, written to directory/tokenizer.model."""
    (directory / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(directory / "corpus.txt"), model_prefix=str(directory / "tokenizer"),
                                   vocab_size=320, model_type=kind, byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, **options)
    return spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
@pytest.mark.parametrize("normalisation", ["llama-like", "sentencepiece default"])
def test_tokenizer_model_file_encodes_like_sentencepiece(kind, normalisation, tmp_path):
    directory = tmp_path
    reference = train(directory, kind, **(LLAMA_LIKE if normalisation == "llama-like" else {}))
    ours = circuits.load_tokenizer(directory)  # an HF-style directory with tokenizer.model and no tokenizer.json
    for text in TEXTS:
        expected = reference.encode(text)
        assert ours.encode(text, add_special_tokens=False).ids == expected, text
        assert ours.encode(text).ids == [reference.bos_id()] + expected  # BOS first, as Llama and InternLM2 do
        assert ours.decode(expected) == reference.decode(expected)


def test_gguf_llama_vocabulary_encodes_like_sentencepiece(tmp_path):
    """llama.cpp stores a SentencePiece BPE vocabulary as tokens, scores and token types."""
    reference = train(tmp_path, "bpe", **LLAMA_LIKE)
    path = tmp_path / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    n = reference.get_piece_size()
    writer.add_tokenizer_model("llama")
    writer.add_token_list([reference.id_to_piece(i) for i in range(n)])
    writer.add_token_scores([reference.get_score(i) for i in range(n)])
    types = [2 if reference.is_unknown(i) else 3 if reference.is_control(i) else 6 if reference.is_byte(i) else 1 for i in range(n)]
    writer.add_token_types(types)
    writer.add_bos_token_id(reference.bos_id())
    writer.add_tensor("token_embd.weight", np.zeros((n, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ours = circuits.load_tokenizer(path)
    for text in TEXTS:
        assert ours.encode(text).ids == [reference.bos_id()] + reference.encode(text), text


def test_missing_and_foreign_tokenizers_say_what_to_do(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json or SentencePiece tokenizer.model"):
        circuits.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"\x00garbage\xff" * 3)
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        circuits.load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="has no tokenizer"):
        circuits.load_tokenizer("demo-induction")


def test_qwen2_pre_tokenizer_splits_every_digit_as_qwen2_does():
    from circuits.convert.tokenizer import _pre_tokenizer

    assert [w for w, _ in _pre_tokenizer("qwen2").pre_tokenize_str("abc 12345 de")] == ["abc", "Ġ", "1", "2", "3", "4", "5", "Ġde"]
    assert [w for w, _ in _pre_tokenizer("llama3").pre_tokenize_str("abc 12345 de")] == ["abc", "Ġ", "123", "45", "Ġde"]
