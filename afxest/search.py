"""The search for the preset that rebuilds the wet when a reference exists (issue 11).

With a reference (the dry file of an effect task; for a synth task the wet itself), the preset
wanted is the one whose rendering equals the wet, not a guess. :func:`search` finds it in four
steps, each a plain function of arrays:

1. **proposals**: the model's posterior draws; for tasks of at most :data:`DESIGN_MAX_DIM`
   parameters (``fm``) also a scrambled Sobol design over the whole normalised space
   (:func:`design`; Owen 1998), so the answer does not depend on the network being good;
2. **cheap scoring**: every proposal rendered by the real renderer (pedalboard, or the synth)
   on a few windows and scored by the task's loss (a callback of the caller); the best
   :attr:`Effort.keep` are kept;
3. **refinement** (:func:`refine`): inference-time optimisation through the differentiable
   processors (Adam on u = logit(z), z = sigmoid(u), so parameters stay inside the task's
   ranges), the learning rate halved whenever the loss has not improved by a relative
   :data:`TOLERANCE` for :data:`PATIENCE` steps, and stopped after :data:`HALVINGS` halvings
   (converged) or at the step cap; each candidate's best iterate is kept. The loss is the
   task's loss plus :func:`waveform_loss`, the reconstruction error in dB: the task's spectral
   losses alone flatten out near the answer (a log-mel distance of 1e-4 is still only ~20 dB
   SI-SDR), the waveform error keeps a useful gradient down to 50 dB and more because the
   differentiable processors equal the real ones sample for sample (docs/effects.md).
   With a dry, the candidates then take a few Levenberg-Marquardt trials on the waveform
   residual (:func:`least_squares`): near the answer Adam gains about a dB every ten steps,
   Gauss-Newton steps tens of dB each. A synth's candidates first take a polish on the
   waveform error alone, then such trials: the answer to the sample where the polish stopped
   a hair away;
4. a **final score** of every candidate by the caller, with the renderer the user chose, of
   both its start and its refined iterate: the better one is kept, so the search never reports
   a candidate worse by the real renderer than the proposal it started from (the refinement's
   loss is the differentiable processors' plus the waveform term, not the ranking's).

The choices (learning rate, halving schedule, loss) are the ones measured best on the
validation split (docs/estimate.md, "Search").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from afxest.choices import Effort

DESIGN_MAX_DIM = 3  # tasks of at most this many parameters get a space-filling design
EXCERPT_FRAMES = 0  # samples of each excerpt refined on; 0: as many as the network's windows
TOLERANCE = 1e-3  # relative improvement of the best loss that counts as progress
PATIENCE = 10  # steps without progress before the learning rate is halved
HALVINGS = 4  # converged after this many halvings without progress
LEARNING_RATE = 0.05  # Adam on logit(z)
EPS = 1e-6  # z is kept in [EPS, 1 - EPS] before the logit


# A synth's refinement ends spectrally right but can stop a fraction of a bin off (an FM ratio
# 0.004 off: 0.4 Hz of modulator, SI-SDR near 0 dB at a high index), where the spectral losses
# are flat. A last stage on the waveform error alone, with a small step, closes that gap: on 8
# validation tones, mean SI-SDR of rank 1 36.4 dB without it, 48.6 with lr 0.005 and 150 steps,
# 63.4 with lr 0.002 and 300 steps (docs/estimate.md).
POLISH_LEARNING_RATE = 0.002
LEAST_SQUARES_STEPS = 30  # Levenberg-Marquardt trials after a synth's polish (least_squares)
JACOBIAN_STEP = 1e-6  # central differences in z for a synth's Jacobian (its float64 rendering)
# With a dry, the refinement's Adam steps gain about 12 dB of SI-SDR per 100 steps on the mix
# task, still climbing at the cap; a few Levenberg-Marquardt trials on the waveform residual
# after them (Effort.dry_trials) gain far more (docs/estimate.md, "Search"): the effects'
# float32 rendering takes forward differences of a larger step.
DRY_JACOBIAN_STEP = 1e-3
# copies of the candidates rendered together for a Jacobian: the batch's speed without all d
# renderings' buffers at once (a 5 s 44.1 kHz stereo mix clip: 1.2 GB at its peak with all 23)
JACOBIAN_BATCH = 6


def design(d: int, n: int, seed: int) -> np.ndarray:
    """``n`` points of a scrambled Sobol sequence in [0, 1]^d (Owen scrambling), float64.

    A low-discrepancy design covers the cube far more evenly than as many uniform draws, so
    the best point is near any optimum of a smooth loss (torch's SobolEngine; no scipy)."""
    import torch

    engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed)
    return engine.draw(n, dtype=torch.float64).numpy()


