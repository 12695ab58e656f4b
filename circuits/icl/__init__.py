"""``circuits icl``: the in-context-learning experiments of Crosbie & Shutova (arXiv 2407.07011).

:mod:`.tasks` builds few-shot prompts, :mod:`.scoring` scores them with the forward pass, and
:mod:`.experiment` runs every ablation condition into an :class:`ICLResult`. Names are imported on first use.
"""

from circuits.lazy import lazy_face

_PUBLIC = {"ICLResult": "experiment", "ICLSettings": "experiment", "run_icl": "experiment"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_face(__name__, _PUBLIC)
