"""Training: run folder and checkpoints, every estimator on both tasks, learning, exact resume
after kill -9, and two-process data parallelism."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from afxest.cli import main
from afxest.errors import UserError
from afxest.tasks import TASKS
from afxest.checkpoints import load_checkpoint
from afxest.train import TrainConfig, train

QUICK = dict(val_items=4, val_every=2, checkpoint_every=1)


def quiet(_: str) -> None:
    pass


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_folder_and_weights_only_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(TrainConfig(task="eq", out=str(out), max_steps=2, batch_size=2, **QUICK), log=quiet)
    assert result.steps == 2
    assert {p.name for p in out.iterdir()} == {"best.pt", "last.pt", "metrics.jsonl", "config.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 5e-5 and config["beta"] == 0.1 and config["task_definition"]["name"] == "eq"
    last = torch.load(out / "last.pt", weights_only=True)  # plain tensors and containers only
    assert last["format"] == "afxest-checkpoint/1" and last["step"] == 2
    assert last["estimator"] == {"kind": "posterior", "flows": 1, "hidden": 8}
    assert last["task"] == TASKS["eq"].to_dict() and "afxest_version" in last and "training" in last
    entries = lines(out / "metrics.jsonl")
    assert [e["step"] for e in entries] == [1, 2]
    assert {"val_objective", "val_audio", "val_entropy_bits", "val_audio_input_baseline"} <= set(entries[1])
    assert entries[1]["val_entropy_bits"] <= 0  # bounded output: differential entropy <= 0 bits/dim


@pytest.mark.parametrize("task", ["eq", "fm"])
@pytest.mark.parametrize("estimator", ["posterior", "deterministic", "param"])
def test_every_estimator_trains_on_both_tasks(tmp_path: Path, task: str, estimator: str) -> None:
    out = tmp_path / "run"
    train(TrainConfig(task=task, out=str(out), estimator=estimator, max_steps=2, batch_size=2, **QUICK), log=quiet)
    entry = lines(out / "metrics.jsonl")[-1]
    assert math.isfinite(entry["loss"]) and math.isfinite(entry["val_objective"])
    if estimator == "param":
        assert entry["loss"] == pytest.approx(entry["param_mse"], rel=1e-6)
        assert "val_audio" in entry  # audio quality is reported for the baseline too
    elif estimator == "posterior":
        # Eq. 7: loss = E[audio] - beta H, H in nats = bits/dim * d * ln 2
        d = TASKS[task].model.dim
        expected = entry["audio"] - 0.1 * entry["entropy_bits"] * d * math.log(2)
        assert entry["loss"] == pytest.approx(expected, rel=1e-5)
        assert entry["loss"] > entry["audio"]  # H <= 0 on [0, 1]^d, so -beta H >= 0
    else:
        assert entry["loss"] == pytest.approx(entry["audio"], rel=1e-6)
    state = load_checkpoint(out / "best.pt")
    assert state["estimator"]["kind"] == estimator


def test_param_target_is_the_canonical_split_of_the_shelf() -> None:
    """eq: one shelf (f, g, Q) -> two shelves (f, g/2, Q) each (DAFx Sec. 4.1)."""
    task = TASKS["eq"]
    v = torch.tensor([[0.3, 0.9, 0.2]], dtype=torch.float64)
    f, g, q = 500 * 5**0.3, 40 * 0.9 - 20, 2.9 * 0.2 + 0.1
    (_, a), (_, b) = task.model.split(task.truth_to_model(v))
    for shelf in (a, b):
        assert shelf["cutoff_frequency_hz"].item() == pytest.approx(f)
        assert shelf["gain_db"].item() == pytest.approx(g / 2)
        assert shelf["q"].item() == pytest.approx(q)


def test_fm_param_estimator_learns(tmp_path: Path) -> None:
    """The optimisation loop learns: the parameter error on held-out sounds falls well below
    that of the initial network within 80 steps."""
    out = tmp_path / "run"
    train(
        TrainConfig(task="fm", out=str(out), estimator="param", max_steps=80, batch_size=32, lr=3e-3,
                    val_items=32, val_every=40, checkpoint_every=80),
        log=quiet,
    )
    first, *_, last = [e for e in lines(out / "metrics.jsonl") if "val_param_mse" in e]
    assert first["step"] == 40 and last["step"] == 80
    # targets are uniform on [0, 1]: the best constant guess (0.5) has a mean squared error of 1/12
    assert last["val_param_mse"] < 0.7 / 12, last
    assert last["val_param_mse"] < first["val_param_mse"]


def test_resume_after_kill_9_continues_exactly(tmp_path: Path, one_thread: None) -> None:
    """Every part on one thread, this process and the killed one: rounding depends on the
    thread count, which earlier tests change in this process (estimate runs short files on one
    thread), and the fm encoder's per-bin input norm amplifies a difference past the tolerance
    (reproduced: one thread here, two in the child, fails)."""
    args = ["--task", "fm", "--estimator", "posterior", "--max-steps", "14", "--batch-size", "8",
            "--val-items", "8", "--val-every", "7", "--checkpoint-every", "1", "--lr", "1e-3", "--no-progress"]
    # reference: an uninterrupted run
    assert main(["train", *args, "--out", str(tmp_path / "a")]) == 0
    # the same run, killed with SIGKILL mid-way, then resumed
    b = tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "afxest", "train", *args, "--out", str(b)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if (b / "last.pt").exists():
            try:
                step = torch.load(b / "last.pt", weights_only=True)["step"]
            except Exception:  # noqa: BLE001 - being written is impossible (atomic), but be safe
                step = 0
            if step >= 4:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    saved = torch.load(b / "last.pt", weights_only=True)["step"]
    assert 4 <= saved < 14
    assert main(["train", *args, "--out", str(b), "--resume"]) == 0
    # no step lost or repeated in the log, and the weights equal the uninterrupted run's
    assert [e["step"] for e in lines(b / "metrics.jsonl")] == list(range(1, 15))
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    wb = torch.load(b / "last.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_two_process_data_parallel_ranks_end_identical(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "afxest", "train", "--task", "fm", "--estimator", "deterministic", "--out", str(out),
           "--max-steps", "3", "--batch-size", "8", "--val-items", "4", "--val-every", "3", "--device", "cpu",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert r0["weights_sha256"] == r1["weights_sha256"]  # synchronised weights
    assert r0["first_batch_sha256"] != r1["first_batch_sha256"]  # but each rank its own data
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["training"]["world_size"] == 2 and state["step"] == 3


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> tuple[int, str]:
        rc = main(["train", *args])
        return rc, capsys.readouterr().err

    rc, err = run("--task", "nope", "--out", str(tmp_path / "x"), "--max-steps", "1")
    assert rc == 2 and "unknown task 'nope'" in err
    rc, err = run("--task", "eq", "--out", str(tmp_path / "x"), "--max-steps", "1", "--resume")
    assert rc == 2 and "nothing to resume" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "last.pt").write_bytes(b"")
    rc, err = run("--task", "eq", "--out", str(tmp_path / "full"), "--max-steps", "1")
    assert rc == 2 and "already holds a run" in err
    (tmp_path / "file").write_text("")
    rc, err = run("--task", "eq", "--out", str(tmp_path / "file"), "--max-steps", "1")
    assert rc == 2 and "is a file" in err
    rc, err = run("--task", "eq", "--out", str(tmp_path / "z"), "--max-steps", "1", "--batch-size", "1")
    assert rc == 2 and "batch norm needs at least 2" in err
    rc, err = run("--task", "eq", "--out", str(tmp_path / "y"), "--max-steps", "1", "--epochs", "1")
    assert rc == 2 and "not both" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_a_run_that_never_checkpointed_can_start_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"st')  # killed before its first checkpoint
    train(TrainConfig(task="fm", out=str(out), estimator="param", max_steps=1, batch_size=2, **QUICK), log=quiet)
    assert [e["step"] for e in lines(out / "metrics.jsonl")] == [1]
    assert json.loads((out / "config.json").read_text())["task"] == "fm"


def test_resume_refuses_changed_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--task", "fm", "--estimator", "param", "--out", str(tmp_path / "r"), "--batch-size", "4",
            "--val-items", "4", "--no-progress"]
    assert main([*args, "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main([*args, "--max-steps", "2", "--resume", "--lr", "0.5"]) == 2
    assert "different lr" in capsys.readouterr().err
    assert main([*args, "--max-steps", "2", "--resume"]) == 0


def test_init_copies_encoder_and_compatible_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--init: a param checkpoint warm-starts a deterministic model (same network) entirely and a
    posterior model's encoder only; another task's checkpoint is refused."""
    import hashlib

    from afxest.nn.estimator import Estimator, EstimatorConfig
    from afxest.train import initialise_from

    source = tmp_path / "param"
    train(TrainConfig(task="fm", out=str(source), estimator="param", max_steps=2, batch_size=4, lr=1e-2, **QUICK), log=quiet)
    saved = load_checkpoint(source / "last.pt")["model"]
    task = TASKS["fm"]

    deterministic = Estimator(task, EstimatorConfig(kind="deterministic"))
    initialise_from(deterministic, source / "last.pt", task, deterministic.config)
    for name, value in deterministic.state_dict().items():
        assert torch.equal(value, saved[name]), name

    torch.manual_seed(5)
    posterior = Estimator(task, EstimatorConfig(kind="posterior"))
    fresh_flows = {k: v.clone() for k, v in posterior.head.flows.state_dict().items()}
    message = initialise_from(posterior, source / "last.pt", task, posterior.config)
    assert "posterior head centred on its point estimate" in message
    for name, value in posterior.encoder.state_dict().items():
        assert torch.equal(value, saved[f"encoder.{name}"]), name
    for name, value in posterior.head.flows.state_dict().items():  # flows: their own (near-identity) start
        assert torch.equal(value, fresh_flows[name]), name
    # the posterior's draws spread around the point estimate sigmoid(W h + c) by about
    # sigma * z (1 - z) (the sigmoid's slope), the flows bending them only slightly
    wet = torch.randn(3, 1, task.clip_samples)
    posterior.eval()
    deterministic.eval()
    with torch.no_grad():
        point = deterministic.sample(wet, 1).z[:, 0]
        draws = posterior.sample(wet, 4000).z
    from afxest.train import INIT_SIGMA

    spread = INIT_SIGMA * point * (1 - point)
    assert torch.all((draws.median(dim=1).values - point).abs() <= 0.5 * spread + 1e-3)
    assert torch.allclose(draws.std(dim=1), spread, rtol=0.5, atol=1e-3)

    eq_run = tmp_path / "eq"
    train(TrainConfig(task="eq", out=str(eq_run), estimator="param", max_steps=1, batch_size=2, **QUICK), log=quiet)
    with pytest.raises(UserError, match="same task"):
        initialise_from(deterministic, eq_run / "last.pt", task, deterministic.config)

    args = ["train", "--task", "fm", "--estimator", "deterministic", "--batch-size", "4", "--val-items", "4",
            "--max-steps", "1", "--no-progress", "--init", str(source / "last.pt")]
    assert main([*args, "--out", str(tmp_path / "warm")]) == 0
    config = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert config["init_sha256"] == hashlib.sha256((source / "last.pt").read_bytes()).hexdigest()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "warm"), "--resume"]) == 2
    assert "--init starts a new run" in capsys.readouterr().err


