"""The ``afxest`` command line: a thin Typer layer over the library.

Conventions: results go to files (or stdout with ``--json``), messages to stderr; bad usage or
bad input exits with code 2 and one line on stderr, an internal failure with code 1.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from afxest import __version__
from afxest.errors import UserError

app = typer.Typer(
    name="afxest",
    help="Estimate the audio effects and synth presets that produced a recording.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True, highlight=False)


class Engine(str, Enum):
    auto = "auto"
    pedalboard = "pedalboard"
    ddsp = "ddsp"


class BitDepth(str, Enum):
    float = "float"
    pcm16 = "16"
    pcm24 = "24"


def _say(message: str, warning: bool = False) -> None:
    """One message line on stderr: never parsed as markup, never wrapped."""
    from rich.text import Text

    line = Text("warning: ", style="yellow") + Text(message) if warning else Text(message)
    err.print(line, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"afxest {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Estimate the audio effects and synth presets that produced a recording."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())


@app.command()
def render(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="[DRY] PRESET",
            help="Dry audio file and a preset (or estimate) JSON; a preset with a synth source needs no dry file.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output audio file (.wav or .flac).", show_default=False)],
    engine: Annotated[
        Engine, typer.Option(help="pedalboard: the real plugins; ddsp: afxest's torch processors; auto: pedalboard when every effect has a plugin.")
    ] = Engine.auto,
    candidate: Annotated[int, typer.Option(min=1, help="Rank of the candidate to render from an estimate file.")] = 1,
    bit_depth: Annotated[BitDepth, typer.Option(help="Output sample format.")] = BitDepth.float,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Apply a preset to a dry file (at the dry's own sample rate and channels), or synthesise it."""
    from afxest.render import render_file

    if len(inputs) > 2:
        raise UserError(f"render takes [DRY] PRESET, got {len(inputs)} paths")
    dry, preset = (None, inputs[0]) if len(inputs) == 1 else inputs
    report = render_file(
        dry=dry,
        preset_path=preset,
        out=out,
        engine=None if engine is Engine.auto else engine.value,
        candidate=candidate,
        bit_depth=bit_depth.value,
        force=force,
    )
    _say(report.summary())
    if report.clipped_samples:
        _say(
            f"{report.clipped_samples} samples beyond full scale were clipped by the "
            f"{bit_depth.value}-bit write; use --bit-depth float to keep them",
            warning=True,
        )


class Estimator(str, Enum):
    posterior = "posterior"
    deterministic = "deterministic"
    param = "param"


@app.command()
def train(
    task: Annotated[str, typer.Option(help="Task to train: eq or fm.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Run folder: best.pt, last.pt, metrics.jsonl, config.json.", show_default=False)],
    estimator: Annotated[Estimator, typer.Option(help="posterior (DAFx 2025), deterministic (ICASSP 2024) or param (parameter-loss baseline).")] = Estimator.posterior,
    flows: Annotated[int, typer.Option(min=1, help="Deep sigmoidal flow layers T (posterior).")] = 1,
    beta: Annotated[Optional[float], typer.Option(help="Entropy weight (posterior); default: the task's (0.1).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Folder of music (any format, rate, length); default: procedural audio.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after N optimiser steps.")] = None,
    epochs: Annotated[Optional[float], typer.Option(min=0, help="Stop after N epochs (eq: 40k items, fm: 100k items per epoch).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Global batch size; default: the task's (eq 16, fm 128).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate; default: the task's (eq 5e-5, fm 1e-4).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (data, parameters, initialisation).")] = 0,
    val_items: Annotated[int, typer.Option(min=1, help="Validation items (fixed for a seed).")] = 128,
    val_every: Annotated[int, typer.Option(min=1, help="Validate every N steps.")] = 200,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Write last.pt every N steps.")] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train an estimator (runs data-parallel under torchrun)."""
    from afxest.train import TrainConfig, enlarge_malloc_thresholds, train as run_training

    enlarge_malloc_thresholds()
    result = run_training(
        TrainConfig(
            task=task, out=str(out), estimator=estimator.value, flows=flows, beta=beta,
            data=None if data is None else str(data), max_steps=max_steps, epochs=epochs,
            batch_size=batch_size, lr=lr, device=device, seed=seed, val_items=val_items,
            val_every=val_every, checkpoint_every=checkpoint_every, resume=resume,
        ),
        log=_say,
        progress=progress and err.is_terminal,
    )
    best = "none" if result.best_objective is None else f"{result.best_objective:.4f} at step {result.best_step}"
    _say(f"done: {result.steps} steps; best validation objective {best}; run in {out}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and maps every failure to an exit code and one line."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="afxest", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # bad usage: unknown option, invalid choice, ...
        ctx = getattr(exc, "ctx", None)
        name = ctx.command_path if ctx is not None else "afxest"
        print(f"{name}: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("afxest: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"afxest: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("afxest: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        print(
            f"afxest: internal error: {exc.__class__.__name__}: {exc} "
            "(please report it; set AFXEST_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        import os

        if os.environ.get("AFXEST_DEBUG"):
            import traceback

            traceback.print_exc()
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
