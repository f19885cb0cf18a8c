"""The CUDA path: the network, the lean decoder pass and a pretraining run on a GPU (marker ``cuda``; skipped without
one). ``tools/gpu-check`` runs this file on a lent GPU; its ``--dry-run`` runs it on the CPU
(``SS3D_TEST_DEVICE=cpu``), so every line here has run before a GPU is lent.

Comparisons with the CPU are made in float64, where both devices compute the same formulas to ~1e-12: in float32 the
FiLM-SIREN's sines of large arguments amplify rounding (and cuDNN's TF32 convolutions would add their own), so a
float32 comparison would measure kernels, not the code.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from ss3d_data import load_preset
from ss3d_model import ModelConfig, ReconstructionNetwork, load_network
from ss3d_model.network import FilmSirenDecoder
from ss3d_train import RunOptions, pretrain
from ss3d_train.memory import plan_micro_batch

DEVICE = torch.device(os.environ.get("SS3D_TEST_DEVICE", "cuda"))
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU")]


def test_the_network_computes_on_the_device_what_it_computes_on_the_cpu(small_preset):
    torch.manual_seed(0)
    network = ReconstructionNetwork(ModelConfig.from_preset(load_preset(str(small_preset)))).double().eval()
    images = torch.rand(2, 3, network.config.input_size, network.config.input_size, dtype=torch.float64)
    points = torch.rand(2, 300, 3, dtype=torch.float64) - 0.5
    with torch.no_grad():
        expected = network.decode(network.encode(images), points)
        network.to(DEVICE)
        got = network.decode(network.encode(images.to(DEVICE)), points.to(DEVICE))
    for a, b in zip(got, expected):
        assert a.device.type == DEVICE.type
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-11)


def test_the_lean_training_pass_on_the_device_has_the_plain_passes_gradients(monkeypatch):
    torch.manual_seed(0)
    decoder = FilmSirenDecoder(32, 3, 30.0).double().to(DEVICE)
    z = (torch.randn(2, 2 * 3 * 32, dtype=torch.float64) * 0.3).to(DEVICE).requires_grad_()
    points = (torch.rand(2, 500, 3, dtype=torch.float64) - 0.5).to(DEVICE).requires_grad_()
    weights = torch.randn(2, 500, 4, dtype=torch.float64, device=DEVICE)
    grads = {}
    for name, threshold in (("lean", 0), ("plain", math.inf)):
        monkeypatch.setattr("ss3d_model.network.LEAN_MIN_VALUES", threshold)
        grads[name] = torch.autograd.grad((decoder(z, points) * weights).sum(), [z, points, *decoder.parameters()])
    for a, b in zip(grads["lean"], grads["plain"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_pretraining_run_on_the_device_stops_resumes_and_finishes(views_dir, small_preset, tmp_path):
    opts = dict(preset=str(small_preset), epochs=1, seed=3, device=DEVICE.type)
    pretrain([str(views_dir)], RunOptions(out=tmp_path / "run", stop_after=2, **opts))
    final = pretrain([str(views_dir)], RunOptions(out=tmp_path / "run", resume=True, **opts))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and all(math.isfinite(m["loss"]) for m in metrics)
    network, meta = load_network(final)
    assert meta.step == 4 and all(torch.isfinite(p).all() for p in network.parameters())


def test_the_paper_step_is_planned_against_the_devices_own_memory():
    paper = load_preset("paper")
    chosen, why = plan_micro_batch("pretrain", paper, 0, 0.0, DEVICE)
    assert 0 <= chosen < 8  # the whole batch (0) or the largest micro-batch that fits
    assert (chosen == 0) == (why == "")
