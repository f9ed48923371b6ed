"""Keeps TensorFlow's native INFO lines about tpufit's first compile off the user's terminal.

The first XLA compile of a process makes TensorFlow's C++ runtime log INFO
lines ("XLA service ... initialized", "StreamExecutor ...", "Compiled cluster
using XLA!") straight to file descriptor 2, where they land inside the
progress bar. Plain Keras on a CPU never compiles with XLA, so they come from
tpufit; their log level is read once, when TensorFlow starts, so it cannot be
lowered afterwards. A program's first run therefore sends descriptor 2 into a
pipe and writes back everything but INFO lines when it returns: warnings and
errors still appear, in order, only later.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

_INFO_LINE = re.compile(rb"^I\d{4} [0-9:.]+ +\d+ [^ \]]+:\d+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"


def dropped(line: bytes) -> bool:
    """Whether `line` is a native INFO line (or absl's notice that such lines follow)."""
    return bool(_INFO_LINE.match(line)) or line.startswith(_ABSL_PREAMBLE)


def _drain(read_end: int, chunks: list[bytes]) -> None:
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):  # A replaced or closed sys.stderr has nothing to flush.
        sys.stderr.flush()


@contextlib.contextmanager
def info_lines_dropped() -> Iterator[None]:
    """A block whose native INFO lines on descriptor 2 are dropped; other output is kept.

    Output written to descriptor 2 inside the block (a progress bar
    included) appears when the block ends. Where descriptor 2 cannot be
    redirected, the block runs as it is.
    """
    _flush_python_stderr()
    try:
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    chunks: list[bytes] = []
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_drain, args=(read_end, chunks), daemon=True)
    reader.start()
    try:
        yield
    finally:
        _flush_python_stderr()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the reader sees its end
        os.close(saved)
        reader.join()
        os.close(read_end)
        kept = [line for line in b"".join(chunks).splitlines(keepends=True) if not dropped(line)]
        if kept:
            os.write(2, b"".join(kept))
