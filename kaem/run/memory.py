"""Memory estimate of a training run, checked before anything is allocated.

An absurd setting (a batch, sample count or layer width of 10^9) should fail at once with
the figure and the setting to change, not with a MemoryError deep inside the first step.
``training_memory`` lists the largest arrays a configuration allocates, from the config
alone (B = batch size, S = importance samples, D = pixels, Q×P prior functions, nb basis
functions per input, K quadrature nodes, N chains or samples the generator runs on):

    data on the device                  (N_train + N_test) · D
    IS likelihood residuals and noise   2 · B · S · D  (noise_sharing = pair; sample: 2 · S · D + 4 · B · S)
    Langevin / thermo chain likelihoods 3 · N_chains · D
    prior basis tensors of the samples  2 · N_prior · Q · P · nb   (values and derivatives)
    quadrature (and its 2K check)       3 · K · (P · nb + Q · P)
    deep prior instead of both: its network's activations on N_prior samples (KAN:
    N · Σ(in · nb + out); MLP: 2 · N · Σ out), as the generator's stacks
    generator activations (KAN: basis tensors N · Σ(in · nb + out); conv: im2col columns)
    parameters, gradients, Adam m and v, the NaN guard's copy   5 · #parameters

It is an estimate of the working set (temporaries of elementwise expressions come on top),
meant to catch settings that cannot fit, not to predict the peak to the megabyte.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from kaem.nn.bases import make_basis
from kaem.config import Config, ConfigError, latent_size


class MemoryBudgetError(ConfigError):
    """The configuration needs more memory than the machine has."""


def _nb(section: dict) -> int:
    """Basis functions per input of a config section's KAN."""
    return make_basis(section["spline_function"], section["grid_size"], section["spline_degree"]).n_basis()


def _generator_size(cfg: Config, data_shape: tuple[int, ...], n: int) -> tuple[int, int, str, str]:
    """(parameters, activation elements on n latents, what the activations are, the settings
    that size them) of the generator the config selects."""
    from kaem.build import generator_kind
    from kaem.generators.conv import spatial_sizes

    g, kind = cfg["GeneratorModel"], generator_kind(cfg)
    Q, D = latent_size(cfg), math.prod(data_shape)
    if kind == "cnn":  # cols = x (N·H·W, Cin) @ W (Cin, k²·Cout) is the largest per layer
        c = cfg["CNN"]
        chans = [Q, *c["hidden_feature_dims"], data_shape[0]]
        sizes = spatial_sizes(c["kernel_sizes"], c["strides"], c["paddings"])
        extra = Q if c["latent_concat"] else 0
        layers = list(zip(chans[:-1], chans[1:], c["kernel_sizes"], sizes[:-1], sizes[1:]))
        params = sum((ci + extra * (i > 0)) * k * k * co + co for i, (ci, co, k, _, _) in enumerate(layers))
        acts = n * sum(max(si, 0) ** 2 * k * k * co + 2 * max(so, 0) ** 2 * co for _, co, k, si, so in layers)
        return params, acts, "conv-transpose columns N·Σ(H·W·k²·Cout)", "CNN.hidden_feature_dims or CNN.kernel_sizes"
    if kind == "mlp":
        return (*_stack_size(list(g["widths"]) + [D], n, None), "MLP activations 2·N·Σ out", "GeneratorModel.widths")
    return (*_stack_size(list(g["widths"]) + [D], n, g), "generator basis tensors N·Σ(in·nb + out)",
            "GeneratorModel.widths or GeneratorModel.grid_size")


def _stack_size(widths: list[int], n: int, kan: dict | None) -> tuple[int, int]:
    """(parameters, activation elements on n inputs) of a dense stack of ``widths``: KAN
    layers of the config section ``kan``, or MLP layers (``kan`` None)."""
    pairs = list(zip(widths[:-1], widths[1:]))
    if kan is None:
        return sum(i * o + o for i, o in pairs), 2 * n * sum(o for _, o in pairs)
    nb = _nb(kan)
    return sum(i * o * (nb + 2) for i, o in pairs), n * sum(i * nb + o for i, o in pairs)


