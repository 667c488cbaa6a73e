"""Every renderer, built on the processor registry (:mod:`afxest.processors`).

A preset renders by the ``pedalboard`` engine (the real plugins) or ``ddsp`` (afxest's torch
processors), as float32 numpy audio shaped (channels, frames): one preset (:func:`render`,
:func:`render_source_blocks` for a long synth), a batch of presets on one signal
(:func:`render_batch`). A task's normalised model vectors render differentiably in torch
(:func:`render_model`: training's objective, the refinement) or as numpy audio by either engine
(:func:`render_candidates`: evaluation, figures).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from afxest.catalogue import DURATION, mixes_channels
from afxest.choices import ENGINES
from afxest.errors import UserError
from afxest.presets import Preset
from afxest.processors import apply_chain, entry, plugin

if TYPE_CHECKING:
    from torch import Tensor


def default_engine(preset: Preset) -> str:
    """The engine ``preset`` renders by when none is asked for: ``pedalboard`` when every effect
    has a pedalboard plugin, else ``ddsp``."""
    return "pedalboard" if all(e.spec.plugin for e in preset.effects) else "ddsp"


def render(preset: Preset, dry: np.ndarray | None, sample_rate: int, engine: str) -> np.ndarray:
    """Applies ``preset`` to ``dry``, or synthesises its source when ``dry`` is None.

    No normalisation anywhere: the output is exactly what the preset's processors produce.

    Arguments:
        preset: The preset.
        dry: The dry audio, shaped (channels, frames), or None for the preset's source.
        sample_rate: The sample rate in Hz.
        engine: ``pedalboard`` or ``ddsp`` (:data:`afxest.choices.ENGINES`).

    Returns:
        The rendering, float32 shaped (channels, frames) (a source: (1, its frames)).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    if dry is None:
        if preset.source is None:
            raise ValueError("a preset without a source needs a dry signal")
        dry = synthesise(preset, sample_rate)
    if not preset.effects:
        return dry.astype(np.float32, copy=True)
    if engine == "pedalboard":
        return _render_pedalboard(preset, dry, sample_rate)
    return _render_ddsp(preset, dry, sample_rate)


def source_frames(preset: Preset, sample_rate: int) -> int:
    """The length of the preset's synthesised source at ``sample_rate``, in frames."""
    assert preset.source is not None
    return int(round(preset.source.params["duration_s"] * sample_rate))


def synthesise(preset: Preset, sample_rate: int, start: int = 0, frames: int | None = None) -> np.ndarray:
    """The preset's source, synthesised by its registry function.

    Arguments:
        preset: A preset with a source.
        sample_rate: The sample rate in Hz.
        start: The index of the first sample (a block of a long sound).
        frames: The number of samples; default: the whole sound (:func:`source_frames`).

    Returns:
        The audio, float32 shaped (1, frames).
    """
    src = preset.source
    assert src is not None
    frames = source_frames(preset, sample_rate) if frames is None else frames
    return synthesise_batch(src.type, src.params, frames, sample_rate, start)[0].numpy()


SYNTH_BLOCK = 8 * 8192  # frames per streamed block: a multiple of pedalboard's 8192 buffer


def render_source_blocks(preset: Preset, sample_rate: int, engine: str) -> Iterator[np.ndarray]:
    """The rendering of a preset with a source as (1, frames) float32 blocks, so that a long
    sound is never held whole: each block synthesised, then through one pedalboard chain that
    carries its state (the same samples as :func:`render`). The ddsp processors have no
    streaming state, so ddsp effects after a source are applied to the whole sound at once."""
    if preset.effects and engine == "ddsp":
        yield render(preset, None, sample_rate, engine)
        return
    chain = board(preset) if preset.effects else None
    frames = source_frames(preset, sample_rate)
    for start in range(0, frames, SYNTH_BLOCK):
        y = synthesise(preset, sample_rate, start, min(SYNTH_BLOCK, frames - start))
        yield y if chain is None else chain(y, float(sample_rate), reset=False)
    if chain is not None and chain.latency:
        yield chain.flush(sample_rate)


