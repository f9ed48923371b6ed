"""What a model's Keras steps expect of the data, checked before any device work.

`Expected.of(model, mode)` gathers what the model's steps will ask of the
data from its public API: its declared inputs (`tpufit.data.model_inputs`)
and what its compiled loss needs of the targets (`tpufit.data.targets`).
`check_element` compares a stream's element spec with both, so data the
model cannot take fails first, as `tpufit` errors naming the input, what it
holds and what the model takes.

Only what is known is checked: a subclassed model has no declared inputs, and
a model with its own `train_step` / `test_step` / `predict_step` or `call` may
use its data in any way, so those parts are left to the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tpufit.config import Mode
from tpufit.data.model_inputs import STEP, ModelInputs, keras_defines
from tpufit.data.targets import Targets


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
        inputs = ModelInputs.of(model) if keras_defines(model, STEP[mode]) else None
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
