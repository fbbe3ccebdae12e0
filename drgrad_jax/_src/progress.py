"""Progress of long runs: a tqdm bar fed at the loop's chunk boundaries, and when to show it.

``ProgressBar`` is a ``Trainer`` progress hook. The loop calls it through
``jax.debug.callback`` once per epoch of ``trainer(key)`` / ``run_epochs`` and
once per ``run`` call, never per step, so the device never waits on the host
between steps. The bar counts optimizer steps against ``total_steps``; tqdm
measures the rate and the ETA from the chunks' wall times, and the package's
``describe`` puts the chunk's loss (and held-out metrics, per epoch) beside it.

``progress_enabled`` is the one on/off rule both packages' ``TrainConfig.progress``
and the benchmarks follow (docs/drgrad.md, *Progress*): an explicit ``True`` or
``False`` wins; otherwise the ``DRGRAD_PROGRESS`` environment variable (``0``/``1``)
decides; otherwise progress shows in an interactive session (standard error a
terminal, or a Jupyter kernel) and never under pytest.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

ENV_VAR = "DRGRAD_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def progress_enabled(progress: bool | None = None, file: TextIO | None = None) -> bool:
    """Whether to show progress: ``progress`` if given, else the environment, else interactivity.

    Args:
      progress: ``True``/``False`` to decide here; ``None`` for the default rule.
      file: the stream the bar would write to (default ``sys.stderr``).

    Returns:
      ``progress`` when it is a bool; else ``DRGRAD_PROGRESS`` when set
      (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``); else
      ``False`` under pytest and ``True`` when ``file`` is a terminal or the
      code runs in a Jupyter kernel.

    Raises:
      ValueError: ``DRGRAD_PROGRESS`` holds another value.

    Example:
      >>> progress_enabled(True), progress_enabled(False)
      (True, False)
    """
    if progress is not None:
        return bool(progress)
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in _ON or env in _OFF:
        return env in _ON
    if env:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected 1 (show progress) or 0 (hide it)."
        )
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    stream = sys.stderr if file is None else file
    interactive = getattr(stream, "isatty", lambda: False)()
    return bool(interactive) or "ipykernel" in sys.modules


class ProgressBar:
    """A ``Trainer`` progress hook: one tqdm bar over a run's steps, updated per chunk.

    The first chunk a bar sees (it holds the compilation) is its starting point,
    so the rate and the ETA are measured on the chunks after it. A report at a
    step below the bar's count starts a new bar (a new run); under ``vmap``
    every seed reports the same step, which moves the bar once and shows the
    last seed's numbers. The bar closes when it reaches ``total_steps``.

    Args:
      total_steps: the run's planned steps (``Trainer.total_steps``).
      describe: ``describe(record) -> str``, the text beside the bar for the
        hook's record (an epoch's record or a ``run`` chunk's mean metrics), or
        ``None``.
      name: the bar's label.
      file: where the bar is written (default ``sys.stderr`` at each new bar).

    Example:
      >>> import io
      >>> out = io.StringIO()
      >>> bar = ProgressBar(4, lambda loss: f"loss {loss:.2f}", name="toy", file=out)
      >>> for step, loss in ((2, 0.7), (4, 0.5)):
      ...     bar(step, loss)
      >>> print(out.getvalue().split("\\r")[-1].strip())
      toy: 100%|...| 4/4 [...step/s, loss 0.50]
    """

    def __init__(
        self,
        total_steps: int,
        describe: Callable[[Any], str] | None = None,
        *,
        name: str = "train",
        file: TextIO | None = None,
    ):
        self.total_steps = int(total_steps)
        self.describe = describe
        self.name = name
        self.file = file
        self._bar = None
        self._finished_at: int | None = None

    def __call__(self, step: Any, record: Any) -> None:
        from tqdm import tqdm

        step = int(step)
        text = None if self.describe is None else self.describe(record)
        bar = self._bar
        if bar is not None and step < bar.n:  # an earlier step: a new run
            bar.close()
            bar = self._bar = None
        if bar is None:
            if step == self._finished_at:  # another seed of a finished vmapped run
                return
            bar = self._bar = tqdm(
                total=self.total_steps,
                initial=step,
                desc=self.name,
                unit="step",
                file=sys.stderr if self.file is None else self.file,
                dynamic_ncols=True,
                postfix=text,
            )
            self._finished_at = None
        else:
            if text is not None:
                bar.set_postfix_str(text, refresh=False)
            bar.update(step - bar.n)
            bar.refresh()
        if step >= self.total_steps:
            bar.close()
            bar.fp.flush()  # the closing newline now, before what is printed next
            self._bar, self._finished_at = None, step


def chain_hooks(*hooks: Callable[[Any, Any], None] | None) -> Callable[[Any, Any], None] | None:
    """One progress hook calling each of ``hooks`` in turn (``None`` entries dropped)."""
    hooks = tuple(h for h in hooks if h is not None)
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def call_all(step, record):
        for hook in hooks:
            hook(step, record)

    return call_all


def progress_rows(
    rows: Iterable[Any],
    *,
    desc: str,
    total: int | None = None,
    enabled: bool | None = None,
    leave: bool = True,
    unit: str = "row",
) -> Iterator[Any]:
    """``rows`` with an ``i/N`` bar and ETA on standard error (a table's rows, a sweep's runs).

    While the bar shows, lines printed to standard output go through
    ``tqdm.write``, so they land above the bar and standard output stays a
    clean table when it is redirected. Shown by ``progress_enabled(enabled)``;
    ``leave=False`` erases the bar when done (an inner loop); ``unit`` names
    what is counted (a notebook's hand-written loop counts ``"step"`` s).

    Example:
      >>> list(progress_rows(["a", "b"], desc="rows", enabled=False))
      ['a', 'b']
    """
    if not progress_enabled(enabled):
        yield from rows
        return
    from tqdm import tqdm
    from tqdm.contrib import DummyTqdmFile

    with contextlib.redirect_stdout(DummyTqdmFile(sys.stdout)):
        bar = tqdm(
            rows,
            desc=desc,
            total=total,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=leave,
        )
        with bar:
            yield from bar
        bar.fp.flush()  # the closing newline now, before what is printed next
