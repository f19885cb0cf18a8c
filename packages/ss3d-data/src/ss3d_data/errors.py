"""The one user-facing error type of ss3d."""


class Ss3dError(Exception):
    """Bad input or an unrecoverable, explainable condition.

    CLIs print it as one red line (plus an optional hint) and exit with code 2; no traceback unless ``--debug``.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
