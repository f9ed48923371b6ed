"""The errors tpufit raises: each says what happened, what would work, and what it got.

Every class also derives from the matching built-in (`ValueError`, `TypeError`,
`RuntimeError`), so `except ValueError:` in user code keeps working.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issues a warning attributed to the user's line: the innermost caller outside tpufit.

    A fixed `stacklevel` would point into tpufit whenever a call comes by
    another path (`tpufit.attach`'s `model.fit`, validation inside `fit`).
    """
    level = 2  # the caller of this function
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


class TPUFitError(Exception):
    """Base class of every error tpufit raises on purpose."""


class InvalidArgumentError(TPUFitError, ValueError):
    """An argument has the right type but a value tpufit cannot use."""


class InvalidTypeError(TPUFitError, TypeError):
    """An argument has a type tpufit cannot use."""


class NotCompiledError(TPUFitError, RuntimeError):
    """`fit` or `evaluate` was called before `compile`."""


class WorkerLostError(TPUFitError, RuntimeError):
    """A worker of a multi-worker run stopped answering; the message names it."""


class ClusterConnectError(TPUFitError, RuntimeError):
    """Workers of a multi-worker run did not all connect in time; the message names the missing."""


class IncompatibleCheckpointError(InvalidArgumentError):
    """The checkpoint in `model_dir` was written by a different model (other weights)."""


class MissingTensorFlowError(TPUFitError, ImportError):
    """TensorFlow is not installed."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def invalid_argument(
    name: str, received: Any, expected: str, *, what: str | None = None
) -> InvalidArgumentError:
    """Builds the `InvalidArgumentError` for argument `name`.

    Args:
        name: The argument's name as the user wrote it.
        received: The value the user passed (shown shortened).
        expected: What would work, as a phrase ("a positive int").
        what: What went wrong, when more than "invalid value".

    Returns:
        The error, ready to raise.
    """
    what = what or f"Invalid `{name}`"
    return InvalidArgumentError(f"{what}: expected {expected}. Received: {name}={_short(received)}")


def invalid_type(name: str, received: Any, expected: str) -> InvalidTypeError:
    """Builds the `InvalidTypeError` for argument `name`.

    Args:
        name: The argument's name as the user wrote it.
        received: The value the user passed.
        expected: What would work, as a phrase.

    Returns:
        The error, ready to raise.
    """
    return InvalidTypeError(
        f"Invalid type for `{name}`: expected {expected}. "
        f"Received: {name}={_short(received)} of type {type(received).__name__}"
    )


class NonFiniteLossError(TPUFitError, FloatingPointError):
    """The training loss became NaN or infinite.

    Attributes:
        step: The global step whose loss was not finite (counted from 1).
        loss: That loss.
    """

    def __init__(self, message: str, *, step: int, loss: float) -> None:
        super().__init__(message)
        self.step = step
        self.loss = loss


def is_int(value: Any) -> bool:
    """Whether `value` is an int (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Checks that `value` is a positive int (or `None` when allowed)."""
    if value is None and allow_none:
        return
    if not is_int(value) or value < 1:
        expected = "a positive int" + (" or None" if allow_none else "")
        raise invalid_argument(name, value, expected)
