"""KAEM: a latent prior, a generator and the likelihood, wired together.

    z ~ prior (by inverse transform)  ->  h = prior.to_input(z)  ->  x̂ = out_act(G(h))

For the univariate prior, z_{q,p} = F_{q,p}^{-1}(u_p) and h_q = Σ_p z_{q,p}. The prior and
the generator are built as the config selects (``kaem/build.py``). The model owns no
training logic: the objectives (``kaem/objectives``) call the pieces' forward/backward
methods with the settings in ``model.objective``, and the optimiser works on the flat dicts
returned by ``parameters()`` / ``gradients()`` (names like ``prior.coef``, ``gen.1.w_sp``).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

from kaem.backend import Backend
from kaem.build import build_generator, build_likelihood, build_prior, grid_ratios, objective_settings
from kaem.config import Config
from kaem.nn.kan import parameters_changed


class KAEM:
    """A Kolmogorov–Arnold Energy Model built from a validated ``Config``.

    Args:
        cfg: the configuration (sections EbmModel, GeneratorModel, TRAINING, ...).
        data_shape: (C, H, W) of one datum; D = C·H·W is the generator's output width.
        be: the array backend.
        seed: seeds the parameter initialisation only (prior first, then generator).
    """

    def __init__(self, cfg: Config, data_shape: tuple[int, ...], be: Backend, seed: int = 0) -> None:
        self.cfg, self.be, self.data_shape = cfg, be, tuple(int(d) for d in data_shape)
        rng = be.rng(seed)
        self.D = math.prod(self.data_shape)
        self.prior = build_prior(cfg, be, rng)
        self.Q = int(self.prior.Q)
        self.generator = build_generator(cfg, be, rng, self.Q, self.data_shape)
        self.lik = build_likelihood(cfg)
        self.objective = objective_settings(cfg)  # the training objective and its sampler settings
        self.grid_ratios = grid_ratios(cfg)  # grid updating's blend (prior, generator)

    # ---- flat views for the optimiser and checkpoints ------------------------------------
    def _components(self) -> tuple[tuple[str, Any], ...]:
        """(name prefix in parameters() / buffers() / checkpoints, component)."""
        return (("prior", self.prior), ("gen", self.generator))

    def _flat(self, attr: str) -> dict[str, Any]:
        return {f"{name}.{k}": v for name, part in self._components() for k, v in getattr(part, attr).items()}

    def parameters(self) -> dict[str, Any]:
        return self._flat("params")

    def gradients(self) -> dict[str, Any]:
        return self._flat("grads")

    def buffers(self) -> dict[str, Any]:
        return self._flat("buffers")

    def zero_grad(self) -> None:
        for _, part in self._components():
            part.zero_grad()

    def load_arrays(self, params: dict[str, Any], buffers: dict[str, Any]) -> None:
        """Copy stored arrays in place; names and shapes must match this model exactly."""
        for kind, mine, theirs in (("parameter", self.parameters(), params), ("buffer", self.buffers(), buffers)):
            if set(mine) != set(theirs):
                missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
                raise ValueError(f"{kind} names differ from this model: missing {missing}, unexpected {extra}")
            for k, arr in mine.items():
                if tuple(arr.shape) != tuple(theirs[k].shape):
                    raise ValueError(f"{kind} {k}: stored shape {tuple(theirs[k].shape)}, model expects {tuple(arr.shape)}")
                arr[...] = self.be.asarray(theirs[k], dtype=arr.dtype)
        parameters_changed()

    # ---- sampling ---------------------------------------------------------------------
    def sample_prior(self, n: int, rng: Any) -> Any:
        """n latents z (n, *prior.latent_shape) from the prior."""
        return self.prior.sample(n, rng)

    def decode(self, z: Any) -> Any:
        """Mean image out_act(G(h(z))) (n, D), no injection noise."""
        g = self.generator.forward(self.prior.to_input(z), cache=False)
        return self.lik.output(g)

    def generate(self, n: int, rng: Any, batch: int = 500) -> Any:
        """n fresh samples x̂ (n, D) from the model (prior -> generator), in batches, in eval mode."""
        xp = self.be.xp
        with self.evaluating():
            return xp.concatenate([self.decode(self.sample_prior(min(batch, n - i), rng))
                                   for i in range(0, n, batch)])

    @contextmanager
    def evaluating(self) -> Iterator["KAEM"]:
        """Eval mode inside the block: the generator uses its running statistics (batch norm)
        instead of the batch's, so a sample does not depend on the others drawn with it."""
        before = self.generator.training
        self.generator.training = False
        try:
            yield self
        finally:
            self.generator.training = before

    # ---- grid updating (method §2.1) -------------------------------------------------------------
    def update_grids(self, z_post: Any, prior: bool = True, generator: bool = True) -> bool:
        """Move the grids to posterior samples z_post and refit the coefficients.

        The prior sees z_post itself (and its quadrature domain follows its grid); the
        generator sees h = prior.to_input(z_post), propagated layer by layer. Returns
        whether any grid changed.
        """
        changed = False
        if prior:
            changed |= self.prior.update_grid(z_post, self.grid_ratios[0])
        if generator:
            changed |= self.generator.update_grids(self.prior.to_input(z_post), self.grid_ratios[1])
        return changed
