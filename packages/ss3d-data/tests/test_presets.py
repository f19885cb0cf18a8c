from dataclasses import dataclass

import pytest

from ss3d_data import Ss3dError, available_presets, load_preset, section_config


def test_named_presets_exist_and_inherit_every_key():
    assert {"paper", "cpu", "quality", "mini", "tiny"} <= set(available_presets())
    paper = load_preset("paper")
    for name in ("cpu", "quality", "tiny"):
        preset = load_preset(name)
        assert preset.sections.keys() == paper.sections.keys()
        for section, values in paper.sections.items():
            if section != "preset":
                assert preset.sections[section].keys() == values.keys(), section


def test_paper_preset_has_the_papers_numbers():
    paper = load_preset("paper").sections
    assert paper["model"]["hidden"] == 256 and paper["model"]["modulated_layers"] == 5
    assert paper["pretrain"]["supervision_views"] == 5 and paper["pretrain"]["rays_per_view"] == 340
    assert paper["volume"]["samples_per_ray"] == 100 and paper["pretrain"]["lr"] == 5e-5
    assert paper["selftrain"]["hypotheses"] == 10 and paper["selftrain"]["camera_steps_per_step"] == 10
    assert paper["distill"]["points_per_image"] == 25000 and paper["distill"]["epochs"] == 75
    assert paper["render"]["views_per_instance"] == 20 and paper["render"]["elevation_deg"] == [-75.0, 75.0]


def test_child_preset_cannot_add_unknown_keys(tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text('[preset]\ninherit = "paper"\n[pretrain]\nlearning_rate = 1.0\n')
    with pytest.raises(Ss3dError, match="pretrain"):
        load_preset(str(bad))


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(Ss3dError, match="unknown preset"):
        load_preset("nope")


@dataclass
class _Cfg:
    lr: float
    steps: int
    sizes: list[int]


def test_section_config_checks_types_and_keys():
    cfg = section_config(_Cfg, {"lr": 1, "steps": 3, "sizes": [1, 2]}, "x")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    with pytest.raises(Ss3dError, match="missing"):
        section_config(_Cfg, {"lr": 1.0, "sizes": []}, "x")
    with pytest.raises(Ss3dError, match="unknown"):
        section_config(_Cfg, {"lr": 1.0, "steps": 1, "sizes": [], "extra": 1}, "x")
    with pytest.raises(Ss3dError, match="steps"):
        section_config(_Cfg, {"lr": 1.0, "steps": "3", "sizes": []}, "x")
