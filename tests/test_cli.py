"""The ``afxest`` command line: exit codes, one-line errors, nothing written on failure, and
``afxest render`` checked against pedalboard and closed forms built independently here.

Most tests call :func:`afxest.cli.main` in-process (a subprocess costs an interpreter start);
three subprocess tests check the installed console script and ``python -m afxest``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile

import afxest
import afxest.examples
from afxest.cli import main
from reference import reference_render, snr_db  # tests/reference.py

EXAMPLES = Path(afxest.examples.__file__).parent
SR = 22050

PRESET: dict[str, Any] = {
    "format": "afxest-preset/1",
    "task": None,
    "sample_rate": SR,
    "effects": [
        {"type": "low_shelf", "cutoff_frequency_hz": 150.0, "gain_db": 4.0, "q": 0.7},
        {"type": "peak", "cutoff_frequency_hz": 1000.0, "gain_db": -3.0, "q": 1.5},
        {"type": "high_shelf", "cutoff_frequency_hz": 5000.0, "gain_db": 2.0, "q": 0.8},
        {"type": "compressor", "threshold_db": -18.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 80.0},
        {"type": "gain", "gain_db": 3.0},
        {"type": "clipping", "threshold_db": -2.0},
    ],
    "source": None,
}


def noise(channels: int, seconds: float, sample_rate: int = SR, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal((channels, int(seconds * sample_rate)))).astype(
        np.float32
    )


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SR, subtype: str = "FLOAT") -> Path:
    soundfile.write(path, np.asarray(audio).T, sample_rate, subtype=subtype)
    return path


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def snapshot(root: Path, folder_times: bool = True) -> dict[str, tuple[int, int] | None]:
    """Every file and folder under root (hidden ones included) with its size and mtime.

    With ``folder_times`` a folder's mtime counts too, so even a file created and deleted
    again shows up.
    """
    found: dict[str, tuple[int, int] | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            keep = folder_times or name in files
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns) if keep else None
    return found


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def err_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


class Work:
    """Inputs in ``indir``, outputs go to ``outdir`` (empty); ``root`` holds both."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.indir = root / "in"
        self.outdir = root / "out"
        self.indir.mkdir()
        self.outdir.mkdir()
        self.dry_audio = noise(1, 0.25)
        self.dry = write_wav(self.indir / "dry.wav", self.dry_audio)
        self.preset = write_json(self.indir / "preset.json", PRESET)
        self.out = self.outdir / "out.wav"

    def preset_with(self, edit: Callable[[dict[str, Any]], None], name: str = "edited.json") -> Path:
        doc = json.loads(json.dumps(PRESET))
        edit(doc)
        return write_json(self.indir / name, doc)


@pytest.fixture
def work(tmp_path: Path) -> Work:
    return Work(tmp_path)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AFXEST_DEBUG", raising=False)


# --- bad input: exit 2, one line on stderr, nothing written ----------------------------------


def _missing_dry(w: Work):
    return [w.indir / "nope.wav", w.preset, "-o", w.out], "no such file"


def _missing_preset(w: Work):
    return [w.dry, w.indir / "nope.json", "-o", w.out], "no such file"


def _text_as_audio(w: Work):
    (w.indir / "notes.wav").write_text("these are not samples\n")
    return [w.indir / "notes.wav", w.preset, "-o", w.out], "not a readable audio file"


def _random_bytes_as_audio(w: Work):
    (w.indir / "junk.flac").write_bytes(np.random.default_rng(1).bytes(4096))
    return [w.indir / "junk.flac", w.preset, "-o", w.out], "not a readable audio file"


def _folder_as_audio(w: Work):
    (w.indir / "folder.wav").mkdir()
    return [w.indir / "folder.wav", w.preset, "-o", w.out], "is a folder"


def _audio_as_preset(w: Work):
    return [w.dry, w.dry, "-o", w.out], "cannot read as UTF-8"


def _empty_audio(w: Work):
    write_wav(w.indir / "empty.wav", np.zeros((1, 0), np.float32))
    return [w.indir / "empty.wav", w.preset, "-o", w.out], "contains no audio"


