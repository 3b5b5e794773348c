"""The model registry: every model the server can run, by name.

Models come from the command line (`--model`, `--controlnet`: hub ids, diffusers folders,
single files, `tiny`) and from model folders (`--models-dir`) laid out as A1111 or ComfyUI keep
them. A request names models only by their registry name; nothing a client sends is ever used
as a filesystem path.

Nothing here loads weights: the family (sd15, sd2, sdxl) of a `.safetensors` file is read from
its header (tensor names and shapes), that of a diffusers folder from its config files.
Pickle files (.ckpt, .pt, .bin, .pth) are listed as refused and never opened.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .config import UNION

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")
PICKLE_REASON = "pickle file (may run code when loaded): convert to safetensors"
CONFIGS_DIR = Path(__file__).parent / "configs"
_UNION_KEYS = ("task_embedding", "control_type_proj.", "control_add_embedding.")
UNION_FILE_REASON = (
    "a ControlNet Union model needs its config.json: put the file in a folder of its own as "
    "diffusion_pytorch_model.safetensors next to the model's config.json (config_promax.json for ProMax)"
)

# Sub-folders of a models folder, by kind: A1111 (webui/models/...) and ComfyUI (ComfyUI/models/...).
LAYOUT = {
    "base": ("Stable-diffusion", "checkpoints"),
    "controlnet": ("ControlNet", "controlnet"),
    "lora": ("Lora", "loras"),
}
# Control types guessed from a ControlNet's name (control_v11f1p_sd15_depth, diffusers_xl_canny_mid...).
_CONTROL_TYPE_WORDS = (
    ("openpose", "openpose"),
    ("pose", "openpose"),
    ("normal", "normal"),
    ("depth", "depth"),
    ("lineart", "lineart"),
    ("canny", "canny"),
    ("seg", "seg"),
    ("tile", "tile"),
    ("scribble", "scribble"),
    ("softedge", "softedge"),
    ("mlsd", "mlsd"),
    ("inpaint", "inpaint"),
)
_CONTEXT_FAMILIES = {768: "sd15", 1024: "sd2", 2048: "sdxl"}
# A UNet's input channels this server runs: latents (4), and with the mask and the masked image's
# latents (an inpainting checkpoint).
INPAINTING_UNET_CHANNELS = 9
UNET_IN_CHANNELS = (4, INPAINTING_UNET_CHANNELS)
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # base | controlnet | lora | refused
    source: str  # tiny | hub | folder | file
    location: str
    family: str | None = None  # sd15 | sd2 | sdxl | tiny | None (unknown)
    control_type: str | None = None
    reason: str | None = None  # why a refused file is refused
    refused_kind: str | None = None  # the kind of folder a refused file was found in


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a .safetensors file (tensor names, dtypes, shapes; `__metadata__`)."""
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise ValueError("not a safetensors file: too short")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise ValueError("not a safetensors file: header too large")
        header = json.loads(file.read(length))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: header is not an object")
    return header


def _context_family(header: dict, pattern: re.Pattern) -> str | None:
    for key, value in header.items():
        if pattern.search(key) and isinstance(value, dict) and len(value.get("shape", ())) == 2:
            return _CONTEXT_FAMILIES.get(value["shape"][-1])
    return None


_ATTN2_TO_K = re.compile(r"attn2[._]to_k[._]weight$")
# lllyasviel's ControlNet layout (control_model.*, or the same keys without the prefix, as some
# fp16 conversions save them) and diffusers' ControlNetModel.
_CONTROLNET_PREFIXES = (
    "control_model.",
    "input_hint_block.",
    "zero_convs.",
    "controlnet_cond_embedding.",
    "controlnet_down_blocks.",
)
_LORA_ATTN2_TO_K_DOWN = re.compile(r"attn2[._]to_k.*(lora_down|lora_A|lora\.down)[._]weight$")


# kohya-ss training metadata (LoRAs): ss_base_model_version is sd_v1, sd_v2, sd_v2_768_v, sdxl_base_v1-0, ...
_KOHYA_VERSIONS = (("sdxl", "sdxl"), ("sd_v2", "sd2"), ("sd_v1", "sd15"))


def _metadata_family(header: dict) -> str | None:
    metadata = header.get("__metadata__") or {}
    architecture = str(metadata.get("modelspec.architecture", ""))
    if architecture == "sd_blender-tiny":
        return "tiny"
    if architecture.startswith("stable-diffusion-xl"):
        return "sdxl"
    if architecture.startswith("stable-diffusion-v2"):
        return "sd2"
    if architecture.startswith("stable-diffusion-v1"):
        return "sd15"
    version = str(metadata.get("ss_base_model_version", ""))
    for prefix, family in _KOHYA_VERSIONS:
        if version.startswith(prefix):
            return family
    if str(metadata.get("ss_v2", "")).lower() == "true":
        return "sd2"
    return None


