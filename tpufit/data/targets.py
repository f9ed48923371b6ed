"""What a model's compiled loss needs of `y` and `sample_weight`, checked before device work.

Keras's losses meet the targets only inside the traced step, where labels or
weights of the wrong shape fail deep in the program and labels outside the
classes fail (CPU) or give a NaN loss (accelerators). `Targets.of(model,
mode)` reads what one of Keras's own losses over a single output needs, and
checks element specs and in-memory labels against it. A loss of the user's
own is not second-guessed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpufit import errors
from tpufit.config import Mode
from tpufit.data import checks
from tpufit.data.model_inputs import STEP, describe_spec, keras_defines, spec_shape

_SPARSE_LOSS_NAMES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")


def _even_ranks(first: list, second: list) -> tuple[list, list]:
    """Two shapes as Keras's losses even out their ranks (`squeeze_or_expand_to_same_rank`).

    When the ranks differ by one and the longer shape ends in 1, that 1 goes,
    or the shorter shape gets a 1 when it is only the batch dimension.
    """
    if len(first) == len(second) + 1 and first[-1] == 1:
        return (first, [*second, 1]) if len(second) == 1 else (first[:-1], second)
    if len(second) == len(first) + 1 and second[-1] == 1:
        return ([*first, 1], second) if len(first) == 1 else (first, second[:-1])
    return first, second


def _agree(shape: list, other: list, *, ones: bool = False) -> bool:
    """Whether two shapes of one rank agree wherever both are known, the batch aside."""
    if len(shape) != len(other):
        return False
    pairs = zip(shape[1:], other[1:], strict=True)
    return all(a is None or b is None or a == b or (ones and a == 1) for a, b in pairs)


def _labels_fit(labels: list, output: list) -> bool:
    """Whether labels fit a sparse categorical crossentropy over `output`, as in Keras.

    The loss wrapper evens out the ranks, then the loss drops a trailing 1 of
    labels as long as the output: one label per output row up to the classes.
    """
    labels, output = _even_ranks(labels, output)
    if len(labels) == len(output) and labels[-1] == 1:
        labels = labels[:-1]
    return _agree(labels, output[:-1])


def _weights_fit(weights: list, output: list) -> bool:
    """Whether sample weights fit the per-row losses of a Keras loss over `output`.

    Keras's losses reduce the output's last dimension; the weights' rank is
    evened out with those losses', then a weight's 1 may stand for any size.
    """
    losses, weights = _even_ranks(output[:-1], weights)
    return _agree(weights, losses, ones=True)


def _keras_loss(loss: Any) -> bool:
    """Whether `loss` is one of Keras's own (by name, function or class), not the user's."""
    return (
        isinstance(loss, str)
        or type(loss).__module__.split(".")[0] == "keras"
        or (getattr(loss, "__module__", "") or "").startswith("keras.")
    )


def _is_sparse(loss: Any) -> bool:
    """Whether `loss` is Keras's sparse categorical crossentropy (by name, function or class)."""
    return (
        loss in _SPARSE_LOSS_NAMES
        or loss is keras.losses.sparse_categorical_crossentropy
        or isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    )


def _fits_spec(spec: Any, output: list, rule: Any) -> bool:
    shape = spec_shape(spec)
    return shape is None or rule([None, *shape[1:]], output)


def _refuse_shape(name: str, spec: Any, expected: str) -> errors.InvalidArgumentError:
    return errors.invalid_argument(
        name, describe_spec(spec), expected, what=f"`{name}` does not fit the model's loss"
    )


