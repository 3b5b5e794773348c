"""Model sources: where a model named on the command line or in a models folder is loaded
from (a hub id, a diffusers folder, a single .safetensors file or the built-in `tiny`), its
family, and loading it with diffusers with one-line errors. Single files load offline with the
configurations and CLIP vocabulary the server carries (configs/)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import hub, tiny
from . import registry as registry_module
from .config import UNION
from .errors import ModelLoadError
from .registry import Entry

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    name: str  # as the user gave it
    kind: str  # tiny | hub | folder | file
    location: str  # a path, or the hub id
    family: str | None = None  # sd15 | sd2 | sdxl | tiny | None (unknown)
    union: bool = False  # an SDXL ControlNet Union model: one ControlNet, several control types


def resolve_source(name: str, cache_dir: str | None, control_type: str | None = None) -> ModelSource:
    """Where `name` (hub id, folder, .safetensors file or `tiny`) is loaded from; a ControlNet
    served for the type `union` is a ControlNet Union model."""
    if control_type == UNION:
        return dataclasses.replace(resolve_source(name, cache_dir), family="sdxl", union=True)
    if name == "tiny":
        model_dir = tiny.tiny_model_dir(cache_dir)
        folder = tiny.controlnet_dir(model_dir, control_type) if control_type else model_dir / "pipeline"
        return ModelSource(name, "tiny", str(folder), "tiny")
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSource(name, "folder", str(path), registry_module.folder_kind_family(path)[1])
    if path.is_file() or path.suffix in (".safetensors", ".ckpt"):
        return ModelSource(name, "file", str(path), _file_family(path))
    if _HUB_ID.match(name):
        return ModelSource(name, "hub", name, hub.family(name))
    return ModelSource(name, "folder", str(path))


def _file_family(path: Path) -> str | None:
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    try:
        return registry_module.classify_safetensors(registry_module.read_safetensors_header(path))[1]
    except (OSError, ValueError):
        return None


def source_of_entry(entry: Entry) -> ModelSource:
    return ModelSource(entry.name, entry.source, entry.location, entry.family, union=entry.control_type == UNION)


def single_file_config(source: ModelSource, cache_dir: str | None) -> str:
    """The diffusers configuration folder passed to from_single_file, so nothing is fetched; for an
    inpainting checkpoint, the family's configuration with a 9-channel UNet."""
    if not source.location.lower().endswith(".safetensors"):
        raise ModelLoadError(f"model '{source.name}' is not loaded: {registry_module.PICKLE_REASON}")
    try:
        header = registry_module.read_safetensors_header(source.location)
    except (OSError, ValueError):
        header = {}  # a missing or broken file is reported by load_model
    reason = registry_module.unsupported_reason(header)
    if reason is not None:
        raise ModelLoadError(f"model '{source.name}' is not loaded: {reason}")
    if source.family == "tiny":
        folder = tiny.ensure_tiny_model(cache_dir) / "pipeline"
    else:
        folder = registry_module.config_folder(source.family)
    if folder is None:
        raise ModelLoadError(
            f"cannot load model '{source.name}': no configuration for its family ({source.family or 'unknown'}); "
            "this server carries configurations for sd15 and sdxl single files"
        )
    channels = registry_module.unet_in_channels(header)
    if channels == registry_module.INPAINTING_UNET_CHANNELS:
        return str(_config_with_unet_channels(folder, channels, cache_dir))
    return str(folder)


def _config_with_unet_channels(folder: Path, channels: int, cache_dir: str | None) -> Path:
    """A copy of a configuration folder (weights left out) whose UNet takes `channels` input
    channels, made once in the cache folder."""
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    target = Path(cache_dir or tiny.default_cache_dir()) / "configs" / f"{folder.name}-{key}-unet{channels}"

    def build(staging: Path) -> None:
        shutil.copytree(folder, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
        unet_config = staging / "unet" / "config.json"
        config = json.loads(unet_config.read_text(encoding="utf-8"))
        unet_config.write_text(json.dumps({**config, "in_channels": channels}, indent=2), encoding="utf-8")

    return tiny.folder_built_once(target, build)


def carried_tokenizers(family: str | None) -> dict:
    """The CLIP tokenizers of SD 1.5 (`tokenizer`) and SDXL (`tokenizer`, `tokenizer_2`) from the
    vocabulary the server carries (OpenAI CLIP's BPE, MIT licence): single files hold no tokenizer."""
    if family not in ("sd15", "sdxl"):
        return {}
    from transformers import CLIPTokenizer

    folder = registry_module.CONFIGS_DIR / "clip"
    files = (str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizers = {"tokenizer": CLIPTokenizer(*files, model_max_length=77)}
    if family == "sdxl":
        tokenizers["tokenizer_2"] = CLIPTokenizer(*files, model_max_length=77, pad_token="!")
    return tokenizers


def load_model(model_class, source: ModelSource, cache_dir: str | None, **options):
    """`from_pretrained` (hub id or folder) or `from_single_file`, with one-line errors."""
    if source.kind == "tiny":
        tiny.ensure_tiny_model(cache_dir)
    elif source.kind != "hub" and not Path(source.location).exists():
        raise ModelLoadError(f"model '{source.name}' not found: no such file or folder {source.location}")
    if source.kind == "file" and not source.location.lower().endswith(".safetensors"):
        raise ModelLoadError(f"model '{source.name}' is not loaded: {registry_module.PICKLE_REASON}")
    try:
        if source.kind == "file":
            return model_class.from_single_file(source.location, local_files_only=True, **options)
        # Only safetensors weights: a folder or repository with only pickle (.bin) weights is refused.
        return model_class.from_pretrained(source.location, use_safetensors=True, **options)
    except Exception as error:
        if source.kind == "hub":
            log.debug("loading %s from the hub failed", source.name, exc_info=True)
            raise ModelLoadError(hub.load_error_message(source.name, error)) from error
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ModelLoadError(f"cannot load model '{source.name}' from {source.location}: {detail}") from error
