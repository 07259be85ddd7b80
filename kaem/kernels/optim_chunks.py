"""The optimiser's update in cache-sized chunks over the CPU threads.

Drop-in for ``Optimizer.apply`` (``kaem/optim.py``): every entry of a parameter is updated
on its own, so the update rule can run on chunks of ``CHUNK`` entries (each chunk's dozen
passes stay in cache) spread over the threads (``threads.py``), bit for bit the reference's
values. On the GPU each parameter is one chunk.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.kernels import register
from kaem.kernels.threads import map_blocks, row_blocks

CHUNK = 1 << 15  # entries per chunk of a CPU step: the chunk of θ, g, tmp and the state fits in L2


def chunks(p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> list[tuple]:
    """(p, g, tmp, st) cut into flat chunks of ``CHUNK`` entries (numpy), or the whole
    parameter as one. The flat views follow p's memory order (a parameter stored transposed,
    as the KAN coefficients are, is still one contiguous run); g is read in that order."""
    if array_module(p) is not np or p.size <= CHUNK:
        return [(p, g, tmp, st)]
    order = tuple(int(a) for a in np.argsort([-s for s in p.strides], kind="stable"))
    arrays = [a.transpose(order) for a in (p, tmp, *st.values())]
    if not all(a.flags.c_contiguous for a in arrays):
        return [(p, g, tmp, st)]
    flat = [a.reshape(-1) for a in arrays]
    gf = g.transpose(order).reshape(-1)
    names = list(st)
    return [(flat[0][a:a + CHUNK], gf[a:a + CHUNK], flat[1][a:a + CHUNK],
             {n: f[a:a + CHUNK] for n, f in zip(names, flat[2:])}) for a in range(0, p.size, CHUNK)]


@register("Optimizer.apply")
def apply(opt: Any, grads: dict[str, Any]) -> None:
    """Every parameter's update, chunk by chunk over the threads."""
    work = [c for k, p in opt.params.items()
            for c in chunks(p, grads[k], opt._tmp[k], {s: opt.state[s][k] for s in opt.slots})]
    if not work:
        return

    def run(a: int, b: int) -> None:
        for j in range(a, b):
            opt._update(*work[j])

    map_blocks(run, row_blocks(array_module(work[0][0]), len(work)))
