"""Differentiable audio processors in torch: the functional core.

Every effect takes the one signature of :mod:`afxest.processors`, ``fn(x, sample_rate,
**params)``: audio shaped (batch, channels, time) and per-item parameters shaped (batch,) in
physical units, named as in :mod:`afxest.catalogue`; it is differentiable with respect to both.
"""