def waveform_loss(y_hat, y):
    """The reconstruction error in dB, (batch,): 10 log10(||y_hat - y||^2 / ||y||^2), over the
    last axis and channels; -SDR without the scale invariance (a gain error is an error)."""
    import torch

    dims = tuple(range(1, y.dim()))
    error = (y_hat - y).square().sum(dim=dims)
    energy = y.square().sum(dim=dims)
    return 10 * torch.log10((error + 1e-12) / (energy + 1e-12))


WAVEFORM_WEIGHT = 0.01  # dB of waveform error per unit of the task's loss


class SearchLoss:
    """The refinement loss: the task's loss plus ``weight`` x :func:`waveform_loss` (dB)."""

    def __init__(self, task_loss: Callable, weight: float) -> None:
        self.task_loss, self.weight = task_loss, weight

    def __call__(self, y_hat, y):
        return self.task_loss(y_hat, y) + self.weight * waveform_loss(y_hat, y)

    def against(self, y) -> Callable:
        """The loss against a fixed wet ``y`` (:func:`afxest.losses.against`)."""
        from afxest.losses import against

        task_loss = against(self.task_loss, y)
        return lambda y_hat: task_loss(y_hat) + self.weight * waveform_loss(y_hat, y)


def search_loss(task_loss: Callable, weight: float | None = None) -> Callable:
    """The refinement loss (:class:`SearchLoss`), ``weight`` by default :data:`WAVEFORM_WEIGHT`;
    the task's loss alone at weight 0."""
    weight = WAVEFORM_WEIGHT if weight is None else weight
    return task_loss if weight == 0 else SearchLoss(task_loss, weight)


class Adam:
    """Adam (Kingma & Ba, ICLR 2015) on one tensor, betas (0.9, 0.999), eps 1e-8: torch.optim's
    update written out, because importing torch.optim also imports sympy (about a second).
    ``param`` is updated in place; ``lr`` (a float, or a tensor broadcast against ``param``: a
    rate per row) may be changed between steps."""

    def __init__(self, param, lr: float) -> None:
        import torch

        self.param, self.lr, self.t = param, lr, 0
        self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)

    def step(self, grad) -> None:
        """Takes one step against the gradient ``grad`` of the loss with respect to ``param``."""
        import torch

        with torch.no_grad():
            self.t += 1
            self.m.mul_(0.9).add_(grad, alpha=0.1)
            self.v.mul_(0.999).addcmul_(grad, grad, value=0.001)
            m_hat = self.m / (1 - 0.9**self.t)
            v_hat = self.v / (1 - 0.999**self.t)
            self.param -= self.lr * m_hat / (v_hat.sqrt() + 1e-8)


@dataclass
class Refined:
    """Each candidate's best iterate (K, d) float64, its loss (K,) and the steps it took (K,)."""

    z: np.ndarray
    loss: np.ndarray
    steps: np.ndarray


