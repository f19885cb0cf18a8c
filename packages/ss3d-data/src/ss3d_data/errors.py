"""The one user-facing error type of ss3d."""


class Ss3dError(Exception):
    """Bad input or an unrecoverable, explainable condition.

    CLIs print it as one red line (plus an optional hint) and exit with code 2; no traceback unless ``--debug``.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class EmptySurface(Ss3dError):
    """A mesh with no surface: a predicted density that never reaches the extraction level, or a mesh file without
    triangles. The evaluation scores such a prediction (IoU 0, Chamfer undefined) instead of failing it."""
