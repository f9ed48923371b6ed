"""The data stage: every kind of user input turned into a run's infeed."""

from tpufit.data.adapters import (
    build_infeed,
    input_fn_as_x,
    split_for_validation,
    unpack_validation_data,
)

__all__ = ["build_infeed", "input_fn_as_x", "split_for_validation", "unpack_validation_data"]
