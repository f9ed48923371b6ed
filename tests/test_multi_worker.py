"""Worker processes on 127.0.0.1 under `MultiWorkerMirroredStrategy`.

The tests start copies of `multi_worker_main.py` with a `TF_CONFIG` that names
free local ports and wait for them (bounded): two workers' results against a
single-process run of plain Keras on the same weights; a worker that dies or is
stopped by a signal; a worker started alone, which must give up or stop, not hang.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TESTS, compile_args, copy_model, replicas, tiny_data, tiny_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.subprocess,
    pytest.mark.skipif(replicas() > 1, reason="runs in the one-device parent process"),
]

WORKERS = 2
TIMEOUT = 300  # seconds for a whole two-worker run (a bound on a loaded machine, not a timing)
STOPPED_WITHIN = 15  # seconds a signalled worker has to end (bounds, not timings)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_worker(
    tmp_path: Path, addresses: list[str], index: int, mode: str, timeout: float = 60
) -> subprocess.Popen:
    """Starts worker `index` of the cluster `addresses` running `mode`, its output piped."""
    config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    env = dict(
        os.environ,
        TF_CONFIG=json.dumps(config),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("TPUFIT_TEST_REPLICAS", None)
    script = [str(TESTS / "multi_worker_main.py"), str(tmp_path), mode, str(timeout)]
    return subprocess.Popen(
        [sys.executable, *script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(processes: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[str]:
    """Waits (bounded) for every process; returns their outputs. Kills any still running."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def wait_for_port(address: str, process: subprocess.Popen) -> None:
    """Returns once `address` accepts connections: a waiting worker listens on its own port."""
    host, port = address.split(":")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{address} never listened: {finish([process], 1)[0][-3000:]}")


class Output:
    """Reads a running process's output in a thread, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in x for x in self.lines), TIMEOUT)

    def text(self) -> str:
        self._reader.join(TIMEOUT)
        return "".join(self.lines)


def run_workers(tmp_path: Path, mode: str) -> tuple[list[int], list[str], list[str]]:
    """Runs the workers; returns their exit codes, outputs and addresses."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    processes = [start_worker(tmp_path, addresses, i, mode) for i in range(WORKERS)]
    outputs = finish(processes)
    return [p.returncode for p in processes], outputs, addresses