def refine(
    render: Callable[[Any], Any],
    loss_fn: Callable[[Any, Any], Any],
    z0: np.ndarray,
    y,
    max_steps: int,
    lr: float = LEARNING_RATE,
    tolerance: float = TOLERANCE,
    patience: int = PATIENCE,
    halvings: int = HALVINGS,
    skip: int = 0,
    stop: threading.Event | None = None,
) -> Refined:
    """Refines K candidates by inference-time optimisation (step 3 of the module's pipeline).

    Adam on u = logit(z), each candidate on its own schedule: its learning rate is halved when
    its best loss has not improved by a relative ``tolerance`` in ``patience`` steps, and it
    stops (its rate set to 0) after ``halvings`` halvings; all stop at ``max_steps``. A
    candidate's path therefore does not depend on the others it is batched with.

    Arguments:
        render: Maps z (K*R, d) to audio shaped like ``y``, differentiably.
        loss_fn: The loss (y_hat, y) -> (K*R,).
        z0: The starts, (K, d) in [0, 1]^d.
        y: The target (K*R, 1, T): R excerpts per candidate, in order.
        max_steps: The step cap.
        lr: The initial learning rate.
        tolerance: The relative improvement of a candidate's best loss that counts as progress.
        patience: The steps without progress before a candidate's learning rate is halved.
        halvings: The halvings without progress after which a candidate has converged.
        skip: The samples dropped at the start of each excerpt before the loss (a pre-roll
            where the differentiable processors, started from rest, differ from the real ones
            that ran before).
        stop: When set (by another thread), the refinement ends at its next step.

    Returns:
        Each candidate's best iterate (step 0 included), its loss (the mean of ``loss_fn`` over
        its R excerpts) and the steps it took.
    """
    import torch

    from afxest.losses import against

    k = z0.shape[0]
    r = y.shape[0] // k
    u0 = torch.logit(torch.from_numpy(np.asarray(z0, np.float64)).clamp(EPS, 1 - EPS)).float().to(y.device)
    u = u0.clone().requires_grad_(True)
    rates = np.full(k, float(lr))
    optimiser = Adam(u, lr)
    best_u, best = u0.clone(), torch.full((k,), math.inf, device=y.device)
    loss_to = against(loss_fn, y[..., skip:])
    reference = np.full(k, math.inf)
    stall, halved, taken = np.zeros(k, int), np.zeros(k, int), np.zeros(k, int)
    active = np.ones(k, bool)
    for step in range(max_steps + 1):
        z = torch.sigmoid(u).repeat_interleave(r, dim=0)
        y_hat = render(z)
        loss = loss_to(y_hat[..., skip:]).view(k, r).mean(dim=1)
        with torch.no_grad():
            better = loss < best
            best = torch.where(better, loss.detach(), best)
            best_u[better] = u.detach()[better]
            now = best.double().cpu().numpy()
        with np.errstate(invalid="ignore"):  # inf - inf at the first step: progress by the first test
            progress = ~np.isfinite(reference) | (now < reference - tolerance * np.abs(reference))
        reference = np.where(progress, now, reference)
        stall = np.where(progress, 0, stall + 1)
        halve = active & (stall >= patience)
        halved, stall = halved + halve, np.where(halve, 0, stall)
        converged = halve & (halved > halvings)
        taken[active] = step
        active &= ~converged
        rates = np.where(active, np.where(halve, 0.5 * rates, rates), 0.0)
        if step == max_steps or not active.any() or (stop is not None and stop.is_set()):
            break
        optimiser.lr = torch.from_numpy(rates).float().to(y.device)[:, None]
        (grad,) = torch.autograd.grad(loss.sum(), u)
        optimiser.step(grad)
    z_best = torch.sigmoid(best_u.double()).clamp(0.0, 1.0).cpu().numpy()
    return Refined(z_best, best.double().cpu().numpy(), taken)


