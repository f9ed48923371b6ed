"""Notebooks: examples/quickstart.ipynb runs in a Jupyter kernel of this venv; a `fit` adds
bounded output; a kernel interrupted inside a device loop leaves a consistent model.

Each test starts a real IPython kernel (ipykernel) running `sys.executable` with this
checkout first on its path, through a kernelspec written for the test, so the kernel
runs the same Python and tpufit as the tests whatever kernels the machine has.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

REPO = Path(__file__).parents[1]
KERNEL = "tpufit-tests"
TIMEOUT = 300  # seconds a cell may take: a bound against hangs, not a timing.

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec running this Python with this checkout's tpufit first on its path."""
    folder = tmp_path_factory.mktemp("kernels")
    (folder / KERNEL).mkdir()
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tpufit tests",
        "language": "python",
        "env": {"PYTHONPATH": path},
    }
    (folder / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(folder)])


def execute(nb: nbformat.NotebookNode, kernels: KernelSpecManager, cwd: Path) -> None:
    """Runs every cell of `nb` in a new kernel, in place; raises on the first cell error."""
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernels)
    NotebookClient(nb, km=km, timeout=TIMEOUT, resources={"metadata": {"path": str(cwd)}}).execute()


def texts(cell: nbformat.NotebookNode, kind: str = "text/plain") -> str:
    """Every stream text and every `kind` output of `cell`, joined."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif kind in output.get("data", {}):
            parts.append(output.data[kind])
    return "\n".join(parts)


def widget_views(cell: nbformat.NotebookNode) -> int:
    """How many widgets (progress bars) the cell displays."""
    kind = "application/vnd.jupyter.widget-view+json"
    return sum(kind in output.get("data", {}) for output in cell.get("outputs", []))


def bar_texts(nb: nbformat.NotebookNode) -> str:
    """The text of every progress bar, as the widget state saved with `nb` holds it."""
    models = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    html = [m["state"]["value"] for m in models.values() if m["model_name"] == "HTMLModel"]
    return "\n".join(html).replace("\u2007", " ")  # tqdm pads with figure spaces


def test_quickstart_notebook_runs_in_a_kernel_of_this_venv(kernels):
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    execute(nb, kernels, REPO / "examples")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    setup, wrap, fit, scores, plot, more = code
    everything = "\n".join(texts(cell) for cell in code)
    assert "IProgress" not in everything and "TqdmWarning" not in everything

    assert widget_views(fit) == 1, "one progress bar for the whole fit"
    assert "Epoch 1/8 - " in texts(fit) and "val_accuracy: " in texts(fit)

    (line,) = [line for line in texts(scores).splitlines() if line.startswith("test accuracy")]
    accuracy, from_predict = (float(word.strip("(),")) for word in line.split()[2:6:3])
    assert accuracy == from_predict > 0.85 and "297 rows for 297 inputs" in line

    assert any("image/png" in output.get("data", {}) for output in plot.outputs)

    (summary,) = [line for line in texts(more).splitlines() if line.startswith("epochs")]
    global_step, iterations = (int(word.strip(",")) for word in summary.split()[-4::3])
    assert global_step == iterations > 0
    assert widget_views(more) == 1


def test_300_epochs_in_a_notebook_stay_under_50_kb_showing_the_latest_epochs_in_place(
    kernels, tmp_path
):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys\n"
            f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
            "from conftest import compiled, tiny_data\n"
            "x, y = tiny_data(16)\n"
            "tm = compiled()"
        ),
        nbformat.v4.new_code_cell(
            "history = tm.fit(x, y, batch_size=8, epochs=300, validation_data=(x, y))"
        ),
        nbformat.v4.new_code_cell("history = tm.fit(x, y, batch_size=8, epochs=25, verbose=2)"),
    ]
    execute(nb, kernels, tmp_path)
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    assert path.stat().st_size <= 50_000

    fit = nb.cells[1]
    shown = [output for output in fit.outputs if output.output_type != "stream"]
    assert len(shown) == 2 and widget_views(fit) == 1  # the bar and the epoch lines
    log = texts(fit)
    # The latest epochs, each with its metrics; the earlier ones are in the History.
    assert "... 280 earlier epochs" in log
    lines = [line for line in log.splitlines() if " steps - " in line]
    assert [line.split(" - ")[0] for line in lines] == [f"Epoch {e}/300" for e in range(281, 301)]
    assert all("loss: " in line and "val_accuracy: " in line for line in lines)
    # The one bar shows the last epoch, complete, in the widget state Jupyter saves.
    assert "Epoch 300/300: 100%" in bar_texts(nb) and "2/2" in bar_texts(nb)

    # verbose=2: the same bounded lines, no bar.
    quiet = nb.cells[2]
    assert widget_views(quiet) == 0 and "... 5 earlier epochs" in texts(quiet)
    assert texts(quiet).splitlines()[-1].startswith("Epoch 25/25 - 2 steps - ")


class Kernel:
    """A kernel of this venv driven cell by cell, as a user at a notebook would."""

    def __init__(self, kernels: KernelSpecManager, cwd: Path) -> None:
        self.manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernels)
        self.manager.start_kernel(cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=TIMEOUT)

    def run(self, code: str) -> tuple[dict, str]:
        """Runs `code` as a cell; returns the reply's content and the cell's stdout."""
        out: list[str] = []

        def collect(message: dict) -> None:
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                out.append(message["content"]["text"])

        reply = self.client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
        return reply["content"], "".join(out)

    def start(self, code: str) -> str:
        """Starts `code` as a cell without waiting; returns its message id."""
        return self.client.execute(code)

    def wait_for_output(self, text: str) -> list[dict]:
        """Reads the kernel's messages until stdout shows `text`; returns them."""
        messages = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                message = self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            messages.append(message)
            content = message["content"]
            if message["msg_type"] == "stream" and text in content.get("text", ""):
                return messages
        raise AssertionError(f"the kernel never printed {text!r}")

    def reply(self, msg_id: str) -> tuple[dict, str]:
        """The reply to the cell started as `msg_id`, and all it sent to the notebook as JSON."""
        while True:
            message = self.client.get_shell_msg(timeout=TIMEOUT)
            if message["parent_header"].get("msg_id") == msg_id:
                break
        sent = []
        while True:  # The kernel turns idle after its last output.
            output = self.client.get_iopub_msg(timeout=TIMEOUT)
            if output["parent_header"].get("msg_id") == msg_id:
                sent.append(output["content"])
                if output["content"].get("execution_state") == "idle":
                    shown = json.dumps(sent, ensure_ascii=False)
                    return message["content"], shown.replace("\u2007", " ")  # tqdm's spaces

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


