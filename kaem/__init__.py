"""KAEM: the Kolmogorov–Arnold Energy Model in NumPy/CuPy, every gradient written by hand.

    from kaem import KAEM, load_config, get_backend
    be = get_backend("cpu", "float64")
    model = KAEM(load_config("mnist"), (1, 28, 28), be, seed=0)

The package is laid out by idea: ``nn`` (bases, KAN layer, grid updating), ``priors``,
``generators``, ``likelihood``, ``objectives``, ``samplers``, ``evaluation``, ``kernels``
(faster drop-ins for reference functions), ``run`` (trainer and its machinery), ``config``,
``plots`` and ``datasets``.
"""
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.model import KAEM
from kaem.objectives import training_step
from kaem.build import make_optimizer

__all__ = ["KAEM", "get_backend", "load_config", "make_optimizer", "training_step"]