def least_squares(render: Callable[[Any], Any], z0: np.ndarray, y, max_steps: int, skip: int = 0,
                  stop: threading.Event | None = None, step: float = JACOBIAN_STEP, central: bool = True,
                  held: np.ndarray | None = None) -> Refined:
    """Levenberg-Marquardt on the waveform residual render(z) - y, each of K candidates on its
    own (Levenberg 1944, Marquardt 1963): a trial step delta solves (J^T J + lambda diag(J^T J))
    delta = -J^T r, J the residual's Jacobian in z by finite differences of ``step``; a trial
    that lowers the squared error is taken and lambda divided by 3, else lambda is multiplied
    by 4 and the next trial solves again with the same Jacobian (it is only recomputed where z
    moved). z stays in [EPS, 1 - EPS].

    Why: near the answer the waveform is nearly linear in z and Gauss-Newton steps converge
    quadratically, where first-order steps do not: a synth's polish (Adam on the waveform
    error) can stop a hair from the answer (an FM ratio 0.0004 off: 20 dB SI-SDR), and with a
    dry the refinement gains about 12 dB of SI-SDR per 100 Adam steps where a few of these
    steps gain tens (docs/estimate.md, "Search").

    Arguments:
        render: Maps z (M*K*R, d) float64, M >= 1 copies of the K candidates' rows, to audio
            shaped like ``y`` repeated M times (the Jacobian's renderings are batches of
            :data:`JACOBIAN_BATCH` copies).
        z0: The starts, (K, d) in [0, 1]^d.
        y: The target (K*R, 1, T): R excerpts per candidate, in order.
        max_steps: The most trials (each one rendering; a Jacobian f or 2f more, f the
            parameters not ``held``).
        skip: The samples dropped at the start of each excerpt before the error.
        stop: When set (by another thread), the iteration ends at its next trial.
        step: The finite difference in z.
        central: Central differences (2d renderings a Jacobian; a float64 rendering), else
            forward ones (d; away from the bound at 1), enough for a float32 rendering with a
            larger ``step``.
        held: (d,) bool, the parameters the trials leave where they are (their Jacobian
            columns neither rendered nor solved for): those the rendering is a step function
            of (:attr:`afxest.params.Param.stepped`), where a finite difference measures a jump
            that no step of the others can follow (a delay time 0.001 in z away is tens of
            samples). None: none held.

    Returns:
        Each candidate's best iterate, its waveform error (:func:`waveform_loss`, dB, over its
        R excerpts together) and the trials it took.
    """
    import torch

    k, d = z0.shape
    r = y.shape[0] // k
    target = y[..., skip:].double().reshape(k, -1)
    free = np.arange(d) if held is None else np.flatnonzero(~np.asarray(held, bool))
    f = len(free)
    eye = torch.eye(d, dtype=torch.float64, device=y.device)[free]  # (f, d): a unit step in each free parameter
    eye_f = torch.eye(f, dtype=torch.float64, device=y.device)

    def residuals(z):  # z (M*K, d), M blocks of the K candidates -> (M*K, N), JACOBIAN_BATCH blocks a rendering
        parts = []
        for block in z.split(JACOBIAN_BATCH * k):
            m = block.shape[0] // k
            rendered = render(block.repeat_interleave(r, dim=0))[..., skip:].double().reshape(m * k, -1)
            parts.append(rendered - target.repeat(m, 1))
        return torch.cat(parts)

    def jacobian(z, res):  # (K, N, f), the f perturbed copies of every candidate rendered together
        if central:
            shifts = torch.cat([step * eye, -step * eye])  # (2f, d)
            rows = residuals((z[None] + shifts[:, None]).clamp(0, 1).reshape(-1, d)).reshape(2 * f, k, -1)
            return ((rows[:f] - rows[f:]) / (2 * step)).permute(1, 2, 0)
        h = torch.where(z + step <= 1 - EPS, step, -step)[:, free]  # (K, f)
        moved = z[None] + h.T[:, :, None] * eye[:, None, :]  # (f, K, d): free parameter j of each moved
        rows = residuals(moved.reshape(-1, d)).reshape(f, k, -1)
        return ((rows - res[None]) / h.T[:, :, None]).permute(1, 2, 0)

    with torch.no_grad():
        z = torch.from_numpy(np.asarray(z0, np.float64)).clamp(EPS, 1 - EPS).to(y.device)
        res = residuals(z)
        cost = res.square().sum(dim=1)
        damping = torch.full((k,), 1e-3, dtype=torch.float64, device=y.device)
        taken = np.zeros(k, int)
        moved = True
        for trial_index in range(max_steps if f else 0):
            if stop is not None and stop.is_set():
                break
            if moved:
                jac = jacobian(z, res)
                normal = jac.transpose(1, 2) @ jac
                gradient = (jac.transpose(1, 2) @ res.unsqueeze(2)).squeeze(2)
                scale = torch.diagonal(normal, dim1=1, dim2=2).clamp_min(1e-30)
            system = normal + (damping[:, None] * scale)[:, :, None] * eye_f
            delta = torch.linalg.solve(system, -gradient.unsqueeze(2)).squeeze(2) @ eye  # (K, d), 0 where held
            trial = (z + delta).clamp(EPS, 1 - EPS)
            trial_res = residuals(trial)
            trial_cost = trial_res.square().sum(dim=1)
            better = trial_cost < cost
            z = torch.where(better[:, None], trial, z)
            res = torch.where(better[:, None], trial_res, res)
            cost = torch.where(better, trial_cost, cost)
            damping = torch.where(better, damping / 3, damping * 4)
            taken[better.cpu().numpy()] = trial_index + 1
            moved = bool(better.any())
        energy = target.square().sum(dim=1)
        error = 10 * torch.log10((cost + 1e-12) / (energy + 1e-12))
    return Refined(z.cpu().numpy(), error.cpu().numpy(), taken)


def in_threads(work: Callable[[np.ndarray, threading.Event], Any], k: int, workers: int) -> list[Any]:
    """``work(indices, stop)`` on ``workers`` consecutive groups of the indices 0..k-1, each group
    in a thread of its own (the first in the caller's), and the results in order. The compiled
    loops and torch's kernels release the GIL, so the groups run in parallel on as many cores.
    An exception in any thread (an interruption of the caller's included) sets ``stop`` for the
    others and is raised in the caller once they have ended."""
    groups = [g for g in np.array_split(np.arange(k), max(1, min(workers, k))) if len(g)]
    stop = threading.Event()
    results: list[Any] = [None] * len(groups)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(groups[i], stop)
        except BaseException as error:  # noqa: BLE001 - raised again in the caller
            errors.append(error)
            stop.set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(groups))]
    try:
        for thread in threads:
            thread.start()
        results[0] = work(groups[0], stop)
    except BaseException:
        stop.set()
        raise
    finally:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.05)
    if errors:
        raise errors[0]
    return results


class Background:
    """``work()`` run in a daemon thread of its own from construction; :meth:`result` waits for
    it (interruptibly) and returns its value or raises what it raised."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._value = work()
        except BaseException as error:  # noqa: BLE001 - raised again by result()
            self._error = error

    def result(self) -> Any:
        """The work's value, once it has ended; what it raised, raised here."""
        while self._thread.is_alive():
            self._thread.join(0.05)
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Searched:
    """The search's candidates: z (K, d) float64 refined from ``start`` (K, d), where each came
    from (``posterior``, ``design``, ``analysis`` or ``echo``), its cheap score before and its loss after
    refinement, and the steps each refinement took."""

    z: np.ndarray
    start: np.ndarray
    origin: list[str]
    loss_before: np.ndarray
    loss_after: np.ndarray
    steps: np.ndarray  # (K,)
    proposals: dict[str, int]  # origin -> how many were scored
    windows: int  # excerpts refined on
    step_cap: int


