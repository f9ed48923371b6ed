"""The checkpoints of a `model_dir`: their layout, reading them, and the hook that writes them.

A checkpoint is a standard TF2 object-based checkpoint (`ckpt-<global step>.index`
and `.data-*` files), written by `tf.train.CheckpointManager`, which keeps the
newest `keep_checkpoint_max` and records them in the `checkpoint` state file.
Its root holds four lists, read by position:

    weights/<i>          the model's `model.weights[i]` (trainable and not)
    rng/<i>              the model's random-seed states (e.g. Dropout's)
    optimizers/<j>/<i>   the variables of the j-th optimizer (iterations, slots)
    state/<name>         global_step, epoch, step_in_epoch, data_seed

Positions in Keras's public lists, not Keras's internal attribute names: the
files stay readable across Keras releases, a restore can check every shape
before it assigns anything, and weights are found without the model's code.

Writes are atomic as TensorFlow makes them: the data goes to a temporary
directory, is renamed into place, and only then is the `checkpoint` state file
(itself replaced atomically) pointed at it; a process killed during a save
leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tpufit import cluster

# The fields of a `tpufit.run.progress.Progress`, stored as `state/<name>`.
STATE_FIELDS = ("global_step", "epoch", "step_in_epoch", "data_seed")
PREFIX = "ckpt"  # A checkpoint's files are `<model_dir>/ckpt-<global step>.*`.


def key(*path: Any) -> str:
    """Returns the checkpoint key of the variable at `path`, e.g. `key("weights", 0)`."""
    return "/".join(str(part) for part in path) + "/.ATTRIBUTES/VARIABLE_VALUE"


def latest(directory: str) -> str | None:
    """Returns the newest checkpoint that the state file of `directory` lists, or `None`."""
    if not os.path.isdir(directory):
        return None
    return tf.train.latest_checkpoint(directory)


def step_of(path: str) -> int:
    """Returns the number a checkpoint's prefix ends with (`<model_dir>/ckpt-<step>`), or -1.

    TensorFlow numbers every checkpoint its state file lists; tpufit numbers
    them after the global step.
    """
    number = re.search(r"-(\d+)$", path)
    return int(number[1]) if number else -1


def at_step(directory: str, step: int) -> str:
    """Returns the prefix of the checkpoint of `directory` at global step `step`."""
    return os.path.join(directory, f"{PREFIX}-{int(step)}")


def resolve(path: str) -> str | None:
    """Returns the checkpoint at `path`: a checkpoint prefix, or the latest in a directory."""
    if os.path.isdir(path):
        return latest(path)
    return path if tf.io.gfile.exists(path + ".index") else None


class Reader:
    """Reads a tpufit checkpoint by position, checking shapes before anything is assigned.

    Args:
        path: The checkpoint prefix.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader = tf.train.load_checkpoint(path)
        self.shapes = self._reader.get_variable_to_shape_map()
        self.dtypes = self._reader.get_variable_to_dtype_map()

    def count(self, *prefix: Any) -> int:
        """Returns how many consecutive positions the list at `prefix` holds."""
        stored = {
            name.split("/")[len(prefix)]
            for name in self.shapes
            if name.startswith("/".join(str(part) for part in prefix) + "/")
        }
        count = 0
        while str(count) in stored:
            count += 1
        return count

    def mismatch(self, prefix: tuple, variables: Sequence[Any], names=None) -> str | None:
        """Describes the first difference between the list at `prefix` and `variables`, or `None`.

        Args:
            prefix: The list's path, e.g. `("weights",)`.
            variables: The variables that would receive the list's values.
            names: The variables' names for the message (default: their `path`).
        """
        stored = self.count(*prefix)
        if stored != len(variables):
            return f"{stored} variables in the checkpoint, {len(variables)} here"
        for index, variable in enumerate(variables):
            name = names[index] if names else getattr(variable, "path", variable.name)
            problem = self.mismatch_of(key(*prefix, index), variable)
            if problem:
                return f"variable {index} ({name}): {problem}"
        return None

    def mismatch_of(self, checkpoint_key: str, variable: Any) -> str | None:
        """Describes how the stored tensor at `checkpoint_key` cannot go into `variable`."""
        if checkpoint_key not in self.shapes:
            return "not in the checkpoint"
        shape = tuple(self.shapes[checkpoint_key])
        dtype = self.dtypes[checkpoint_key]
        if shape != tuple(variable.shape) or dtype != tf.as_dtype(variable.dtype):
            return (
                f"shape {shape} {dtype.name} in the checkpoint, "
                f"{tuple(variable.shape)} {tf.as_dtype(variable.dtype).name} here"
            )
        return None

    def value(self, checkpoint_key: str) -> np.ndarray:
        """Returns the stored tensor at `checkpoint_key`."""
        return self._reader.get_tensor(checkpoint_key)

    def assign(self, prefix: tuple, variables: Sequence[Any]) -> None:
        """Assigns the list at `prefix` to `variables` (check `mismatch` first)."""
        values = [self.value(key(*prefix, i)) for i in range(len(variables))]
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)

    def state(self) -> dict[str, int] | None:
        """Returns the stored `Progress` fields, or `None` if this is no tpufit checkpoint."""
        if key("state", "global_step") not in self.shapes:
            return None
        return {
            name: int(self.value(key("state", name)))
            for name in STATE_FIELDS
            if key("state", name) in self.shapes
        }


