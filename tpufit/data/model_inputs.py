"""A model's declared inputs, checked against the data before any device work.

Keras compares the data with the model's inputs only when a step calls the
model, inside the traced loop: a string array fed to a numeric input then
fails as TensorFlow's `Cast string to float is not supported`, a missing dict
key or a wrong shape as a `ValueError` from deep inside the program.
`ModelInputs.of(model)` reads the inputs from the model's public API
(`inputs`, `input`, `input_spec`) and `check` compares an element spec with
them as Keras's `Functional` would line them up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from tpufit import errors
from tpufit.config import Mode
from tpufit.data import checks

STEP = {Mode.TRAIN: "train_step", Mode.EVAL: "test_step", Mode.PREDICT: "predict_step"}


def keras_defines(model: keras.Model, method: str) -> bool:
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


def spec_shape(spec: Any) -> list | None:
    """The shape of a spec as a list, `None` when its rank is unknown."""
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


def describe_spec(spec: Any) -> str:
    """A spec as an error message shows it: dtype and row shape."""
    shape = spec_shape(spec)
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
        if not keras_defines(model, "call"):
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
        f"{what}: expected {expected}. Received: {label}={describe_spec(spec)}"
    )


def _check_shape(label: str, spec: Any, tensor: keras.KerasTensor) -> None:
    shape = spec_shape(spec)
    declared = list(tensor.shape)
    if shape is None or _fits(shape, declared):
        return
    raise errors.invalid_argument(
        label,
        describe_spec(spec),
        f"rows of the shape the input was declared with, {tuple(declared[1:])} (or with a "
        "trailing dimension of 1 more or less)",
        what=f"`{label}` does not fit the model's input {tensor.name!r} of shape {tuple(declared)}",
    )