def _nan_audio(w: Work):
    x = w.dry_audio.copy()
    x[0, 100] = np.nan
    write_wav(w.indir / "nan.wav", x)
    return [w.indir / "nan.wav", w.preset, "-o", w.out], "non-finite"


def _inf_audio(w: Work):
    x = w.dry_audio.copy()
    x[0, -1] = -np.inf
    write_wav(w.indir / "inf.wav", x)
    return [w.indir / "inf.wav", w.preset, "-o", w.out], "non-finite"


def _truncated_json(w: Work):
    text = json.dumps(PRESET)
    (w.indir / "cut.json").write_text(text[: len(text) // 2])
    return [w.dry, w.indir / "cut.json", "-o", w.out], "invalid JSON"


def _empty_json(w: Work):
    (w.indir / "empty.json").write_text("")
    return [w.dry, w.indir / "empty.json", "-o", w.out], "invalid JSON"


def _wrong_format(w: Work):
    p = w.preset_with(lambda d: d.update(format="afxest-preset/9"))
    return [w.dry, p, "-o", w.out], "format must be 'afxest-preset/1'"


def _unknown_effect(w: Work):
    p = w.preset_with(lambda d: d["effects"].insert(1, {"type": "chorus", "rate_hz": 0.5}))
    return [w.dry, p, "-o", w.out], "effects[1]: unknown type 'chorus'"


def _out_of_range(w: Work):
    p = w.preset_with(lambda d: d["effects"][3].update(ratio=0.5))
    return [w.dry, p, "-o", w.out], "effects[3] (compressor): ratio must be >= 1"


def _negative_time(w: Work):
    p = w.preset_with(lambda d: d["effects"][3].update(attack_ms=-5))
    return [w.dry, p, "-o", w.out], "effects[3] (compressor): attack_ms must be >= 0"


def _missing_parameter(w: Work):
    p = w.preset_with(lambda d: d["effects"][2].pop("q"))
    return [w.dry, p, "-o", w.out], "effects[2] (high_shelf): missing parameter 'q'"


def _extra_parameter(w: Work):
    p = w.preset_with(lambda d: d["effects"][4].update(mix=0.5))
    return [w.dry, p, "-o", w.out], "effects[4] (gain): unknown parameter 'mix'"


def _non_numeric_parameter(w: Work):
    p = w.preset_with(lambda d: d["effects"][0].update(gain_db="4 dB"))
    return [w.dry, p, "-o", w.out], "effects[0] (low_shelf): gain_db must be a number"


def _nan_parameter(w: Work):
    p = w.preset_with(lambda d: d["effects"][1].update(q=float("nan")))
    return [w.dry, p, "-o", w.out], "effects[1] (peak): q must be finite"


def _cutoff_above_dry_nyquist(w: Work):
    # valid at the preset's 44.1 kHz, not at the dry's 22.05 kHz
    p = w.preset_with(lambda d: (d.update(sample_rate=44100), d["effects"][2].update(cutoff_frequency_hz=15000.0)))
    return [w.dry, p, "-o", w.out], "effects[2] (high_shelf): cutoff_frequency_hz must be below the Nyquist"


def _missing_output_folder(w: Work):
    return [w.dry, w.preset, "-o", w.outdir / "missing" / "out.wav"], "does not exist"


def _output_is_dry(w: Work):
    return [w.dry, w.preset, "-o", w.dry], "overwrite the input"


def _output_is_dry_forced(w: Work):
    return [w.dry, w.preset, "-o", w.dry, "--force"], "overwrite the input"


def _output_is_dry_other_spelling(w: Work):
    return [w.dry, w.preset, "-o", w.outdir / ".." / "in" / "dry.wav", "--force"], "overwrite the input"


def _output_is_preset(w: Work):
    preset = write_json(w.indir / "preset.wav", PRESET)  # a JSON file with an audio name
    return [w.dry, preset, "-o", preset, "--force"], "overwrite the input"


def _output_exists(w: Work):
    w.out.write_bytes(b"precious")
    return [w.dry, w.preset, "-o", w.out], "already exists (use --force"


def _output_is_folder(w: Work):
    (w.outdir / "take.wav").mkdir()
    return [w.dry, w.preset, "-o", w.outdir / "take.wav", "--force"], "is a folder"


def _output_suffix(w: Work):
    return [w.dry, w.preset, "-o", w.outdir / "out.mp3"], "output must end in one of .flac, .wav"


def _flac_float(w: Work):
    return [w.dry, w.preset, "-o", w.outdir / "out.flac"], "FLAC has no float format"


def _unknown_engine(w: Work):
    return [w.dry, w.preset, "-o", w.out, "--engine", "juce"], "--engine"


def _unknown_bit_depth(w: Work):
    return [w.dry, w.preset, "-o", w.out, "--bit-depth", "12"], "--bit-depth"


def _candidate_zero(w: Work):
    return [w.dry, w.preset, "-o", w.out, "--candidate", "0"], "--candidate"


def _candidate_on_preset(w: Work):
    return [w.dry, w.preset, "-o", w.out, "--candidate", "2"], "--candidate applies to estimate files"


def _candidate_missing(w: Work):
    est = write_json(w.indir / "estimate.json", estimate_doc([1.0, 2.0]))
    return [w.dry, est, "-o", w.out, "--candidate", "3"], "no candidate of rank 3"


def _source_with_dry(w: Work):
    return [w.dry, EXAMPLES / "fm.json", "-o", w.out], "render it without a dry file"


def _no_source_without_dry(w: Work):
    return [w.preset, "-o", w.out], "needs a dry file"


def _three_paths(w: Work):
    return [w.dry, w.dry, w.preset, "-o", w.out], "render takes [DRY] PRESET"


def _no_output(w: Work):
    return [w.dry, w.preset], "Missing option '--out'"


def _no_paths(w: Work):
    return ["-o", w.out], "Missing argument"


BAD_INPUT = [
    _missing_dry, _missing_preset, _text_as_audio, _random_bytes_as_audio, _folder_as_audio,
    _audio_as_preset, _empty_audio, _nan_audio, _inf_audio, _truncated_json, _empty_json,
    _wrong_format, _unknown_effect, _out_of_range, _negative_time, _missing_parameter,
    _extra_parameter, _non_numeric_parameter, _nan_parameter, _cutoff_above_dry_nyquist,
    _missing_output_folder, _output_is_dry, _output_is_dry_forced, _output_is_dry_other_spelling,
    _output_is_preset, _output_exists, _output_is_folder, _output_suffix, _flac_float,
    _unknown_engine, _unknown_bit_depth, _candidate_zero, _candidate_on_preset, _candidate_missing,
    _source_with_dry, _no_source_without_dry, _three_paths, _no_output, _no_paths,
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.__name__.strip("_") for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    work: Work, case, capsys: pytest.CaptureFixture[str]
) -> None:
    args, fragment = case(work)
    before = snapshot(work.root)
    rc, out, err = cli(["render", *args], capsys)
    assert rc == 2, err
    lines = err_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0]
    assert "error" in lines[0]
    assert out == ""
    assert snapshot(work.root) == before  # nothing written, replaced or left behind


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(["transmogrify"], capsys)
    assert rc == 2
    assert len(err_lines(err)) == 1 and "transmogrify" in err


# --- internal failures: exit 1, one line, nothing written ------------------------------------


@pytest.mark.parametrize("command", [["estimate", "x.wav"], ["train", "--task", "eq", "--out", "r"],
                                     ["train-proxy", "--out", "r"]])
def test_an_unknown_device_exits_2_with_one_line(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli([*command, "--device", "tpu"], capsys)
    assert rc == 2 and out == ""
    lines = err_lines(err)
    assert len(lines) == 1 and "'tpu' is not one of 'auto', 'cpu', 'cuda'" in lines[0], err


def test_resolve_device() -> None:
    import torch

    from afxest.device import resolve_device
    from afxest.errors import UserError

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError) as info:
        resolve_device("tpu")
    assert str(info.value) == "unknown device 'tpu' (auto, cpu or cuda)"


def test_internal_failure_exits_1(work: Work, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import afxest.engines
    import afxest.render

    def boom(*args, **kwargs):
        raise RuntimeError("engine exploded")

    def blocks_then_boom(*args, **kwargs):  # fails in the worker thread that renders the blocks
        yield np.zeros((1, 16), np.float32)
        raise RuntimeError("engine exploded")

    # render_file calls the names it imported from afxest.engines, so patch them there too.
    monkeypatch.setattr(afxest.engines, "render", boom)
    monkeypatch.setattr(afxest.render, "render", boom)
    monkeypatch.setattr(afxest.render, "rendered_blocks", blocks_then_boom)
    # the blocks are rendered while the file is written: the failure comes mid-write, whose
    # staged file is removed (as when a write is interrupted), so folder times may change
    before = snapshot(work.root, folder_times=False)
    rc, out, err = cli(["render", work.dry, work.preset, "-o", work.out], capsys)
    assert rc == 1
    lines = err_lines(err)
    assert len(lines) == 1 and "Traceback" not in err
    assert "internal error" in lines[0] and "RuntimeError: engine exploded" in lines[0]
    assert snapshot(work.root, folder_times=False) == before


def test_internal_failure_traceback_with_debug(work: Work, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import afxest.render

    monkeypatch.setattr(afxest.render, "render", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(afxest.render, "rendered_blocks", lambda *a, **k: 1 / 0)
    monkeypatch.setenv("AFXEST_DEBUG", "1")
    rc, _, err = cli(["render", work.dry, work.preset, "-o", work.out], capsys)
    assert rc == 1
    assert "ZeroDivisionError" in err and "Traceback" in err


def fail_writes_after(monkeypatch: pytest.MonkeyPatch, calls: int, failure: Callable[[], None]) -> None:
    """Make the bytes of staged files fail (``failure()`` raises or signals) after ``calls``
    writes: libsndfile sees them through a cffi callback, where an exception only printed a
    traceback before (issue 12, rows 1 and 2)."""
    import afxest.audio

    real = afxest.audio._write_bytes
    count = [0]

    def write(raw, data: bytes) -> int:
        count[0] += 1
        if count[0] > calls:
            failure()
        return real(raw, data)

    monkeypatch.setattr(afxest.audio, "_write_bytes", write)


def _disk_full() -> None:
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("calls", [0, 1, 3])  # the header, the first samples, later samples
def test_a_full_disk_exits_2_with_one_line_and_leaves_nothing(
    work: Work, monkeypatch: pytest.MonkeyPatch, capsys, calls: int
) -> None:
    fail_writes_after(monkeypatch, calls, _disk_full)
    before = snapshot(work.root, folder_times=False)
    rc, _, err = cli(["render", work.dry, work.preset, "-o", work.out], capsys)
    assert rc == 2, err
    assert err_lines(err) == [f"afxest: error: {work.out}: cannot write (No space left on device)"], err
    assert snapshot(work.root, folder_times=False) == before  # the temporary file is gone


@pytest.mark.parametrize("signum, code, name", [(2, 130, "SIGINT"), (15, 143, "SIGTERM")])
def test_a_signal_while_audio_is_written_exits_128_plus_it_with_one_line(
    work: Work, monkeypatch: pytest.MonkeyPatch, capsys, signum: int, code: int, name: str
) -> None:
    fail_writes_after(monkeypatch, 2, lambda: os.kill(os.getpid(), signum))
    before = snapshot(work.root, folder_times=False)
    rc, _, err = cli(["render", work.dry, work.preset, "-o", work.out], capsys)
    assert rc == code, err
    assert err_lines(err) == [f"afxest: interrupted ({name})"], err
    assert snapshot(work.root, folder_times=False) == before


def test_an_interruption_while_a_worker_thread_is_inside_torch_exits_130_not_an_abort(tmp_path: Path) -> None:
    """The afxest command ends an interrupted process at once: with a worker thread still in
    torch's autograd (a refinement's, the search proposals'), the interpreter's finalisation
    would end it mid-call and abort the process ("terminate called without an active
    exception", exit 134). A subprocess, since the test's own interpreter must finalise normally."""
    script = tmp_path / "interrupted.py"
    script.write_text(
        "import threading, torch\n"
        "import afxest.cli as cli\n"
        "from afxest import interrupt\n"
        "running = threading.Event()\n"
        "def busy():\n"
        "    x = torch.randn(256, 256, requires_grad=True)\n"
        "    while True:\n"
        "        (x @ x).sin().sum().backward()\n"
        "        running.set()\n"
        "def run(argv):\n"
        "    threading.Thread(target=busy, daemon=True).start()\n"
        "    running.wait()\n"
        "    raise interrupt.Interrupted(2)\n"
        "cli._run = run\n"
        "cli.console()\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "afxest: interrupted (SIGINT)\n"


# --- rendering -------------------------------------------------------------------------------


def test_render_matches_pedalboard(work: Work, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(["render", work.dry, work.preset, "-o", work.out], capsys)
    assert rc == 0, err
    assert out == ""
    assert "wrote" in err and "Traceback" not in err
    info = soundfile.info(work.out)
    assert (info.subtype, info.samplerate, info.channels) == ("FLOAT", SR, 1)  # 32-bit float default
    y, _ = soundfile.read(work.out, dtype="float32", always_2d=True)
    expected = reference_render(PRESET, work.dry_audio, SR)
    np.testing.assert_allclose(y.T, expected, atol=1e-6)
    assert sorted(os.listdir(work.outdir)) == ["out.wav"]
    assert stat_mode(work.out) == 0o666 & ~current_umask()


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_render_keeps_stereo_and_the_dry_sample_rate(work: Work, capsys) -> None:
    # The preset was made at 22.05 kHz; its parameters are physical, so it renders at the dry's
    # 48 kHz, and the two channels stay two.
    dry = noise(2, 0.3, 48000, seed=3)
    dry[1] *= 0.5
    path = write_wav(work.indir / "stereo.wav", dry, 48000, "PCM_24")
    dry, _ = soundfile.read(path, dtype="float32", always_2d=True)
    rc, _, err = cli(["render", path, work.preset, "-o", work.out], capsys)
    assert rc == 0, err
    y, rate = soundfile.read(work.out, dtype="float32", always_2d=True)
    assert rate == 48000 and y.shape == dry.shape
    np.testing.assert_allclose(y.T, reference_render(PRESET, dry.T, 48000), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "bit_depth", "subtype"),
    [("o.wav", "float", "FLOAT"), ("o.wav", "24", "PCM_24"), ("o.wav", "16", "PCM_16"),
     ("o.flac", "24", "PCM_24"), ("o.flac", "16", "PCM_16")],
)
def test_render_bit_depths(work: Work, capsys, name: str, bit_depth: str, subtype: str) -> None:
    out = work.outdir / name
    rc, _, err = cli(["render", work.dry, work.preset, "-o", out, "--bit-depth", bit_depth], capsys)
    assert rc == 0, err
    assert soundfile.info(out).subtype == subtype
    assert "warning" not in err
    y, _ = soundfile.read(out, dtype="float32", always_2d=True)
    tolerance = {"float": 1e-6, "24": 2.0**-22, "16": 2.0**-14}[bit_depth]
    np.testing.assert_allclose(y.T, reference_render(PRESET, work.dry_audio, SR), atol=tolerance)
    assert sorted(os.listdir(work.outdir)) == [name]


def test_bit_depth_16_clips_with_a_warning(work: Work, capsys) -> None:
    dry = np.sin(2 * np.pi * 220 * np.arange(int(0.2 * SR)) / SR)[None].astype(np.float32) * 1.5
    path = write_wav(work.indir / "hot.wav", dry)
    preset = write_json(work.indir / "unity.json", {**PRESET, "effects": [{"type": "gain", "gain_db": 0.0}]})
    over = int(np.count_nonzero(np.abs(dry) > 1.0))
    assert over > 0
    rc, _, err = cli(["render", path, preset, "-o", work.out, "--bit-depth", "16"], capsys)
    assert rc == 0, err
    text = " ".join(err.split())
    assert f"warning: {over} samples beyond full scale were clipped" in text
    assert "--bit-depth float" in text
    y, _ = soundfile.read(work.out, dtype="float32", always_2d=True)
    assert soundfile.info(work.out).subtype == "PCM_16"
    assert np.max(np.abs(y)) <= 1.0
    np.testing.assert_allclose(y.T, np.clip(dry, -1, 1), atol=2.0**-14)  # clipped, not wrapped
    # while the float default keeps the overs, with no warning
    rc, _, err = cli(["render", path, preset, "-o", work.outdir / "float.wav"], capsys)
    assert rc == 0 and "warning" not in err
    np.testing.assert_array_equal(soundfile.read(work.outdir / "float.wav", dtype="float32")[0], dry[0])


def test_force_replaces_an_existing_output(work: Work, capsys) -> None:
    work.out.write_bytes(b"an older take")
    before = snapshot(work.root)
    rc, _, err = cli(["render", work.dry, work.preset, "-o", work.out], capsys)
    assert rc == 2 and "already exists" in err
    assert work.out.read_bytes() == b"an older take"
    assert snapshot(work.root) == before
    rc, _, err = cli(["render", work.dry, work.preset, "-o", work.out, "--force"], capsys)
    assert rc == 0, err
    y, _ = soundfile.read(work.out, dtype="float32", always_2d=True)
    np.testing.assert_allclose(y.T, reference_render(PRESET, work.dry_audio, SR), atol=1e-6)
    assert sorted(os.listdir(work.outdir)) == ["out.wav"]  # replaced in place, no temporary left


def estimate_doc(gains: list[float]) -> dict[str, Any]:
    """A hand-made afxest-estimate/1 document whose rank-k candidate is a gain of gains[k-1]."""
    return {
        "format": "afxest-estimate/1",
        "task": "eq",
        "model": {"name": "hand-made", "sha256": "0" * 64},
        "wet": "wet.wav",
        "dry": "dry.wav",
        "sample_rate": SR,
        "ranked_by": "loss",
        "entropy_bits_per_dim": None,
        "candidates": [
            {
                "rank": rank,
                "loss": 0.1 * rank,
                "log_prob": None,
                "preset": {"format": "afxest-preset/1", "task": "eq", "sample_rate": SR,
                           "effects": [{"type": "gain", "gain_db": g}], "source": None},
                "audio": None,
            }
            for rank, g in reversed(list(enumerate(gains, start=1)))  # stored out of order
        ],
        "summary": {"best": 1},
    }


def test_candidate_renders_that_rank(work: Work, capsys) -> None:
    est = write_json(work.indir / "estimate.json", estimate_doc([-6.0, 4.0, -1.0]))
    for rank, gain in [(2, 4.0), (1, -6.0)]:
        out = work.outdir / f"rank{rank}.wav"
        args = ["render", work.dry, est, "-o", out] + (["--candidate", str(rank)] if rank != 1 else [])
        rc, _, err = cli(args, capsys)
        assert rc == 0, err
        y, _ = soundfile.read(out, dtype="float32", always_2d=True)
        np.testing.assert_allclose(y.T, work.dry_audio * 10 ** (gain / 20), rtol=1e-5, atol=1e-7)


def fm_closed_form(p: dict[str, float], frames: int, sample_rate: float) -> np.ndarray:
    t = np.arange(frames) / sample_rate
    fc = p["carrier_hz"]
    return p["amplitude"] * np.sin(2 * np.pi * fc * t + p["modulation_index"] * np.sin(2 * np.pi * p["frequency_ratio"] * fc * t))


def test_source_preset_renders_without_dry(work: Work, capsys) -> None:
    doc = json.loads((EXAMPLES / "fm.json").read_text())
    rc, _, err = cli(["render", EXAMPLES / "fm.json", "-o", work.out], capsys)
    assert rc == 0, err
    y, rate = soundfile.read(work.out, dtype="float64", always_2d=True)
    src = doc["source"]
    assert rate == doc["sample_rate"] and y.shape[1] == 1
    assert abs(y.shape[0] - src["duration_s"] * rate) <= 1
    np.testing.assert_allclose(y[:, 0], fm_closed_form(src, y.shape[0], rate), atol=2e-6)
    assert sorted(os.listdir(work.outdir)) == ["out.wav"]


def test_source_preset_with_effects(work: Work, capsys) -> None:
    src = {"type": "fm", "carrier_hz": 220.0, "amplitude": 0.8, "modulation_index": 1.5,
           "frequency_ratio": 0.5, "duration_s": 0.2}
    doc = {"format": "afxest-preset/1", "task": "fm", "sample_rate": 16000, "source": src,
           "effects": [{"type": "gain", "gain_db": -6.0}, {"type": "clipping", "threshold_db": -12.0}]}
    preset = write_json(work.indir / "synth.json", doc)
    rc, _, err = cli(["render", preset, "-o", work.outdir / "synth.flac", "--bit-depth", "24"], capsys)
    assert rc == 0, err
    y, rate = soundfile.read(work.outdir / "synth.flac", dtype="float64", always_2d=True)
    assert rate == 16000 and y.shape == (3200, 1)
    dry = fm_closed_form(src, 3200, 16000)[None].astype(np.float32)
    np.testing.assert_allclose(y.T, reference_render(doc, dry, 16000), atol=2.0**-22)


def test_ddsp_engine_agrees_with_pedalboard(work: Work, capsys) -> None:
    # Filters, gain and clipping (pedalboard's shelves and peak are exact RBJ biquads).
    doc = {**PRESET, "effects": [e for e in PRESET["effects"] if e["type"] != "compressor"]}
    preset = write_json(work.indir / "lti.json", doc)
    dry = noise(2, 0.5, seed=7)
    path = write_wav(work.indir / "stereo.wav", dry)
    rc, _, err = cli(["render", path, preset, "-o", work.out, "--engine", "ddsp"], capsys)
    assert rc == 0, err
    assert "ddsp engine" in " ".join(err.split())
    y, _ = soundfile.read(work.out, dtype="float32", always_2d=True)
    ref = reference_render(doc, dry, SR)
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((y.T - ref) ** 2.0))
    assert snr > 60.0  # measured 99 dB


@pytest.mark.parametrize("channels", [1, 2])
def test_delay_and_reverb_render_by_both_engines_as_pedalboard(work: Work, capsys, channels: int) -> None:
    doc = {**PRESET, "sample_rate": 44100, "effects": [
        {"type": "peak", "cutoff_frequency_hz": 900.0, "gain_db": 3.0, "q": 1.0},
        {"type": "delay", "delay_seconds": 0.0731, "feedback": 0.45, "mix": 0.35},
        {"type": "reverb", "room_size": 0.8, "damping": 0.3, "wet_level": 0.3, "dry_level": 0.8, "width": 0.9},
    ]}
    preset = write_json(work.indir / "time.json", doc)
    dry = noise(channels, 0.6, 44100, seed=8)
    path = write_wav(work.indir / "dry.wav", dry, 44100)
    ref = reference_render(doc, dry, 44100)
    for engine in ("pedalboard", "ddsp"):
        rc, _, err = cli(["render", path, preset, "-o", work.out, "--engine", engine, "--force"], capsys)
        assert rc == 0, err
        y, sr = soundfile.read(work.out, dtype="float32", always_2d=True)
        assert sr == 44100 and y.shape == (dry.shape[1], channels)
        if engine == "pedalboard":
            np.testing.assert_array_equal(y.T, ref)
        else:
            assert snr_db(ref, y.T) > 60.0  # the peak's float32 rounding; delay and reverb are exact


def test_engine_pedalboard_explicit(work: Work, capsys) -> None:
    rc, _, err = cli(["render", work.dry, work.preset, "-o", work.out, "--engine", "pedalboard"], capsys)
    assert rc == 0, err
    assert "pedalboard engine" in " ".join(err.split())
    y, _ = soundfile.read(work.out, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(y.T, reference_render(PRESET, work.dry_audio, SR))


# --- stderr hygiene: known bugs --------------------------------------------------------------


def test_summary_prints_paths_literally(work: Work, capsys) -> None:
    out = work.outdir / "mix[red]final.wav"
    rc, _, err = cli(["render", work.dry, work.preset, "-o", out], capsys)
    assert rc == 0
    assert str(out) in err


def test_markup_like_path_does_not_fail_after_writing(work: Work, capsys) -> None:
    (work.outdir / "take[").mkdir()
    out = work.outdir / "take[" / "b]final.wav"  # the path's text contains '[/b]'
    rc, _, err = cli(["render", work.dry, work.preset, "-o", out], capsys)
    assert out.exists()
    assert rc == 0, err


def test_messages_are_not_wrapped(work: Work, capsys) -> None:
    folder = work.outdir.joinpath(*["a_long_folder_name_" * 8] * 3)  # wider than any terminal
    folder.mkdir(parents=True)
    out = folder / ("long_name_" * 20 + ".wav")
    hot = write_wav(work.indir / "hot.wav", work.dry_audio * 10)
    unity = write_json(work.indir / "unity.json", {**PRESET, "effects": [{"type": "gain", "gain_db": 0.0}]})
    rc, _, err = cli(["render", hot, unity, "-o", out, "--bit-depth", "16"], capsys)
    assert rc == 0, err
    lines = err_lines(err)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"wrote {out} (")
    assert lines[1].startswith("warning:") and lines[1].endswith("to keep them")


def test_long_output_path_is_written(work: Work, capsys) -> None:
    """A 1010-character path whose components are under 255 bytes is valid on Linux (paths up
    to 4096): it is written like any other, and its temporary name fits as well."""
    folder = work.outdir.joinpath(*["f" * 200] * 4)
    folder.mkdir(parents=True)
    out = folder / ("n" * (1010 - len(str(folder)) - 5) + ".wav")
    assert len(str(out)) == 1010 and len(out.name) < 200  # valid: components < 255, path < 4096
    rc, _, err = cli(["render", work.dry, work.preset, "-o", out], capsys)
    assert rc == 0, err
    assert err_lines(err)[-1].startswith(f"wrote {out} (")
    assert sorted(p.name for p in folder.iterdir()) == [out.name]  # no temporary file left
    y, rate = soundfile.read(out, dtype="float32", always_2d=True)
    assert rate == SR
    np.testing.assert_allclose(y.T, reference_render(PRESET, work.dry_audio, SR), atol=1e-6)


# --- installed entry points (subprocesses) ---------------------------------------------------


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AFXEST_DEBUG"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def console_script() -> str:
    path = Path(sys.executable).parent / "afxest"
    assert path.exists(), f"console script not installed next to {sys.executable}"
    return str(path)


def test_console_script_version(tmp_path: Path) -> None:
    result = run([console_script(), "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"afxest {afxest.__version__}\n"
    assert result.stderr == ""


def test_python_m_afxest_version(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "afxest", "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"afxest {afxest.__version__}\n"


@pytest.mark.parametrize("given, seen", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_unless_the_user_says_otherwise(tmp_path: Path, given, seen) -> None:
    """OpenMP reads its wait policy when torch loads it: the command line sets PASSIVE before
    torch is imported (importing the CLI does not import torch), and keeps a user's own."""
    code = (
        "import os, sys, contextlib, io\n"
        "import afxest.cli\n"
        "before = 'torch' in sys.modules\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    afxest.cli.main(['--version'])\n"
        "print(before, os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", seen]


def test_console_script_renders_the_bundled_example(tmp_path: Path) -> None:
    out = tmp_path / "master.wav"
    result = run([console_script(), "render", str(EXAMPLES / "dry.flac"), str(EXAMPLES / "master.json"), "-o", "master.wav"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    preset = json.loads((EXAMPLES / "master.json").read_text())
    dry, rate = soundfile.read(EXAMPLES / "dry.flac", dtype="float32", always_2d=True)
    y, out_rate = soundfile.read(out, dtype="float32", always_2d=True)
    assert out_rate == rate and y.shape == dry.shape
    assert soundfile.info(out).subtype == "FLOAT"
    np.testing.assert_allclose(y.T, reference_render(preset, dry.T, rate), atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["master.wav"]
    # and a second run refuses to replace it: exit 2, one line, file untouched
    before = snapshot(tmp_path)
    again = run([console_script(), "render", str(EXAMPLES / "dry.flac"), str(EXAMPLES / "master.json"), "-o", "master.wav"], tmp_path)
    assert again.returncode == 2
    assert len(err_lines(again.stderr)) == 1 and "already exists" in again.stderr
    assert snapshot(tmp_path) == before
