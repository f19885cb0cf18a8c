"""``python -m ss3d_train`` (and ``torchrun ... -m ss3d_train``) runs the ``ss3d-train`` CLI."""
from ss3d_train.cli import main

main()
