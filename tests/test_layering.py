"""The architecture as a test: imports flow one way, and the model layer stands alone."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"models": "circuits.models", "convert": "circuits.convert", "analysis": "circuits.analysis"}
GROUND = ("circuits.utils", "circuits.plots", "circuits.svg_figures", "circuits.world_errors", "circuits.distributed", "circuits.lazy")
ALLOWED = {
    "circuits.models": ("circuits.models", "circuits.lazy"),
    "circuits.lazy": (),
    "circuits.convert": ("circuits.convert", "circuits.models", *GROUND),
    "circuits.analysis": ("circuits.analysis", "circuits.models", *GROUND),
    "circuits.utils": ("circuits.distributed",),
    "circuits.distributed": (),
    "circuits.world_errors": (),
    "circuits.plots": ("circuits.utils",),
    "circuits.svg_figures": ("circuits.utils",),
    "circuits.report": ("circuits.report", "circuits.analysis", "circuits.convert", "circuits.models", *GROUND),
    "circuits.icl": ("circuits.icl", "circuits.analysis", "circuits.convert", "circuits.models", *GROUND),
    "circuits.formation": ("circuits.formation", "circuits.analysis", "circuits.convert", "circuits.models", *GROUND),
}


def _modules() -> list[tuple[str, Path]]:
    found = [(f"{package}.{path.stem}", path) for folder, package in FOLDERS.items() for path in (ROOT / folder).glob("*.py")]
    found += [(f"circuits.{path.relative_to(ROOT / 'circuits').with_suffix('').as_posix().replace('/', '.')}", path)
              for path in (ROOT / "circuits").rglob("*.py")]
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("circuits."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("circuits."))
    return names


@pytest.mark.parametrize("module, path", _modules(), ids=lambda value: str(value) if isinstance(value, str) else "")
def test_imports_flow_one_way(module, path):
    layer = next((prefix for prefix in sorted(ALLOWED, key=len, reverse=True) if module == prefix or module.startswith(prefix + ".")), None)
    if layer is None:  # the public face and the CLI may import anything
        return
    upward = {name for name in _imports(path) if not name.startswith(ALLOWED[layer])}
    assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)} above its layer"


def test_the_model_layer_imports_nothing_heavy_of_the_project():
    # flax itself imports rich (flax.linen.summary), so compare against what flax.nnx already loaded.
    code = (
        "import sys, flax.nnx; before = set(sys.modules); import circuits.models; "
        "new = set(sys.modules) - before; "
        "heavy = ('rich', 'tokenizers', 'matplotlib'); upper = ('circuits.convert', 'circuits.cli', 'circuits.analysis'); "
        "bad = {m for m in new if m.split('.')[0] in heavy or m.startswith(upper)}; "
        "assert not bad, sorted(bad)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_analysis_face_names_functions_even_after_its_modules_are_imported():
    """A public name that is also a submodule's name would turn into the module once that submodule is
    imported (the README's ``analysis.attention_scores(model)`` broke this way)."""
    import importlib
    import types

    import circuits.analysis as analysis

    for path in (ROOT / "analysis").glob("*.py"):
        importlib.import_module(f"circuits.analysis.{path.stem}")
    wrong = [name for name in analysis.__all__ if isinstance(getattr(analysis, name), types.ModuleType)]
    assert not wrong, f"public names that resolve to modules: {wrong}"
