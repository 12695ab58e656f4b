"""``circuits train``: induction-head formation dynamics with pattern clamping (Singh et al., arXiv 2404.07129).

:mod:`.tasks` makes training batches, :mod:`.clamps` fixes attention patterns, :mod:`.measures`
scores a model during training, :mod:`.training` runs seeds together as one vmapped program, and
:mod:`.experiment` turns the runs into a :class:`FormationResult`.
"""

from circuits.formation.experiment import FormationResult, run_formation
from circuits.formation.training import Trainer, TrainSettings

__all__ = ["FormationResult", "TrainSettings", "Trainer", "run_formation"]
