"""Which CPU kernel sets give this machine other float results: one small training step of the network (trunk
convolutions, the FiLM-SIREN's products and sines, volume rendering, an Adam step) is run in a fresh process under
each switch that narrows the kernels (DESIGN.md section 2), and the switches are grouped by the bits they produce.

    .venv/bin/python tools/kernel_sets.py            # a table: each setting, its fingerprint, its group
    .venv/bin/python tools/kernel_sets.py --differ   # one setting per group that differs from this machine's own

A oneDNN or MKL switch naming an instruction set the CPU lacks does nothing (it can only narrow); torch's own
``ATEN_CPU_CAPABILITY=avx512`` kills the process on a CPU without AVX-512 (listed as such). So an Intel machine
with AMX shows more groups than an AVX2-only AMD one. ``tools/just test-kernels`` runs the float-sensitive
tests (pytest marker ``float_sensitive``) under every ``--differ`` setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# Each switch and the values that narrow it, widest first. The last line is what a machine with AVX2 and nothing
# wider runs through all three libraries at once.
SETTINGS = [
    "ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX",
    "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16",  # an AMD EPYC with AVX-512 (no AMX): the nearest stand-in on Intel
    "ONEDNN_MAX_CPU_ISA=AVX512_CORE",
    "ONEDNN_MAX_CPU_ISA=AVX2",
    "ONEDNN_MAX_CPU_ISA=SSE41",
    "ATEN_CPU_CAPABILITY=avx512",
    "ATEN_CPU_CAPABILITY=avx2",
    "ATEN_CPU_CAPABILITY=default",
    "MKL_ENABLE_INSTRUCTIONS=AVX512",
    "MKL_ENABLE_INSTRUCTIONS=AVX2",
    "MKL_ENABLE_INSTRUCTIONS=SSE4_2",
    "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2",
]
SWITCHES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")

# The workload, run in the child: the bits of the loss, the gradients and the weights after one Adam step.
_STEP = """
import hashlib, torch
from ss3d_model import ModelConfig, ReconstructionNetwork
from ss3d_model.render import render_rays
torch.manual_seed(0)
config = ModelConfig(encoder_arch="resnet18", input_size=48, hidden=32, modulated_layers=2, omega0=30.0)
network = ReconstructionNetwork(config).train()
images = torch.rand(2, 3, 48, 48)
origins = torch.tensor([0.0, -2.0, 0.0]).expand(2, 64, 3)
directions = torch.nn.functional.normalize(torch.randn(2, 64, 3) * 0.1 + torch.tensor([0.0, 1.0, 0.0]), dim=-1)
near, far = torch.full((2, 64), 1.0), torch.full((2, 64), 3.0)
mask, rgb = render_rays(network, network.encode(images), origins, directions, near, far, 16)
loss = mask.square().mean() + (rgb - 0.5).square().mean()
loss.backward()
digest = hashlib.sha256(loss.detach().numpy().tobytes())
for p in network.parameters():
    digest.update(p.grad.numpy().tobytes())
torch.optim.Adam(network.parameters(), lr=1e-3).step()
for p in network.parameters():
    digest.update(p.detach().numpy().tobytes())
print(digest.hexdigest()[:16])
"""


def fingerprint(setting: str) -> str | None:
    """The workload's digest in a fresh process with ``setting`` ("NAME=VALUE ...") on top of a clean environment;
    None where the process dies of a signal (torch's ``avx512`` kernels on a CPU without AVX-512 die of SIGILL)."""
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(pair.split("=", 1) for pair in setting.split())
    env.setdefault("OMP_NUM_THREADS", "1")  # thread count changes reduction order: hold it fixed for every setting
    done = subprocess.run([sys.executable, "-c", _STEP], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode < 0:
        return None
    if done.returncode:
        raise SystemExit(f"error: the workload failed under {setting or 'no switch'}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--differ", action="store_true",
                        help="print one setting per group whose results differ from the machine's own, nothing else")
    args = parser.parse_args()
    native = fingerprint("")
    groups: dict[str, list[str]] = {native: ["(none)"]}
    unsupported = []
    for setting in SETTINGS:
        digest = fingerprint(setting)
        if digest is None:
            unsupported.append(setting)
        else:
            groups.setdefault(digest, []).append(setting)
    if args.differ:
        for digest, members in groups.items():
            if digest != native:
                print(members[0])
        return
    print(f"{'setting':78s} fingerprint       group")
    names = {digest: i for i, digest in enumerate(groups)}
    for digest, members in groups.items():
        for setting in members:
            print(f"{setting:78s} {digest}  {names[digest]}{' (this machine)' if digest == native else ''}")
    for setting in unsupported:
        print(f"{setting:78s} {'-':16s}  (the process died: this CPU lacks those instructions)")


if __name__ == "__main__":
    main()
