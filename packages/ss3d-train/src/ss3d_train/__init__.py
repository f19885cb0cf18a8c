"""ss3d-train: Train ss3d: pretrain on synthetic views, selftrain category experts, distill one unified model (torchrun DDP)."""
