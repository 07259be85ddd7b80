"""Random numbers: fixed-cost draws, and streams from which each process takes its rows.

Training draws two kinds of random numbers. Some are shared by the whole minibatch (the S
prior samples of importance sampling, contrastive-divergence negatives, the replica pair of
an exchange); the others belong to one datum, or one chain of one rung (a Langevin chain's
noise, a row's resampling uniforms, a per-pair injection noise). When the batch is split
over several processes, every process holds the same shared generator, and a per-row
array is drawn as the rows of ONE global array: each process takes its rows and moves its
generator past the rest. So a datum's numbers depend on its global index alone, never on
how many processes there are, and one process is the case of one block of rows.

* :func:`uniform_` and :func:`standard_normal_` draw with a fixed number of the bit
  generator's 64-bit words per value, which is what makes "the rows [lo, hi) of an array"
  addressable without drawing the rest (:func:`normal_streams`, :class:`RowDraws`).
* :class:`RowDraws` is a generator for one process's rows of a population: its
  ``standard_normal`` and ``random`` draw those rows of the global array; ``integers`` and
  ``shared`` are the shared stream.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from kaem.backend import array_module


def uniform_(rng: Any, out: Any) -> Any:
    """Fill ``out`` with U[0, 1) draws in place.

    float32 on numpy: from the bit generator's raw 64-bit words, two 23-bit uniforms per
    word (mantissa bits under the exponent of 1.0, minus 1): about 3× faster here than
    ``Generator.random`` for float32, which draws one 32-bit value at a time. Other dtypes
    and devices use ``rng.random`` (float64 on numpy: one word per value)."""
    xp = array_module(out)
    raw = getattr(getattr(rng, "bit_generator", None), "random_raw", None)
    if xp is not np or out.dtype != np.float32 or raw is None or not out.flags.c_contiguous:
        return rng.random(out.shape, dtype=out.dtype, out=out)  # cupy needs the size with out
    flat = out.reshape(-1)
    bits = flat.view(np.uint32)
    words = raw((flat.shape[0] + 1) // 2).view(np.uint32)[:flat.shape[0]]
    np.right_shift(words, 9, out=bits)
    bits |= 0x3F800000  # 1.0 ≤ value < 2.0
    flat -= 1.0
    return out


def standard_normal_(rng: Any, out: Any, scale: float = 1.0) -> Any:
    """Fill ``out`` with N(0, scale²) draws by the Box–Muller transform, in place.

    Normals 2j and 2j+1 come from uniforms 2j and 2j+1 (r = √(−2 log(1 − u_{2j})),
    θ = 2π u_{2j+1}: r cos θ and r sin θ), so the draws of consecutive blocks of even size
    are the draws of the whole array: a blocked kernel and the reference get the same
    numbers (``normal_streams``). Faster than numpy's float32 ziggurat on CPU (about 4 vs
    13 ns a draw here, with the uniforms from :func:`uniform_`). With 23-bit uniforms the
    radius is at most sqrt(2·23·ln 2) ≈ 5.6σ, a truncation of P < 3e-8. ``scale`` is folded
    into the radius (no extra pass).
    """
    xp = array_module(out)
    flat = out.reshape(-1)
    n = flat.shape[0]
    half = (n + 1) // 2
    u = uniform_(rng, xp.empty(2 * half, dtype=out.dtype)).reshape(half, 2)
    r = xp.subtract(1, u[:, 0])  # (0, 1]: log stays finite
    xp.log(r, out=r)
    r *= -2 * scale * scale
    xp.sqrt(r, out=r)
    if scale < 0:
        r *= -1
    th = u[:, 1] * (2 * math.pi)
    pairs = flat[:2 * (n // 2)].reshape(-1, 2)
    c = xp.cos(th)
    c *= r
    pairs[:, 0] = c[:pairs.shape[0]]
    if n % 2:
        flat[-1] = c[-1]
    xp.sin(th[:pairs.shape[0]], out=c[:pairs.shape[0]])
    c[:pairs.shape[0]] *= r[:pairs.shape[0]]
    pairs[:, 1] = c[:pairs.shape[0]]
    return out


def _words(n: int, dtype: Any, normal: bool) -> int:
    """64-bit words that ``n`` values of ``dtype`` take: uniforms 1/2 (float32) or 1 (float64)
    per value, normals the words of their ⌈n/2⌉ pairs of uniforms."""
    per_value = 0.5 if np.dtype(dtype).itemsize == 4 else 1.0
    if normal:
        n = 2 * ((n + 1) // 2)
    return int(math.ceil(n * per_value))


def _positioned(rng: Any, words: int) -> np.random.Generator:
    """A new generator at ``rng``'s position moved ``words`` ahead (``rng`` itself untouched)."""
    bg = rng.bit_generator
    child = type(bg)(0)  # its seed is replaced by rng's state just below
    child.state = bg.state
    if words:
        child.advance(words)
    return np.random.Generator(child)


def advanceable(rng: Any, dtype: Any) -> bool:
    """Whether draws of ``dtype`` from ``rng`` can be addressed by position: a numpy generator
    whose bit generator can ``advance`` (PCG64), float32 or float64."""
    dtype = np.dtype(dtype)
    return (isinstance(rng, np.random.Generator) and hasattr(rng.bit_generator, "advance")
            and dtype.kind == "f" and dtype.itemsize in (4, 8))