def synthesise_batch(kind: str, params: dict, frames: int, sample_rate: int, start: int = 0) -> Tensor:
    """Synthesises a batch of sounds by source type ``kind``'s registry function.

    Arguments:
        kind: The source type (``fm``).
        params: The physical parameters by name, each a (batch,) tensor or array, or a float
            shared by the batch; ``duration_s`` is ignored (``frames`` is the length).
        frames: The number of samples.
        sample_rate: The sample rate in Hz.
        start: The index of the first sample.

    Returns:
        The sounds, a float32 tensor shaped (batch, 1, frames).
    """
    import torch

    source = entry(kind)
    if source.spec.kind != "source":
        raise ValueError(f"no synth for source type {kind!r}")
    device = next((v.device for v in params.values() if isinstance(v, torch.Tensor)), None)
    values = {
        k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in params.items() if k != DURATION.name
    }
    batch = max((v.numel() for v in values.values()), default=1)
    p = {k: v.expand(batch) if v.ndim == 0 else v for k, v in values.items()}
    return source.function(frames, sample_rate, start=start, **p)


def latency(effects: Sequence[Any]) -> int:
    """The latency (samples) a chain's renderers compensate: the sum of its ``convolution``
    effects' ``latency_samples`` (:class:`afxest.presets.Processor` objects)."""
    return int(sum(e.params.get("latency_samples", 0) for e in effects))


MEMORY_DB = 80.0  # a chain remembers its input until its response to it has decayed by this much


def memory_seconds(preset: Preset) -> float:
    """How long the preset's chain remembers its input: the seconds after which the effect of
    earlier input on its output has decayed by :data:`MEMORY_DB`, summed over its effects (each
    effect's tail passes through the next ones); ``inf`` for a delay fed back at 1 or more.

    Per effect (at the preset's rate): a biquad, its slowest pole's decay
    (:func:`afxest.dsp.filters.tail_length`; its resonance starts no louder than the impulse
    response's peak); a compressor, JUCE's ballistics filter, whose
    envelope forgets as exp(-2 pi t / time), over its longer time; a limiter, over its release;
    a convolution, its impulse response's length; a delay, its echoes until feedback^k is that
    small; a reverb, its longest comb fed back by 0.7 + 0.28 room_size and its all-passes (gain
    1/2) in series; gain and clipping, none."""
    import math

    rate, decay = float(preset.sample_rate), MEMORY_DB / 20 * math.log(10)  # ln of the decay
    total = 0.0
    for effect in preset.effects:
        total += _EFFECT_MEMORY[effect.type](effect.params, rate, decay)
    return total


def _biquad_memory(kind: str):
    def memory(params: dict, rate: float, decay: float) -> float:
        import torch

        from afxest.dsp import filters

        coefficients = {"peak": filters.peak_coefficients, "low_shelf": filters.low_shelf_coefficients,
                        "high_shelf": filters.high_shelf_coefficients}[kind]
        values = {k: torch.tensor([float(params[k])], dtype=torch.float64) for k in ("cutoff_frequency_hz", "gain_db", "q")}
        _, a = coefficients(rate, **values)
        return filters.tail_length(a, rate, MEMORY_DB, ringing=False) / rate

    return memory


def _ballistics_memory(*times: str):
    def memory(params: dict, rate: float, decay: float) -> float:
        import math

        return decay * max(float(params[t]) for t in times) / 1000 / (2 * math.pi)

    return memory


def _delay_memory(params: dict, rate: float, decay: float) -> float:
    import math

    feedback = float(params["feedback"])
    if feedback >= 1:
        return math.inf
    echoes = 1 if feedback <= 0 else 1 + math.ceil(decay / -math.log(feedback))
    return echoes * float(params["delay_seconds"])


def _reverb_memory(params: dict, rate: float, decay: float) -> float:
    import math

    from afxest.dsp.reverb import ROOM_OFFSET, ROOM_SCALE, tunings

    combs, allpasses = tunings(rate)
    feedback = ROOM_OFFSET + ROOM_SCALE * float(params["room_size"])
    passes = math.ceil(decay / -math.log(feedback)) + 1
    return (passes * int(combs.max()) + math.ceil(decay / math.log(2)) * int(allpasses.max(axis=0).sum())) / rate


_EFFECT_MEMORY = {
    "peak": _biquad_memory("peak"),
    "low_shelf": _biquad_memory("low_shelf"),
    "high_shelf": _biquad_memory("high_shelf"),
    "compressor": _ballistics_memory("attack_ms", "release_ms"),
    "limiter": _ballistics_memory("release_ms"),
    "gain": lambda params, rate, decay: 0.0,
    "clipping": lambda params, rate, decay: 0.0,
    "convolution": lambda params, rate, decay: len(params["impulse_response"]) / rate,
    "delay": _delay_memory,
    "reverb": _reverb_memory,
}


