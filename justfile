# ss3d task runner. Run through `tools/just <recipe>`, which sets up .venv first.
# Presets: `cpu` (default, minutes on a 2-core CPU), `tiny` (tests), `paper` (the paper's sizes, GPU cluster).

set shell := ["bash", "-euo", "pipefail", "-c"]

preset := env_var_or_default("SS3D_PRESET", "cpu")
out := env_var_or_default("SS3D_OUT", "shards")

# list recipes
default:
    @just --list

# the test suite (all of it, Blender and torchrun included), on 2 workers
test *args:
    python -m pytest -n 2 {{args}}

# the whole pipeline on the default offline data
demo:
    @echo "ss3d demo (preset {{preset}}): the pipeline stages available in this build:"
    ss3d-data preset {{preset}} > /dev/null && echo "  presets: ok"
    @echo "  data, pretrain, selftrain, distill, eval: not built yet (see the open issues)"