def normal_streams(rng: Any, sizes: list[int], dtype: Any, at: list[int]) -> list[Any] | None:
    """Generators for drawing a sequence of blocks with :func:`standard_normal_` out of order.

    Block j has ``sizes[j]`` entries of ``dtype``; drawn one after another from ``rng``, block
    j would start after the words of blocks 0..j−1. Returns one generator per index in
    ``at``, positioned at that block's start (by ``advance``, not by drawing), and moves
    ``rng`` past every block: each generator drawing its blocks in order then yields exactly
    the numbers of the sequential draw, whatever the split. None (``rng`` untouched) where
    positions cannot be addressed (:func:`advanceable`).
    """
    if not advanceable(rng, dtype):
        return None
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + _words(n, dtype, normal=True))
    out = [_positioned(rng, starts[j]) for j in at]
    rng.bit_generator.advance(starts[-1])
    return out


class RowDraws:
    """A generator for the rows one process holds of a global population.

    The population has ``total`` rows; this process holds the ``segments`` [lo, hi) of them,
    in that order (one segment (0, total) when there is one process). ``standard_normal``
    and ``random`` of shape (n, ...), n the rows held, return those rows of ONE array of
    shape (total, ...) drawn from the shared generator, which then stands after that whole
    array on every process. Each row is padded to an even number of values, so that every
    row starts on a whole word. ``integers`` and ``shared`` draw from the shared stream
    itself (the same numbers on every process). Where positions cannot be addressed (cupy,
    another bit generator) every process draws the whole array and keeps its rows.
    """

    def __init__(self, rng: Any, segments: Sequence[tuple[int, int]], total: int) -> None:
        self.shared, self.total = rng, int(total)
        self.segments = [(int(a), int(b)) for a, b in segments if b > a]
        self.n = sum(b - a for a, b in self.segments)

    @classmethod
    def whole(cls, rng: Any, n: int) -> "RowDraws":
        """All n rows: one process."""
        return cls(rng, [(0, n)], n)

    def rows(self, segments: Sequence[tuple[int, int]], total: int) -> "RowDraws":
        """Another population's rows over the same shared generator."""
        return RowDraws(self.shared, segments, total)

    def integers(self, *args: Any, **kwargs: Any) -> Any:
        """A shared draw (the same on every process)."""
        return self.shared.integers(*args, **kwargs)

    def standard_normal(self, shape: Any, dtype: Any = np.float64, out: Any = None) -> Any:
        """This process's rows (shape[0] of them) of a global array of standard normals."""
        return self._draw(shape, dtype, out, normal=True)

    def random(self, shape: Any, dtype: Any = np.float64, out: Any = None) -> Any:
        """This process's rows (shape[0] of them) of a global array of U[0, 1) draws."""
        return self._draw(shape, dtype, out, normal=False)

    def _draw(self, shape: Any, dtype: Any, out: Any, normal: bool) -> Any:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if shape[0] != self.n:
            raise ValueError(f"{shape[0]} rows asked of a process that holds {self.n} of {self.total}")
        rng = self.shared
        m = math.prod(shape[1:])
        m_even = m + m % 2  # every row starts on a whole word
        if not advanceable(rng, dtype):  # the whole array from the generator, this process's rows kept
            full = (rng.standard_normal if normal else rng.random)((self.total, m_even), dtype=dtype)
            xp = array_module(full)
            rows = xp.concatenate([full[a:b, :m] for a, b in self.segments]) if self.segments else full[:0, :m]
            return _into(rows.reshape(shape), out)
        fill = standard_normal_ if normal else uniform_
        res = out if out is not None and out.flags.c_contiguous else np.empty(shape, dtype=dtype)
        flat = res.reshape(self.n, m)
        row_words = _words(m_even, dtype, normal)
        j = 0
        for a, b in self.segments:  # one positioned draw per contiguous block of rows
            src = rng if (a, b) == (0, self.total) else _positioned(rng, a * row_words)
            if m == m_even:  # straight into the output rows
                fill(src, flat[j:j + b - a])
            else:
                flat[j:j + b - a] = fill(src, np.empty((b - a, m_even), dtype=dtype))[:, :m]
            j += b - a
        if self.segments == [(0, self.total)]:  # drawn from rng itself: it stands after the array
            return _into(res, out) if res is not out else res
        rng.bit_generator.advance(self.total * row_words)
        return _into(res, out) if res is not out else res


def shared(rng: Any) -> Any:
    """The stream every process shares: ``rng`` itself, or a :class:`RowDraws`'s."""
    return rng.shared if isinstance(rng, RowDraws) else rng


def normals(rng: Any, shape: tuple[int, ...], dtype: Any, xp: Any = np) -> Any:
    """Standard normals of ``shape``: this process's rows of a global array when ``rng`` is a
    :class:`RowDraws`, else a plain fixed-cost draw (:func:`standard_normal_`)."""
    if isinstance(rng, RowDraws):
        return rng.standard_normal(shape, dtype=dtype)
    return standard_normal_(rng, xp.empty(shape, dtype=dtype))


def _into(a: Any, out: Any) -> Any:
    if out is None:
        return a
    out[...] = a
    return out
