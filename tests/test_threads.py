"""Row blocks for the CPU thread pool (kaem/threads.py)."""
import numpy as np
import pytest

from kaem.kernels.threads import cpu_threads, map_blocks, row_blocks


@pytest.mark.parametrize("threads", ["1", "2", "3", "7"])
@pytest.mark.parametrize("n", [1, 2, 5, 100, 101])
def test_blocks_cover_every_row_once(monkeypatch, threads, n):
    monkeypatch.setenv("KAEM_THREADS", threads)
    blocks = row_blocks(np, n)
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a < b for a, b in blocks)
    assert all(b == c for (_, b), (c, _) in zip(blocks[:-1], blocks[1:]))
    assert len(blocks) == min(int(threads), n)


def test_min_rows_limits_the_split(monkeypatch):
    monkeypatch.setenv("KAEM_THREADS", "4")
    assert len(row_blocks(np, 100, min_rows=40)) == 2
    assert row_blocks(np, 10, min_rows=40) == [(0, 10)]


def test_a_non_numpy_module_gets_one_block(monkeypatch):
    monkeypatch.setenv("KAEM_THREADS", "4")
    assert row_blocks(object(), 100) == [(0, 100)]


def test_map_blocks_keeps_block_order_and_writes_rows(monkeypatch):
    monkeypatch.setenv("KAEM_THREADS", "3")
    x = np.arange(30.0)
    out = np.empty_like(x)

    def fn(a, b):
        np.exp(x[a:b], out=out[a:b])
        return a

    blocks = row_blocks(np, 30)
    assert map_blocks(fn, blocks) == [a for a, _ in blocks]
    np.testing.assert_array_equal(out, np.exp(x))


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_bad_thread_count_names_the_value(monkeypatch, bad):
    monkeypatch.setenv("KAEM_THREADS", bad)
    with pytest.raises(ValueError, match="KAEM_THREADS"):
        cpu_threads()
