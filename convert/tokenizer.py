"""Tokenizers for every checkpoint format, built with the ``tokenizers`` library.

- HF directories carry ``tokenizer.json``, or only a SentencePiece ``tokenizer.model`` (InternLM2,
  older Llamas), read with the ``sentencepiece`` package;
- GGUF files carry their vocabulary in metadata: byte-level BPE (``gpt2``: tokens, merges and the
  pre-tokenizer name) or SentencePiece (``llama``: tokens, scores and token types).

SentencePiece vocabularies become a ``tokenizers`` BPE (or Unigram) model with byte fallback, the
way HF's fast Llama tokenizer is built, so every format returns the same ``tokenizers.Tokenizer``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from circuits.convert.gguf_checkpoint import open_gguf
from circuits.convert.gguf_file import ArrayField, GGUFFile
from circuits.convert.named_models import DEMO_NAME

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
"""Qwen2's split: Llama 3's, with every digit on its own."""


TOKENIZER_FILE = "tokenizer.json"


class TokenizerError(ValueError):
    """No tokenizer can be built for this checkpoint."""


def _pre_tokenizer(name: str) -> pre_tokenizers.PreTokenizer:
    """llama.cpp's pre-tokenizer ``name`` (``tokenizer.ggml.pre``) as a ``tokenizers`` pre-tokenizer."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    patterns = {"llama-bpe": LLAMA3_PATTERN, "llama3": LLAMA3_PATTERN, "qwen2": QWEN2_PATTERN}
    if name in patterns:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(patterns[name]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if name not in ("default", "gpt-2", "gpt2"):
        warnings.warn(f"GGUF pre-tokenizer {name!r} is not known here; splitting text as GPT-2 does", stacklevel=3)
    return byte_level


def _field(file, name: str):
    """Metadata ``name`` of a :class:`~circuits.convert.gguf_file.GGUFFile`: a value, a decoded array, or None."""
    value = file.metadata.get(name)
    return file.array(name) if isinstance(value, ArrayField) else value


# SentencePiece piece types (sentencepiece_model.proto): 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
UNKNOWN, CONTROL, USER_DEFINED = 2, 3, 4


def _bpe_merges(pieces: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """The merges of a SentencePiece BPE vocabulary: every split of a piece into two pieces, earliest for the
    piece with the highest score (SentencePiece merges the best-scoring pair first)."""
    rank = {piece: i for i, piece in enumerate(pieces)}
    found = []
    for piece, score in zip(pieces, scores):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in rank and right in rank:
                found.append((-score, rank[piece], rank[left], left, right))
    return [(left, right) for *_, left, right in sorted(found)]


def sentencepiece_tokenizer(pieces: list[str], scores: list[float], types: list[int], *, bpe: bool, add_bos: bool,
                            bos_id: int | None, add_dummy_prefix: bool = True, nfkc: bool = False,
                            remove_extra_whitespaces: bool = False) -> Tokenizer:
    """A ``tokenizers`` equivalent of a SentencePiece model (BPE or Unigram, with byte fallback).

    The defaults are Llama's (and llama.cpp's ``llama`` vocabularies'): no Unicode normalisation, spaces kept.
    """
    unknown = next((i for i, kind in enumerate(types) if kind == UNKNOWN), 0)
    if bpe:
        vocab = {piece: i for i, piece in enumerate(pieces)}
        model = models.BPE(vocab=vocab, merges=_bpe_merges(pieces, scores), unk_token=pieces[unknown], fuse_unk=True, byte_fallback=True)
    else:
        model = models.Unigram([(piece, float(score)) for piece, score in zip(pieces, scores)], unk_id=unknown, byte_fallback=True)
    tokenizer = Tokenizer(model)
    steps = [normalizers.NFKC()] if nfkc else []
    if remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    steps += [normalizers.Prepend("\u2581")] if add_dummy_prefix else []
    tokenizer.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "\u2581")])
    strip = [decoders.Strip(content=" ", left=1, right=0)] if add_dummy_prefix else []
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    tokenizer.add_special_tokens([pieces[i] for i, kind in enumerate(types) if kind in (UNKNOWN, CONTROL)])
    tokenizer.add_tokens([pieces[i] for i, kind in enumerate(types) if kind == USER_DEFINED])
    if add_bos and bos_id is not None:
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{pieces[bos_id]} $A", special_tokens=[(pieces[bos_id], bos_id)])
    return tokenizer


