# ss3d task runner. Run through `tools/just <recipe>`, which sets up .venv first.
# Presets: `cpu` (default, minutes on a 2-core CPU), `tiny` (tests), `paper` (the paper's sizes, a GPU cluster).
# Every step reads and writes files only, and skips work whose output already exists, so a re-run continues.

set shell := ["bash", "-euo", "pipefail", "-c"]

preset := env_var_or_default("SS3D_PRESET", "cpu")
data := env_var_or_default("SS3D_DATA", "shards/demo")
runs := env_var_or_default("SS3D_RUNS", "runs/demo")
cache := env_var_or_default("SS3D_CACHE", "shards/cache")
# Mesh source: `sweethome3d` (Debian's furniture library, fetched once) or `procedural` (generated, no download).
source := env_var_or_default("SS3D_SOURCE", "sweethome3d")
procedural_instances := env_var_or_default("SS3D_PROCEDURAL_INSTANCES", "8")
# Category roles of the default offline benchmark (Sweet Home 3D furniture library, Debian):
pretrain_categories := env_var_or_default("SS3D_PRETRAIN", "chair,table,lamp,sofa,cabinet,bed")
selftrain_categories := env_var_or_default("SS3D_SELFTRAIN", "bottle,armchair")
heldout_categories := env_var_or_default("SS3D_HELDOUT", "vase,box")
# `SS3D_PRETRAIN=all` pretrains on every category that is neither self-trained nor held out; the test images then
# come from SS3D_TEST's categories.
test_categories := env_var_or_default("SS3D_TEST", "chair,table,lamp,sofa,cabinet,bed,bottle,armchair,vase,box")
max_train := env_var_or_default("SS3D_MAX_TRAIN", "12")
max_test := env_var_or_default("SS3D_MAX_TEST", "3")
# The quality benchmark's roles: more self-training categories (their order is the order experts join the
# zero-shot sweep), more held-out categories, more instances.
bench_data := env_var_or_default("SS3D_BENCH_DATA", "shards/bench")
bench_runs := env_var_or_default("SS3D_BENCH_RUNS", "runs/bench")
bench_selftrain := env_var_or_default("SS3D_BENCH_SELFTRAIN", "plant,person,armchair,bottle")
bench_heldout := env_var_or_default("SS3D_BENCH_HELDOUT", "vase,box,animal,motorbike,window")
bench_out := env_var_or_default("SS3D_BENCH_OUT", "docs/benchmark")

# list recipes
default:
    @just --list

# the lint (pyproject's [tool.ruff.lint] rules) and the test suite (all of it: Blender, torchrun and the tiny
# end-to-end pipeline), on 2 workers
test *args:
    python -m ruff check packages tools tests
    python -m pytest -n 2 --dist loadfile {{args}}

