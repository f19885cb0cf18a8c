"""CLI conventions shared by every ss3d command-line tool.

- ``make_app`` builds a typer app with ``--version`` and ``--debug``;
- every command registered through it turns an :class:`Ss3dError` into one red line on stderr and exit code 2
  (a traceback only with ``--debug`` or ``SS3D_DEBUG=1``); Ctrl-C exits 130 with a note on resuming;
- ``console`` (stderr) and ``progress()`` are the one console and progress-bar style used everywhere; when stderr
  is not a terminal (``nohup``, CI logs, a pipe) ``progress()`` prints plain lines instead of a bar;
- ``at_least`` and ``positive`` check numeric options in a command's body, so a bad value is one error line and
  exit 2 (typer's own ``min=`` prints a usage block around the message, and lets ``nan`` through).
"""


import functools
import math
import os
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ss3d_data.errors import Ss3dError

console = Console(stderr=True, highlight=False)

_state = {"debug": os.environ.get("SS3D_DEBUG", "") not in ("", "0")}


def debug_enabled() -> bool:
    return _state["debug"]


def package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0+unknown"


def report_error(err: Ss3dError) -> None:
    # Messages name preset sections ("[selftrain] hypotheses must be > 0") and paths with brackets: print them
    # literally, not as rich markup (which would silently drop "[selftrain]").
    console.print(f"[bold red]error:[/bold red] {escape(str(err))}", soft_wrap=True)
    if err.hint:
        console.print(f"[dim]hint: {escape(err.hint)}[/dim]", soft_wrap=True)


class Ss3dApp(typer.Typer):
    """A typer app whose commands follow the ss3d error conventions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # help texts name preset sections like "[render]": print them literally, not as rich markup
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def guarded(*a: Any, **k: Any) -> Any:
                try:
                    return fn(*a, **k)
                except Ss3dError as err:
                    if debug_enabled():
                        raise
                    report_error(err)
                    raise typer.Exit(2) from None
                except KeyboardInterrupt:
                    console.print("[yellow]interrupted[/yellow]; completed files are kept, re-run to continue")
                    raise typer.Exit(130) from None

            register(guarded)
            return fn

        return decorator


def make_app(distribution: str, help: str) -> Ss3dApp:
    """Create the typer app of one ss3d tool (``distribution`` names the package, for ``--version``)."""
    app = Ss3dApp(help=help, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"{distribution} {package_version(distribution)}")
            raise typer.Exit()

    @app.callback()
    def _root(
        show_version: Annotated[
            bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
        ] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    ) -> None:
        if debug:
            _state["debug"] = True

    return app


class PlainProgress:
    """``progress()`` where no bar can be drawn: one plain line per task every ``every_s`` seconds (and when a task
    completes): description, done/total, elapsed, remaining, status. Same calls as a rich ``Progress``."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for task_id, task in self.tasks.items():
            if task["visible"] and task["completed"] != task["printed"]:
                self._line(task_id)

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **fields: Any) -> int:
        task_id = len(self.tasks)
        now = time.perf_counter()
        self.tasks[task_id] = {"description": description, "total": total, "completed": 0, "fields": fields,
                               "visible": visible, "started": now, "last": now, "printed": 0}
        return task_id

    def update(self, task_id: int, advance: float = 0, **fields: Any) -> None:
        task = self.tasks[task_id]
        task["completed"] += advance
        task["total"] = fields.pop("total", task["total"])
        task["fields"].update(fields)
        now = time.perf_counter()
        done = task["total"] is not None and task["completed"] >= task["total"]
        if task["visible"] and (done or now - task["last"] >= self.every_s):
            self._line(task_id)

    def _line(self, task_id: int) -> None:
        task = self.tasks[task_id]
        now = time.perf_counter()
        task["last"], task["printed"] = now, task["completed"]
        elapsed, done, total = now - task["started"], task["completed"], task["total"]
        count = f"{done:g}/{total:g}" if total else f"{done:g}"
        remaining = f" ~{_clock(elapsed * (total - done) / done)} left" if total and done else ""
        status = task["fields"].get("status", "")
        console.print(f"{task['description']} {count} {_clock(elapsed)}{remaining} {status}".rstrip(),
                      soft_wrap=True, markup=False, highlight=False)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress(transient: bool = False) -> "Progress | PlainProgress":
    """The standard progress bar: description, bar, done/total, elapsed, remaining, and a free-form status field;
    plain lines every ``SS3D_PROGRESS_EVERY_S`` seconds (default 30) when stderr is not a terminal."""
    if not console.is_terminal:
        return PlainProgress(float(os.environ.get("SS3D_PROGRESS_EVERY_S", "30") or 30))
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
    )


def at_least(option: str, value: int | None, low: int) -> None:
    """Refuse ``value < low``; ``None`` (option not given) passes."""
    if value is not None and value < low:
        raise Ss3dError(f"{option} must be >= {low}, got {value}")


def positive(option: str, value: float | None) -> None:
    """Refuse a value that is not a finite number > 0; ``None`` (option not given) passes."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise Ss3dError(f"{option} must be a finite number > 0, got {value}")
