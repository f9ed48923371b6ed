"""Crash survival, for real: training processes killed with SIGKILL and interrupted with SIGINT.

One `model_dir` is trained by a chain of processes (tests/crash_child.py), each
killed at another point: inside a device loop, inside a checkpoint write (when
TensorFlow's temporary files appear, and when the new checkpoint's index
appears), and between two loops. After every kill, every checkpoint the state
file lists must read back whole, and the next process must resume from the
latest of them. The last process trains to the end: its weights must equal,
bit for bit, those of an uninterrupted run (same seeds, same data).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TESTS

sys.path.insert(0, str(TESTS))
import crash_child  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]
TIMEOUT = 120


def start(model_dir: Path, out: Path, *args: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "stderr.txt", "w")  # noqa: SIM115 - closed with the process.
    return subprocess.Popen(
        [sys.executable, str(TESTS / "crash_child.py"), str(model_dir), str(out), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until(process: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the child ended (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.0002)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(TIMEOUT) == -signal.SIGKILL


def finish(process: subprocess.Popen, out: Path) -> None:
    code = process.wait(TIMEOUT)
    assert code == 0, (out / "stderr.txt").read_text()[-4000:]


def listed_checkpoints(model_dir: Path) -> list[str]:
    state = tf.train.get_checkpoint_state(str(model_dir))
    return [] if state is None else [os.path.basename(p) for p in state.all_model_checkpoint_paths]


def kill_point(model_dir: Path) -> str:
    """What a kill left in `model_dir`: a partial or an unrecorded checkpoint, or neither.

    (A process removes earlier leftovers at its first save.)
    """
    names = set(os.listdir(model_dir)) if model_dir.exists() else set()
    listed = set(listed_checkpoints(model_dir))
    unlisted = sorted(
        n for n in names if n.endswith(".index") and n[: -len(".index")] not in listed
    )
    temporary = sorted(n for n in names if "_temp" in n)
    if temporary and unlisted:
        return f"renamed {unlisted} with {temporary} still there, state file not updated"
    if temporary:
        return f"temporary files of an unfinished write {temporary}"
    if unlisted:
        return f"a written but unrecorded checkpoint {unlisted}"
    return "no partial checkpoint"


def assert_checkpoints_whole(model_dir: Path) -> int:
    """Reads every tensor of every listed checkpoint; returns the latest one's global step.

    TensorFlow lists a new checkpoint, deletes the ones beyond `max_to_keep`,
    then lists again: a kill in between leaves the oldest listed but deleted.
    Only those may be missing; every other listed checkpoint must read whole.
    """
    listed = listed_checkpoints(model_dir)
    present = [(model_dir / f"{name}.index").exists() for name in listed]
    assert present == sorted(present), listed  # missing ones are the oldest only
    for name in (n for n, here in zip(listed, present, strict=True) if here):
        reader = tf.train.load_checkpoint(str(model_dir / name))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest is None:
        return 0
    assert os.path.basename(latest) == listed[-1]
    return int(
        tf.train.load_checkpoint(latest).get_tensor("state/global_step/.ATTRIBUTES/VARIABLE_VALUE")
    )


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


def assert_equal_weights(actual, expected) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


@pytest.fixture(scope="module")
def uninterrupted() -> list[np.ndarray]:
    """The weights of a run that nothing interrupts."""
    return crash_child.train(None).model.get_weights()


class CrashPoint:
    """Where to kill a process: when `ready` says it is there; `hit` says if the kill landed.

    A kill that misses its point (the machine was slow to deliver it) is one more
    crash of the chain, and the point is tried again in the next process.
    """

    def __init__(self, name: str, args=(), ready=None, hit=None) -> None:
        self.name, self.args, self.ready, self.hit = name, args, ready, hit


def new_files(model_dir: Path, match) -> Callable:
    before = set(os.listdir(model_dir)) if model_dir.exists() else set()
    return lambda out: (
        lambda: model_dir.exists() and any(match(n) for n in set(os.listdir(model_dir)) - before)
    )


def test_killed_processes_resume_from_the_last_checkpoint_and_end_as_if_never_killed(
    tmp_path, uninterrupted
):
    model_dir = tmp_path / "run"
    points = [
        CrashPoint(
            "inside the device loop of the 4th loop",
            ("--mark-loop", "4"),
            ready=lambda out: (out / "loop-4").exists,
            hit=lambda out, left: not (out / "loop-4-done").exists(),
        ),
        CrashPoint(
            "inside a checkpoint write, when its temporary directory appears",
            ready=lambda out: new_files(model_dir, lambda n: n.endswith("_temp"))(out),
            hit=lambda out, left: left.startswith("temporary"),
        ),
        CrashPoint(
            "inside a checkpoint save, when its new index appears",
            ready=lambda out: new_files(model_dir, lambda n: n.endswith(".index"))(out),
        ),
        CrashPoint(
            "between two loops (in a hook)",
            ("--pause-loop", "4"),
            ready=lambda out: (out / "paused").exists,
        ),
    ]
    found, resumed_steps, attempts = [], [0], 0
    while points and attempts < 8:
        point = points[0]
        out = tmp_path / f"process-{attempts}"
        out.mkdir()
        ready = point.ready(out)
        process = start(model_dir, out, *point.args)
        wait_until(process, ready, point.name)
        kill(process)
        attempts += 1
        left = kill_point(model_dir)
        hit = point.hit is None or point.hit(out, left)
        found.append((point.name, "hit" if hit else "missed", left))
        if hit:
            points.pop(0)
        # Every listed checkpoint reads back whole; this process had resumed from the latest.
        resumed_steps.append(assert_checkpoints_whole(model_dir))
        started = json.loads((out / "start.json").read_text())
        assert started["global_step"] == resumed_steps[-2]
    assert not points, found
    out = tmp_path / "process-last"
    process = start(model_dir, out)
    finish(process, out)
    assert json.loads((out / "start.json").read_text())["global_step"] == resumed_steps[-1]
    assert resumed_steps == sorted(resumed_steps) and resumed_steps[-1] > 0
    assert_equal_weights(weights(out / "final.npz"), uninterrupted)
    assert assert_checkpoints_whole(model_dir) == crash_child.TOTAL_STEPS
    assert not [n for n in os.listdir(model_dir) if "_temp" in n]
    assert len(listed_checkpoints(model_dir)) <= 3
    print("\ncrash points:\n" + "\n".join(map(str, found)), "\nresumed at", resumed_steps)


def test_sigint_during_a_loop_ends_fit_with_every_hook_end_and_the_last_loops_weights(
    tmp_path, uninterrupted
):
    out = tmp_path / "out"
    process = start(tmp_path / "run", out, "--interrupt-test", "--mark-loop", "4")
    wait_until(process, (out / "loop-4").exists, "the 4th loop")
    process.send_signal(signal.SIGINT)
    finish(process, out)
    interrupted = json.loads((out / "interrupted.json").read_text())
    assert interrupted["end"] == "KeyboardInterrupt"  # The hook's `end` ran, seeing the error.
    # Loops of 10 steps: the signal lands in loop 4 (which completes: a device call
    # cannot stop halfway) or just before it starts.
    step = interrupted["global_step"]
    assert step in (30, 40), step
    reference = crash_child.train(None, max_steps=step).model.get_weights()
    assert_equal_weights(weights(out / "interrupted.npz"), reference)
    # The next fit in the same process works, and ends where an uninterrupted run ends.
    assert_equal_weights(weights(out / "final.npz"), uninterrupted)