def classify_safetensors(header: dict) -> tuple[str | None, str | None]:
    """(kind, family) of a safetensors file from its header; kind None when not recognised."""
    keys = [key for key in header if key != "__metadata__"]
    family = _metadata_family(header)
    if any("lora" in key for key in keys):
        if family is None:
            if any(key.startswith(("lora_te2_", "text_encoder_2.", "te2.")) for key in keys):
                family = "sdxl"
            else:
                family = _context_family(header, _LORA_ATTN2_TO_K_DOWN)
        return "lora", family
    if any(key.startswith(_CONTROLNET_PREFIXES) for key in keys):
        if family is None:
            if any(key.startswith(("control_model.label_emb", "label_emb.", "add_embedding.")) for key in keys):
                family = "sdxl"
            else:
                family = _context_family(header, _ATTN2_TO_K)
        return "controlnet", family
    if any(key.startswith("model.diffusion_model.") for key in keys):
        if family is None:
            if any(key.startswith("conditioner.embedders.1") for key in keys):
                family = "sdxl"
            elif any(key.startswith("cond_stage_model.model.") for key in keys):
                family = "sd2"
            elif any(key.startswith("cond_stage_model.transformer.") for key in keys):
                family = "sd15"
            else:
                family = _context_family(header, _ATTN2_TO_K)
        return "base", family
    return None, family


def unet_in_channels(header: dict) -> int | None:
    """The input channels of a checkpoint's UNet (4; 9 for an inpainting model) from its header;
    None for a file without one in the original layout."""
    conv_in = header.get("model.diffusion_model.input_blocks.0.0.weight")
    if isinstance(conv_in, dict) and len(conv_in.get("shape", ())) == 4:
        return conv_in["shape"][1]
    return None


def unsupported_reason(header: dict) -> str | None:
    """Why the model in a safetensors file cannot run on this server, from its header (None: it can).
    These formats would fail when loaded, or give wrong images; they are refused with this reason."""
    keys = [key for key in header if key != "__metadata__"]
    if any(".hada_w1_" in key or ".lokr_w1" in key for key in keys):
        return "a LyCORIS LoHa/LoKr network: not supported (LoRA and LoCon files are)"
    if "lora_controlnet" in header:
        return "a Control-LoRA: not supported (ControlNets in the original or diffusers layout are)"
    if any("lllite" in key for key in keys):
        return "a ControlNet-LLLite: not supported (ControlNets in the original or diffusers layout are)"
    if any(key.startswith(("control_model.label_emb.", "label_emb.")) for key in keys) and any(
        key.startswith(("control_model.", "input_hint_block.")) for key in keys
    ):
        # diffusers' reader of this layout drops SDXL's label_emb (add_embedding): it cannot load.
        return "an SDXL ControlNet in the original layout: not supported (SDXL ControlNets in the diffusers layout are)"
    channels = unet_in_channels(header)
    if channels not in (None, *UNET_IN_CHANNELS):
        return (
            f"a UNet with {channels} input channels (an instruct-pix2pix model): not supported (this server runs "
            "4-channel models and 9-channel inpainting models)"
        )
    if any(key.startswith("conditioner.embedders.0.model.") for key in keys) and not any(
        key.startswith("conditioner.embedders.1.") for key in keys
    ):
        return "an SDXL refiner: not supported (SDXL base models are)"
    return None


