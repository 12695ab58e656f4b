"""The one error type every reader raises: it lists every problem found, then the fix."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; ``problems`` lists every reason found, not just the first."""

    def __init__(self, source: str | Path, problems: list[str], fix: str):
        self.source = str(source)
        self.problems = list(problems)
        self.fix = fix
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"cannot load {self.source}:\n{listing}\nfix: {fix}")
