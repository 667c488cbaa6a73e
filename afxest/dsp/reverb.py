"""Differentiable Freeverb that reproduces pedalboard's ``Reverb``.

pedalboard's ``Reverb`` is JUCE's ``juce::Reverb`` (juce_audio_basics/utilities/juce_Reverb.h),
Jezar's Freeverb design. For a stereo input (L, R), per sample n:

    s[n] = (L[n] + R[n]) * 0.015                      (fixed input gain; mono: s = x * 0.015)
    per output channel c, eight parallel combs j, each with its own line v and state l:
        o[n] = v[n - N_cj]                            (0 before the first write)
        l[n] = o[n] (1 - damp) + l[n - 1] damp        (one-pole low-pass in the loop)
        v[n] = s[n] + l[n] feedback
    S_c[n] = sum_j o_j[n], then four series all-passes k (Freeverb's, gain 1/2):
        b[n] = t[n - M_ck],  t[n] = u[n] + b[n] / 2,  u'[n] = b[n] - u[n]
    L' = W_L wet1 + W_R wet2 + L dry,   R' = W_R wet1 + W_L wet2 + R dry

with damp = 0.4 damping, feedback = 0.7 + 0.28 room_size, wet = 3 wet_level, dry = 2 dry_level,
wet1 = wet (1 + width) / 2 and wet2 = wet (1 - width) / 2, all formed in float32. The tunings
at 44100 Hz are combs 1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617 and all-passes 556, 441,
341, 225 samples, the right channel's each 23 samples longer (the stereo spread), scaled to
the rate as (int(sample_rate) * tuning) // 44100. A mono input runs the left channel's combs
and all-passes alone, y = W_L wet1 + x dry; pedalboard passes any other channel count through
unchanged. JUCE snaps each stored state to float32's grid near 0.1 ((x + 0.1) - 0.1, its
anti-denormal step on Intel CPUs); the forward loop does the same.

JUCE smooths damp, feedback and the gains over 10 ms, but a new plugin is prepared at its first
render, which sets each smoother to its target: a pedalboard render starts at its parameters,
and with constant parameters the reverb is linear and time-invariant.

Forward and backward each run as one compiled loop over the samples of each comb and all-pass
(numba, imported on first use): the forward in x's dtype with JUCE's float arithmetic, so that
in float32 it equals pedalboard's output bit for bit; the backward as the adjoint recursions,
in float64. Per comb, backwards in time:

    lam_v[n] = lam_o[n + N],  lam_l[n] = feedback lam_v[n] + damp lam_l[n + 1],
    lam_o[n] = dL/dS[n] + (1 - damp) lam_l[n],
    dL/dfeedback = sum lam_v[n] l[n],  dL/ddamp = sum lam_l[n] (l[n - 1] - o[n])
                                                = sum lam_l[n] (l[n - 1] - l[n]) / (1 - damp)

(o[n] (1 - damp) = l[n] - damp l[n - 1]; damp is at most 0.4: the backward reads the kept
states l alone), and per all-pass lam_t[n] = g[n + M] + lam_t[n + M] / 2, dL/du[n] = lam_t[n] - g[n].
"""

from __future__ import annotations

from functools import cache
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from afxest.dsp.loops import as_param, cpu, run_rows

__all__ = ["reverb", "tunings"]

COMB_TUNINGS = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)  # samples at 44100 Hz
ALLPASS_TUNINGS = (556, 441, 341, 225)
STEREO_SPREAD = 23  # samples added to every right-channel tuning, at 44100 Hz
INPUT_GAIN = 0.015
WET_SCALE, DRY_SCALE = 3.0, 2.0
DAMP_SCALE, ROOM_SCALE, ROOM_OFFSET = 0.4, 0.28, 0.7