class Chain:
    """A preset's effects as one ``pedalboard.Pedalboard`` of the real plugins, its latency
    (:func:`latency`, L samples) compensated: the output is the chain's advanced by L samples.

    Called like the Pedalboard: at once (``reset=True``, the default), the input is followed by
    L zeros and the first L output samples are dropped (a hold-out of the input's end: a window
    of a longer signal needs L samples after it to be exact); streamed (``reset=False``, block
    by block from a fresh Chain), the first L output samples of the stream are dropped, so the
    stream's output lags its input by L, and :meth:`flush` gives its last L samples at the end.
    With L = 0 both are the Pedalboard's own."""

    def __init__(self, preset: Preset) -> None:
        import pedalboard

        self.board = pedalboard.Pedalboard([plugin(e.type, e.params, preset.sample_rate) for e in preset.effects])
        self.latency = latency(preset.effects)
        self._drop, self._channels = self.latency, None

    def __call__(self, x: np.ndarray, sample_rate: float, reset: bool = True) -> np.ndarray:
        """The chain applied to x (channels, frames), float32 (see the class docstring)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if reset:
            if not self.latency:
                return self.board(x, float(sample_rate))
            padded = np.concatenate([x, np.zeros((x.shape[0], self.latency), np.float32)], axis=1)
            return self.board(padded, float(sample_rate))[:, self.latency :]
        self._channels = x.shape[0]
        y = self.board(x, float(sample_rate), reset=False)
        cut = min(self._drop, y.shape[1])
        self._drop -= cut
        return y[:, cut:]

    def flush(self, sample_rate: float) -> np.ndarray:
        """The stream's last L samples (its input followed by L zeros); empty without a latency
        or once flushed."""
        if not self.latency or self._channels is None:
            return np.zeros((self._channels or 1, 0), np.float32)
        y = self(np.zeros((self._channels, self.latency), np.float32), sample_rate, reset=False)
        self._channels = None
        return y


class ExcerptRenderer:
    """Chains of effects rendered by pedalboard on excerpts of one dry signal, each excerpt by a
    :class:`Chain` of its own (plugins keep state) from a preroll before it, and aligned with the
    wet's excerpt it is scored against; ``map_excerpts`` may be a thread pool's ``map``
    (pedalboard releases the GIL).

    ``kept``, leading effects that every chain asked for starts with (a search that changes only
    what follows them, as :func:`afxest.correct.correct` does): their rendering of each excerpt
    is made once and the rest of each chain continues from it, the same bits as the whole chain
    (each plugin holds its own state; tests/test_correct.py). Only where the whole chain has no
    latency to compensate; otherwise, and for a chain that does not start with ``kept``, the
    whole chain is rendered."""

    def __init__(self, dry: np.ndarray, spans: Sequence[tuple[int, int]], preroll: int, sample_rate: int,
                 map_excerpts: Any = map, kept: Sequence[Any] = ()) -> None:
        """``dry`` (channels, frames); ``spans`` the excerpts' (start, stop); each rendered from
        ``preroll`` samples before its start (or the signal's start)."""
        self.dry, self.spans, self.rate, self.map = dry, list(spans), int(sample_rate), map_excerpts
        self.starts = [max(0, a - preroll) for a, _ in self.spans]
        self.kept, self._kept_renderings = tuple(kept), None

    def __call__(self, effects: Sequence[Any], only: Sequence[int] | None = None) -> list[np.ndarray]:
        """The chain of ``effects`` (:class:`afxest.presets.Processor` objects) on each excerpt
        (or on those of index in ``only``), float32 (channels, its frames)."""
        ids = range(len(self.spans)) if only is None else list(only)
        spans, starts = [self.spans[i] for i in ids], [self.starts[i] for i in ids]
        k = len(self.kept)
        if k and tuple(effects[:k]) == self.kept and not latency(effects):
            if self._kept_renderings is None:
                self._kept_renderings = list(self.map(self._through(self.kept), self.starts, self.spans))
            rest = Preset(self.rate, tuple(effects[k:]))

            def onwards(y: np.ndarray, span: tuple[int, int], s: int) -> np.ndarray:
                return (board(rest)(y, float(self.rate)) if rest.effects else y)[:, span[0] - s :]

            return list(self.map(onwards, [self._kept_renderings[i] for i in ids], spans, starts))
        whole = self._through(tuple(effects))
        return [y[:, a - s :] for y, (a, _), s in zip(self.map(whole, starts, spans), spans, starts)]

    def _through(self, effects: tuple[Any, ...]) -> Any:
        """A function of (start, span): the chain on the dry from ``start`` to the span's end
        (rendered on as far past it as its latency compensation needs)."""
        preset = Preset(self.rate, effects)

        def excerpt(s: int, span: tuple[int, int]) -> np.ndarray:
            chain = board(preset)
            return chain(np.ascontiguousarray(self.dry[:, s : span[1] + chain.latency]), float(self.rate))[:, : span[1] - s]

        return excerpt


def channels_apart(preset: Preset) -> bool:
    """Whether the preset's plugins treat each channel alone (none of them
    :attr:`~afxest.catalogue.ProcessorType.mixes_channels`), so that its :class:`Chain` on each
    channel gives, bit for bit, its Chain on all of them (tests/test_processors.py)."""
    return not mixes_channels(e.type for e in preset.effects)


def _per_channel(preset: Preset, channels: int) -> bool:
    """Whether ``channels`` channels are rendered by a Chain each, in threads of their own: more
    than one channel, cores to run them on (:func:`afxest.device.cpu_workers`), and plugins that
    treat channels apart (:func:`channels_apart`)."""
    from afxest.device import cpu_workers

    return channels > 1 and channels_apart(preset) and cpu_workers() > 1


def board(preset: Preset) -> Chain:
    """The preset's effects as a :class:`Chain` of the real plugins, its latency compensated."""
    return Chain(preset)


def rendered_blocks(preset: Preset, f: Any, rate: int, engine: str, clip: int) -> Iterator[np.ndarray]:
    """The preset rendered on the rest of the audio file ``f`` (a ``soundfile.SoundFile`` open
    for reading, or an :class:`afxest.audio.DecodedFile`, at ``rate``), (channels, frames) a
    block at a time. pedalboard: :data:`~afxest.audio.READ_BLOCK` frames at a time through
    plugin chains that carry their state (one per channel, in threads of their own, where the
    preset's plugins treat channels apart: :func:`channels_apart`; the same bits in half the
    time on two cores), so ``afxest render`` and an estimate's audio are the same file; ddsp:
    windows of ``clip`` frames (the last one taking the rest), each rendered from rest, as an
    estimate scores them."""
    from concurrent.futures import ThreadPoolExecutor

    from afxest.audio import READ_BLOCK

    if engine != "pedalboard":
        while (left := f.frames - f.tell()) > 0:
            x = f.read(clip if left >= 2 * clip else -1, dtype="float32", always_2d=True)
            yield render(preset, np.ascontiguousarray(x.T), rate, "ddsp")
        return
    split = _per_channel(preset, int(f.channels))
    chains = [board(preset) for _ in range(int(f.channels) if split else 1)]
    with ThreadPoolExecutor(len(chains)) as pool:
        def through(x: np.ndarray) -> np.ndarray:
            if not split:
                return chains[0](x, float(rate), reset=False)
            parts = pool.map(lambda k: chains[k](np.ascontiguousarray(x[k : k + 1]), float(rate), reset=False),
                             range(len(chains)))
            return np.concatenate(list(parts))

        while (x := f.read(READ_BLOCK, dtype="float32", always_2d=True)).shape[0]:
            yield through(np.ascontiguousarray(x.T))
        if chains[0].latency:
            yield np.concatenate([chain.flush(rate) for chain in chains])


def _render_pedalboard(preset: Preset, dry: np.ndarray, sample_rate: int) -> np.ndarray:
    """The preset's :class:`Chain` on ``dry`` (channels, frames); where its plugins treat channels
    apart (:func:`channels_apart`), a Chain per channel in threads of their own (pedalboard
    releases the GIL): the same bits in a fraction of the time."""
    from concurrent.futures import ThreadPoolExecutor

    from afxest.device import cpu_workers

    dry = np.ascontiguousarray(dry, dtype=np.float32)
    if not _per_channel(preset, dry.shape[0]):
        return board(preset)(dry, float(sample_rate))
    with ThreadPoolExecutor(min(dry.shape[0], cpu_workers())) as pool:
        parts = pool.map(lambda c: board(preset)(np.ascontiguousarray(dry[c : c + 1]), float(sample_rate)),
                         range(dry.shape[0]))
        return np.concatenate(list(parts))


DDSP_MAX_TAIL = 1 << 22  # samples: the longest biquad impulse response the ddsp engine renders


def check_ddsp(preset: Preset, sample_rate: int) -> None:
    """Refuses, before any work, a preset the ddsp engine cannot render at ``sample_rate``: it
    filters in the frequency domain with each biquad's whole impulse response, which a filter
    near its limits (a low cutoff at a high rate, a deep cut) makes minutes or hours long."""
    import torch

    from afxest.dsp.filters import tail_length

    for i, e in enumerate(preset.effects):
        coefficients = entry(e.type).coefficients
        if coefficients is None:
            continue
        _, a = coefficients(sample_rate, **{k: torch.tensor([v], dtype=torch.float64) for k, v in e.params.items()})
        try:
            tail = tail_length(a, sample_rate)
        except ValueError:
            tail = None
        if tail is None or tail > DDSP_MAX_TAIL:
            length = "never decays" if tail is None else f"lasts {tail / sample_rate:.0f} s"
            settings = ", ".join(f"{k} {v:g}" for k, v in e.params.items())
            raise UserError(
                f"effects[{i}] ({e.type}): with {settings}, its impulse response {length} at {sample_rate} Hz; "
                f"the ddsp engine renders at most {DDSP_MAX_TAIL / sample_rate:.0f} s (use --engine pedalboard)"
            )


def _render_ddsp(preset: Preset, dry: np.ndarray, sample_rate: int) -> np.ndarray:
    check_ddsp(preset, sample_rate)
    return _ddsp_batch([preset], dry, sample_rate, dry.shape[-1])[0]


def _fit(y: np.ndarray, frames: int) -> np.ndarray:
    """y (..., T) cut or zero padded to ``frames``."""
    if y.shape[-1] >= frames:
        return y[..., :frames]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, frames - y.shape[-1])])