def folder_kind_family(folder: Path) -> tuple[str | None, str | None]:
    """(kind, family) of a diffusers folder from its configs: model_index.json or config.json."""
    try:
        if (folder / "model_index.json").is_file():
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
            name = str(index.get("_class_name", ""))
            if "XL" in name:
                return "base", "sdxl"
            unet_config = folder / "unet" / "config.json"
            if unet_config.is_file():
                dim = json.loads(unet_config.read_text(encoding="utf-8")).get("cross_attention_dim")
                return "base", _CONTEXT_FAMILIES.get(dim, "sd15" if "StableDiffusion" in name else None)
            return "base", None
        if (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            if config.get("_class_name") == "ControlNetUnionModel":
                return "controlnet", "sdxl"
            if config.get("_class_name") == "ControlNetModel":
                if config.get("addition_embed_type") == "text_time":
                    return "controlnet", "sdxl"
                return "controlnet", _CONTEXT_FAMILIES.get(config.get("cross_attention_dim"))
    except (OSError, ValueError) as error:
        log.warning("cannot read the configuration of %s: %s", folder, error)
    return None, None


def is_union_header(header: dict) -> bool:
    """Whether a ControlNet's safetensors header is that of a ControlNet Union model."""
    return any(key.startswith(_UNION_KEYS) for key in header)


def is_union_folder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("_class_name") == "ControlNetUnionModel"


def guess_control_type(name: str) -> str | None:
    lowered = name.lower()
    for word, control_type in _CONTROL_TYPE_WORDS:
        if word in lowered:
            return control_type
    return None


def _layout_folders(models_dir: Path) -> list[tuple[str, Path]]:
    """(kind, folder) of every layout folder in a webui/ComfyUI root or its models/ folder."""
    roots = [models_dir / "models", models_dir] if (models_dir / "models").is_dir() else [models_dir]
    found = []
    for root in roots:
        for kind, names in LAYOUT.items():
            for name in names:
                folder = root / name
                if folder.is_dir():
                    found.append((kind, folder))
    return found


@dataclass(frozen=True)
class Registry:
    """Names to models, never changed once built (a change gives a new Registry). Names are unique
    within a kind; the first one found keeps the plain stem."""

    entries: tuple[Entry, ...] = ()

    def with_entries(self, entries: list[Entry]) -> Registry:
        """This registry and `entries`, each renamed NAME-2, NAME-3, ... where its name is taken."""
        added = list(self.entries)
        for entry in entries:
            taken = {item.name for item in added if item.kind == entry.kind}
            name, number = entry.name, 2
            while name in taken:
                name, number = f"{entry.name}-{number}", number + 1
            added.append(dataclasses.replace(entry, name=name))
        return Registry(tuple(added))

    def scanned(self, models_dir: str | os.PathLike) -> Registry:
        """This registry and every model in an A1111/ComfyUI models folder (or the webui/ComfyUI root)."""
        return self.with_entries(scan(models_dir))

    def with_family(self, kind: str, name: str, family: str | None) -> Registry:
        return Registry(tuple(
            dataclasses.replace(entry, family=family) if (entry.kind, entry.name) == (kind, name) else entry
            for entry in self.entries
        ))

    def of_kind(self, kind: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind == kind]

    def get(self, kind: str, name: str) -> Entry | None:
        return next((entry for entry in self.entries if entry.kind == kind and entry.name == name), None)

    def names(self, kind: str) -> list[str]:
        return [entry.name for entry in self.of_kind(kind)]


def scan(models_dir: str | os.PathLike) -> list[Entry]:
    """Every model in an A1111/ComfyUI models folder (or the webui/ComfyUI root), in sorted order."""
    models_dir = Path(models_dir).expanduser()
    if not models_dir.is_dir():
        raise ValueError(f"models folder {models_dir} does not exist")
    layout = _layout_folders(models_dir)
    if not layout:
        log.warning(
            "%s has none of the folders %s", models_dir, ", ".join(name for names in LAYOUT.values() for name in names)
        )
    found: list[Entry] = []
    for kind, folder in layout:
        _scan_folder(kind, folder, 0, found)
    return found


def _scan_folder(kind: str, folder: Path, depth: int, found: list[Entry]) -> None:
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        log.warning("cannot list %s: %s", folder, error)
        return
    for path in children:
        if path.name.startswith("."):
            continue
        if path.is_dir():
            found_kind, family = folder_kind_family(path)
            if found_kind is not None:
                if found_kind == kind:
                    control_type = UNION if is_union_folder(path) else _control_type(kind, path.name)
                    found.append(Entry(path.name, kind, "folder", str(path), family, control_type))
            elif depth < _MAX_DEPTH:
                _scan_folder(kind, path, depth + 1, found)
            continue
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            # Never opened: listed so the user knows why it is not offered.
            found.append(_refused(path, PICKLE_REASON, kind))
        elif suffix == ".safetensors":
            found.append(_file_entry(kind, path))


def _refused(path: Path, reason: str, kind: str) -> Entry:
    return Entry(path.stem, "refused", "file", str(path), reason=reason, refused_kind=kind)


def _file_entry(kind: str, path: Path) -> Entry:
    try:
        header = read_safetensors_header(path)
    except (OSError, ValueError) as error:
        return _refused(path, f"unreadable: {error}", kind)
    found_kind, family = classify_safetensors(header)
    reason = unsupported_reason(header)
    if reason is not None:
        return _refused(path, reason, kind)
    if found_kind == "controlnet" and is_union_header(header):
        return _refused(path, UNION_FILE_REASON, found_kind)
    if found_kind is None:
        # A diffusers-format single file (e.g. a ControlNet's diffusion_pytorch_model.safetensors renamed).
        found_kind = kind
    if found_kind != kind:
        log.info("%s is a %s in the %s folder; listed as a %s", path, found_kind, kind, found_kind)
    return Entry(path.stem, found_kind, "file", str(path), family, _control_type(found_kind, path.stem))


def _control_type(kind: str, name: str) -> str | None:
    return guess_control_type(name) if kind == "controlnet" else None


def config_folder(family: str | None) -> Path | None:
    """The diffusers configuration the server carries for a family's single-file checkpoints."""
    if family is None:
        return None
    folder = CONFIGS_DIR / family
    return folder if folder.is_dir() else None
