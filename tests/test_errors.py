"""Tests of tpufit/errors.py: the error hierarchy and the message format."""

from __future__ import annotations

import pytest

import tpufit
from tpufit import errors

HIERARCHY = [
    (errors.InvalidArgumentError, ValueError),
    (errors.InvalidTypeError, TypeError),
    (errors.NotCompiledError, RuntimeError),
    (errors.MissingTensorFlowError, ImportError),
]


@pytest.mark.parametrize(("error_class", "builtin"), HIERARCHY)
def test_every_error_is_a_tpufit_error_and_its_builtin(error_class, builtin):
    assert issubclass(error_class, errors.TPUFitError)
    assert issubclass(error_class, builtin)
    with pytest.raises(builtin):
        raise error_class("boom")
    with pytest.raises(errors.TPUFitError):
        raise error_class("boom")


def test_except_value_error_catches_an_invalid_argument():
    try:
        raise errors.invalid_argument("batch_size", 0, "a positive int")
    except ValueError as caught:
        assert isinstance(caught, tpufit.InvalidArgumentError)
    else:  # pragma: no cover
        pytest.fail("ValueError was not caught")


def test_except_type_error_catches_an_invalid_type():
    try:
        raise errors.invalid_type("model", object(), "a Keras 3 `keras.Model`")
    except TypeError as caught:
        assert isinstance(caught, tpufit.InvalidTypeError)
    else:  # pragma: no cover
        pytest.fail("TypeError was not caught")


def test_errors_are_exported_from_the_package():
    assert tpufit.InvalidArgumentError is errors.InvalidArgumentError
    assert tpufit.InvalidTypeError is errors.InvalidTypeError
    assert tpufit.NotCompiledError is errors.NotCompiledError
    assert tpufit.TPUFitError is errors.TPUFitError


def test_tpufit_error_is_not_a_value_or_type_error_itself():
    assert not issubclass(errors.TPUFitError, (ValueError, TypeError, RuntimeError))


def test_invalid_argument_message_format():
    error = errors.invalid_argument("batch_size", 0, "a positive int")
    assert isinstance(error, errors.InvalidArgumentError)
    assert str(error) == ("Invalid `batch_size`: expected a positive int. Received: batch_size=0")


def test_invalid_argument_message_starts_with_what_went_wrong():
    error = errors.invalid_argument(
        "batch_size", 10, "a multiple of 4", what="`batch_size` does not split"
    )
    assert str(error) == (
        "`batch_size` does not split: expected a multiple of 4. Received: batch_size=10"
    )


def test_invalid_type_message_format():
    error = errors.invalid_type("seed", "x", "an int or None")
    assert isinstance(error, errors.InvalidTypeError)
    assert str(error) == (
        "Invalid type for `seed`: expected an int or None. Received: seed='x' of type str"
    )


def test_received_value_is_shown_with_repr():
    assert "Received: name='64'" in str(errors.invalid_argument("name", "64", "int"))
    assert "Received: name=2.5" in str(errors.invalid_argument("name", 2.5, "int"))


@pytest.mark.parametrize("build", [errors.invalid_argument, errors.invalid_type])
def test_long_received_values_are_shortened(build):
    value = list(range(1000))
    message = str(build("x", value, "something"))
    shown = message.split("Received: x=")[1]
    if build is errors.invalid_type:
        assert shown.endswith(" of type list")
        shown = shown[: -len(" of type list")]
    assert len(shown) == 120
    assert shown.endswith("...")
    assert shown.startswith("[0, 1, 2, ")


def test_short_received_values_are_shown_whole():
    value = "a" * 118  # repr adds the two quotes: exactly 120 characters
    message = str(errors.invalid_argument("x", value, "something"))
    assert message.endswith(f"x={value!r}")


def test_a_warning_points_at_the_callers_line_outside_tpufit():
    with pytest.warns(UserWarning, match="careful") as caught:
        errors.warn("careful")  # the line the warning must name

    assert caught[0].filename == __file__
