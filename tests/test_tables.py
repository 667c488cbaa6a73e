"""The tables printed and written for people (afxest.tables), checked against literal text."""

from __future__ import annotations

import doctest
import io

from rich.console import Console

from afxest import catalogue, figures, tables
from afxest.catalogue import PROCESSORS, parameter_label
from afxest.evaluate import Evaluation
from afxest.tasks import TASKS


def _text(renderable, width: int = 100) -> str:
    """What a renderable prints on a plain terminal ``width`` columns wide (no trailing spaces)."""
    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def _candidate(rank: int, effects: list[dict], loss: float, log_prob: float | None, si_sdr: float | None, log_mel: float,
               **extra) -> dict:
    return {"rank": rank, "loss": loss, "log_prob": log_prob, "si_sdr": si_sdr, "log_mel": log_mel,
            "preset": {"source": None, "effects": effects}, **extra}


def test_doctests() -> None:
    for module in (tables, catalogue):  # catalogue: parameter_label
        result = doctest.testmod(module, raise_on_error=False)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_candidates_table_is_the_text_users_read() -> None:
    shelf = {"type": "high_shelf", "cutoff_frequency_hz": 1234.5678, "gain_db": -3.21, "q": 0.7071}
    document = {
        "wet": "song.wav", "model": {"name": "eq"}, "task": "eq", "analysis": {"estimator": "posterior"},
        "ranked_by": "log_mel", "baseline": {"loss": 2.5, "si_sdr": 3.0, "log_mel": 2.5},
        "summary": {"0.high_shelf.cutoff_frequency_hz": {}, "0.high_shelf.gain_db": {}},  # q fixed: no column
        "candidates": [
            _candidate(1, [shelf], 0.1234567, -3.14159, 12.3456, 0.98765, refinement={"proposal": "draw 2", "loss_before": 0.5}),
            _candidate(2, [shelf], 0.25, None, None, 1.5),
            _candidate(3, [shelf], 0.3, -4.0, 9.0, 2.0),
        ],
    }
    assert _text(tables.candidates_table(document, limit=2)) == "\n".join([
        "song.wav: 3 candidates from model eq (eq, posterior), ranked by log_mel",
        "the dry itself (baseline): loss 2.5, SI-SDR 3.00 dB, log-mel 2.5",
        "                                                                   HS0    HS0",
        "rank  from               loss  before  SI-SDR dB  log-mel  log p  f Hz   g dB",
        "─" * 77,
        "   1  search (draw 2)  0.1235     0.5      12.35   0.9877  -3.14  1235  -3.21",
        "   2  draw               0.25       -          -      1.5      -  1235  -3.21",
        "                     ... and 1 more in the estimate file",
    ])


def test_many_parameters_are_listed_one_row_each() -> None:
    effects = [
        {"type": "low_shelf", "cutoff_frequency_hz": 100.0, "gain_db": 1.0, "q": 0.7},
        {"type": "peak", "cutoff_frequency_hz": 500.0, "gain_db": 2.0, "q": 1.0},
        {"type": "compressor", "threshold_db": -20.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 100.0},
    ]
    document = {"wet": "mix.wav", "model": {"name": "m"}, "task": "master", "ranked_by": None,
                "candidates": [_candidate(1, effects, 0.5, -1.0, 20.0, 0.25)]}
    assert _text(tables.candidates_table(document)) == "\n".join([
        "mix.wav: 1",  # the title wraps to the table's width
        "candidate from",
        "model m (master,",
        "?), ranked by",
        "nothing (one point",
        "estimate)",
        "rank              1",
        "─" * 19,
        "loss            0.5",
        "SI-SDR dB     20.00",
        "log-mel        0.25",
        "log p         -1.00",
        "LS0 f Hz        100",
        "LS0 g dB          1",
        "LS0 Q           0.7",
        "PK1 f Hz        500",
        "PK1 g dB          2",
        "PK1 Q             1",
        "comp2 thr dB    -20",
        "comp2 ratio       4",
        "comp2 att ms      5",
        "comp2 rel ms    100",
    ])