def tunings(sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """The comb and all-pass lengths in samples at ``sample_rate``, int64 shaped (2, 8) and
    (2, 4), left channel first: (int(sample_rate) * tuning) // 44100, as JUCE scales them.

    Example:
        >>> combs, allpasses = tunings(22050)
        >>> combs[:, 0].tolist(), allpasses[:, 3].tolist()
        ([558, 569], [112, 124])
    """
    rate = int(sample_rate)

    def scaled(values: tuple[int, ...]) -> np.ndarray:
        return np.array([[rate * t // 44100 for t in values], [rate * (t + STEREO_SPREAD) // 44100 for t in values]])

    return scaled(COMB_TUNINGS), scaled(ALLPASS_TUNINGS)


@cache
def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    """Compiles (or loads from numba's on-disk cache) the forward and backward loops."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def forward(s, combs, allpasses, damp, feedback, wet, states):
        # s (rows, n): the scaled input; wet (rows, channels, n): out; states (rows, channels,
        # combs, n): each comb's l, kept for the backward loop (or (rows, channels, combs, 1),
        # overwritten, when no gradient is wanted). JUCE's float arithmetic in the arrays'
        # dtype, (x + 0.1) - 0.1 where JUCE undenormalises. The combs are independent given s:
        # each runs through the whole clip, four at a time (four independent recursions
        # overlap in the CPU; the comb count is a multiple of 4), their outputs summed in
        # JUCE's order. Lines are circular, a power of two longer than the longest delay.
        rows, channels, n = wet.shape
        count = combs.shape[2]
        keep = 1 if states.shape[3] == n else 0
        longest = max(combs.max(), allpasses.max())
        size = 1
        while size <= longest:
            size *= 2
        mask = size - 1
        zero = s.dtype.type(0.0)
        tenth = s.dtype.type(0.1)
        half = s.dtype.type(0.5)
        lines = np.zeros((4, size), s.dtype)
        line = lines[0]
        for r in range(rows):
            d = damp[r]
            one_minus_d = s.dtype.type(1.0) - d
            fb = feedback[r]
            x = s[r]
            for c in range(channels):
                out = wet[r, c]
                out[:] = zero
                for j in range(0, count, 4):
                    a0, a1 = size - combs[r, c, j], size - combs[r, c, j + 1]
                    a2, a3 = size - combs[r, c, j + 2], size - combs[r, c, j + 3]
                    s0, s1, s2, s3 = states[r, c, j], states[r, c, j + 1], states[r, c, j + 2], states[r, c, j + 3]
                    v0, v1, v2, v3 = lines[0], lines[1], lines[2], lines[3]
                    lines[:] = zero
                    l0 = l1 = l2 = l3 = zero
                    for i in range(n):
                        xi = x[i]
                        w = i & mask
                        o0, o1, o2, o3 = v0[(a0 + i) & mask], v1[(a1 + i) & mask], v2[(a2 + i) & mask], v3[(a3 + i) & mask]
                        l0 = ((o0 * one_minus_d + l0 * d) + tenth) - tenth
                        l1 = ((o1 * one_minus_d + l1 * d) + tenth) - tenth
                        l2 = ((o2 * one_minus_d + l2 * d) + tenth) - tenth
                        l3 = ((o3 * one_minus_d + l3 * d) + tenth) - tenth
                        v0[w] = ((xi + l0 * fb) + tenth) - tenth
                        v1[w] = ((xi + l1 * fb) + tenth) - tenth
                        v2[w] = ((xi + l2 * fb) + tenth) - tenth
                        v3[w] = ((xi + l3 * fb) + tenth) - tenth
                        k = i * keep
                        s0[k], s1[k], s2[k], s3[k] = l0, l1, l2, l3
                        out[i] = (((out[i] + o0) + o1) + o2) + o3
                for k in range(allpasses.shape[2]):
                    at = size - allpasses[r, c, k]
                    line[:] = zero
                    for i in range(n):
                        b = line[(at + i) & mask]
                        t = out[i] + b * half
                        line[i & mask] = (t + tenth) - tenth
                        out[i] = b - out[i]

    @numba.njit(cache=True, nogil=True)
    def backward(grad_wet, states, combs, allpasses, damp, feedback, grad_s, grad_p):
        # adjoint of `forward` in float64; grad_p[r] = dL/d(damp, feedback) of row r. Per
        # channel the all-passes backwards, then each comb through the whole clip, backwards in
        # time, four at a time (the combs are independent given dL/dS); the adjoint lines are
        # circular, as the forward's.
        rows, channels, n = grad_wet.shape
        count = combs.shape[2]
        longest = max(combs.max(), allpasses.max())
        size = 1
        while size <= longest:
            size *= 2
        mask = size - 1
        g = np.empty(n)
        gin = np.empty(n)
        lam = np.zeros(size)
        lams = np.zeros((4, size))
        for r in range(rows):
            d = float(damp[r])
            one_minus_d = 1.0 - d
            fb = float(feedback[r])
            gs = grad_s[r]
            gs[:] = 0.0
            g_dl = 0.0  # sum lam_l[n] (l[n - 1] - l[n]) = (1 - damp) dL/ddamp
            g_fb = 0.0
            for c in range(channels):
                for i in range(n):
                    g[i] = grad_wet[r, c, i]
                for k in range(allpasses.shape[2] - 1, -1, -1):
                    delay = allpasses[r, c, k]
                    lam[:] = 0.0
                    for i in range(n - 1, -1, -1):
                        at = i + delay
                        lt = (g[at] if at < n else 0.0) + 0.5 * lam[at & mask]
                        lam[i & mask] = lt
                        gin[i] = lt - g[i]
                    g[:] = gin
                for j in range(0, count, 4):
                    # four combs at once, as in the forward: four independent recursions
                    n0, n1, n2, n3 = combs[r, c, j], combs[r, c, j + 1], combs[r, c, j + 2], combs[r, c, j + 3]
                    s0, s1, s2, s3 = states[r, c, j], states[r, c, j + 1], states[r, c, j + 2], states[r, c, j + 3]
                    m0, m1, m2, m3 = lams[0], lams[1], lams[2], lams[3]
                    lams[:] = 0.0
                    l0 = l1 = l2 = l3 = 0.0
                    for i in range(n - 1, -1, -1):
                        w = i & mask
                        v0, v1 = m0[(i + n0) & mask], m1[(i + n1) & mask]
                        v2, v3 = m2[(i + n2) & mask], m3[(i + n3) & mask]
                        l0 = fb * v0 + d * l0
                        l1 = fb * v1 + d * l1
                        l2 = fb * v2 + d * l2
                        l3 = fb * v3 + d * l3
                        gi = g[i]
                        m0[w] = gi + one_minus_d * l0
                        m1[w] = gi + one_minus_d * l1
                        m2[w] = gi + one_minus_d * l2
                        m3[w] = gi + one_minus_d * l3
                        gs[i] += (v0 + v1) + (v2 + v3)
                        f0, f1, f2, f3 = float(s0[i]), float(s1[i]), float(s2[i]), float(s3[i])
                        g_fb += (v0 * f0 + v1 * f1) + (v2 * f2 + v3 * f3)
                        if i > 0:
                            f0, f1, f2, f3 = float(s0[i - 1]) - f0, float(s1[i - 1]) - f1, float(s2[i - 1]) - f2, float(s3[i - 1]) - f3
                        else:
                            f0, f1, f2, f3 = -f0, -f1, -f2, -f3
                        g_dl += (l0 * f0 + l1 * f1) + (l2 * f2 + l3 * f3)
            grad_p[r, 0] = g_dl / one_minus_d
            grad_p[r, 1] = g_fb

    return forward, backward


class _Tank(torch.autograd.Function):
    """The combs and all-passes: rows of scaled input s (rows, time) -> the wet channels
    (rows, channels, time); per row: damp and feedback."""

    @staticmethod
    def forward(ctx: Any, s: Tensor, damp: Tensor, feedback: Tensor, channels: int, sample_rate: float) -> Tensor:  # type: ignore[override]
        fwd, _ = _kernels()
        sc = cpu(s)
        rows, n = sc.shape
        combs, allpasses = (np.ascontiguousarray(np.broadcast_to(t[:channels], (rows, *t[:channels].shape)))
                            for t in tunings(sample_rate))
        wet = torch.empty((rows, channels, n), dtype=sc.dtype)
        # the combs' states, for the backward loop: 64 bytes a sample in float32, none kept
        # when nothing needs a gradient (a render)
        kept = n if any(ctx.needs_input_grad) else 1
        states = torch.empty((rows, channels, combs.shape[2], kept), dtype=sc.dtype)
        params = [cpu(p, sc.dtype).numpy() for p in (damp, feedback)]
        run_rows(fwd, [sc.numpy(), combs, allpasses, *params, wet.numpy(), states.numpy()])
        ctx.save_for_backward(sc, states, damp, feedback)
        ctx.tunings = (combs, allpasses)
        ctx.device = s.device
        return wet.to(s.device)

    @staticmethod
    def backward(ctx: Any, grad_wet: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        sc, states, damp, feedback = ctx.saved_tensors
        combs, allpasses = ctx.tunings
        _, bwd = _kernels()
        grad_s = torch.empty(sc.shape, dtype=torch.float64)
        grad_p = torch.empty((sc.shape[0], 2), dtype=torch.float64)
        params = [cpu(p, sc.dtype).numpy() for p in (damp, feedback)]
        arrays = [cpu(grad_wet, sc.dtype).numpy(), states.numpy(), combs, allpasses]
        run_rows(bwd, [*arrays, *params, grad_s.numpy(), grad_p.numpy()])
        g = grad_p.to(device=damp.device, dtype=damp.dtype)
        return grad_s.to(device=ctx.device, dtype=sc.dtype), g[:, 0], g[:, 1], None, None


def reverb(
    x: Tensor,
    sample_rate: float,
    *,
    room_size: Tensor | float,
    damping: Tensor | float,
    wet_level: Tensor | float,
    dry_level: Tensor | float,
    width: Tensor | float,
) -> Tensor:
    """Reverberates x as pedalboard's ``Reverb`` does, freeze mode off (the design is in the
    module docstring).

    The loops run on the CPU; CUDA tensors are copied to the CPU for them and back.

    Arguments:
        x: The audio, shaped (batch, channels, time), float32 or float64: one channel (mono) or
            two (stereo); pedalboard returns any other count unchanged, and so does this.
        sample_rate: The sample rate in Hz (it sets the combs' and all-passes' lengths).
        room_size: 0 to 1, the combs' feedback 0.7 + 0.28 room_size.
        damping: 0 to 1, the combs' low-pass coefficient 0.4 damping.
        wet_level: 0 to 1, the reverberation's gain (times 3).
        dry_level: 0 to 1, the input's gain (times 2).
        width: 0 to 1, how much each wet channel keeps its own side.

        Each parameter is a tensor shaped (batch,) or a float shared by the batch (a task's
        fixed width).

    Returns:
        The audio shaped and typed like x, differentiable with respect to x and the five
        parameters. In float32 it equals pedalboard's output bit for bit.
    """
    batch, channels, n = x.shape
    if channels not in (1, 2) or n == 0 or batch == 0:
        return x * 1.0

    def param(p: Tensor | float, name: str) -> Tensor:
        return as_param(p, batch, x, name).to(x.dtype)

    def gain(p: Tensor | float, name: str) -> Tensor:
        return param(p, name)[:, None]

    # JUCE's gains and coefficients, in the sample type
    damp = param(damping, "damping") * DAMP_SCALE
    feedback = param(room_size, "room_size") * ROOM_SCALE + ROOM_OFFSET
    wet = gain(wet_level, "wet_level") * WET_SCALE
    dry = gain(dry_level, "dry_level") * DRY_SCALE
    wet1 = 0.5 * wet * (1.0 + gain(width, "width"))
    wet2 = 0.5 * wet * (1.0 - gain(width, "width"))
    s = (x[:, 0] + x[:, 1] if channels == 2 else x[:, 0]) * INPUT_GAIN
    tank = _Tank.apply(s, damp, feedback, channels, float(sample_rate))
    if channels == 1:
        return (tank[:, 0] * wet1 + x[:, 0] * dry)[:, None]
    left = tank[:, 0] * wet1 + tank[:, 1] * wet2 + x[:, 0] * dry
    right = tank[:, 1] * wet1 + tank[:, 0] * wet2 + x[:, 1] * dry
    return torch.stack([left, right], dim=1)
