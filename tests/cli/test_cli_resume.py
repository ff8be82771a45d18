"""Through the command line, as a user runs it: ``--seed`` decides everything, and a run killed
(SIGKILL) at any moment and started again with ``--resume`` ends with the very checkpoint of a run
never interrupted: between steps, during a checkpoint write, twice in a row; SimCLR and MAE.

Each run is a ``python -m coursekit pretrain`` subprocess. ``COURSEKIT_STOP_AFTER_STEP=k`` makes
it stop itself (SIGSTOP) after step k and its checkpoint; the test then kills it there, or lets it
continue into the next checkpoint write and kills it in the middle of that write: the write's
temporary file (``.checkpoint.pt.tmp<pid>``) is made a named pipe beforehand, so the child blocks
in the write until the test has read part of it, and is killed with the write half done.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coursekit.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP") or not hasattr(os, "mkfifo"),
                                reason="needs POSIX signals and named pipes")

# 24 images, batch 8: 3 steps an epoch, 6 steps in all, a checkpoint after every step.
TINY = ["--dataset", "shapes", "--epochs", "2", "--num-images", "24", "--num-test", "16", "--batch-size", "8",
        "--profile", "smoke", "--device", "cpu", "--checkpoint-every", "1", "--seed", "3"]
METHODS = {"simclr": ["--method", "simclr", "--width", "4"],
           "mae": ["--method", "mae", "--patch-size", "8"]}
TIMEOUT_S = 300
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COURSEKIT_STOP_AFTER_STEP": ""}


def start(method: str, folder: Path, resume: bool = False, stop_after: int | None = None) -> subprocess.Popen:
    """Start ``coursekit pretrain`` in a subprocess; its output goes to files in ``folder``'s parent."""
    command = [sys.executable, "-m", "coursekit", "pretrain", *METHODS[method], *TINY, "--checkpoint-dir", str(folder)]
    env = {**ENV, "COURSEKIT_STOP_AFTER_STEP": "" if stop_after is None else str(stop_after)}
    log = folder.parent / f"{folder.name}-{time.monotonic_ns()}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command + (["--resume"] if resume else []), env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    process.log = log
    return process


def finish(process: subprocess.Popen) -> None:
    assert process.wait(timeout=TIMEOUT_S) == 0, process.log.read_text()[-3000:]


def wait_until_stopped(process: subprocess.Popen) -> None:
    """Block until the child has stopped itself (COURSEKIT_STOP_AFTER_STEP)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        pid, status = os.waitpid(process.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            return
        assert not pid, f"the run ended before it stopped: {process.log.read_text()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError("the run did not stop in time")


def kill_between_steps(method: str, folder: Path, after_step: int, resume: bool) -> None:
    """Run until step ``after_step`` is done and checkpointed, then SIGKILL."""
    process = start(method, folder, resume=resume, stop_after=after_step)
    wait_until_stopped(process)
    process.send_signal(signal.SIGKILL)
    process.wait()


def kill_during_write(method: str, folder: Path, after_step: int, resume: bool) -> None:
    """Run until step ``after_step`` is done, then SIGKILL the process in the middle of writing
    the checkpoint of step ``after_step + 1``."""
    process = start(method, folder, resume=resume, stop_after=after_step)
    wait_until_stopped(process)
    pipe = folder / f".checkpoint.pt.tmp{process.pid}"  # the name save_checkpoint writes to first
    os.mkfifo(pipe)
    process.send_signal(signal.SIGCONT)

    def give_up(signum, frame):
        raise TimeoutError("the run never started writing its checkpoint")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(TIMEOUT_S)
    try:
        with open(pipe, "rb") as reader:  # blocks until the child opens the file for writing
            assert len(reader.read(4096)) > 0  # the child is now inside file.write(...)
            process.send_signal(signal.SIGKILL)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    process.wait()
    assert pipe.exists()  # the killed write's temporary file is left behind...


def assert_same(a, b, where: str = "checkpoint") -> None:
    """Every tensor equal (torch.equal), every other value equal, except measured throughputs."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            if key != "images_per_sec":  # wall-clock measurement, not a result
                assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def final_state(folder: Path) -> dict:
    state = load_checkpoint(folder / "checkpoint.pt")
    assert state["finished"] and state["step"] == 6
    return state


def test_same_command_same_checkpoint_and_killed_twice_resumes_exactly(tmp_path):
    """SimCLR: two identical commands agree bit for bit; a run killed between steps 2 and 3, then
    killed again while writing the checkpoint of step 4, and resumed, ends exactly as they do."""
    first, second = start("simclr", tmp_path / "first"), start("simclr", tmp_path / "second")
    killed = tmp_path / "killed"
    kill_between_steps("simclr", killed, after_step=2, resume=False)
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == 2
    kill_during_write("simclr", killed, after_step=3, resume=True)
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == 3  # the half-written one did not replace it
    finish(start("simclr", killed, resume=True))
    finish(first)
    finish(second)

    reference = final_state(tmp_path / "first")
    assert_same(final_state(tmp_path / "second"), reference)  # the seed decides the initial weights too
    assert_same(final_state(killed), reference)
    assert sorted(p.name for p in killed.iterdir()) == ["checkpoint.pt", "history.json"]  # ...and removed


def test_mae_killed_during_a_checkpoint_write_resumes_exactly(tmp_path):
    reference = start("mae", tmp_path / "reference")
    killed = tmp_path / "killed"
    kill_during_write("mae", killed, after_step=1, resume=False)
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == 1
    finish(start("mae", killed, resume=True))
    finish(reference)
    assert_same(final_state(killed), final_state(tmp_path / "reference"))
