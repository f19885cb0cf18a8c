"""``ss3d-eval``: Evaluate ss3d reconstructions: IoU, Chamfer and F-score after alignment; tables and an HTML report."""

from __future__ import annotations

from ss3d_data.clikit import make_app

app = make_app("ss3d-eval", "Evaluate ss3d reconstructions: IoU, Chamfer and F-score after alignment; tables and an HTML report.")


def main() -> None:
    app()
