"""A Hugging Face model directory (config.json + one or many ``*.safetensors``) as a tensor source."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Callable

import numpy as np

from circuits.convert.errors import CheckpointError, read_json_object
from circuits.convert.gemma3 import GEMMA3_RULES, gemma3_config
from circuits.convert.internlm2 import INTERNLM2_RULES, internlm2_config
from circuits.convert.layout import TensorRule
from circuits.convert.llama import IGNORED_SUFFIXES, LLAMA_RULES, llama_config
from circuits.convert.qwen2 import QWEN2_RULES, qwen2_config
from circuits.convert.safetensors_file import SafetensorsFile
from circuits.convert.table_checkpoint import TableCheckpoint
from circuits.models.config import ConfigError, ModelConfig

ConfigParser = Callable[[dict[str, Any]], tuple[ModelConfig, list[str]]]

ARCHITECTURES: dict[str, tuple[ConfigParser, tuple[TensorRule, ...]]] = {
    "LlamaForCausalLM": (llama_config, LLAMA_RULES),
    "InternLM2ForCausalLM": (internlm2_config, INTERNLM2_RULES),
    "Qwen2ForCausalLM": (qwen2_config, QWEN2_RULES),
    "Gemma3ForCausalLM": (gemma3_config, GEMMA3_RULES),
}
"""HF ``architectures`` value -> (config parser, tensor name table)."""

INDEX_NAME = "model.safetensors.index.json"


def register_architecture(name: str, parser: ConfigParser, rules: tuple[TensorRule, ...]) -> None:
    """Teach the reader a new HF architecture (its config parser and tensor name table)."""
    ARCHITECTURES[name] = (parser, rules)


def model_directory(path: str | Path) -> Path:
    """The directory of an HF checkpoint given the directory, its index file, or a single .safetensors file."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_hf_config(directory: Path) -> tuple[ModelConfig, tuple[TensorRule, ...], list[str]]:
    """(config, name table, problems) from ``directory/config.json``; raises for what blocks reading further."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(directory, ["no config.json next to the weights"], "put the model's config.json in the directory")
    hf, problem = read_json_object(config_path)
    if problem:
        raise CheckpointError(config_path, [problem], "restore the original config.json")
    names = hf.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CheckpointError(config_path, [f"architectures is {names!r}, not a list of names"], "restore the original config.json")
    known = [name for name in names if name in ARCHITECTURES]
    if not known:
        raise CheckpointError(
            directory,
            [f"unknown architecture {names or hf.get('model_type')!r}"],
            f"this tool reads {', '.join(sorted(ARCHITECTURES))} checkpoints (and GGUF files); "
            "convert the model to one of these layouts",
        )
    parser, rules = ARCHITECTURES[known[0]]
    try:
        config, problems = parser(hf)
    except KeyError as err:
        raise CheckpointError(config_path, [f"config.json has no {err}"], "restore the original config.json") from err
    except (ConfigError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise CheckpointError(config_path, [f"config.json is invalid: {err}"], "restore the original config.json") from err
    return config, rules, problems


def read_index(index_path: Path) -> tuple[dict[str, str], list[str]]:
    """({tensor name: shard file name}, problems) from a ``model.safetensors.index.json``; shard names must
    be plain file names inside the checkpoint directory."""
    index, problem = read_json_object(index_path)
    if problem:
        return {}, [problem]
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        return {}, [f"{INDEX_NAME} has no weight_map object of tensor name -> shard file name"]
    outside = sorted({v for v in weight_map.values() if Path(v).name != v or v in ("", ".", "..")})
    if outside:
        return {}, [f"{INDEX_NAME} names shards outside the checkpoint directory: {', '.join(outside[:5])}"]
    return weight_map, []


def open_safetensors(directory: Path) -> tuple[dict[str, SafetensorsFile], list[str]]:
    """({tensor name: file holding it}, problems) for a sharded (index) or single-file checkpoint."""
    problems: list[str] = []
    index_path = directory / INDEX_NAME
    if index_path.is_file():
        weight_map, index_problems = read_index(index_path)
        if index_problems:
            return {}, index_problems
        file_names = sorted(set(weight_map.values()))
    else:
        weight_map = None
        file_names = sorted(p.name for p in directory.glob("*.safetensors"))
        if not file_names:
            problems.append("no *.safetensors file and no model.safetensors.index.json")
    files = {}
    named = f"named in {INDEX_NAME}" if weight_map is not None else "found in the directory"
    for name in file_names:
        if not (directory / name).is_file():
            problems.append(f"shard {name} {named} is missing" + ("" if weight_map is not None else " (a broken link)"))
            continue
        if (directory / name).resolve().parent != directory.resolve():
            problems.append(f"shard {name} {named} lies outside the checkpoint directory (a symlink out of it)")
            continue
        files[name] = SafetensorsFile(directory / name)
        problems.extend(files[name].problems)
    where: dict[str, SafetensorsFile] = {}
    for file_name, file in files.items():
        for tensor in file.entries:
            if tensor in where:
                problems.append(f"tensor {tensor} is stored twice ({where[tensor].path.name} and {file_name})")
            if weight_map is not None and weight_map.get(tensor, file_name) != file_name:
                problems.append(f"tensor {tensor} is in {file_name} but {INDEX_NAME} puts it in {weight_map[tensor]}")
            where[tensor] = file
    if weight_map is not None and files and not any(f.problems for f in files.values()):
        for tensor, file_name in weight_map.items():
            if file_name in files and tensor not in where:
                problems.append(f"tensor {tensor} is listed in {INDEX_NAME} but absent from {file_name}")
    return where, problems


class HFCheckpoint(TableCheckpoint):
    """Canonical tensors of an HF checkpoint, read lazily from memory-mapped safetensors.

    Construction validates everything (config, files, names, shapes) and raises one
    :class:`CheckpointError` listing every problem; no tensor data is read until :meth:`tensor`.
    """

    def __init__(self, path: str | Path):
        directory = model_directory(path)
        config, rules, problems = read_hf_config(directory)
        self._where, file_problems = open_safetensors(directory)
        shapes = None if file_problems else {name: file.shape(name) for name, file in self._where.items()}
        super().__init__(
            directory,
            config,
            rules,
            shapes,
            lambda name: self._where[name].tensor(name),
            problems + file_problems,
            "re-download or re-export the checkpoint (transformers' save_pretrained writes a consistent one)",
            optional=IGNORED_SUFFIXES,
            config_name="config.json",
        )

    def _read_ahead(self, stored: str) -> None:
        self._where[stored].read_ahead(stored)

    def release_pages(self) -> None:
        """Unmap the pages read so far from every shard (see :meth:`SafetensorsFile.release_pages`)."""
        for file in {id(f): f for f in self._where.values()}.values():
            file.release_pages()

    @property
    def storage(self) -> str:
        """How the weights are stored, e.g. ``HF safetensors, bfloat16`` (the most common tensor dtype)."""
        counts = collections.Counter(str(file.dtype(name)) for name, file in self._where.items())
        return f"HF safetensors, {counts.most_common(1)[0][0] if counts else 'no tensors'}"

    @property
    def dtype(self) -> np.dtype:
        """The checkpoint's own dtype (that of its embedding)."""
        name = self._producer["embed"].stored_name
        return self._where[name].dtype(name)
