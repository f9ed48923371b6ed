"""Keeps TensorFlow's native INFO lines about tpufit's first compile off the user's terminal.

The first XLA compile of a process makes TensorFlow's C++ runtime log INFO
lines ("XLA service ... initialized", "StreamExecutor ...", "Compiled cluster
using XLA!") straight to file descriptor 2, where they land inside the
progress bar. Plain Keras on a CPU never compiles with XLA, so they come from
tpufit; their log level is read once, when TensorFlow starts, so it cannot be
lowered afterwards. A program's first run therefore sends descriptor 2 through
a pipe whose reader forwards everything but INFO lines as it arrives.
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


class _Filter:
    """Forwards what arrives on a pipe to `target`, but native INFO lines, as it arrives.

    Complete lines are judged whole; a partial line that cannot begin an INFO
    line (a progress bar's carriage-return update) goes on at once, so nothing waits for
    the block to end. It runs until every writer of the pipe is gone (a child
    process started inside the block may hold it longer than the block), then
    closes both descriptors itself: the block never waits for it.
    """

    def __init__(self, read_end: int, target: int) -> None:
        self.read_end = read_end
        self.target = target
        self.pending = b""

    def run(self) -> None:
        try:
            while chunk := os.read(self.read_end, 65536):
                self._forward(self.pending + chunk)
            if self.pending and not dropped(self.pending):
                os.write(self.target, self.pending)
        finally:
            os.close(self.read_end)
            os.close(self.target)

    def _forward(self, data: bytes) -> None:
        *lines, rest = data.split(b"\n")
        kept = [line + b"\n" for line in lines if not dropped(line + b"\n")]
        if rest and not _may_begin_info(rest):
            kept.append(rest)
            rest = b""
        self.pending = rest
        if kept:
            os.write(self.target, b"".join(kept))


def _may_begin_info(partial: bytes) -> bool:
    return partial[:1] == b"I" or _ABSL_PREAMBLE.startswith(partial[: len(_ABSL_PREAMBLE)])


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):  # A replaced or closed sys.stderr has nothing to flush.
        sys.stderr.flush()


@contextlib.contextmanager
def info_lines_dropped() -> Iterator[None]:
    """A block whose native INFO lines on descriptor 2 are dropped; other output goes on.

    Where descriptor 2 cannot be redirected, the block runs as it is.
    """
    _flush_python_stderr()
    try:
        target = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    threading.Thread(target=_Filter(read_end, target).run, daemon=True).start()
    try:
        yield
    finally:
        _flush_python_stderr()
        restored = os.dup(target)
        os.dup2(restored, 2)  # the filter keeps `target` until its pipe ends
        os.close(restored)
