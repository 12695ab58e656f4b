"""``circuits report``: the weight-only prediction, validated by forward passes, as JSON, Markdown and HTML.

``circuits.report(model, validate=True)`` builds a :class:`CircuitReport`: this package is
callable, so the verb and its package share one name. Its parts: :mod:`.experiment` (the report),
:mod:`.render` (Markdown and HTML), :mod:`.resources` (memory checks before the work). Names are imported
on first use.
"""

from __future__ import annotations

import sys
import types

from circuits.lazy import lazy_face

_PUBLIC = {"CircuitReport": "experiment", "Validation": "experiment", "report": "experiment"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_face(__name__, _PUBLIC)


class _CallableModule(types.ModuleType):
    """A module that calls :func:`report` when called, so ``circuits.report(...)`` works."""

    def __call__(self, *args, **kwargs):
        from circuits.report.experiment import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