class Saver:
    """Writes checkpoints of a run's variables into a directory, keeping the newest.

    Only the chief writes into `directory` under a multi-worker strategy; the
    other workers write (the same collective reads) into a temporary directory
    that is removed at once, as TensorFlow's multi-worker guide does: where
    each writes is `cluster.writing_dir`'s to say.

    Args:
        directory: The `model_dir`.
        groups: Returns the variable lists to save: `weights`, `rng`,
            `optimizers` (a list of lists).
        state: The `Progress` saved beside them (a `tf.Module` of `STATE_FIELDS`).
        strategy: The run's `tf.distribute` strategy.
        max_to_keep: Checkpoints kept (`None` or 0 keeps all).
        keep_every_n_hours: Keep one checkpoint for good per this many hours.
    """

    def __init__(
        self,
        directory: str,
        groups: Callable[[], dict[str, list]],
        state: tf.Module,
        strategy: tf.distribute.Strategy,
        *,
        max_to_keep: int | None,
        keep_every_n_hours: float | None,
    ) -> None:
        self.directory = directory
        self._groups = groups
        self._state = state
        self._strategy = strategy
        self._chief = cluster.is_chief(strategy)
        self._max_to_keep = max_to_keep or None
        self._keep_hours = keep_every_n_hours
        self._manager: tf.train.CheckpointManager | None = None
        self.last_saved_step: int | None = None

    def reset(self) -> None:
        """Takes the variable lists afresh at the next save (`compile` makes a new optimizer)."""
        self._manager = None

    def _make_manager(self, directory: str) -> tf.train.CheckpointManager:
        # A process killed inside a save leaves TensorFlow's temporary directory behind.
        for leftover in glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*_temp")):
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
        groups = self._groups()
        root = tf.train.Checkpoint(
            weights=list(groups["weights"]),
            rng=list(groups["rng"]),
            optimizers=[list(variables) for variables in groups["optimizers"]],
            state=self._state,
        )
        return tf.train.CheckpointManager(
            root,
            directory,
            checkpoint_name=PREFIX,
            max_to_keep=self._max_to_keep,
            keep_checkpoint_every_n_hours=self._keep_hours,
        )

    def save(self) -> str | None:
        """Writes a checkpoint named after the global step; returns its prefix (chief only)."""
        step = int(self._state.global_step.numpy())
        if step == self.last_saved_step:
            return None
        with cluster.writing_dir(self.directory, self._strategy) as directory:
            manager = self._manager
            if manager is None:
                manager = self._make_manager(directory)
            path = manager.save(checkpoint_number=step)
        self.last_saved_step = step
        if not self._chief:
            return None  # Its directory, hence its manager, lasted for this save only.
        self._manager = manager  # It counts the checkpoints kept.
        return path
