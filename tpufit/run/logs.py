"""Turning metric state into Keras-shaped logs and `evaluate` results."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tpufit import _keras_shim


def to_python(value: Any) -> Any:
    """Returns a scalar as a Python float, anything larger as a numpy array."""
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else array


def pythonify(logs: dict) -> dict:
    """Returns logs as Keras hands them to callbacks: flat, sorted, scalars as Python floats.

    A nested dict (a step returning `{m.name: m.result() for m in self.metrics}`,
    where the compiled metrics' result is itself a dict) is merged into the
    top level, as Keras's `pythonify_logs` does.
    """
    flat: dict = {}
    for name, value in sorted(logs.items()):
        if isinstance(value, dict):
            flat.update(pythonify(value))
        else:
            flat[name] = to_python(value)
    return flat


def final_logs(model: keras.Model, last_logs: dict, padding_rows: float) -> dict:
    """Returns a run's logs, read from the metrics across replicas when they match.

    As Keras does, the metrics' own results replace the step's logs when both
    name the same entries (a model's own step may return other logs). Read in
    cross-replica context, they are global, not one replica's. The per-output
    loss trackers counted `padding_rows` in their `count`; their exact value
    takes those rows out.

    Args:
        model: The compiled model whose metrics ran.
        last_logs: The logs of the run's last step (averaged over replicas).
        padding_rows: Padding rows the run's steps saw since the metrics' reset.

    Returns:
        A dict of Python floats (numpy arrays for non-scalar metrics).
    """
    metric_logs = model.get_metrics_result()
    if last_logs and set(last_logs) != set(metric_logs):
        return pythonify(last_logs)
    logs = pythonify(metric_logs)
    if padding_rows:
        for tracker in _keras_shim.output_loss_trackers(model):
            if tracker.name in logs:
                count = float(tracker.count) - padding_rows
                logs[tracker.name] = float(tracker.total) / count if count else 0.0
    return logs


def flatten_in_order(model: keras.Model, logs: dict) -> float | list[float]:
    """Orders `logs` as Keras's `evaluate` does: by `metrics_names`, then the rest sorted."""
    names = []
    for metric in model.metrics:
        sub_metrics = getattr(metric, "metrics", None)
        if type(metric).__name__ == "CompileMetrics" and sub_metrics is not None:
            names += [m.name for m in sub_metrics]
        else:
            names.append(metric.name)
    results = [logs[n] for n in names if n in logs]
    results += [logs[k] for k in sorted(logs) if k not in names]
    return results[0] if len(results) == 1 else results