def test_every_parameter_has_one_short_label_in_tables_and_figures() -> None:
    expected = {
        "low_shelf": ["LS0 f Hz", "LS0 g dB", "LS0 Q"], "high_shelf": ["HS0 f Hz", "HS0 g dB", "HS0 Q"],
        "peak": ["PK0 f Hz", "PK0 g dB", "PK0 Q"],
        "compressor": ["comp0 thr dB", "comp0 ratio", "comp0 att ms", "comp0 rel ms"],
        "gain": ["gain0 g dB"], "clipping": ["clip0 thr dB"], "limiter": ["lim0 thr dB", "lim0 rel ms"], "convolution": ["conv0 lat samples"],
        "delay": ["dly0 t s", "dly0 fb", "dly0 mix"],
        "reverb": ["rev0 room", "rev0 damp", "rev0 wet", "rev0 dry", "rev0 width"],
        "fm": ["fm0 f_c Hz", "fm0 amp", "fm0 I_m", "fm0 f_m/f_c", "fm0 dur s"],
    }
    assert {kind: [parameter_label(kind, 0, p.name) for p in spec.params] for kind, spec in PROCESSORS.items()} == expected
    # the figures show normalised values: the same labels, numbered from 0 as Space.names, no unit
    master = TASKS["master"]
    assert figures.labels(master) == [
        "LS0 f", "LS0 g", "LS0 Q", "PK1 f", "PK1 g", "PK1 Q", "PK2 f", "PK2 g", "PK2 Q", "PK3 f", "PK3 g", "PK3 Q",
        "HS4 f", "HS4 g", "HS4 Q", "comp5 thr", "comp5 ratio", "comp5 att", "comp5 rel", "gain6 g", "clip7 thr"]


def test_models_table_is_the_text_users_read() -> None:
    rows = [
        {"name": "eq", "origin": "bundled", "task": "eq", "estimator": "posterior", "flows": 1, "size_bytes": 1234567,
         "step": 100, "metrics": {"val_audio": 0.123456, "val_entropy_bits": -1.5}},
        {"name": "det", "origin": "user", "task": "fm", "estimator": "deterministic", "flows": None, "size_bytes": 99999,
         "step": None, "metrics": {}},
        {"name": "bad", "origin": "user", "size_bytes": 10, "error": "boom"},
    ]
    assert _text(tables.models_table(rows)) == "\n".join([
        "afxest models",
        "name   origin    task         estimator           size   step   val_audio   val_entropy_bits",
        "─" * 92,
        "eq     bundled   eq           posterior (T=1)   1.2 MB    100      0.1235            -1.5000",
        "det    user      fm           deterministic     0.1 MB      -           -                  -",
        "bad    user      unreadable                     0.0 MB",
    ])


def test_report_tables_are_markdown_beside_the_papers_numbers() -> None:
    result = Evaluation(task="fm", kind="deterministic", items=2, samples=1, metrics=["sot", "si_sdr"], source="synth")
    result.expectation = {"sot": (1.0, 0.125), "si_sdr": (30.0, 1.0)}
    result.uniform_mean = {"sot": (50.0, 2.0), "si_sdr": (2.0, 0.5)}
    assert tables.markdown(tables.main_table(result)) == (
        "|  | Entropy (bits/dim) | SOT | SI-SDR |\n"
        "|---|---|---|---|\n"
        "| Deter. (ours) | - | 1.000 ± 0.125 | 30.000 ± 1.000 |\n"
        "| Uniform, 1 (ours) | - | 50.000 ± 2.000 | 2.000 ± 0.500 |\n"
        "| Deter. (paper) | - | 0.39 | 32.52 |\n"
        "| Infer. T=1 (paper) | -2.43 | 2.12 | 15.2 |\n"
        "| Rand. (paper) | - | 51.6 | 2.13 |\n"
    )
    posterior = Evaluation(task="fm", kind="posterior", items=2, samples=1, metrics=["sot", "si_sdr"], source="synth")
    posterior.expectation = result.expectation
    result.best_of = posterior.best_of = {1: {"si_sdr": (30.0, 1.0)}}
    rows = tables.comparison_rows([("det.pt", result), ("post.pt", posterior)])
    assert [row[:2] for row in rows[1:]] == [["`det.pt`", "deterministic (audio loss)"], ["`post.pt`", "posterior"],
                                             ["Uniform", "-"]]
    assert _text(tables.rich_table([["", "SOT"], ["ours", "1.000 ± 0.125"]], "fm")) == "\n".join([
        "           fm",
        "┏━━━━━━┳━━━━━━━━━━━━━━━┓",
        "┃      ┃ SOT           ┃",
        "┡━━━━━━╇━━━━━━━━━━━━━━━┩",
        "│ ours │ 1.000 ± 0.125 │",
        "└──────┴───────────────┘",
    ])


