"""The package itself: its version, its public names, and its message when TensorFlow is missing."""

from __future__ import annotations

import subprocess
import sys

import tpufit


def test_public_names_and_version():
    assert tpufit.__version__ == "0.1.0"
    for name in tpufit.__all__:
        assert hasattr(tpufit, name)


def test_import_without_tensorflow_names_the_extras_to_install():
    # `sys.modules[name] = None` makes `import name` fail as if it were not installed.
    code = "import sys; sys.modules['tensorflow'] = None; import tpufit"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    for extra in ('-e ".[cpu]"', '-e ".[gpu]"', '-e ".[tpu]"'):
        assert extra in result.stderr
    assert "MissingTensorFlowError" in result.stderr