SETUP = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
import keras, numpy as np, tpufit

class Announce(tpufit.Hook):
    def before_run(self, ctx):
        print(f"loop from global step {{ctx.global_step}}", flush=True)

rng = np.random.default_rng(0)
x = rng.random((16000, 64), dtype=np.float32)
y = rng.integers(0, 10, 16000)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation="relu"),
                          keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
tm = tpufit.TPUModel(model, iterations_per_loop=1000)
tm.compile(optimizer="adam",
           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
# Traces and compiles the training program, so the interrupted loop is all device work.
tm.fit(x[:160], y[:160], batch_size=16, epochs=1, verbose=0)
"""

CONSISTENT = "print(tm.global_step, int(model.optimizer.iterations))"
SAME_WEIGHTS = (
    "np.testing.assert_allclose(model.predict(x[:100], verbose=0),"
    " tm.predict(x[:100], verbose=0), atol=1e-5)"
)


def test_a_kernel_interrupted_inside_a_device_loop_leaves_a_model_that_predicts_and_trains(
    kernels, tmp_path
):
    kernel = Kernel(kernels, tmp_path)
    try:
        reply, _ = kernel.run(SETUP)
        assert reply["status"] == "ok", reply

        fit = kernel.start("tm.fit(x, y, batch_size=16, epochs=5, hooks=[Announce()])")
        kernel.wait_for_output("loop from global step 10")  # the first loop of the long fit
        # Into that loop of 1000 steps (seconds of device work): the interrupt is raised as
        # the device program returns to Python, before the host has counted its steps.
        time.sleep(0.5)
        kernel.manager.interrupt_kernel()
        interrupted, shown = kernel.reply(fit)
        assert interrupted["status"] == "error" and interrupted["ename"] == "KeyboardInterrupt"
        assert "(interrupted)" in shown  # the bar, not left looking complete

        reply, out = kernel.run(CONSISTENT)
        global_step, iterations = map(int, out.split())
        assert global_step == iterations >= 10
        reply, _ = kernel.run(SAME_WEIGHTS)  # the user's model holds what was trained
        assert reply["status"] == "ok", reply

        reply, out = kernel.run("print(tm.predict(x[:100], batch_size=16, verbose=0).shape)")
        assert reply["status"] == "ok" and out.strip() == "(100, 10)"
        reply, _ = kernel.run("tm.fit(x[:320], y[:320], batch_size=16, epochs=1, verbose=0)")
        assert reply["status"] == "ok", reply
        _, out = kernel.run(CONSISTENT)
        assert list(map(int, out.split())) == [global_step + 20] * 2
    finally:
        kernel.close()