def test_a_corrected_candidate_names_its_correction_in_the_table() -> None:
    """The "from" cell of a corrected candidate says what the correction refitted of the task's
    chain (a compressor's time constants) and added after it: the equaliser's band count and
    gain range (or the FIR's length), and the limiter's threshold."""
    effects = [{"type": "high_shelf", "cutoff_frequency_hz": 2000.0, "gain_db": 3.0, "q": 0.7},
               {"type": "peak", "cutoff_frequency_hz": 100.0, "gain_db": -1.0, "q": 4.0},
               {"type": "peak", "cutoff_frequency_hz": 112.2, "gain_db": 2.0, "q": 4.0},
               {"type": "gain", "gain_db": 0.5}, {"type": "limiter", "threshold_db": -3.0, "release_ms": 50.0},
               {"type": "gain", "gain_db": -1.0}]
    candidate = {"preset": {"effects": effects}, "refinement": {"proposal": "analysis"},
                 "correction": {"effects_from": 1}}
    assert tables._origin(candidate) == "search (analysis) + correction: EQ 2 bands -1.0..+2.0 dB, limiter -3 dB"
    assert tables._origin({"preset": {"effects": effects[:1]}}) == "draw"
    compressor = {"type": "compressor", "threshold_db": -20.0, "ratio": 2.0, "attack_ms": 120.0, "release_ms": 1850.0}
    refitted = {"preset": {"effects": [compressor, effects[-1]]}, "correction": {"effects_from": 1, "task_effects": {
        "0": dict(compressor, attack_ms=50.0, release_ms=500.0)}}}
    assert tables._origin(refitted) == "draw + correction: compressor refitted (attack 120 ms, release 1.85 s)"
    fir = {"type": "convolution", "latency_samples": 2, "impulse_response": [0.1, 0.2, 1.0, 0.2, 0.1]}
    with_fir = {"preset": {"effects": [effects[0], fir, effects[3]]}, "correction": {"effects_from": 1}}
    assert tables._origin(with_fir) == "draw + correction: FIR EQ 5 taps"


