"""Who is the chief, where each worker writes, naming a lost worker (TF_CONFIG in-process).

Joining a cluster and signals are tested with real worker processes in test_multi_worker.py.
"""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf

import tpufit
from tpufit import cluster
from tpufit.run import failures

ONE_MACHINE = tf.distribute.get_strategy()
CLUSTER = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}


def set_tf_config(monkeypatch, task_type, index, cluster_spec=CLUSTER):
    config = {"cluster": cluster_spec, "task": {"type": task_type, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))


def test_one_machine_is_its_own_chief_with_one_pipeline(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster.is_chief() and cluster.is_chief(ONE_MACHINE)
    assert cluster.worker_count(ONE_MACHINE) == 1
    assert cluster.worker_index(ONE_MACHINE) == 0


@pytest.mark.parametrize(
    "task_type, index, spec, chief",
    [
        ("worker", 0, CLUSTER, True),
        ("worker", 1, CLUSTER, False),
        ("chief", 0, {"chief": ["a:1"], **CLUSTER}, True),
        ("worker", 0, {"chief": ["a:1"], **CLUSTER}, False),
        ("evaluator", 0, {"chief": ["a:1"], **CLUSTER}, False),
    ],
)
def test_the_chief_is_chief_0_or_else_worker_0(monkeypatch, task_type, index, spec, chief):
    set_tf_config(monkeypatch, task_type, index, spec)
    assert cluster.is_chief() is chief


def test_the_chief_writes_into_model_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with cluster.writing_dir(tmp_path / "run", ONE_MACHINE) as path:
        assert path == str(tmp_path / "run") and os.path.isdir(path)


def test_another_worker_writes_into_a_temporary_directory_removed_afterwards(monkeypatch, tmp_path):
    set_tf_config(monkeypatch, "worker", 1)
    with cluster.writing_dir(tmp_path / "run", ONE_MACHINE) as path:
        assert not path.startswith(str(tmp_path))
        with open(os.path.join(path, "checkpoint"), "w") as file:
            file.write("x")
    assert not os.path.exists(path)
    assert not (tmp_path / "run").exists()


def test_lost_tasks_are_named_with_their_address_but_never_this_one(monkeypatch):
    set_tf_config(monkeypatch, "worker", 0)
    message = (
        "Collective ops is aborted by: The following tasks are unhealthy (stopped sending "
        "heartbeats):\n/job:worker/replica:0/task:1\n/job:worker/replica:0/task:0 reported"
    )
    assert cluster.lost_tasks(message, None) == ["worker 1 (10.0.0.2:2222)"]


def test_errors_on_one_machine_are_not_called_a_lost_worker():
    error = tf.errors.UnavailableError(None, None, "/job:worker/replica:0/task:1 is gone")
    assert failures.worker_lost(error, ONE_MACHINE, "fit") is None


def test_a_restart_is_said_to_resume_from_the_newest_checkpoint_in_model_dir(tmp_path):
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(step=tf.Variable(1)), str(tmp_path), max_to_keep=None
    )
    manager.save()
    newest = manager.save()
    assert failures.resume_advice(str(tmp_path), ONE_MACHINE) == (
        f"Restart the job on every worker; it resumes from {newest}, the newest checkpoint "
        "in model_dir."
    )


def test_a_restart_without_a_checkpoint_is_said_to_begin_from_the_start(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert "begins from the start (no model_dir" in failures.resume_advice(None, ONE_MACHINE)
    empty = str(tmp_path)
    assert failures.resume_advice(empty, ONE_MACHINE).endswith(f"no checkpoint in {empty} yet.")
    set_tf_config(monkeypatch, "worker", 1)
    assert failures.resume_advice(empty, None).endswith(
        f"no checkpoint in {empty} on this machine (the chief writes them) yet."
    )


@pytest.mark.parametrize("timeout", [0, -1, "60", None, True])
def test_the_connect_timeout_must_be_a_positive_number_of_seconds(timeout):
    with pytest.raises(tpufit.InvalidArgumentError, match="cluster_connect_timeout_secs"):
        tpufit.RunConfig(cluster_connect_timeout_secs=timeout)


def test_multi_worker_strategy_takes_only_a_run_config():
    with pytest.raises(tpufit.InvalidTypeError, match="Received: config=60"):
        cluster.multi_worker_strategy(60)
