"""``circuits report``: the weight-only prediction, validated by forward passes, as JSON, Markdown and HTML.

``circuits.report(model, validate=True)`` builds a :class:`CircuitReport`: this package is
callable, so the verb and its package share one name. Its parts: :mod:`.experiment` (the report),
:mod:`.render` (Markdown and HTML), :mod:`.resources` (memory checks before the work).
"""

from __future__ import annotations

import sys
import types

from circuits.report.experiment import CircuitReport, Validation, report

__all__ = ["CircuitReport", "Validation", "report"]


class _CallableModule(types.ModuleType):
    """A module that calls :func:`report` when called, so ``circuits.report(...)`` works."""

    def __call__(self, *args, **kwargs) -> CircuitReport:
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
