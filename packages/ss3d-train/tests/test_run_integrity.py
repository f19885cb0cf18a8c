"""Nothing lost, nothing silent: ``--resume`` refuses another run, a non-finite ``--init`` and negative numbers are
one-line errors, and corrupt shard samples are counted by reason, reported and bounded by ``--max-bad``."""

from __future__ import annotations

import copy
import io
import json
import shutil
import tarfile

import pytest
import torch
from typer.testing import CliRunner

from ss3d_data import Ss3dError, load_preset
from ss3d_model import CheckpointMeta, ModelConfig, ReconstructionNetwork, save_network
from ss3d_train import RunOptions, pretrain
from ss3d_train.cli import app


def test_resume_refuses_another_seed_preset_or_shards(views_dir, small_preset, override_preset, tmp_path):
    out = tmp_path / "run"
    pretrain([str(views_dir)], RunOptions(out=out, preset=str(small_preset), seed=3, stop_after=1))
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for path in sorted(views_dir.glob("*.tar"))[:2] + list(views_dir.glob("*.index.json")):
        shutil.copy(path, fewer)
    wider = override_preset(small_preset, tmp_path, model={"hidden": 32}, pretrain={"lr": 0.002})
    cases = [([str(views_dir)], str(small_preset), 4, "seed 3 -> 4"),
             ([str(views_dir)], str(wider), 3, r"preset \[model\] hidden 16 -> 32; preset \[pretrain\] lr"),
             ([str(fewer)], str(small_preset), 3, "views shards missing synth-000002.tar, synth-000003.tar")]
    for shards, preset, seed, message in cases:
        with pytest.raises(Ss3dError, match=message):
            pretrain(shards, RunOptions(out=out, preset=preset, seed=seed, resume=True, stop_after=1))
    # The refusals left the run as it was: the same command still continues it.
    pretrain([str(views_dir)], RunOptions(out=out, preset=str(small_preset), seed=3, resume=True, stop_after=1))
    assert json.loads((out / "config.json").read_text())["options"]["seed"] == 3


def test_a_non_finite_init_checkpoint_is_refused_before_training(views_dir, small_preset, tmp_path):
    network = ReconstructionNetwork(ModelConfig.from_preset(load_preset(str(small_preset))))
    with torch.no_grad():
        network.decoder.head.weight[0, 0] = float("inf")
    save_network(tmp_path / "inf.safetensors", network, CheckpointMeta(model_config={}, stage="init"))
    with pytest.raises(Ss3dError, match=r"NaN/Inf values \(first: decoder\.head\.weight\)"):
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "run", preset=str(small_preset)),
                 init=tmp_path / "inf.safetensors")
    assert not list((tmp_path / "run").glob("*.safetensors"))


@pytest.mark.parametrize("flag", ["--seed", "--epochs", "--stop-after", "--workers", "--max-nonfinite",
                                  "--max-bad"])
def test_negative_numbers_are_one_line_errors(views_dir, tmp_path, flag):
    result = CliRunner().invoke(app, ["pretrain", str(views_dir), "--out", str(tmp_path / "run"), flag, "-1"])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and f"{flag} -1" in lines[0], result.output
    assert not (tmp_path / "run").exists()


def _break_one_image(shard) -> None:
    """Rewrite ``shard`` with the first image of its first sample replaced by garbage bytes."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    first = next(name for name, _ in members if name.endswith(".png"))
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            data = b"\x89PNG broken" if name == first else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_corrupt_samples_are_counted_by_reason_and_bounded(views_dir, small_preset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(views_dir, broken)
    _break_one_image(sorted(broken.glob("*.tar"))[1])
    out = tmp_path / "run"
    pretrain([str(broken)], RunOptions(out=out, preset=str(small_preset), epochs=2, max_bad=1))
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["bad_samples"] == 2 and last["bad_reasons"] == {"unreadable image": 2}  # one per epoch
    with pytest.raises(Ss3dError, match="more than 0 unreadable shard samples in epoch 0"):
        pretrain([str(broken)], RunOptions(out=tmp_path / "strict", preset=str(small_preset), max_bad=0))


def test_a_run_from_before_an_option_existed_resumes_at_its_off_value_only(tmp_path):
    from ss3d_train.run import check_same_run

    sections = json.loads(load_preset("cpu").to_json())["sections"]
    older = copy.deepcopy(sections)
    del older["pretrain"]["grad_clip_norm"]  # a run folder written before the option was added
    recorded = tmp_path / "config.json"
    recorded.write_text(json.dumps({"preset": {"sections": older}, "options": {"seed": 0}, "data": {}}))
    check_same_run(recorded, {"preset": {"sections": sections}, "options": {"seed": 0}, "data": {}})
    clipped = copy.deepcopy(sections)
    clipped["pretrain"]["grad_clip_norm"] = 0.5
    with pytest.raises(Ss3dError, match=r"preset \[pretrain\] grad_clip_norm null -> 0.5"):
        check_same_run(recorded, {"preset": {"sections": clipped}, "options": {"seed": 0}, "data": {}})
