# sd_blender: `make demo` and `make test` are the two set-up commands (see README.md).
PYTHON ?= python3
VENV := .venv
VENV_BPY5 := .venv-bpy5
PY := $(VENV)/bin/python
PY_BPY5 := $(VENV_BPY5)/bin/python
TORCH_PIN := torch==2.13.0
# Empty: PyPI (and whatever pip is configured with); https://download.pytorch.org/whl/cpu for a CPU-only build.
TORCH_INDEX ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' blender_manifest.toml)
EXTENSION_ZIP := dist/sd_blender-$(VERSION).zip
BLENDER_EXT = $(shell $(PY) -c "import bpy, os; print(os.path.join(bpy.utils.resource_path('LOCAL'), 'scripts', 'addons_core', 'bl_pkg', 'cli', 'blender_ext.py'))" 2>/dev/null)
# Empty MODEL = the server's default (SD 1.5 + ControlNet v1.1); `make demo MODEL=tiny` runs offline.
MODEL ?=
# Headless Blender keeps its config and shader cache in build/, not the home folder. (The tests
# use their own temporary folders; XDG_CACHE_HOME stays the user's so the Hugging Face cache is found.)
export BLENDER_USER_RESOURCES ?= $(CURDIR)/build/blender-user
export MESA_SHADER_CACHE_DIR ?= $(CURDIR)/build/mesa-cache

openapi: $(VENV)/.installed
	$(PY) -m sd_blender_server --model tiny --print-openapi > docs/openapi.json

.PHONY: openapi venv demo test test-core test-server test-blender test-blender5 extension clean

venv: $(VENV)/.installed

$(VENV)/.installed: server/pyproject.toml tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ./server -r tests/requirements.txt
	# The reference OpenPose drawing for tests/core: without its dependencies, which would replace torch.
	$(PY) -m pip install -q --no-deps controlnet-aux==0.0.10
	touch $@

$(VENV_BPY5)/.installed: tests/requirements-bpy5.txt
	$(PYTHON) -m venv $(VENV_BPY5)
	$(PY_BPY5) -m pip install -q -r tests/requirements-bpy5.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) tools/demo.py --out out/demo $(if $(MODEL),--model $(MODEL))

test: test-core test-server test-blender test-blender5

test-core: $(VENV)/.installed
	$(PY) -m pytest tests/core

test-server: $(VENV)/.installed
	$(PY) -m pytest tests/server

test-blender: $(VENV)/.installed extension
	$(PY) -m pytest tests/blender

test-blender5: $(VENV)/.installed $(VENV_BPY5)/.installed extension
	SD_BLENDER_SERVER=$(abspath $(VENV)/bin/sd-blender-server) $(PY_BPY5) -m pytest tests/blender

extension: $(EXTENSION_ZIP)

$(EXTENSION_ZIP): $(VENV)/.installed blender_manifest.toml $(shell find sd_blender -name '*.py')
	rm -rf build/extension && mkdir -p build/extension dist
	cp blender_manifest.toml build/extension/
	cd sd_blender && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp --parents {} ../build/extension/ \;
	$(PY) $(BLENDER_EXT) build --source-dir build/extension --output-filepath $@
	$(PY) $(BLENDER_EXT) validate $@

clean:
	rm -rf build dist out