def test_cosine_schedule_is_the_closed_form_and_is_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from afxest.train import learning_rate

    assert learning_rate(1e-3, "constant", 7, 10) == 1e-3
    for step, expected in [(0, 1e-3), (5, 5e-4), (10, 0.0), (2, 1e-3 * (1 + math.cos(math.pi * 0.2)) / 2)]:
        assert learning_rate(1e-3, "cosine", step, 10) == pytest.approx(expected, abs=1e-15)
    # applied: the optimiser state saved after the last of 4 steps used the rate of step 3
    out = tmp_path / "run"
    args = ["train", "--task", "fm", "--estimator", "param", "--out", str(out), "--batch-size", "4", "--val-items", "4",
            "--no-progress", "--schedule", "cosine", "--lr", "0.01"]
    assert main([*args, "--max-steps", "4"]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 3 / 4)) / 2)
    assert json.loads((out / "config.json").read_text())["schedule"] == "cosine"
    capsys.readouterr()
    # a cosine run's length is part of its schedule: resuming with another --max-steps is refused
    assert main([*args, "--max-steps", "8", "--resume"]) == 2
    assert "different total_steps" in capsys.readouterr().err


def test_runs_from_before_schedules_resume_as_constant(tmp_path: Path) -> None:
    out = tmp_path / "old"
    config = dict(task="fm", out=str(out), estimator="param", batch_size=4, **QUICK)
    train(TrainConfig(max_steps=1, **config), log=quiet)
    state = torch.load(out / "last.pt", weights_only=True)
    del state["training"]["schedule"]  # as written by afxest before --schedule existed
    torch.save(state, out / "last.pt")
    assert train(TrainConfig(max_steps=2, resume=True, **config), log=quiet).steps == 2


def test_validation_items_do_not_depend_on_the_training_seed(tmp_path: Path) -> None:
    """Two seeds train on different batches but validate on the same items (equal Input baseline,
    the dry/wet log-mel of the validation set) and the same set is not the first training batch."""
    lines = {}
    for seed in (0, 5):
        out = tmp_path / f"s{seed}"
        assert main(["train", "--task", "eq", "--estimator", "deterministic", "--out", str(out), "--max-steps", "1",
                     "--batch-size", "2", "--val-items", "3", "--val-every", "1", "--seed", str(seed),
                     "--no-progress"]) == 0
        lines[seed] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    base = [next(e["val_audio_input_baseline"] for e in lines[s] if "val_audio_input_baseline" in e) for s in (0, 5)]
    assert base[0] == base[1]
    assert lines[0][0]["loss"] != lines[5][0]["loss"]  # different training batches
