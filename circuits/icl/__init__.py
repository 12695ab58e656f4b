"""``circuits icl``: the in-context-learning experiments of Crosbie & Shutova (arXiv 2407.07011).

:mod:`.tasks` builds few-shot prompts, :mod:`.scoring` scores them with the forward pass, and
:mod:`.experiment` runs every ablation condition into an :class:`ICLResult`.
"""

from circuits.icl.experiment import ICLResult, ICLSettings, run_icl

__all__ = ["ICLResult", "ICLSettings", "run_icl"]