# Other CPUs run other float kernels (AMD EPYC: no AMX; others AVX2 only), and a user's machine must pass too.
# Marker `float_sensitive`: tests that judge what optimiser steps or bf16 produce by a threshold.
# the float-sensitive tests under every CPU kernel set that gives this machine other numbers (tools/kernel_sets.py)
test-kernels *args:
    #!/usr/bin/env bash
    set -euo pipefail
    mapfile -t sets < <(python tools/kernel_sets.py --differ)
    echo "kernel sets that differ here: ${#sets[@]}"
    failed=()
    for setting in "${sets[@]}"; do
      echo "== $setting"
      env $setting python -m pytest -n 2 --dist loadfile -m float_sensitive {{args}} || failed+=("$setting")
    done
    if [ ${#failed[@]} -gt 0 ]; then printf 'failed under: %s\n' "${failed[@]}"; exit 1; fi
    echo "float-sensitive tests green under every kernel set (${#sets[@]} beside this machine's own)"

# the main job: data -> pretrain -> selftrain -> distill -> eval -> report, on the default offline data
demo: data pretrain selftrain distill eval report
    @echo "ss3d demo done (preset {{preset}}):"
    @echo "  distilled model: {{runs}}/distill/distill.safetensors"
    @echo "  tables:          {{runs}}/results/tables.md"
    @echo "  report:          {{runs}}/results/report.html"

# fetch the mesh library (or generate procedural meshes) and build the manifests of the three category roles
meshes:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{data}}
    if [ ! -s {{data}}/meshes.jsonl ]; then
      if [ "{{source}}" = procedural ]; then
        ss3d-data meshes procedural --out {{data}}/procedural --instances {{procedural_instances}} --seed 0
        ss3d-data meshes build --source procedural:{{data}}/procedural --out {{data}}/meshes.jsonl --preset {{preset}}
      else
        ss3d-data meshes fetch {{source}} --cache {{cache}}
        ss3d-data meshes build --source {{source}} --cache {{cache}} --out {{data}}/meshes.jsonl --preset {{preset}}
      fi
    fi
    all="{{pretrain_categories}},{{selftrain_categories}},{{heldout_categories}}"
    pretrain=(--categories "{{pretrain_categories}}")
    if [ "{{pretrain_categories}}" = all ]; then  # every category but the self-training and held-out ones
      all="{{test_categories}}"; pretrain=(--exclude "{{selftrain_categories}},{{heldout_categories}}")
    fi
    ss3d-data meshes select --manifest {{data}}/meshes.jsonl --out {{data}}/pretrain.jsonl "${pretrain[@]}" \
      --max-train {{max_train}} --max-val 0 --max-test 0
    ss3d-data meshes select --manifest {{data}}/meshes.jsonl --out {{data}}/selftrain.jsonl \
      --categories {{selftrain_categories}} --max-train {{max_train}} --max-val 0 --max-test 0
    ss3d-data meshes select --manifest {{data}}/meshes.jsonl --out {{data}}/test.jsonl \
      --categories "$all" --max-train 0 --max-val 0 --max-test {{max_test}} --allow-missing

# render and shard: synthetic views (pretraining), in-the-wild collections (self-training), test images
data: meshes
    #!/usr/bin/env bash
    set -euo pipefail
    d={{data}}
    ss3d-render views --manifest $d/pretrain.jsonl --out $d/renders/views --preset {{preset}}
    ss3d-render collection --manifest $d/selftrain.jsonl --out $d/renders/wild --preset {{preset}} --background --degrade
    ss3d-render collection --manifest $d/test.jsonl --out $d/renders/test --preset {{preset}} --background --views-per-instance 1
    # views shards carry each mesh's occupancy grid when the preset asks for it ([data] occupancy_resolution)
    ss3d-data shard folders $d/renders/views --out $d/shards/train --prefix synthetic --preset {{preset}} \
      --manifest $d/pretrain.jsonl
    ss3d-data shard folders $d/renders/wild --out $d/shards/train --prefix wild --preset {{preset}}
    ss3d-data shard folders $d/renders/test --out $d/shards/test --prefix test --preset {{preset}}
    ss3d-data inspect $d/shards/train $d/shards/test --sheet $d/contact-sheet.png

# stage 1: pretrain on the synthetic multi-view renders (known cameras)
pretrain:
    #!/usr/bin/env bash
    set -euo pipefail
    out={{runs}}/pretrain
    [ -s $out/pretrain.safetensors ] && { echo "pretrain: done ($out/pretrain.safetensors)"; exit 0; }
    resume=""; [ -s $out/last.safetensors ] && resume="--resume"
    ss3d-train pretrain "{{data}}/shards/train/synthetic-views-*.tar" --out $out --preset {{preset}} $resume

# stage 2: self-train one expert per self-training category (masks only, multi-hypothesis cameras)
selftrain:
    #!/usr/bin/env bash
    set -euo pipefail
    for category in $(echo {{selftrain_categories}} | tr ',' ' '); do
      out={{runs}}/expert-$category
      if [ -s $out/expert-$category.safetensors ]; then echo "selftrain $category: done"; continue; fi
      resume=""; [ -s $out/last.safetensors ] && resume="--resume"
      ss3d-train selftrain "{{data}}/shards/train/wild-$category-*.tar" --init {{runs}}/pretrain/pretrain.safetensors \
        --out $out --name expert-$category --preset {{preset}} $resume
    done

# stage 3: distill experts (default: one per self-training category) and the synthetic-only model into one model
distill experts=selftrain_categories out=(runs / "distill"):
    #!/usr/bin/env bash
    set -euo pipefail
    out={{out}}
    [ -s $out/distill.safetensors ] && { echo "distill: done ($out/distill.safetensors)"; exit 0; }
    args=()
    for category in $(echo {{experts}} | tr ',' ' '); do
      args+=(--expert "$category={{runs}}/expert-$category/expert-$category.safetensors")
      args+=(--collections "{{data}}/shards/train/wild-$category-*.tar")
    done
    resume=""; [ -s $out/last.safetensors ] && resume="--resume"
    # The student starts from the synthetic-only model: the paper distils at lr 1e-6, which only a warm start allows.
    ss3d-train distill --out $out "${args[@]}" --synthetic {{runs}}/pretrain/pretrain.safetensors \
      --init {{runs}}/pretrain/pretrain.safetensors \
      --synthetic-shards "{{data}}/shards/train/synthetic-views-*.tar" --preset {{preset}} $resume

# evaluate the mask-ellipsoid floor, synthetic-only, category experts (each on its own category) and distilled on the
# held-out test images
eval:
    #!/usr/bin/env bash
    set -euo pipefail
    res={{runs}}/results
    just="{{just_executable()}} --justfile {{justfile()}} --working-directory $PWD"
    $just score-floor "{{data}}/shards/test" $res
    $just score {{runs}}/pretrain/pretrain.safetensors synthetic-only "{{data}}/shards/test" $res
    $just score {{runs}}/distill/distill.safetensors distilled "{{data}}/shards/test" $res
    for category in $(echo {{selftrain_categories}} | tr ',' ' '); do
      $just score {{runs}}/expert-$category/expert-$category.safetensors experts \
        "{{data}}/shards/test/test-$category-*.tar" $res/experts-$category
    done
    ss3d-eval table $res/*.jsonl $res/experts-*/*.jsonl --markdown $res/tables.md --json $res/tables.json \
      --margin-over ellipsoid

# IoU and Chamfer of one checkpoint on test shards, as <out>/<label>.{iou,chamfer}.jsonl (finished rows are kept)
score checkpoint label shards out:
    for metric in iou chamfer; do \
      ss3d-eval $metric --shards "{{shards}}" --manifest {{data}}/test.jsonl --preset {{preset}} --out {{out}} \
        --checkpoint {{checkpoint}} --label {{label}} --save-meshes; \
    done

# the floor every method must beat: an ellipsoid fitted to each input mask, as <out>/ellipsoid.{iou,chamfer}.jsonl
score-floor shards out:
    for metric in iou chamfer; do \
      ss3d-eval $metric --shards "{{shards}}" --manifest {{data}}/test.jsonl --preset {{preset}} --out {{out}} \
        --ellipsoid; \
    done

# the visual report: input, ground truth and every method's mesh per test image, in one HTML file
report:
    ss3d-eval report {{runs}}/results/*.iou.jsonl {{runs}}/results/experts-*/*.iou.jsonl \
      --shards "{{data}}/shards/test" --manifest {{data}}/test.jsonl --out {{runs}}/results/report.html --preset {{preset}}

# the quality recipe: the main job with pretraining on every eligible library mesh (4 views each, 3x the steps;
# preset `quality`), the same self-training categories and the same 28 test images; about an hour on 2 cores.
# Tables in runs/quality/results/tables.md (docs/quality.md compares them with the main job's)
quality:
    #!/usr/bin/env bash
    set -euo pipefail
    export SS3D_PRESET=${SS3D_PRESET:-quality} SS3D_DATA=${SS3D_DATA:-shards/quality} \
      SS3D_RUNS=${SS3D_RUNS:-runs/quality} SS3D_PRETRAIN=all SS3D_MAX_TRAIN=-1
    {{just_executable()}} --justfile {{justfile()}} --working-directory $PWD demo

# Tables go to $SS3D_BENCH_OUT (docs/benchmark)/{quality,zero-shot}.{md,json}; runs stay in $SS3D_BENCH_RUNS.
# Zero-shot sweep: held-out categories scored as the distilled experts grow (0 = synthetic-only, then 1..N).
# the offline quality benchmark, the paper's Tables 2-4 at this preset's scale (about an hour on 2 cores with cpu)
bench-quality:
    #!/usr/bin/env bash
    set -euo pipefail
    export SS3D_DATA={{bench_data}} SS3D_RUNS={{bench_runs}} SS3D_SELFTRAIN={{bench_selftrain}} \
      SS3D_HELDOUT={{bench_heldout}} SS3D_MAX_TRAIN=${SS3D_MAX_TRAIN:-16} SS3D_MAX_TEST=${SS3D_MAX_TEST:-6}
    just="{{just_executable()}} --justfile {{justfile()}} --working-directory $PWD"
    $just data pretrain selftrain
    $just distill
    $just eval
    runs={{bench_runs}}; zs=$runs/zero-shot; selftrain=$(echo {{bench_selftrain}} | tr ',' ' ')
    score_heldout() {  # LABEL CHECKPOINT: score one model on every held-out category
      for category in $(echo {{bench_heldout}} | tr ',' ' '); do
        $just score "$2" "$1" "{{bench_data}}/shards/test/test-$category-*.tar" $zs/$category
      done
    }
    for category in $(echo {{bench_heldout}} | tr ',' ' '); do
      $just score-floor "{{bench_data}}/shards/test/test-$category-*.tar" $zs/$category
    done
    score_heldout synthetic-only $runs/pretrain/pretrain.safetensors
    experts=(); labels=(ellipsoid synthetic-only)
    for category in $selftrain; do
      experts+=($category); n=${#experts[@]}; labels+=(distilled-$n)
      out=$runs/distill-$n; [ "$n" -eq $(echo $selftrain | wc -w) ] && out=$runs/distill  # all experts: `distill`
      $just distill "$(IFS=,; echo "${experts[*]}")" $out
      score_heldout distilled-$n $out/distill.safetensors
    done
    mkdir -p {{bench_out}}
    ss3d-eval table $runs/results/*.jsonl $runs/results/experts-*/*.jsonl \
      --markdown {{bench_out}}/quality.md --json {{bench_out}}/quality.json --margin-over ellipsoid
    files=(); for label in "${labels[@]}"; do files+=($zs/*/$label.*.jsonl); done
    ss3d-eval table "${files[@]}" --markdown {{bench_out}}/zero-shot.md --json {{bench_out}}/zero-shot.json \
      --margin-over ellipsoid
    echo "ss3d bench-quality done (preset {{preset}}): {{bench_out}}/quality.md, {{bench_out}}/zero-shot.md"

# speed figures of every package (prints; no assertions)
bench:
    python packages/ss3d-data/bench/bench_shards.py
    python packages/ss3d-render/bench/bench_render.py
    python packages/ss3d-model/bench/bench_model.py
    python packages/ss3d-train/bench/bench_train.py --preset cpu --steps 2
    python packages/ss3d-eval/bench/bench_eval.py
