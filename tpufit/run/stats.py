"""Where a run's time went: waiting for input, computing, or on the host.

Built from two real measurements, no model of the hardware:

- each loop's host wall time (from choosing its length to its stop check,
  the hooks and callbacks between loops included), timed by the epoch iterator (`epochs.py`);
- inside the device program, per step (`programs.py`, `tf.timestamp`): how
  long the `get_next` of the infeed's `tf.data` iterator took to hand the
  step its batch, and how long the step ran.

Wall time = input + compute + host. Input is the time the device waited for
the pipeline; the host part is what the loop structure costs (calling the
program, its outfeed, hooks). Loops that traced the program (the first of a
model, or of a new input shape) also compiled it; their time is
`compile_seconds`, kept out of the shares and the rate.

As in the TensorFlow profiler's input-pipeline analysis, a run is
*input-bound* when it waited for input at least 20% of the wall time and
*partly input-bound* from 5%. It is *host-bound* when the host part is at
least 20%; otherwise *compute-bound*: the steps themselves are the limit.

`fit` prints the summary only when it is worth reading: `verbose` is not 0,
there is advice to act on (the run is not compute-bound) and the limit it
names cost at least `REPORT_MIN_SECONDS` (the wait for input, or the host
time) — a short run, an empty one, or one whose steps are the limit prints
nothing; `tm.last_run_stats` always holds the numbers.

Even a batch already in the prefetch buffer costs a `get_next` (a hand-off
to a tf.data thread: tens of microseconds on an idle CPU, more on a busy
one), so steps of a fraction of a millisecond can be input-bound on a cached
pipeline; larger batches are then the fix.
"""

from __future__ import annotations

import dataclasses

REPORT_MIN_SECONDS = 10.0
INPUT_BOUND_SHARE = 0.20
PARTLY_INPUT_BOUND_SHARE = 0.05
HOST_BOUND_SHARE = 0.20
DATASET_FIX = (
    "speed up the tf.data pipeline: map(fn, num_parallel_calls=tf.data.AUTOTUNE) "
    "for costly per-element work, .cache() after the costly steps when the data fits "
    "in memory (before shuffle and augmentation), and .prefetch(tf.data.AUTOTUNE) last; "
    "if it already does all that, a larger batch_size makes fewer, larger batches"
)
ARRAYS_FIX = (
    "tpufit's array infeed (a parallel gather, prefetched) cannot keep up with steps "
    "this short: a larger batch_size makes fewer, larger batches"
)
HOST_FIX = (
    "loops are short for their per-loop cost (program calls, outfeed, callbacks): "
    'use iterations_per_loop="auto" or a larger value, or lighter callbacks'
)
_VERDICTS = {
    "input": "Input-bound",
    "partly input": "Partly input-bound",
    "host": "Host-bound",
    "compute": "Compute-bound",
}


