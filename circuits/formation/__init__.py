"""``circuits train``: induction-head formation dynamics with pattern clamping (Singh et al., arXiv 2404.07129).

:mod:`.tasks` makes training batches, :mod:`.clamps` fixes attention patterns, :mod:`.measures`
scores a model during training, :mod:`.training` runs seeds together as one vmapped program, and
:mod:`.experiment` turns the runs into a :class:`FormationResult`. Names are imported on first use.
"""

from circuits.lazy import lazy_face

_PUBLIC = {"FormationResult": "experiment", "run_formation": "experiment", "Trainer": "training", "TrainSettings": "training"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_face(__name__, _PUBLIC)
