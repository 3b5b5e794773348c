#!/usr/bin/env bash
# Issue 14's GPU figures and the CUDA-only test, in one call of a bare GPU machine (docs/performance.md,
# "GPU checks"): `bash bench/gpu_checks.sh` there, with `.whl` (bench/gpu_wheels.sh) carried.
# Each step has its own time limit, all within GPU_CHECKS_SECONDS (540); the most important first.
# Output: $OUT/gpu_checks.log (everything) and $OUT/summary.txt (each step's exit, time and figures),
# the summary printed last.
#
# GPU_CHECKS_QUICK=1 PYTHON=.venv/bin/python bash bench/gpu_checks.sh: a dry run on this CPU, every
# step at tiny sizes (the quick flags come last on each command line: argparse takes the last).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
QUICK=${GPU_CHECKS_QUICK:-}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
LOG=$OUT/gpu_checks.log
SUMMARY=$OUT/summary.txt
WORK=${GPU_CHECKS_WORK:-/tmp/sd_blender_bench}  # the random full-size models, built once, shared by the steps
COMPILE_MODE=${GPU_COMPILE_MODE:-default}  # the server's CUDA default, max-autotune-no-cudagraphs, compiles for longer
SLOW=${QUICK:+2}  # a dry run's time limits doubled: a 2-core CPU at tiny sizes is slower than the GPU at full ones
SLOW=${SLOW:-1}
DEADLINE=$((SECONDS + ${GPU_CHECKS_SECONDS:-$((540 * SLOW))}))
STEP_LOG=$(mktemp)
: >"$LOG"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_VERBOSITY=error

if [[ $QUICK ]]; then
    export TORCH_COMPILE_DISABLE=1  # the compile step's flags and code path, not minutes of compiling on a CPU
    WORK=$(mktemp -d)
    quick=(--device cpu --size 64 --steps 1 --runs 1)
    quick_batch=(--images 2)
    quick_sdxl=(--dtype bfloat16)  # half the memory of building it in float32 on a CPU
    quick_preview=(--device cpu --size 64 --steps 3 --runs 1)
else
    quick=() quick_batch=() quick_sdxl=() quick_preview=()
    if [[ -d .whl ]]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            2>&1 | tee -a "$LOG" || { echo "== the wheels did not install" | tee -a "$SUMMARY"; exit 1; }
        export PYTHONPATH=/tmp/site
    fi
fi
export PYTHONPATH=$PWD/server${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: COMMAND's output in the log, its exit and figures in the summary
    local name=$1 limit=$(($2 * SLOW)) started=$SECONDS rc
    shift 2
    local left=$((DEADLINE - SECONDS - 10))
    if ((left < 30)); then
        echo "== $name: skipped, ${left} s left" | tee -a "$LOG" "$SUMMARY"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (at most $limit s): $*" | tee -a "$LOG"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$STEP_LOG" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    {
        echo "== $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (time limit)'), $((SECONDS - started)) s"
        grep -E "$FIGURES" "$STEP_LOG" || tail -n 5 "$STEP_LOG"
    } >>"$SUMMARY"
}
FIGURES='torch [0-9]|^(stock diffusers|sd_blender engine|engine vs stock|load |built a random|one preview|one SD 1.5|  (linear|TAESD) every|tiny model|problem|versions)|[0-9]+ (passed|failed|skipped|errors?)|Error'

nvidia-smi 2>&1 | tee -a "$LOG"
cat >"$STEP_LOG.py" <<'EOF'
"""The versions this run uses, each carried wheel's requirements checked against what is installed,
and the server's modules imported."""
import importlib.metadata as metadata
import sys
from pathlib import Path

from packaging.requirements import Requirement

names = ["torch", "diffusers", "transformers", "accelerate", "huggingface-hub", "peft", "safetensors", "fastapi", "pydantic", "uvicorn"]
print("versions:", ", ".join(f"{name} {metadata.version(name)}" for name in names))
for wheel in sys.argv[1:]:
    name = Path(wheel).name.split("-")[0]
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            if requirement.name.replace("_", "-").lower() != "importlib-metadata":  # not needed on Python >= 3.8
                print(f"problem: {name} needs {requirement}, not installed")
            continue
        if not requirement.specifier.contains(have, prereleases=True):
            print(f"problem: {name} needs {requirement}, {have} installed")

import sd_blender_server.api, sd_blender_server.cli, sd_blender_server.engine  # noqa: E401, F401, E402
import torch  # noqa: E402

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
EOF
shopt -s nullglob
step setup 90 "$PYTHON" "$STEP_LOG.py" .whl/*.whl

# 1. Issue 14's speed targets, SD 1.5 at 512x512, 20 steps, CFG, one depth ControlNet, float16: the
# engine >= 2x as fast as stock diffusers eager (same process); <= 0.2 s an image with 4 LCM steps;
# >= 10 images/s in a batch (8 images a job, 4 LCM steps).
step speed 150 "$PYTHON" bench/generation_bench.py --compare --runs 5 --work "$WORK" "${quick[@]}"
step lcm 60 "$PYTHON" bench/generation_bench.py --scheduler lcm --steps 4 --runs 10 --work "$WORK" "${quick[@]}"
step batched 60 "$PYTHON" bench/generation_bench.py --scheduler lcm --steps 4 --images 8 --runs 5 --work "$WORK" \
    "${quick[@]}" "${quick_batch[@]}"
# 2. --low-vram: SD 1.5 with 2 ControlNets at 512x512 in <= 4 GB of GPU memory.
step low_vram_sd15 90 "$PYTHON" bench/generation_bench.py --low-vram --controls depth,openpose --runs 2 --work "$WORK" \
    "${quick[@]}"
# 3. The CUDA-only test: a synchronized texture job under model CPU offload gives the images without it.
step pytest 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/server/test_low_vram_gpu.py
# 4. A live preview every 3 steps: <= 5 % of a full-size SD 1.5 step.
step preview 90 "$PYTHON" bench/preview_bench.py "${quick_preview[@]}"
# 5. --low-vram: SDXL (1024x1024, one ControlNet) in <= 8 GB; the steps do not change the peak.
step low_vram_sdxl 150 "$PYTHON" bench/generation_bench.py --family sdxl --low-vram --steps 8 --runs 1 --work "$WORK" \
    "${quick[@]}" "${quick_sdxl[@]}"
# 6. --compile (first job: the compile), against step 1's stock diffusers median: the 2x target.
step compile 600 "$PYTHON" bench/generation_bench.py --compile --compile-mode "$COMPILE_MODE" --runs 5 --work "$WORK" \
    "${quick[@]}"

if [[ $QUICK ]]; then rm -rf "$WORK"; fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >>"$LOG" 2>&1
rm -f "$STEP_LOG" "$STEP_LOG.py"
echo "== summary ($SECONDS s in all; $OUT)"
cat "$SUMMARY"
