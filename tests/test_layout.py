"""Monorepo invariants: package dependencies point one way, and every CLI answers --help and --version."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ss3d"]["layers"]


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_follow_the_declared_layers(package):
    src = ROOT / "packages" / package.replace("_", "-") / "src" / package
    allowed = set(LAYERS[package]) | {package}
    offenders = []
    for file in src.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in LAYERS and top not in allowed:
                    offenders.append(f"{file.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


@pytest.mark.parametrize("tool", ["ss3d-data", "ss3d-render", "ss3d-model", "ss3d-train", "ss3d-eval"])
def test_every_cli_answers(tool):
    exe = Path(sys.executable).parent / tool
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Usage" in out.stdout, out.stderr
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith(f"{tool} 0."), out.stdout


def test_bad_input_is_one_red_line_and_exit_2(tmp_path):
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(b"not a checkpoint at all")
    exe = Path(sys.executable).parent / "ss3d-model"
    out = subprocess.run([exe, "info", str(bogus)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[0].startswith("error:")
