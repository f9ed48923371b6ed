"""What a model's Keras steps expect of the data, checked before any device work.

Keras compares the data with the model only when a step calls it, inside the
traced loop: a string array fed to a numeric input then fails as TensorFlow's
`Cast string to float is not supported`, a missing dict key or a wrong shape
as a `ValueError` from deep inside the program. `Expected.of(model, mode)`
reads what the model's steps will ask of the data from its public API
(`inputs`, `input`, `input_spec`, `outputs`, `loss`), and `check_element`
compares a stream's element spec with it, so the same mistakes fail first, as
`tpufit` errors naming the input, what it holds and what the model takes.

Only what is known is checked: a subclassed model has no declared inputs, and
a model with its own `train_step` / `test_step` / `predict_step` or `call` may
use its data in any way, so those parts are left to the model.
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

_STEP = {Mode.TRAIN: "train_step", Mode.EVAL: "test_step", Mode.PREDICT: "predict_step"}
_SPARSE_LOSS_NAMES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")


def _keras_defines(model: keras.Model, method: str) -> bool:
    """Whether the model's `method` is Keras's own (no user class in between overrides it)."""
    owner = next(c for c in type(model).__mro__ if method in vars(c))
    return owner.__module__.split(".")[0] == "keras"


def _flat(structure: Any) -> bool:
    if isinstance(structure, keras.KerasTensor):
        return True
    parts = list(structure.values()) if isinstance(structure, dict) else structure
    return isinstance(parts, (list, tuple)) and all(
        isinstance(part, keras.KerasTensor) for part in parts
    )


def _shape(spec: Any) -> list | None:
    shape = tf.TensorShape(spec.shape)
    return None if shape.rank is None else shape.as_list()


def _fits(shape: list, declared: list) -> bool:
    """Whether data of `shape` fits an input `declared` so, as Keras adjusts ranks.

    Keras squeezes a trailing 1 off the data, or adds one the input declares,
    when the ranks differ by one (`Functional`'s rank adjustment); every
    dimension known on both sides must then agree, the batch aside.
    """
    if len(shape) == len(declared) + 1 and shape[-1] == 1:
        shape = shape[:-1]
    elif len(shape) == len(declared) - 1 and declared[-1] == 1:
        declared = declared[:-1]
    if len(shape) != len(declared):
        return False
    return all(
        a is None or b is None or a == b for a, b in zip(shape[1:], declared[1:], strict=True)
    )


def _describe(spec: Any) -> str:
    shape = _shape(spec)
    rows = "of unknown shape" if shape is None else f"of shape {tuple(shape[1:])}"
    return f"{spec.dtype.name} rows {rows}"


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """A functional or Sequential model's declared inputs, matched with data as Keras does.

    Attributes:
        structure: The inputs as the model was built on them (`model.input`):
            one `KerasTensor`, a flat list / tuple, or a flat dict of them.
        tensors: `model.inputs`, in the order Keras feeds them.
        names: The names a functional model's `input_spec` matches a dict of
            data with (and whose count it checks); `None` for a Sequential
            model, which does neither.
        optional: For each of `tensors`, whether it was declared
            `keras.Input(..., optional=True)`: such an input may be fed `None`.
    """

    structure: Any
    tensors: tuple
    names: tuple | None
    optional: tuple = ()

    @classmethod
    def of(cls, model: keras.Model) -> ModelInputs | None:
        """The model's declared inputs, or `None` when it declares none tpufit can read."""
        if not _keras_defines(model, "call"):
            return None  # Its own `call` may use the data in any way.
        try:
            tensors = tuple(model.inputs or ())
        except (AttributeError, ValueError):
            return None  # Subclassed, or a Sequential model not yet built.
        if not tensors:
            return None
        if isinstance(model, keras.Sequential):
            return cls(list(tensors), tensors, None)
        structure, specs = model.input, model.input_spec
        if specs is None or not _flat(structure):
            return None  # Nested inputs: Keras itself skips its checks.
        # `input_spec` lists the inputs in `model.inputs`' order (sorted keys for a dict).
        specs = tf.nest.flatten(specs)
        names = tuple(spec.name for spec in specs)
        return cls(structure, tensors, names, tuple(bool(spec.optional) for spec in specs))

    def check(self, x: Any, name: str = "x") -> None:
        """Checks the element spec `x` against the inputs.

        Raises:
            InvalidArgumentError: `x` lacks an input, has too many or too few
                parts, or a part whose shape the input cannot take.
            InvalidTypeError: A part holds strings for a numeric input, or
                numbers for a string input.
        """
        self._check_names_and_count(x, name)
        # As Keras, parts beyond the inputs go unused (a Sequential model takes the first).
        optional = self.optional or (False,) * len(self.tensors)
        parts = zip(self._parts(x, name), self.tensors, optional, strict=False)
        for (label, spec), tensor, may_be_none in parts:
            if isinstance(spec, tf.NoneTensorSpec) or spec is None:
                if not may_be_none:
                    raise errors.invalid_argument(
                        label,
                        None,
                        f"data for the model's input {tensor.name!r}: it is not optional (only "
                        "an input declared `keras.Input(..., optional=True)` may be fed None)",
                        what=f"`{label}` is None but the model's input {tensor.name!r} "
                        "is not optional",
                    )
                continue  # Keras passes None on to the model's optional input.
            _check_dtype(label, spec, tensor)
            _check_shape(label, spec, tensor)

    def _check_names_and_count(self, x: Any, name: str) -> None:
        # Keras's `Functional.__call__` first matches the data with `input_spec`.
        if self.names is None:
            return
        if isinstance(x, dict):
            self._check_keys(x, self.names, name)
            return
        count = len(checks.labelled_leaves(x, name))
        if count != len(self.names):
            raise errors.invalid_argument(
                name,
                f"{count} input arrays",
                f"{len(self.names)} (one for each of the model's inputs {list(self.names)}, "
                "in that order, or a dict keyed by those names)",
                what=f"`{name}` has {count} parts but the model has {len(self.names)} inputs",
            )

    def _parts(self, x: Any, name: str) -> list:
        # Then `Functional.call` lines the data up with the inputs (`_standardize_inputs`).
        structure = self.structure
        if isinstance(x, dict) and not isinstance(structure, dict):
            names = [t.name for t in tf.nest.flatten(structure)]
            self._check_keys(x, names, name)
            return [p for n in names for p in checks.labelled_leaves(x[n], f"{name}[{n!r}]")]
        if isinstance(x, dict):
            self._check_order(x, name)
        elif isinstance(structure, dict) and list(structure) != sorted(structure):
            raise errors.invalid_argument(
                name,
                "a list or tuple",
                f"a dict keyed by the model's input names {list(structure)}: the model "
                "takes a dict whose keys are not in sorted order, so no order of a list fits",
                what=f"`{name}` must be a dict for this model",
            )
        return checks.labelled_leaves(x, name)

    @staticmethod
    def _check_keys(x: dict, names: Any, name: str) -> None:
        missing = [n for n in names if n not in x]
        if missing:
            raise errors.invalid_argument(
                name,
                f"a dict with keys {sorted(map(str, x))}",
                f"a dict with a key for each of the model's inputs {list(names)}",
                what=f"`{name}` has no data for the model's input(s) {missing}",
            )

    def _check_order(self, x: dict, name: str) -> None:
        # Keras feeds a dict to a dict of inputs in sorted key order, by position: a key
        # the model has no input for, sorting before one of its inputs, would feed that input.
        for key, wanted in zip(sorted(x), sorted(self.structure), strict=False):
            if key != wanted:
                raise errors.invalid_argument(
                    name,
                    f"a dict with keys {sorted(map(str, x))}",
                    f"only keys naming the model's inputs {sorted(self.structure)} (Keras "
                    f"lines a dict up with them in sorted order, so `{name}[{key!r}]` would "
                    f"feed the input {wanted!r}); drop the others",
                    what=f"`{name}` has a key the model has no input for: {key!r}",
                )


def _check_dtype(label: str, spec: Any, tensor: keras.KerasTensor) -> None:
    holds_strings = spec.dtype == tf.string
    if holds_strings == (tensor.dtype == "string"):
        return  # Keras casts any number to the input's numeric dtype.
    if holds_strings:
        what = f"`{label}` holds strings but the model's input {tensor.name!r} takes {tensor.dtype}"
        expected = (
            f"{tensor.dtype} data, or strings with a string input "
            '(`keras.Input(..., dtype="string")` before a `StringLookup` or '
            "`TextVectorization` layer)"
        )
    else:
        what = f"`{label}` holds numbers but the model's input {tensor.name!r} takes strings"
        expected = "strings (a numpy array of str, a pandas column of str, or tf.string)"
    raise errors.InvalidTypeError(
        f"{what}: expected {expected}. Received: {label}={_describe(spec)}"
    )


def _check_shape(label: str, spec: Any, tensor: keras.KerasTensor) -> None:
    shape = _shape(spec)
    declared = list(tensor.shape)
    if shape is None or _fits(shape, declared):
        return
    raise errors.invalid_argument(
        label,
        _describe(spec),
        f"rows of the shape the input was declared with, {tuple(declared[1:])} (or with a "
        "trailing dimension of 1 more or less)",
        what=f"`{label}` does not fit the model's input {tensor.name!r} of shape {tuple(declared)}",
    )


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
    shape = _shape(spec)
    return shape is None or rule([None, *shape[1:]], output)


def _refuse_shape(name: str, spec: Any, expected: str) -> errors.InvalidArgumentError:
    return errors.invalid_argument(
        name, _describe(spec), expected, what=f"`{name}` does not fit the model's loss"
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
        keras_step = all(_keras_defines(model, m) for m in (_STEP[mode], "compute_loss"))
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
                        f"expected numbers. Received: {label}={_describe(spec)}"
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


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a run's data must hold for the model's steps.

    Attributes:
        inputs: The model's declared inputs, or `None` when unknown.
        targets: What the compiled loss needs, or `None` when nothing reads `y`.
    """

    inputs: ModelInputs | None = None
    targets: Targets | None = None

    @classmethod
    def of(cls, model: keras.Model, mode: Mode) -> Expected:
        """What the model's step for `mode` expects, as far as its public API tells."""
        inputs = ModelInputs.of(model) if _keras_defines(model, _STEP[mode]) else None
        return cls(inputs, Targets.of(model, mode))

    def check_element(self, data: Any) -> None:
        """Checks one batch's spec (`x`, `(x, y)` or `(x, y, sample_weight)`) before device work.

        Raises:
            InvalidArgumentError: A missing input or target, or a shape an input
                cannot take.
            InvalidTypeError: Strings where the model takes numbers, or the reverse.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.inputs is not None:
            self.inputs.check(x)
        if self.targets is not None:
            self.targets.check(y, sample_weight)