def tokenizer_from_sentencepiece(path: str | Path) -> Tokenizer:
    """The tokenizer of a SentencePiece ``tokenizer.model`` file (BOS added, as Llama and InternLM2 do)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise TokenizerError(f"{path}: not a SentencePiece model ({err}); fix: use the model's own tokenizer.model") from err
    kind = proto.trainer_spec.model_type  # 1 unigram, 2 BPE
    if kind not in (1, 2):
        raise TokenizerError(f"{path}: SentencePiece model type {kind} is not BPE or Unigram; fix: provide a tokenizer.json")
    pieces = [p.piece for p in proto.pieces]
    bos = proto.trainer_spec.bos_id
    return sentencepiece_tokenizer(pieces, [p.score for p in proto.pieces], [p.type for p in proto.pieces], bpe=kind == 2,
                                   add_bos=bos >= 0, bos_id=bos if bos >= 0 else None,
                                   add_dummy_prefix=proto.normalizer_spec.add_dummy_prefix,
                                   nfkc=proto.normalizer_spec.name.startswith("nmt_nfkc") or proto.normalizer_spec.name == "nfkc",
                                   remove_extra_whitespaces=proto.normalizer_spec.remove_extra_whitespaces)


def tokenizer_from_gguf(path: str | Path | GGUFFile) -> Tokenizer:
    """The tokenizer stored in a GGUF file's ``tokenizer.ggml.*`` metadata: byte-level BPE (``gpt2``) or
    SentencePiece (``llama``); ``path`` may be the file already open."""
    file = path if isinstance(path, GGUFFile) else open_gguf(Path(path))
    path = file.path
    kind = _field(file, "tokenizer.ggml.model")
    missing = [key for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type") + (("tokenizer.ggml.scores",) if kind == "llama" else
               ("tokenizer.ggml.merges",)) if not isinstance(_field(file, key), list)]
    if kind in ("llama", "gpt2") and missing:
        raise TokenizerError(f"{path}: the GGUF vocabulary lacks {', '.join(missing)}; fix: pass the model's tokenizer.json instead")
    if kind == "llama":
        tokens = list(_field(file, "tokenizer.ggml.tokens"))
        add_bos, add_prefix = _field(file, "tokenizer.ggml.add_bos_token"), _field(file, "tokenizer.ggml.add_space_prefix")
        return sentencepiece_tokenizer(tokens, list(_field(file, "tokenizer.ggml.scores")), list(_field(file, "tokenizer.ggml.token_type")),
                                       bpe=True, add_bos=True if add_bos is None else bool(add_bos),
                                       bos_id=_field(file, "tokenizer.ggml.bos_token_id"),
                                       add_dummy_prefix=True if add_prefix is None else bool(add_prefix))
    if kind != "gpt2":
        raise TokenizerError(
            f"{path}: the GGUF tokenizer model is {kind!r}; byte-level BPE ('gpt2') and SentencePiece ('llama') vocabularies "
            "are read from GGUF metadata. Fix: pass the model's tokenizer.json instead"
        )
    tokens = _field(file, "tokenizer.ggml.tokens")
    merges = [tuple(merge.split(" ", 1)) for merge in _field(file, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(_field(file, "tokenizer.ggml.pre") or "default")
    tokenizer.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, kind in enumerate(_field(file, "tokenizer.ggml.token_type")) if kind == 3]  # CONTROL
    tokenizer.add_special_tokens(special)
    bos = _field(file, "tokenizer.ggml.bos_token_id")
    if _field(file, "tokenizer.ggml.add_bos_token") and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", special_tokens=[(tokens[bos], bos)]
        )
    return tokenizer


def _tokenizer_json(path: Path, kind: str) -> Tokenizer:
    """A ``tokenizer.json``, or :class:`TokenizerError` naming the file and the fix when it is damaged (the
    tokenizers library raises a bare ``Exception`` for garbage, an empty file, binary bytes or the wrong shape)."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        fix = ("rebuild the cache with circuits convert" if kind == "cache" else
               "restore the model's own tokenizer.json (or delete it to use its tokenizer.model)")
        raise TokenizerError(f"{path} is not a readable tokenizer.json ({reason}); fix: {fix}") from err


def tokenizer_at(path: Path, kind: str, gguf_file: GGUFFile | None = None) -> Tokenizer:
    """The tokenizer of a resolved checkpoint of ``kind`` (see :class:`circuits.convert.checkpoint.Checkpoint`): from
    a GGUF file's metadata (``gguf_file``: that file already open), else the directory's ``tokenizer.json`` (a convert cache keeps its source's), else
    its SentencePiece ``tokenizer.model``."""
    if kind == "demo":
        raise TokenizerError(f"the {DEMO_NAME!r} model is planted by hand over a toy vocabulary and has no tokenizer; "
                             "fix: use a real checkpoint, e.g. smollm2-135m")
    if kind == "gguf":
        return tokenizer_from_gguf(gguf_file or path)
    directory = path if path.is_dir() else path.parent
    if (directory / TOKENIZER_FILE).is_file():
        return _tokenizer_json(directory / TOKENIZER_FILE, kind)
    if (directory / "tokenizer.model").is_file():
        return tokenizer_from_sentencepiece(directory / "tokenizer.model")
    fix = ("convert the source again (caches keep the tokenizer of a source that has one)" if kind == "cache" else
           f"copy the model's tokenizer.json or tokenizer.model into {directory}")
    raise TokenizerError(f"{path}: no tokenizer.json or SentencePiece tokenizer.model found. Fix: {fix}")


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer of a model name, GGUF file, HF directory (its ``tokenizer.json``, else its SentencePiece
    ``tokenizer.model``), convert cache, or :class:`~circuits.convert.checkpoint.Checkpoint`."""
    from circuits.convert.checkpoint import open_checkpoint

    return open_checkpoint(path).tokenizer()
