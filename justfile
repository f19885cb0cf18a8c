# ss3d task runner. Run through `tools/just <recipe>`, which sets up .venv first.
# Presets: `cpu` (default, minutes on a 2-core CPU), `tiny` (tests), `paper` (the paper's sizes, a GPU cluster).
# Every step reads and writes files only, and skips work whose output already exists, so a re-run continues.

set shell := ["bash", "-euo", "pipefail", "-c"]

preset := env_var_or_default("SS3D_PRESET", "cpu")
data := env_var_or_default("SS3D_DATA", "shards/demo")
runs := env_var_or_default("SS3D_RUNS", "runs/demo")
cache := env_var_or_default("SS3D_CACHE", "shards/cache")
# Category roles of the default offline benchmark (Sweet Home 3D furniture library, Debian):
pretrain_categories := env_var_or_default("SS3D_PRETRAIN", "chair,table,lamp,sofa,cabinet,bed")
selftrain_categories := env_var_or_default("SS3D_SELFTRAIN", "bottle,armchair")
heldout_categories := env_var_or_default("SS3D_HELDOUT", "vase,box")
max_train := env_var_or_default("SS3D_MAX_TRAIN", "12")
max_test := env_var_or_default("SS3D_MAX_TEST", "3")

# list recipes
default:
    @just --list

# the test suite (all of it: Blender, torchrun and the tiny end-to-end pipeline), on 2 workers
test *args:
    python -m pytest -n 2 {{args}}

# the main job: data -> pretrain -> selftrain -> distill -> eval -> report, on the default offline data
demo: data
    @echo "ss3d demo done (preset {{preset}}):"
    @echo "  distilled model: {{runs}}/distill/distill.safetensors"
    @echo "  tables:          {{runs}}/results/tables.md"
    @echo "  report:          {{runs}}/results/report.html"

# fetch the Sweet Home 3D library (Debian archive) and build the manifests of the three category roles
meshes:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{data}}
    if [ ! -s {{data}}/meshes.jsonl ]; then
      ss3d-data meshes fetch sweethome3d --cache {{cache}}
      ss3d-data meshes build --source sweethome3d --cache {{cache}} --out {{data}}/meshes.jsonl --preset {{preset}}
    fi
    all="{{pretrain_categories}},{{selftrain_categories}},{{heldout_categories}}"
    ss3d-data meshes select --manifest {{data}}/meshes.jsonl --out {{data}}/pretrain.jsonl \
      --categories {{pretrain_categories}} --max-train {{max_train}} --max-val 0 --max-test 0
    ss3d-data meshes select --manifest {{data}}/meshes.jsonl --out {{data}}/selftrain.jsonl \
      --categories {{selftrain_categories}} --max-val 0 --max-test 0
    ss3d-data meshes select --manifest {{data}}/meshes.jsonl --out {{data}}/test.jsonl \
      --categories "$all" --max-train 0 --max-val 0 --max-test {{max_test}}

# render and shard: synthetic views (pretraining), in-the-wild collections (self-training), test images
data: meshes
    #!/usr/bin/env bash
    set -euo pipefail
    d={{data}}
    ss3d-render views --manifest $d/pretrain.jsonl --out $d/renders/views --preset {{preset}}
    ss3d-render collection --manifest $d/selftrain.jsonl --out $d/renders/wild --preset {{preset}} --background --degrade
    ss3d-render collection --manifest $d/test.jsonl --out $d/renders/test --preset {{preset}} --background --views-per-instance 1
    ss3d-data shard folders $d/renders/views --out $d/shards/train --prefix synthetic --preset {{preset}}
    ss3d-data shard folders $d/renders/wild --out $d/shards/train --prefix wild --preset {{preset}}
    ss3d-data shard folders $d/renders/test --out $d/shards/test --prefix test --preset {{preset}}
    ss3d-data inspect $d/shards/train $d/shards/test --sheet $d/contact-sheet.png

# speed figures of every package (prints; no assertions)
bench:
    python packages/ss3d-data/bench/bench_shards.py
    python packages/ss3d-render/bench/bench_render.py
    python packages/ss3d-model/bench/bench_model.py
    python packages/ss3d-eval/bench/bench_eval.py
