"""``ss3d-train``: Train ss3d: pretrain on synthetic views, selftrain category experts, distill one unified model (torchrun DDP)."""

from __future__ import annotations

from ss3d_data.clikit import make_app

app = make_app("ss3d-train", "Train ss3d: pretrain on synthetic views, selftrain category experts, distill one unified model (torchrun DDP).")


def main() -> None:
    app()