def training_memory(cfg: Config, data_shape: tuple[int, ...], n_train: int, n_test: int,
                    itemsize: int) -> list[tuple[str, int, str]]:
    """The largest allocations of training ``cfg``: (what, bytes, the setting that sizes it)."""
    t, e = cfg["TRAINING"], cfg["EbmModel"]
    ti, pl = cfg["THERMODYNAMIC_INTEGRATION"], cfg["POST_LANGEVIN"]
    D = math.prod(data_shape)
    B, S = min(t["batch_size"], n_train), t["importance_sample_size"]
    P, Q = e["layer_widths"][0], e["layer_widths"][-1]
    nb_p, K = _nb(e), e["GaussQuad_nodes"]
    n_t = ti["num_temps"]
    if n_t > 1:
        n_gen, n_prior, chains = n_t * B, (n_t + 1) * B, n_t * B
    elif pl["use_langevin"]:
        n_gen, n_prior, chains = B, 2 * B, B
    else:
        n_gen, n_prior, chains = S, 2 * S, 0
    gen_params, gen_acts, gen_what, gen_setting = _generator_size(cfg, data_shape, n_gen)
    if len(e["layer_widths"]) > 2:  # the deep prior: a network on the samples, no quadrature
        prior_params, prior_acts = _stack_size(list(e["layer_widths"]), n_prior, e if e["deep_body"] == "kan" else None)
        prior_items = [("deep prior activations on N prior samples", prior_acts,
                        "TRAINING.importance_sample_size or EbmModel.layer_widths")]
    else:
        prior_params = P * Q * (nb_p + 2)
        prior_items = [("prior basis tensors 2·N·Q·P·nb", 2 * n_prior * Q * P * nb_p,
                        "TRAINING.importance_sample_size, EbmModel.layer_widths or EbmModel.grid_size"),
                       ("quadrature 3·K·(P·nb + Q·P)", 3 * K * (P * nb_p + Q * P), "EbmModel.GaussQuad_nodes")]
    n_params = prior_params + gen_params
    items = [
        ("training and held-out data (N_train + N_test)·D", (n_train + n_test) * D,
         "TRAINING.N_train (--n-train), TRAINING.N_test (--n-test) or --resize"),
        *prior_items,
        (gen_what, gen_acts, f"{gen_setting} or TRAINING.importance_sample_size"),
        ("parameters, gradients, Adam state and the NaN guard's copy", 5 * n_params,
         f"{gen_setting}, EbmModel.layer_widths or EbmModel.grid_size"),
    ]
    if chains:
        items.append(("chain likelihoods 3·N_chains·D", 3 * chains * D,
                      "TRAINING.batch_size or THERMODYNAMIC_INTEGRATION.num_temps"))
    elif cfg["GeneratorModel"]["noise_sharing"] == "pair":
        items.append(("likelihood residuals and injection noise 2·B·S·D", 2 * B * S * D,
                      "TRAINING.importance_sample_size or TRAINING.batch_size"))
    else:  # sample: outputs y_s and their gradients, and a few (B, S) matrices
        items.append(("likelihood outputs 2·S·D and (B, S) terms 4·B·S", 2 * S * D + 4 * B * S,
                      "TRAINING.importance_sample_size"))
    return [(what, n * itemsize, setting) for what, n, setting in items]


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def available_host_memory() -> int | None:
    """Bytes the machine can still give: MemAvailable, capped by a cgroup limit less its
    usage when the process runs in a container; None where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 2 ** 60:
            room = max(limit - usage, 0)
            avail = room if avail is None else min(avail, room)
    return avail


def available_memory(be: Any) -> int | None:
    """Free bytes where ``be`` allocates: the GPU's free memory (plus what cupy's pool holds
    unused), else the host's."""
    if be.device == "gpu":
        free, _ = be.xp.cuda.runtime.memGetInfo()
        pool = be.xp.get_default_memory_pool()
        return int(free) + int(pool.total_bytes() - pool.used_bytes())
    return available_host_memory()


def gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def check_training_memory(cfg: Config, data_shape: tuple[int, ...], n_train: int, n_test: int, be: Any) -> None:
    """Raise :class:`MemoryBudgetError` if the estimate exceeds the available memory; the
    message gives both figures, the largest part and the setting that sizes it."""
    items = training_memory(cfg, data_shape, n_train, n_test, np.dtype(be.dtype).itemsize)
    need = sum(b for _, b, _ in items)
    have = available_memory(be)
    if have is None or need <= have:
        return
    what, size, setting = max(items, key=lambda it: it[1])
    raise MemoryBudgetError(f"this configuration needs about {gib(need)} on the {be.device} but {gib(have)} "
                            f"are available; the largest part is {what} = {gib(size)}: lower {setting}")
