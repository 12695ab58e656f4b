"""The one error type every reader raises: one line naming the file, every problem found (up to a cap), and the fix."""

from __future__ import annotations

import json
from pathlib import Path

SHOWN_PROBLEMS = 10


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; ``problems`` lists every reason found, not just the first.

    The message is one line: ``cannot load SOURCE: problem; problem; ... (and N more); fix: FIX``.
    """

    def __init__(self, source: str | Path, problems: list[str], fix: str):
        self.source = str(source)
        self.problems = list(problems)
        self.fix = fix
        shown = "; ".join(" ".join(str(problem).split()) for problem in self.problems[:SHOWN_PROBLEMS])
        more = len(self.problems) - SHOWN_PROBLEMS
        super().__init__(f"cannot load {self.source}: {shown}{f' (and {more} more)' if more > 0 else ''}; fix: {fix}")


def read_json_object(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON object in ``path``, None), or (None, the problem) when it is not valid JSON or not an object."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return None, f"{path.name} is not valid JSON ({str(err)[:100]})"
    if not isinstance(data, dict):
        return None, f"{path.name} holds a JSON {type(data).__name__}, not an object"
    return data, None
