"""Adam against a three-step trace computed by hand."""
from __future__ import annotations

import numpy as np

from kaem.optim import Adam


def test_adam_three_step_hand_trace():
    # θ0 = 1, lr 0.1, β1 0.9, β2 0.999, ε 1e-8; gradients 2, -1, 0.5.
    # t=1: m=0.2, v=0.004, m̂=2, v̂=4       -> θ = 1 - 0.1·2/(2+1e-8)             = 0.900000000500
    # t=2: m=0.08, v=0.004996, m̂=0.08/0.19=0.4210526316, v̂=0.004996/0.001999=2.4992496248
    #      -> θ = θ1 - 0.1·0.4210526316/(1.5809015228+1e-8)                    = 0.8733662967
    # t=3: m=0.122, v=0.005241004, m̂=0.122/0.271=0.4501845018,
    #      v̂=0.005241004/0.002997001=1.7487494999
    #      -> θ = θ2 - 0.1·0.4501845018/(1.3224029265+1e-8)                    = 0.8393233821
    p = {"w": np.array([1.0])}
    opt = Adam(p, lr=0.1)
    want = [0.9000000005, 0.8733662967, 0.8393233821]
    for g, w in zip([2.0, -1.0, 0.5], want):
        opt.step({"w": np.array([g])})
        assert abs(p["w"][0] - w) < 1e-9, (p["w"][0], w)
    assert opt.t == 3


def test_adam_state_round_trip():
    p = {"a": np.arange(3.0), "b": np.ones((2, 2))}
    opt = Adam(p, lr=0.01)
    opt.step({"a": np.ones(3), "b": -np.ones((2, 2))})
    q = {"a": np.arange(3.0), "b": np.ones((2, 2))}
    opt2 = Adam(q, lr=0.01)
    opt2.load_state_dict(opt.state_dict())
    q["a"][...] = p["a"]
    q["b"][...] = p["b"]
    g = {"a": np.full(3, 0.3), "b": np.full((2, 2), 0.7)}
    opt.step(g)
    opt2.step(g)
    np.testing.assert_array_equal(p["a"], q["a"])
    np.testing.assert_array_equal(p["b"], q["b"])
