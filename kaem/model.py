"""KAEM: the univariate EBM prior, the generator and the likelihood, wired together.

    u ~ U(0,1)^P  ->  z_{q,p} = F_{q,p}^{-1}(u_p)  ->  h_q = Σ_p z_{q,p}  ->  x̂ = out_act(G(h))

The model owns no training logic: objectives (``kaem/importance.py``) call the pieces'
forward/backward methods, and the optimiser works on the flat dicts returned by
``parameters()`` / ``gradients()`` (names like ``prior.coef``, ``gen.1.w_sp``).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from .backend import Backend
from .config import Config
from .generator import KANGenerator, latent_to_input
from .grid_update import prior_domain_from_grid, update_layer_grid, update_pointwise_grid
from .kan import KANLayer, KANSpec
from .likelihood import GaussianLikelihood, apply_output_activation
from .prior import UnivariatePrior


class KAEM:
    """A Kolmogorov–Arnold Energy Model built from a validated ``Config``.

    Args:
        cfg: the configuration (sections EbmModel, GeneratorModel, TRAINING, ...).
        data_shape: (C, H, W) of one datum; D = C·H·W is the generator's output width.
        be: the array backend.
        seed: seeds the parameter initialisation only.
    """

    def __init__(self, cfg: Config, data_shape: tuple[int, ...], be: Backend, seed: int = 0) -> None:
        self.cfg, self.be, self.data_shape = cfg, be, tuple(int(d) for d in data_shape)
        e, g, t = cfg["EbmModel"], cfg["GeneratorModel"], cfg["TRAINING"]
        rng = be.rng(seed)
        P, Q = e["layer_widths"]
        self.P, self.Q, self.D = int(P), int(Q), math.prod(self.data_shape)
        self.prior = UnivariatePrior(be, self.P, self.Q, KANSpec.from_section(e), rng, pi0=e["π_0"],
                                     n_nodes=e["GaussQuad_nodes"], eps=t["eps"],
                                     shared_uniform=e["shared_uniform"])
        self.generator = KANGenerator(be, list(g["widths"]) + [self.D], KANSpec.from_section(g), rng)
        self.lik = GaussianLikelihood(g["generator_variance"], g["generator_noise"], g["output_activation"])

    # ---- flat views for the optimiser and checkpoints ------------------------------------
    def layers(self) -> Iterator[tuple[str, KANLayer]]:
        """(prefix, layer) for every KAN layer: ``prior`` then ``gen.0``, ``gen.1``, ..."""
        yield "prior", self.prior.layer
        for name, layer in self.generator.named_layers():
            yield f"gen.{name}", layer

    def parameters(self) -> dict[str, Any]:
        return {f"{p}.{k}": v for p, layer in self.layers() for k, v in layer.params.items()}

    def gradients(self) -> dict[str, Any]:
        return {f"{p}.{k}": v for p, layer in self.layers() for k, v in layer.grads.items()}

    def buffers(self) -> dict[str, Any]:
        out = {f"{p}.{k}": v for p, layer in self.layers() for k, v in layer.buffers.items() if v is not None}
        out.update({f"prior.{k}": v for k, v in self.prior.buffers.items()})
        return out

    def zero_grad(self) -> None:
        for _, layer in self.layers():
            layer.zero_grad()

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

    # ---- sampling ---------------------------------------------------------------------
    def sample_prior(self, n: int, rng: Any) -> Any:
        """n latents z (n, Q, P) by inverse transform sampling."""
        return self.prior.sample(n, rng)

    def decode(self, z: Any) -> Any:
        """Mean image out_act(G(h(z))) (n, D), no injection noise."""
        g = self.generator.forward(latent_to_input(z), cache=False)
        return apply_output_activation(self.lik.out_act, g)

    def generate(self, n: int, rng: Any, batch: int = 500) -> Any:
        """n fresh samples x̂ (n, D) from the model (prior -> generator), in batches."""
        xp = self.be.xp
        return xp.concatenate([self.decode(self.sample_prior(min(batch, n - i), rng))
                               for i in range(0, n, batch)])

    # ---- grid updating (spec 2.1) -------------------------------------------------------------
    def update_grids(self, z_post: Any, prior: bool = True, generator: bool = True) -> bool:
        """Move the grids to posterior samples z_post (n, Q, P) and refit the coefficients.

        The prior's layer sees z_post itself and its quadrature domain follows its grid;
        each generator layer sees its own inputs, propagated from h = Σ_p z_post through the
        (already updated) layers before it. Returns whether any grid changed.
        """
        changed = False
        if prior and update_pointwise_grid(self.prior.layer, z_post, self.cfg["EbmModel"]["grid_update_ratio"]):
            points = self.prior.layer.basis.interior(self.prior.layer.buffers["grid"])
            self.prior.buffers["domain"][...] = prior_domain_from_grid(points)
            changed = True
        if generator:
            h = latent_to_input(z_post)
            for layer in self.generator.layers:
                changed |= update_layer_grid(layer, h, self.cfg["GeneratorModel"]["grid_update_ratio"])
                h = layer.forward(h, cache=False)
        return changed