def search(
    proposals: dict[str, np.ndarray],
    cheap_score: Callable[[np.ndarray], np.ndarray],
    render: Callable[[Any, Any], Any],
    loss_fn: Callable[[Any, Any], Any],
    y,
    x,
    effort: Effort,
    max_steps: int | None = None,
    skip: int = 0,
    workers: int = 1,
    held: np.ndarray | None = None,
) -> Searched:
    """Runs steps 1-3 of the module's pipeline: scores every proposal with ``cheap_score``,
    keeps the ``effort.keep`` best and refines them (:func:`refine`) on one candidate's
    excerpts, repeated here for each kept candidate.

    Arguments:
        proposals: The proposals by origin, each z (n, d).
        cheap_score: Maps z (n, d) to (n,) losses, lower is better.
        render: Maps z (B, d) and a dry (B, 1, T) or None to audio (B, 1, T), differentiably.
        loss_fn: The refinement loss (y_hat, y) -> (B,).
        y: The wet excerpts, (R, 1, T) (each channel of a stereo excerpt a row of its own: the
            processors treat channels alike and apart).
        x: The dry excerpts, (R, 1, T), or None for a synth.
        effort: How many are kept and the step caps.
        max_steps: Overrides the effort's step cap of the Adam refinement (``max_steps``, or
            ``dry_steps`` with a dry).
        skip: Passed to :func:`refine`.
        workers: The most threads the kept candidates are refined in (:func:`in_threads`; one
            per candidate at most), torch's intra-op threads divided among them meanwhile; each candidate follows its own
            schedule, so the answer does not depend on it.
        held: (d,) bool, the parameters the Levenberg-Marquardt trials leave where they are
            (:func:`least_squares`); None: none.

    Returns:
        The refined candidates, where they came from and their losses before and after.
    """
    import torch

    origin = [name for name, z in proposals.items() for _ in range(len(z))]
    z_all = np.concatenate([np.asarray(z, np.float64).reshape(-1, z.shape[-1]) for z in proposals.values()])
    scores = np.asarray(cheap_score(z_all), np.float64)
    scores = np.where(np.isfinite(scores), scores, np.inf)
    keep = effort.keep_design if "design" in proposals else effort.keep
    order = np.argsort(scores, kind="stable")[:keep]
    z0 = z_all[order]
    steps = (effort.max_steps if x is None else effort.dry_steps) if max_steps is None else max_steps
    polish_cap = effort.polish_steps if max_steps is None else min(effort.polish_steps, max_steps)
    polish = polish_cap if x is None else 0  # a synth: its rendering is exact
    trials = 0 if x is None else effort.dry_trials

    def work(group: np.ndarray, stop: threading.Event) -> Refined:
        return _refine_group(z0[group], render, loss_fn, y, x, steps, trials, polish, skip, stop, held)

    workers = max(1, min(workers, len(order)))  # a thread per candidate at most
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // workers))  # the cores are the workers' now
    try:
        parts = in_threads(work, len(order), workers)
    finally:
        torch.set_num_threads(before)
    refined = Refined(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("z", "loss", "steps")))
    return Searched(
        refined.z, z0, [origin[i] for i in order], scores[order], refined.loss, refined.steps,
        {name: len(z) for name, z in proposals.items()}, y.shape[0], steps,
    )