@dataclasses.dataclass
class RunStats:
    """Timing of one run's loops (a `fit`'s training loops, an `evaluate`, a `predict`).

    Attributes:
        mode: "train", "eval" or "predict".
        iterations_per_loop: The setting the loops were sized by.
        from_dataset: Whether the input was a `tf.data.Dataset` (else arrays;
            `None`: not known), for the advice.
        steps: Steps that ran.
        loop_sizes: Steps of each loop, in order.
        seconds: Host wall time of the loops that did not compile, hooks
            between them included.
        timed_steps: Steps of those loops.
        input_seconds: Time their steps waited in the infeed's `get_next`.
        compute_seconds: Time their steps ran.
        compile_seconds: Wall time of the loops that traced and compiled.
    """

    mode: str
    iterations_per_loop: int | str = "auto"
    from_dataset: bool | None = None
    steps: int = 0
    loop_sizes: list[int] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    timed_steps: int = 0
    input_seconds: float = 0.0
    compute_seconds: float = 0.0
    compile_seconds: float = 0.0

    def add_loop(self, result, seconds: float) -> None:
        """Adds one loop: its `LoopResult` and its host wall time."""
        self.steps += result.steps
        self.loop_sizes.append(result.steps)
        if result.traced:
            self.compile_seconds += seconds
            return
        self.seconds += seconds
        self.timed_steps += result.steps
        self.input_seconds += result.input_seconds
        self.compute_seconds += result.compute_seconds

    @property
    def loops(self) -> int:
        """Loops that ran."""
        return len(self.loop_sizes)

    @property
    def host_seconds(self) -> float:
        """Wall time outside the steps and their input: program calls, outfeed, hooks."""
        return max(self.seconds - self.input_seconds - self.compute_seconds, 0.0)

    @property
    def steps_per_second(self) -> float:
        """Steps per second of wall time (loops that compiled left out)."""
        return self.timed_steps / self.seconds if self.seconds > 0 else 0.0

    def _share(self, part: float) -> float:
        return part / self.seconds if self.seconds > 0 else 0.0

    @property
    def input_share(self) -> float:
        """Fraction of the wall time the steps waited for their batches."""
        return self._share(self.input_seconds)

    @property
    def compute_share(self) -> float:
        """Fraction of the wall time the steps ran."""
        return self._share(self.compute_seconds)

    @property
    def host_share(self) -> float:
        """Fraction of the wall time spent on the host between and around loops."""
        return self._share(self.host_seconds)

    @property
    def input_bound(self) -> bool:
        """Whether the steps waited for input at least 20% of the wall time."""
        return self.input_share >= INPUT_BOUND_SHARE

    @property
    def bound(self) -> str:
        """What limited the run: "input", "partly input", "host" or "compute"."""
        if self.input_bound:
            return "input"
        if self.input_share >= PARTLY_INPUT_BOUND_SHARE:
            return "partly input"
        if self.host_share >= HOST_BOUND_SHARE:
            return "host"
        return "compute"

    @property
    def advice(self) -> str:
        """What to change, or "" when the steps themselves are the limit."""
        if self.bound in ("input", "partly input"):
            if self.from_dataset is None:
                return f"with a dataset, {DATASET_FIX}; with arrays, {ARRAYS_FIX}"
            return DATASET_FIX if self.from_dataset else ARRAYS_FIX
        return HOST_FIX if self.bound == "host" else ""

    def summary(self) -> str:
        """One line: steps/sec, where the wall time went, and what to change.

        Example:
            "train: 2000 steps in 9 loops, 1.62 s (+1.10 s compiling), 1234.6
            steps/s; waiting for input 61%, computing 37%, host 2%. Input-bound:
            speed up the tf.data pipeline: ..."
        """
        compiled = f" (+{self.compile_seconds:.2f} s compiling)" if self.compile_seconds else ""
        line = (
            f"{self.mode}: {self.steps} steps in {self.loops} loops, "
            f"{self.seconds:.2f} s{compiled}, {self.steps_per_second:.1f} steps/s; "
            f"waiting for input {100 * self.input_share:.0f}%, "
            f"computing {100 * self.compute_share:.0f}%, host {100 * self.host_share:.0f}%."
        )
        advice = self.advice
        return f"{line} {_VERDICTS[self.bound]}" + (f": {advice}." if advice else ".")

    @property
    def worth_reporting(self) -> bool:
        """Whether there is advice, and the limit it addresses cost `REPORT_MIN_SECONDS` or more."""
        if not self.advice:
            return False
        lost = self.host_seconds if self.bound == "host" else self.input_seconds
        return lost >= REPORT_MIN_SECONDS

    def report(self, verbose: int | str) -> RunStats:
        """Prints `summary()` if `worth_reporting` and `verbose` is not 0; returns these stats."""
        if verbose != 0 and self.worth_reporting:
            print(self.summary())
        return self

    def as_dict(self) -> dict:
        """The measurements and what follows from them, as plain values."""
        fields = dataclasses.asdict(self)
        fields.update(
            loops=self.loops,
            host_seconds=self.host_seconds,
            steps_per_second=self.steps_per_second,
            input_share=self.input_share,
            compute_share=self.compute_share,
            host_share=self.host_share,
            input_bound=self.input_bound,
            bound=self.bound,
            advice=self.advice,
            worth_reporting=self.worth_reporting,
        )
        return fields

    def __str__(self) -> str:
        return self.summary()