def _ddsp_batch(presets: Sequence[Preset], dry: np.ndarray | None, sample_rate: int, frames: int) -> np.ndarray:
    """Presets of one chain (their source or ``dry`` (channels, T), then the same effect types
    in order) in one batch of the differentiable processors, no check_ddsp: (M, channels, frames)."""
    import torch

    def stacked(processors: Sequence) -> dict[str, Tensor]:
        if any(p.type != processors[0].type for p in processors):
            raise ValueError("the ddsp batch needs presets of one chain (the same types in order)")
        return {k: torch.tensor([p.params[k] for p in processors], dtype=torch.float64) for k in processors[0].params}

    if any(len(p.effects) != len(presets[0].effects) for p in presets):
        raise ValueError("the ddsp batch needs presets of one chain (the same types in order)")
    if dry is None and any(p.source is None for p in presets):
        raise ValueError("a preset without a source needs a dry signal")
    effects = [(e.type, stacked([p.effects[j] for p in presets])) for j, e in enumerate(presets[0].effects)]
    with torch.inference_mode():
        if dry is None:
            x = synthesise_batch(presets[0].source.type, stacked([p.source for p in presets]), frames, sample_rate)
        else:
            x = torch.from_numpy(np.ascontiguousarray(dry, dtype=np.float32))[None]
            x = x.expand(len(presets), *x.shape[1:]).contiguous()
        lag = {latency(p.effects) for p in presets}
        if len(lag) > 1:
            raise ValueError("the ddsp batch needs presets of one latency")
        lag = lag.pop()  # compensated as the pedalboard engine's Chain does: L zeros after, L samples dropped
        if lag:
            x = torch.nn.functional.pad(x, (0, lag))
        y = apply_chain(x, effects, sample_rate)[..., lag:]
    return _fit(y.cpu().numpy().astype(np.float32, copy=False), frames)