def _refine_group(z0: np.ndarray, render: Callable[[Any, Any], Any], loss_fn: Callable[[Any, Any], Any], y, x,
                  steps: int, trials: int, polish: int, skip: int, stop: threading.Event,
                  held: np.ndarray | None = None) -> Refined:
    """The refinement of the candidates z0 (K, d) of one thread of :func:`search`, each on the
    excerpts y (and x): ``steps`` of Adam, then (with a dry) ``trials`` of Levenberg-Marquardt;
    a synth's (``polish`` steps) last on the waveform error alone."""
    import torch

    k = len(z0)
    y_k = y.repeat(k, 1, 1)
    x_k = None if x is None else x.repeat(k, 1, 1)
    with torch.enable_grad():  # grad mode is per thread
        refined = refine(lambda z: render(z, x_k), loss_fn, z0, y_k, steps, LEARNING_RATE, TOLERANCE, PATIENCE,
                         HALVINGS, skip, stop)
        if x is not None and trials:
            # the dry tiled to each batch of the Jacobian's copies; z in float32, as Adam renders it
            solved = least_squares(lambda z: render(z.float(), x.repeat(z.shape[0] // x.shape[0], 1, 1)), refined.z,
                                   y_k, trials, skip, stop, DRY_JACOBIAN_STEP, central=False, held=held)
            scored = refine(lambda z: render(z, x_k), loss_fn, solved.z, y_k, 0, skip=skip)  # step 0: its loss
            better = scored.loss < refined.loss
            refined = Refined(np.where(better[:, None], solved.z, refined.z), np.where(better, scored.loss, refined.loss),
                              refined.steps + solved.steps)
        if polish:
            polished = refine(lambda z: render(z, None), waveform_loss, refined.z, y_k, polish, POLISH_LEARNING_RATE,
                              TOLERANCE, PATIENCE, HALVINGS, skip, stop)
            solved = least_squares(lambda z: render(z, None), polished.z, y_k, LEAST_SQUARES_STEPS, skip, stop,
                                   held=held)
            scored = refine(lambda z: render(z, None), loss_fn, solved.z, y_k, 0, skip=skip)  # step 0: its loss
            refined = Refined(solved.z, scored.loss, refined.steps + polished.steps + solved.steps)
    return refined


# ---------------------------------------------------------------------------------------------
# analysis-based proposals (effect tasks)

EQ_FIT_FFT = 4096  # long-term spectra: Welch averages of Hann-windowed frames of this size
EQ_FIT_STEPS = 200
EQ_FIT_FLOOR_DB = 60.0  # bins more than this below the dry's loudest are not fitted
EQ_FIT_POINTS = 256  # log-spaced bands the proposals' fit works on (equaliser_proposals)
# Sobol starts of the bands fitted beside the model's candidates: on 32 test pairs the worst
# items' rank 1 had the dynamics right and the bands in another basin of the fit
EQ_FIT_STARTS = 32


def long_term_spectrum_db(x: np.ndarray, n_fft: int = EQ_FIT_FFT) -> np.ndarray:
    """The long-term power spectrum of x (T,) in dB at the n_fft // 2 + 1 bins of an rfft:
    Welch's method (Hann frames, half overlap)."""
    x = np.asarray(x, np.float64)
    hop = n_fft // 2
    frames = max(1, 1 + (len(x) - n_fft) // hop)
    x = np.pad(x, (0, max(0, n_fft - len(x))))
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(x[idx] * np.hanning(n_fft)[None], axis=-1)
    return 10 * np.log10(np.mean(np.abs(spec) ** 2, axis=0) + 1e-20)


def long_term_ratio_db(dry: np.ndarray, wet: np.ndarray, n_fft: int = EQ_FIT_FFT) -> tuple[np.ndarray, np.ndarray]:
    """The wet's long-term spectrum over the dry's, in dB, at the n_fft // 2 + 1 bins of an rfft
    (:func:`long_term_spectrum_db`), and a weight per bin (1 where the dry has energy within
    :data:`EQ_FIT_FLOOR_DB` of its loudest bin, else 0). (T,) signals."""
    dry_db, wet_db = long_term_spectrum_db(dry, n_fft), long_term_spectrum_db(wet, n_fft)
    return wet_db - dry_db, equaliser_fit_weight(dry_db)


def equaliser_fit_weight(spectrum_db: np.ndarray) -> np.ndarray:
    """1 at the bins within :data:`EQ_FIT_FLOOR_DB` of the spectrum's loudest, else 0; 0 at DC
    (which says nothing about an equaliser)."""
    weight = (spectrum_db > spectrum_db.max() - EQ_FIT_FLOOR_DB).astype(np.float64)
    weight[0] = 0.0
    return weight


def equaliser_bands(space) -> list[tuple[Any, int]]:
    """The equaliser bands of a model chain: its leading biquads, each with the index of its first
    parameter in the normalised vector."""
    from afxest.processors import entry

    bands, dim = [], 0
    for proc in space.processors:
        if entry(proc.type).coefficients is None:
            break
        bands.append((proc, dim))
        dim += proc.dim
    return bands


def equaliser_fit_error(space, z_bands, ratio_db, weight, sample_rate: float, at=None):
    """What :func:`fit_equaliser` minimises: per row of the bands' normalised settings z_bands
    (K, bands' dimensions; a float64 tensor), the weighted mean square (dB^2) of
    20 log10 |H(f)| + c - ratio_db(f), c the best broadband level (closed form). ``ratio_db`` and
    ``weight`` are float64 tensors at the bins of an rfft, or at the frequencies ``at`` (Hz, a
    float64 tensor). Differentiable in z_bands: (K,)."""
    import torch

    from afxest.processors import power_response

    effects = [(proc.type, proc.physical(z_bands[:, start : start + proc.dim])) for proc, start in equaliser_bands(space)]
    where = 2 * (len(ratio_db) - 1) if at is None else at
    response = 10 * torch.log10(power_response(effects, sample_rate, where) + 1e-24)  # dB
    w = weight / weight.sum().clamp(min=1.0)
    residual = ratio_db - response
    level = (residual * w).sum(dim=1, keepdim=True)
    return ((residual - level).square() * w).sum(dim=1)


def fit_equaliser(space, z0: np.ndarray, ratio_db: np.ndarray, weight: np.ndarray, sample_rate: float,
                  steps: int = EQ_FIT_STEPS, at: np.ndarray | None = None) -> np.ndarray:
    """Fits the equaliser bands (:func:`equaliser_bands`) of each start to a long-term spectral
    ratio, minimising :func:`equaliser_fit_error` (the level c is what the compressor and the gain
    add) by Adam on logit(z) of the bands' parameters. Only the filters' closed form responses
    are evaluated (:func:`afxest.processors.power_response`; no audio), so this costs
    milliseconds.

    Arguments:
        space: The model chain (:class:`afxest.tasks.Space`).
        z0: The starts, (K, d) in [0, 1]^d.
        ratio_db: The wet's long-term spectrum over the dry's, in dB at the bins of an rfft
            (:func:`long_term_ratio_db`).
        weight: The weight of each bin.
        sample_rate: The sample rate in Hz.
        steps: The Adam steps.
        at: The frequencies (Hz) of ``ratio_db`` and ``weight``, if not the bins of an rfft.

    Returns:
        The starts with their bands fitted (the other parameters as they were), (K, d) float64.
    """
    import torch

    bands = equaliser_bands(space)
    if not bands:
        return np.asarray(z0, np.float64).copy()
    dim = sum(proc.dim for proc, _ in bands)
    target, w = torch.from_numpy(np.asarray(ratio_db, np.float64)), torch.from_numpy(np.asarray(weight, np.float64))
    u = torch.logit(torch.from_numpy(np.asarray(z0, np.float64)[:, :dim]).clamp(EPS, 1 - EPS)).requires_grad_(True)
    optimiser = Adam(u, 0.05)
    for _ in range(steps):
        loss = equaliser_fit_error(space, torch.sigmoid(u), target, w, sample_rate,
                                   None if at is None else torch.from_numpy(np.asarray(at, np.float64)))
        (grad,) = torch.autograd.grad(loss.sum(), u)
        optimiser.step(grad)
    out = np.asarray(z0, np.float64).copy()
    out[:, :dim] = torch.sigmoid(u.detach()).numpy()
    return out


def log_bands(ratio_db: np.ndarray, weight: np.ndarray, sample_rate: float,
              points: int = EQ_FIT_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ratio at the bins of an rfft (:func:`long_term_ratio_db`) gathered into ``points``
    log-spaced bands: each band's weighted mean frequency and ratio, and its summed weight, so a
    weighted fit on the bands approximates the fit on the bins (a quadrature of the same
    criterion) at a fraction of the cost; empty bands are dropped."""
    n = ratio_db.shape[0]
    f = np.arange(n) * sample_rate / (2 * (n - 1))
    edges = np.geomspace(f[1], f[-1] * (1 + 1e-9), points + 1)
    band = np.searchsorted(edges, f, side="right") - 1
    ok = (band >= 0) & (band < points) & (weight > 0)
    w = np.bincount(band[ok], weights=weight[ok], minlength=points)
    ratio = np.bincount(band[ok], weights=(weight * ratio_db)[ok], minlength=points)
    centre = np.bincount(band[ok], weights=(weight * f)[ok], minlength=points)
    used = w > 0
    return centre[used] / w[used], ratio[used] / w[used], w[used]


def equaliser_proposals(space, z: np.ndarray, ratio_db: np.ndarray, weight: np.ndarray, sample_rate: float,
                        starts: int = EQ_FIT_STARTS, seed: int = 0) -> np.ndarray:
    """The search's ``analysis`` proposals: the equaliser bands fitted to the long-term spectral
    ratio (:func:`fit_equaliser`, on :func:`log_bands`) from each of the M candidates z (M, d)
    and from ``starts`` points of a Sobol design of the bands' settings (each with the other
    settings of candidate j mod M); the M fits of least error (:func:`equaliser_fit_error`).
    A fit ends in the basin it starts in, and an equaliser of several bands has many: starts
    spread over the bands' space find the ones the model's candidates miss."""
    import torch

    bands = equaliser_bands(space)
    z = np.asarray(z, np.float64)
    if not bands:
        return z.copy()
    dim = sum(proc.dim for proc, _ in bands)
    spread = z[np.arange(starts) % len(z)].copy()
    spread[:, :dim] = design(dim, starts, seed)
    freqs, ratio, w = log_bands(ratio_db, weight, sample_rate)
    fitted = fit_equaliser(space, np.concatenate([z, spread]), ratio, w, sample_rate, at=freqs)
    error = equaliser_fit_error(space, torch.from_numpy(fitted[:, :dim]), torch.from_numpy(ratio), torch.from_numpy(w),
                                sample_rate, torch.from_numpy(freqs))
    return fitted[np.argsort(error.detach().numpy(), kind="stable")[: len(z)]]


RATIO_FFT = 1 << 18  # the FM tone's spectrum, zero padded to a fine grid (0.08 Hz at 22 050 Hz)
RATIO_STARTS = 128  # design points (their index) given the measured ratio, beside the model's draws


def modulator_ratio(tone: np.ndarray, sample_rate: float, carrier_hz: float, lo: float, hi: float) -> float:
    """The modulator-to-carrier frequency ratio of an FM tone (T,) read from its spectrum.

    The lines of sin(2 pi f_c t + I sin(2 pi f_m t)) lie at |f_c + k f_m| for every integer k
    (Chowning 1973): two combs of spacing f_m, so the magnitude spectrum repeats every f_m and
    its autocorrelation over frequency peaks at the lag f_m. The ratio is the lag of the largest
    peak of that autocorrelation (Hann-windowed spectrum, its mean removed) between lo and hi
    times the carrier, over the carrier. A tone of small index (a carrier and faint sidebands)
    has no comb to read; its ratio comes out wrong, and the search's other proposals serve."""
    n = max(RATIO_FFT, 2 * len(tone))
    spectrum = np.abs(np.fft.rfft(np.asarray(tone, np.float64) * np.hanning(len(tone)), n))
    spectrum -= spectrum.mean()
    autocorrelation = np.fft.irfft(np.abs(np.fft.rfft(spectrum, 2 * len(spectrum))) ** 2)[: len(spectrum)]
    bin_hz = sample_rate / n
    first, last = int(lo * carrier_hz / bin_hz), min(len(spectrum) - 1, int(np.ceil(hi * carrier_hz / bin_hz)))
    lag = first + int(np.argmax(autocorrelation[first : last + 1]))
    return lag * bin_hz / carrier_hz


def ratio_proposals(space, z: np.ndarray, tone: np.ndarray, sample_rate: float, starts: int, seed: int) -> np.ndarray | None:
    """The search's ``spectrum`` proposals for an FM synth: the candidates z (M, d) and
    ``starts`` indices of a Sobol design, all with the frequency ratio read from the tone's
    spectrum (:func:`modulator_ratio`); None for a chain without an ``fm`` source.

    Why (issue 21): at a high index and ratio the search's losses are rough in the ratio, with
    minima a sideband's bin apart, and the design's best points can all lie in other basins
    (a val tone of index 9.8 and ratio 9.80 ended at ratio 9.37, -24 dB; its spectrum gives
    9.8001). On 36 val tones of index above 1 the spectrum's ratio was within 0.002 of the truth
    on 35."""
    column = space.column("fm", "frequency_ratio")
    if column is None:
        return None
    processor = space.processors[space.position("fm")]
    carrier = dict(processor.fixed)["carrier_hz"]
    ratio = space.ranges[column]
    measured = modulator_ratio(tone, sample_rate, carrier, ratio.lo, ratio.hi)
    out = np.concatenate([np.asarray(z, np.float64), design(space.dim, starts, seed)])
    out[:, column] = np.clip(ratio.to_normalised(measured), 0.0, 1.0)
    return out


def delay_proposals(space, z: np.ndarray, dry: Sequence[np.ndarray], wet: Sequence[np.ndarray],
                    sample_rate: float) -> np.ndarray | None:
    """The search's ``echo`` proposals: the candidates z (M, d) with their delay's time, feedback
    and mix set to those measured from the dry/wet pairs of segments (mono, (T_s,) each) by
    :func:`afxest.echoes.measure_delay` in the delay's range of times; None for a chain without
    one delay. The refinement cannot move a delay time (a whole number of samples: no
    gradient), so a candidate must start on it (issue 24)."""
    from afxest.echoes import measure_delay

    if space.position("delay") is None:
        return None
    times = space.ranges[space.column("delay", "delay_seconds")]
    echo = measure_delay(dry, wet, sample_rate, times.lo, times.hi)
    measured = {"delay_seconds": echo.seconds, "feedback": echo.feedback, "mix": echo.mix}
    out = np.asarray(z, np.float64).copy()
    for name, value in measured.items():
        column = space.column("delay", name)
        out[:, column] = np.clip(space.ranges[column].to_normalised(value), 0.0, 1.0)
    return out