def test_two_workers_train_evaluate_and_predict_like_one_process(tmp_path):
    codes, outputs, _ = run_workers(tmp_path, "run")
    assert codes == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
    results = [np.load(tmp_path / f"worker{i}.npz") for i in range(WORKERS)]
    reports = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(WORKERS)]
    x, y = tiny_data(100)

    # Same weights on both workers, and the same as one process training on the whole batch.
    weights = [[r[f"weight_{i}"] for i in range(4)] for r in results]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    reference = tiny_model()
    reference.compile(**compile_args())
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for mine, theirs in zip(weights[0], reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)

    # Predictions complete and in order on every worker; evaluation global and exact.
    reference.set_weights(weights[0])
    twin = copy_model(reference)
    twin.compile(**compile_args())
    keep = y != 2
    for result, report in zip(results, reports, strict=True):
        np.testing.assert_allclose(result["predict_arrays"], twin(x[:77]), atol=1e-5)
        np.testing.assert_allclose(result["predict_dataset"], twin(x[keep]), atol=1e-5)
        np.testing.assert_allclose(result["predict_generator"], twin(x[:77]), atol=1e-5)
        for name, inputs in (
            ("evaluate_arrays", (x[:77], y[:77])),
            ("evaluate_dataset", (x[keep], y[keep])),
        ):
            expected = twin.evaluate(*inputs, batch_size=100, return_dict=True, verbose=0)
            for metric, value in expected.items():
                assert report[name][metric] == pytest.approx(value, rel=1e-5), (name, metric)

    # Files: trained with each worker reading its own file, then evaluated exactly.
    file_weights = [[r[f"files_weight_{i}"] for i in range(4)] for r in results]
    for a, b in zip(*file_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    file_twin = copy_model(tiny_model())
    file_twin.set_weights(file_weights[0])
    file_twin.compile(**compile_args())
    expected = file_twin.evaluate(x, y, batch_size=100, return_dict=True, verbose=0)
    for report in reports:
        for metric, value in expected.items():
            assert report["evaluate_files"][metric] == pytest.approx(value, rel=1e-5), metric

    # input_fn: one pipeline per worker, each told its own shard.
    contexts = [report["contexts"] for report in reports]
    for index, worker_contexts in enumerate(contexts):
        assert {(c["input_pipeline_id"], c["num_input_pipelines"]) for c in worker_contexts} == {
            (index, 2)
        }
        assert {(c["num_replicas"], c["per_replica_batch_size"]) for c in worker_contexts} == {
            (2, 8)
        }
    input_fn_weights = [[r[f"input_fn_weight_{i}"] for i in range(4)] for r in results]
    for a, b in zip(*input_fn_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert reports[0]["evaluate_input_fn"] == reports[1]["evaluate_input_fn"]
    assert reports[0]["global_step"] == reports[1]["global_step"] == 14 + 4

    # Only the chief writes into model_dir and shows progress; the other's files are gone.
    assert [r["is_chief"] for r in reports] == [True, False]
    assert sorted(p.name for p in (tmp_path / "model_dir").iterdir()) == ["written_by_0.txt"]
    assert not Path(reports[1]["writing_dir"]).exists()
    assert "Epoch 1/2" in outputs[0] and "Epoch 1/2" not in outputs[1]
    # One device per worker: nothing runs "several replicas in one program", and no warning says so.
    assert not any("without XLA" in output for output in outputs)


def test_a_dead_worker_is_a_clear_error_naming_it_not_a_hang(tmp_path):
    codes, outputs, addresses = run_workers(tmp_path, "die")
    assert codes[1] == 3, outputs[1][-3000:]
    assert codes[0] == 4, outputs[0][-4000:]
    report = json.loads((tmp_path / "worker0.json").read_text())
    assert "WorkerLostError" not in report["error"]  # the message itself, not a repr
    assert f"worker 1 ({addresses[1]})" in report["error"]
    assert f"no checkpoint in {tmp_path / 'model_dir'} yet" in report["error"]
    assert "resumes from" not in report["error"]
    assert "fit" in report["error"]
    assert report["seconds"] < 60


def test_a_lone_worker_fails_naming_the_missing_worker_after_its_timeout(tmp_path):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    lone = start_worker(tmp_path, addresses, 1, "run", timeout=3)
    wait_for_port(addresses[1], lone)
    output = finish([lone], timeout=3 + STOPPED_WITHIN)[0]
    assert lone.returncode == 1, output[-3000:]
    assert "tpufit.errors.ClusterConnectError" in output
    assert f"worker 0 at {addresses[0]} did not connect within 3 s" in output
    assert "cluster_connect_timeout_secs" in output


@pytest.mark.parametrize(
    "signum, message",
    [
        (signal.SIGTERM, "ClusterConnectError: Stopped by SIGTERM: worker 1 at"),
        (signal.SIGINT, "KeyboardInterrupt: worker 1 at"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_sigterm_or_ctrl_c_ends_a_worker_waiting_for_its_peers(tmp_path, signum, message):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    lone = start_worker(tmp_path, addresses, 1, "run", timeout=300)
    wait_for_port(addresses[1], lone)
    lone.send_signal(signum)
    output = finish([lone], timeout=STOPPED_WITHIN)[0]
    assert lone.returncode != 0, output[-3000:]
    assert f"{message} {addresses[1]} was waiting for worker 0 at {addresses[0]}" in output


def test_sigterm_ends_a_training_worker_and_its_peer_learns_it(tmp_path):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    processes = [start_worker(tmp_path, addresses, i, "train") for i in range(WORKERS)]
    outputs = [Output(process) for process in processes]
    try:
        assert outputs[0].wait_for("training"), outputs[0].text()[-3000:]
        processes[0].send_signal(signal.SIGTERM)
        processes[0].wait(STOPPED_WITHIN)
        processes[1].wait(TIMEOUT)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    texts = [output.text() for output in outputs]
    assert processes[0].returncode == 1, texts[0][-3000:]
    assert "tpufit: worker 0 stopped by SIGTERM." in texts[0]
    assert processes[1].returncode != 0, texts[1][-3000:]
