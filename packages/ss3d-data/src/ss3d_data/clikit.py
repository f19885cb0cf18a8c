"""CLI conventions shared by every ss3d command-line tool.

- ``make_app`` builds a typer app with ``--version`` and ``--debug``;
- every command registered through it turns an :class:`Ss3dError` into one red line on stderr and exit code 2
  (a traceback only with ``--debug`` or ``SS3D_DEBUG=1``); Ctrl-C exits 130 with a note on resuming;
- ``console`` (stderr) and ``progress()`` are the one console and progress-bar style used everywhere.
"""


import functools
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from rich.console import Console
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
    console.print(f"[bold red]error:[/bold red] {err}", soft_wrap=True)
    if err.hint:
        console.print(f"[dim]hint: {err.hint}[/dim]", soft_wrap=True)


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


def progress(transient: bool = False) -> Progress:
    """The standard progress bar: description, bar, done/total, elapsed, remaining, and a free-form status field."""
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
