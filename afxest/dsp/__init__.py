"""Differentiable audio processors in torch.

Every function takes audio shaped (batch, channels, time) and per-item parameters shaped
(batch,) in physical units, and is differentiable with respect to both.
"""
