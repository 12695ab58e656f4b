"""Tokenizers for every checkpoint format, built with the ``tokenizers`` library.

HF directories carry ``tokenizer.json``; GGUF files carry their vocabulary, merges and
pre-tokenizer name in metadata, from which an equivalent byte-level BPE tokenizer is built.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from circuits.convert.gguf_checkpoint import open_gguf

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TokenizerError(ValueError):
    """No tokenizer can be built for this checkpoint."""


def _pre_tokenizer(name: str) -> pre_tokenizers.PreTokenizer:
    """llama.cpp's pre-tokenizer ``name`` (``tokenizer.ggml.pre``) as a ``tokenizers`` pre-tokenizer."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if name in ("llama-bpe", "llama3"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if name not in ("default", "gpt-2", "gpt2"):
        warnings.warn(f"GGUF pre-tokenizer {name!r} is not known here; splitting text as GPT-2 does", stacklevel=3)
    return byte_level


def _field(reader, name: str):
    field = reader.fields.get(name)
    return None if field is None else field.contents()


def tokenizer_from_gguf(path: str | Path) -> Tokenizer:
    """The byte-level BPE tokenizer stored in a GGUF file's ``tokenizer.ggml.*`` metadata."""
    reader = open_gguf(Path(path))
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerError(
            f"{path}: the GGUF tokenizer model is {kind!r}; only byte-level BPE ('gpt2') vocabularies are built "
            "from GGUF metadata. Fix: pass the model's tokenizer.json instead"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(merge.split(" ", 1)) for merge in _field(reader, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(_field(reader, "tokenizer.ggml.pre") or "default")
    tokenizer.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, kind in enumerate(_field(reader, "tokenizer.ggml.token_type")) if kind == 3]  # CONTROL
    tokenizer.add_special_tokens(special)
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    if _field(reader, "tokenizer.ggml.add_bos_token") and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", special_tokens=[(tokens[bos], bos)]
        )
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a model name, GGUF file, or HF directory (its ``tokenizer.json``)."""
    from circuits.convert.loading import resolve

    path = Path(resolve(path))
    if path.suffix == ".gguf":
        return tokenizer_from_gguf(path)
    directory = path if path.is_dir() else path.parent
    if (directory / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(directory / "tokenizer.json"))
    raise TokenizerError(f"{path}: no tokenizer.json found. Fix: copy the model's tokenizer.json into {directory}")
