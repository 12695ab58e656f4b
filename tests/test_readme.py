"""The README's Python blocks run as pasted, in order, so the README cannot drift from the code."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 4


@pytest.mark.network
def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
        except Exception as err:  # name the block that broke
            raise AssertionError(f"README python block {index + 1} failed: {err!r}\n{block}") from err
    assert (tmp_path / "demo-report" / "report.html").exists() and (tmp_path / "formation-out" / "formation.json").exists()
    assert namespace["estimates"].shape == (270,) and namespace["losses"].shape == (9,)
