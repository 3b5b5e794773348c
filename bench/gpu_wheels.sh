#!/usr/bin/env bash
# The wheels a bare GPU machine (Python 3.12, x86-64, torch and the Hugging Face libraries already
# there, no network) lacks to run the server, its benches and tests/server/test_low_vram_gpu.py:
# `bash bench/gpu_wheels.sh` here (with pip's network), then carry `.whl` to that machine and run
# `bash bench/gpu_checks.sh` there (docs/performance.md, "GPU checks").
#
# Each package at the version .venv has (the one the tests here run), cp312 manylinux x86-64 for
# binaries, one version each. Then every wheel's requirements are checked: each must be carried
# or among what the machine already has (DEVICE_HAS, with the versions seen there where known).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python}
# What the machine lacks: the server's own dependencies and theirs. typing-extensions too, since
# pydantic needs a newer one than the machine may have; httptools is uvicorn's fast parser (the
# server's dependency). importlib-metadata (diffusers') is not needed on Python 3.12.
CARRIED=(diffusers fastapi starlette pydantic pydantic-core uvicorn annotated-types typing-inspection
         opentelemetry-api typing-extensions httptools)
# Already on the machine (the device's package list), with the version seen there where known.
DEVICE_HAS="torch=2.11.0 transformers=5.17.0 accelerate=1.15.0 huggingface-hub=1.33.0 safetensors=0.8.0
numpy=2.5.2 peft pillow scipy filelock regex requests anyio idna click h11 httpx httpcore certifi
sniffio annotated-doc uvloop packaging pyyaml tqdm jinja2 pytest zipp"
NOT_NEEDED="importlib-metadata"  # diffusers imports importlib.metadata on Python >= 3.8

mkdir -p .whl
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

pins=()
for name in "${CARRIED[@]}"; do
    pins+=("$name==$("$VENV_PYTHON" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name")")
done
rm -f .whl/*.whl
"$VENV_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

"$VENV_PYTHON" - "$DEVICE_HAS" "$NOT_NEEDED" <<'EOF'
"""Every requirement of every wheel (Python 3.12 on Linux x86-64, no extras) carried or on the machine."""
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

device = {}
for item in sys.argv[1].split():
    name, _, version = item.partition("=")
    device[canonicalize_name(name)] = Version(version) if version else None
not_needed = {canonicalize_name(name) for name in sys.argv[2].split()}
environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
wheels = {}
for path in sorted(Path(".whl").glob("*.whl")):
    with zipfile.ZipFile(path) as wheel:
        metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(wheel.read(metadata).decode())
    wheels[canonicalize_name(headers["Name"])] = (Version(headers["Version"]), headers.get_all("Requires-Dist") or [], path)
problems = []
for name, (version, requirements, path) in wheels.items():
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        needed = canonicalize_name(requirement.name)
        if needed in not_needed:
            continue
        if needed in wheels:
            have, where = wheels[needed][0], "carried"
        elif needed in device:
            have, where = device[needed], "on the machine"
        else:
            problems.append(f"{name} needs {requirement}: neither carried nor on the machine")
            continue
        if have is not None and not requirement.specifier.contains(have, prereleases=True):
            problems.append(f"{name} needs {requirement}: {have} {where}")
total = sum(path.stat().st_size for _, _, path in wheels.values())
for name, (version, _, path) in sorted(wheels.items()):
    print(f"{path.stat().st_size / 2**20:7.2f} MiB  {path.name}")
print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in .whl")
if len(wheels) != len(list(Path(".whl").glob("*.whl"))):
    problems.append("two versions of one package in .whl")
if total > 32 * 2**20:
    problems.append(f"{total / 2**20:.1f} MiB: too much of the 64 MiB a device call carries with the working tree")
for problem in problems:
    print("problem:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