def test_eq_intervals_of_the_shelves_together_are_a_caption() -> None:
    """eq's intervals are of the two shelves together (summed gain, shared cutoff): no interval
    row under the per-shelf columns, a caption giving each with its unit, ``!`` after an
    undetermined one."""
    shelves = [{"type": "high_shelf", "cutoff_frequency_hz": 1000.0, "gain_db": g, "q": 0.7} for g in (3.0, 1.0)]
    intervals = {"credible": 0.9, "draws": 500, "calibrated": True, "undetermined_above": 0.5,
                 "undetermined": ["0.high_shelf.q"], "quantities": {
                     "0.high_shelf.cutoff_frequency_hz": {"low": 900.0, "high": 1200.0, "unit": "Hz", "undetermined": False},
                     "0.high_shelf.gain_db": {"low": 3.5, "high": 4.5, "unit": "dB", "undetermined": False},
                     "0.high_shelf.q": {"low": 0.2, "high": 2.9, "unit": "", "undetermined": True}}}
    names = [f"{i}.high_shelf.{p}" for i in range(2) for p in ("cutoff_frequency_hz", "gain_db", "q")]
    document = {"wet": "s.wav", "model": {"name": "eq"}, "task": "eq", "analysis": {"estimator": "posterior"},
                "ranked_by": "log_prob", "summary": {n: {} for n in names}, "intervals": intervals,
                "candidates": [_candidate(1, shelves, None, -1.0, None, None)]}
    text = _text(tables.candidates_table(document), width=200)
    assert "interval" not in text.split("90 %")[0] and text.count("90 %") == 1  # no interval row
    flat = " ".join(text.split())
    assert flat.endswith(
        "90 % interval of what the wet determines (gains summed over the processors, the rest their |gain|-weighted "
        "means): HS f Hz 900..1200; HS g dB 3.5..4.5; HS Q 0.2..2.9 ! ! undetermined by the wet (interval wider "
        "than 50 % of the range): HS Q"), flat


def test_intervals_stand_beside_the_candidates_and_undetermined_ones_are_named() -> None:
    """eq (columns): a row of each parameter's interval, ``!`` after an undetermined one and a
    caption naming it; master (rows): a last column of the intervals."""
    shelf = {"type": "high_shelf", "cutoff_frequency_hz": 1000.0, "gain_db": 3.0, "q": 0.7}
    intervals = {"credible": 0.9, "draws": 1000, "calibrated": False, "undetermined_above": 0.5, "undetermined": [
        "0.high_shelf.cutoff_frequency_hz"], "parameters": {
        "0.high_shelf.cutoff_frequency_hz": {"low": 500.0, "high": 2000.0, "undetermined": True},
        "0.high_shelf.gain_db": {"low": 2.5, "high": 3.5, "undetermined": False}}}
    document = {"wet": "s.wav", "model": {"name": "eq"}, "task": "eq", "analysis": {"estimator": "posterior"},
                "ranked_by": "log_prob", "summary": {"0.high_shelf.cutoff_frequency_hz": {}, "0.high_shelf.gain_db": {}},
                "intervals": intervals, "candidates": [_candidate(1, [shelf], None, -1.0, None, None)]}
    assert _text(tables.candidates_table(document), width=120) == "\n".join([
        "s.wav: 1 candidate from model eq (eq, posterior), ranked by",  # title and caption wrap to the table
        "log_prob",
        "                                                   HS0       HS0",
        "                        rank  loss  log p         f Hz      g dB",
        "─" * 64,
        "                           1     -  -1.00         1000         3",
        "90 % interval (uncalibrated)               500..2000 !  2.5..3.5",
        "   ! undetermined by the wet (interval wider than 50 % of the",
        "                        range): HS0 f Hz",
    ])
    effects = [{"type": "peak", "cutoff_frequency_hz": 500.0 + k, "gain_db": 2.0, "q": 1.0} for k in range(3)]
    names = [f"{i}.peak.{p}" for i in range(3) for p in ("cutoff_frequency_hz", "gain_db", "q")]
    intervals = {"credible": 0.9, "draws": 1000, "calibrated": True, "undetermined_above": 0.5, "undetermined": [],
                 "parameters": {n: {"low": 1.0, "high": 2.0, "undetermined": False} for n in names}}
    document = {"wet": "m.wav", "model": {"name": "m"}, "task": "master", "ranked_by": "log_prob",
                "summary": {n: {} for n in names}, "intervals": intervals,
                "candidates": [_candidate(1, effects, None, -1.0, None, None)]}
    lines = _text(tables.candidates_table(document), width=120).splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("rank"))  # below the wrapped title
    assert lines[head].split() == ["rank", "1", "90", "%", "interval"]
    assert lines[head + 4].split() == ["PK0", "f", "Hz", "500", "1..2"] and len(lines) == head + 4 + len(names)