@dataclasses.dataclass(frozen=True)
class Targets:
    """What a model's compiled loss, in Keras's own step, needs of `y` and `sample_weight`.

    Attributes:
        output: When the model has one output and one of Keras's own losses:
            that output's declared shape, else `None`.
        sparse: Whether that loss is the sparse categorical crossentropy
            (the output's last dimension is then the classes).
        ignore_class: The label that loss skips, if any.
    """

    output: tuple | None = None
    sparse: bool = False
    ignore_class: int | None = None

    @classmethod
    def of(cls, model: keras.Model, mode: Mode) -> Targets | None:
        """What the loss needs, or `None` when no compiled loss of Keras's step reads `y`."""
        keras_step = all(keras_defines(model, m) for m in (STEP[mode], "compute_loss"))
        if mode is Mode.PREDICT or not keras_step or getattr(model, "loss", None) is None:
            return None
        losses = tf.nest.flatten(model.loss)
        try:
            outputs = model.outputs
        except (AttributeError, ValueError):
            outputs = []  # Subclassed: its output is unknown before it runs.
        if len(losses) != 1 or len(outputs) != 1 or not _keras_loss(losses[0]):
            return cls()
        output = tuple(outputs[0].shape)
        sparse = _is_sparse(losses[0]) and output[-1] is not None
        return cls(output, sparse, getattr(losses[0], "ignore_class", None))

    def check(self, y: Any, sample_weight: Any) -> None:
        """Checks the element specs of `y` and `sample_weight`.

        Raises:
            InvalidArgumentError: There is no `y`; or, for one output, labels
                or weights that do not fit the model's loss.
            InvalidTypeError: `y` or `sample_weight` holds strings.
        """
        if y is None:
            raise errors.invalid_argument(
                "y",
                None,
                "targets for the model's compiled loss: y= with arrays, or datasets, "
                "generators and PyDatasets yielding (x, y)",
                what="The data has no targets",
            )
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            for label, spec in checks.labelled_leaves(value, name):
                if spec is not None and spec.dtype == tf.string:
                    raise errors.InvalidTypeError(
                        f"`{label}` holds strings, which a loss cannot compare or weigh: "
                        f"expected numbers. Received: {label}={describe_spec(spec)}"
                    )
        if self.output is not None:
            self._check_shapes(y, sample_weight)

    def _check_shapes(self, y: Any, sample_weight: Any) -> None:
        output = [None, *self.output[1:]]
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if isinstance(value, (dict, list, tuple)):
                raise errors.invalid_argument(
                    name,
                    value,
                    "one array, as the model has one output",
                    what=f"`{name}` is nested",
                )
        if self.sparse and not _fits_spec(y, output, _labels_fit):
            raise _refuse_shape(
                "y",
                y,
                f"one class index per row: rows of shape {tuple(output[1:-1])} (or with a "
                f"trailing 1) for the sparse categorical crossentropy over the model's "
                f"output of shape {tuple(output)}",
            )
        if sample_weight is not None and not _fits_spec(sample_weight, output, _weights_fit):
            raise _refuse_shape(
                "sample_weight",
                sample_weight,
                f"one weight per row's loss: rows of shape {tuple(output[1:-1])} (or with a "
                f"trailing 1) for the model's output of shape {tuple(output)}",
            )

    def check_labels(self, y: Any) -> None:
        """Checks in-memory labels of a sparse categorical loss: class indices of the model.

        Keras casts each label to an int (NaN and infinity to nonsense), and
        TensorFlow fails on one outside the classes inside the step on a CPU,
        or gives a NaN loss on an accelerator.

        Raises:
            InvalidArgumentError: A label is not finite, or not in `[0, classes)`.
        """
        if not self.sparse or not isinstance(y, np.ndarray) or y.dtype.kind not in "biuf":
            return
        classes = self.output[-1]
        finite = np.isfinite(y)
        index = np.trunc(np.where(finite, y, -1))
        bad = ~finite | (index < 0) | (index >= classes)
        if self.ignore_class is not None:
            bad &= index != self.ignore_class
        if not bad.any():
            return
        first = np.unravel_index(np.argmax(bad), y.shape)
        raise errors.invalid_argument(
            "y",
            f"{int(bad.sum())} such labels, the first {y[first]!r} in row {first[0]}",
            f"class indices from 0 to {classes - 1} for the sparse categorical "
            f"crossentropy over the model's {classes} outputs",
            what="`y` holds labels that are not classes of the model",
        )