def render_batch(
    presets: Sequence[Preset], dry: np.ndarray | None, sample_rate: int, engine: str, frames: int | None = None
) -> np.ndarray:
    """Renders each of ``presets`` on one dry signal, or each preset's source.

    ``pedalboard``: each preset by :func:`render` on its own (a source synthesised per preset),
    sample for sample what ``afxest render`` writes. ``ddsp``: the whole batch in one pass of
    the differentiable processors (a source synthesised for the batch at once); the presets must
    share one chain (the same types in order), and :func:`check_ddsp` is left to the caller.

    Arguments:
        presets: The M presets.
        dry: The dry audio, shaped (channels, T), or None for each preset's source.
        sample_rate: The sample rate in Hz.
        engine: ``pedalboard`` or ``ddsp``.
        frames: The length of every rendering, each cut or zero padded to it; default: the
            dry's length, or the first preset's source's.

    Returns:
        The renderings, float32 shaped (M, channels, frames).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    if frames is None:
        frames = dry.shape[-1] if dry is not None else source_frames(presets[0], sample_rate)
    if engine == "ddsp":
        return _ddsp_batch(presets, dry, sample_rate, frames)
    return np.stack([_fit(render(p, dry, sample_rate, "pedalboard"), frames) for p in presets])


def render_model(task: Any, z: Tensor, dry: Tensor | None, clip_gradient: bool = True, compressor=None,
                 sample_rate: int | None = None) -> Tensor:
    """Renders normalised model parameters of ``task`` with the differentiable processors.

    Arguments:
        task: The task (:class:`afxest.tasks.Task`) whose model chain ``z`` parameterises.
        z: The normalised model vectors, shaped (batch, d).
        dry: The dry audio, shaped (batch, channels, T); None for a task with a synth, which
            renders ``task.clip_samples`` samples.
        clip_gradient: Whether the clipper renders straight-through (its output, a smooth
            gradient; training).
        compressor: A proxy (x, threshold_db, ratio, attack_ms, release_ms) -> y
            (:func:`afxest.nn.proxy.compressor_function`) that replaces the compressor entry's
            function for this render.
        sample_rate: The rate of ``dry`` and of the rendering (default: the task's; a synth
            renders at the task's).

    Returns:
        The rendered audio, shaped like ``dry`` (with a synth: (batch, 1, ``task.clip_samples``)),
        differentiable with respect to ``z``.
    """
    parts = task.model.split(z)
    if task.has_source:
        (kind, params), effects = parts[0], parts[1:]
        x = synthesise_batch(kind, params, task.clip_samples, task.sample_rate).to(z.device)
    else:
        x, effects = dry, parts
    replace = None if compressor is None else {"compressor": lambda x, sample_rate, **p: compressor(x, **p)}
    rate = task.sample_rate if sample_rate is None or task.has_source else sample_rate
    return apply_chain(x, effects, rate, clip_gradient=clip_gradient, replace=replace)


def render_candidates(task: Any, z: np.ndarray, dry: np.ndarray | None, engine: str, compressor=None) -> np.ndarray:
    """Renders normalised model vectors of ``task`` as numpy audio, without gradients.

    ``pedalboard``: each vector's preset by :func:`render_batch` (the real plugins), cut or
    padded to ``task.clip_samples``. ``ddsp``: the batch by :func:`render_model` in z's
    precision, the clipper exact.

    Arguments:
        task: The task (:class:`afxest.tasks.Task`) whose model chain ``z`` parameterises.
        z: The normalised model vectors, shaped (n, d).
        dry: The dry audio, shaped (1, T), or None for the task's synth.
        engine: ``pedalboard`` or ``ddsp``.
        compressor: A proxy in place of the compressor's function (as :func:`render_model`'s;
            ``ddsp`` only), or None.

    Returns:
        The renderings, shaped (n, 1, frames): float32 (``ddsp`` with float64 z: float64 where a
        processor, as the compressor, computes in z's precision).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    if engine == "pedalboard":
        if compressor is not None:
            raise ValueError("a compressor proxy renders with the ddsp engine")
        presets = [task.model.preset(v.astype(np.float64), task.name, task.sample_rate) for v in z]
        return render_batch(presets, dry, task.sample_rate, "pedalboard", task.clip_samples)
    import torch

    x = None if dry is None else torch.from_numpy(np.array(np.broadcast_to(dry, (len(z), *dry.shape)), np.float32))
    with torch.no_grad():
        y = render_model(task, torch.from_numpy(np.asarray(z)), x, clip_gradient=False, compressor=compressor)
    return y.numpy()
