"""The catalog: every model this server offers, by name, and what a request may run with them.

A Catalog is never changed: what changes (a family learned from the hub) gives a new Catalog,
which the engine swaps in whole. So request threads may ask it questions while the worker runs.
Nothing here loads weights or touches the network.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType

from .config import UNION, ServerConfig
from .errors import ModelLoadError
from .model_sources import ModelSource, resolve_source, source_of_entry
from .registry import Entry, Registry
from .request import ControlInput, GenerationRequest, Problem
from .schedulers import SCHEDULERS

# The control mode of each control type in an SDXL ControlNet Union model (xinsir's
# controlnet-union-sdxl-1.0: 0 openpose, 1 depth, 2 thick lines, 3 thin lines, 4 normal,
# 5 segmentation, 6 tile and 7 repaint in the ProMax version only).
UNION_CONTROL_MODES = MappingProxyType({"openpose": 0, "depth": 1, "lineart": 3, "canny": 3, "normal": 4, "seg": 5, "tile": 6})
# Prefix of the key of a ControlNet from a models folder (served ones are keyed by their type).
_REGISTRY_KEY = "models-dir:"


@dataclass(frozen=True)
class Catalog:
    default_model: ModelSource
    controlnets: MappingProxyType  # control type -> the ModelSource serving it
    registry: Registry  # the default base model first, then the models folders'

    @classmethod
    def from_config(cls, config: ServerConfig) -> Catalog:
        """The models named on the command line and found in its models folders; a models folder
        that does not exist raises ModelLoadError."""
        default = resolve_source(config.model, config.cache_dir)
        controlnets = {
            control_type: resolve_source(name, config.cache_dir, control_type)
            for control_type, name in config.controlnets.items()
        }
        # The default model is registered first, so it keeps its name.
        registry = Registry().with_entries([Entry(default.name, "base", default.kind, default.location, default.family)])
        for models_dir in config.models_dirs:
            try:
                registry = registry.scanned(models_dir)
            except ValueError as error:
                raise ModelLoadError(str(error)) from error
        return cls(default, MappingProxyType(controlnets), registry)

    def with_family(self, name: str, family: str) -> Catalog:
        """This catalog with the family of the served model `name` (a hub id) known."""
        controlnets = {
            key: dataclasses.replace(source, family=family) if source.name == name else source
            for key, source in self.controlnets.items()
        }
        default, registry = self.default_model, self.registry
        if default.name == name:
            default = dataclasses.replace(default, family=family)
            registry = registry.with_family("base", name, family)
        return Catalog(default, MappingProxyType(controlnets), registry)

    @property
    def control_types(self) -> list[str]:
        """The control types served without naming a ControlNet."""
        served = set(self.controlnets) - {UNION}
        if UNION in self.controlnets:
            served |= set(UNION_CONTROL_MODES)
        return sorted(served)

    def base_source(self, name: str | None) -> ModelSource:
        """The base model a job names (None: the default); ValueError listing the names."""
        if name is None:
            return self.default_model
        entry = self.registry.get("base", name)
        if entry is None:
            raise ValueError(f"no base model named '{name}'; this server has {', '.join(self.registry.names('base'))}")
        return source_of_entry(entry)

    def controlnet_key(self, control: ControlInput) -> str:
        """The ControlNet that runs this control: the one named by `control.model` (a served one,
        preferring the control's own type when the name serves several, else one from a models
        folder), else the one serving `control.type`. Raises ValueError naming what is served."""
        if control.model is None:
            if control.type != UNION and control.type in self.controlnets:
                return control.type
            if UNION in self.controlnets and control.type in UNION_CONTROL_MODES:
                return UNION
            raise ValueError(f"no ControlNet for '{control.type}'; this server serves {', '.join(self.control_types)}")
        serving = [key for key, source in sorted(self.controlnets.items()) if source.name == control.model]
        if not serving:
            if self.registry.get("controlnet", control.model) is not None:
                return _REGISTRY_KEY + control.model
            names = sorted({source.name for source in self.controlnets.values()})
            names += [name for name in self.registry.names("controlnet") if name not in names]
            raise ValueError(f"no ControlNet named '{control.model}'; this server has {', '.join(names)}")
        return control.type if control.type in serving else serving[0]

    def controlnet_source(self, key: str) -> ModelSource:
        if key.startswith(_REGISTRY_KEY):
            return source_of_entry(self.registry.get("controlnet", key[len(_REGISTRY_KEY):]))
        return self.controlnets[key]

    def lora(self, name: str) -> Entry | None:
        return self.registry.get("lora", name)

    def controlnet_entries(self) -> list[tuple[str, Entry]]:
        """Every ControlNet as (the key it is loaded by, its entry): the served ones by type, then
        those from models folders."""
        served = [
            (key, Entry(source.name, "controlnet", source.kind, source.location, source.family, key))
            for key, source in sorted(self.controlnets.items())
        ]
        return served + [(_REGISTRY_KEY + entry.name, entry) for entry in self.registry.of_kind("controlnet")]

    def problems(self, request: GenerationRequest) -> list[Problem]:
        """What this server cannot run in a request; [] when it can."""
        try:
            base, problems = self.base_source(request.model), []
        except ValueError as error:
            base, problems = None, [Problem(("model",), str(error))]
        problems += _step_problems(request)
        return problems + self._control_problems(request, base) + self._lora_problems(request, base)

    def _control_problems(self, request: GenerationRequest, base: ModelSource | None) -> list[Problem]:
        problems = []
        union_names, other_controlnets = set(), 0
        for index, control in enumerate(request.controls):
            path = ("controls", index, "type" if control.model is None else "model")
            try:
                source = self.controlnet_source(self.controlnet_key(control))
            except ValueError as error:
                problems.append(Problem(path, str(error)))
                continue
            if _families_differ(base, source.family):
                message = f"ControlNet '{source.name}' is for {source.family} but model '{base.name}' is {base.family}"
                problems.append(Problem(path, message))
            if not source.union:
                other_controlnets += 1
                continue
            union_names.add(source.name)
            if control.type not in UNION_CONTROL_MODES:
                message = f"ControlNet Union '{source.name}' has no mode for '{control.type}'; it takes "
                problems.append(Problem(("controls", index, "type"), message + ", ".join(UNION_CONTROL_MODES)))
        if len(union_names) > 1 or (union_names and other_controlnets):
            message = (
                "a ControlNet Union model runs alone: use one Union model for every control of a job, or none "
                f"(this job uses {', '.join(sorted(union_names))} with others)"
            )
            problems.append(Problem(("controls",), message))
        return problems

    def _lora_problems(self, request: GenerationRequest, base: ModelSource | None) -> list[Problem]:
        problems = []
        for index, lora in enumerate(request.loras):
            path = ("loras", index, "name")
            entry = self.lora(lora.name)
            if entry is None:
                names = ", ".join(self.registry.names("lora")) or "none"
                problems.append(Problem(path, f"no LoRA named '{lora.name}'; this server has {names}"))
            elif _families_differ(base, entry.family):
                message = f"LoRA '{entry.name}' is for {entry.family} but model '{base.name}' is {base.family}"
                problems.append(Problem(path, message))
        return problems

    def parameters(self, request: GenerationRequest) -> dict:
        """What a job will run with, as reported to clients and written into the PNGs."""
        if request.seed is None:
            raise ValueError("choose the seed first (with_seed)")
        parameters = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "seeds": [request.seed + index for index in range(request.num_images)],
            "steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "width": request.width,
            "height": request.height,
            "num_images": request.num_images,
            "scheduler": request.scheduler,
            "model": request.model or self.default_model.name,
            "controls": [
                {
                    "type": control.type,
                    "model": self.controlnet_source(self.controlnet_key(control)).name,
                    "weight": control.weight,
                    "start": control.start,
                    "end": control.end,
                }
                for control in request.controls
            ],
        }
        if request.loras:
            parameters["loras"] = [{"name": lora.name, "weight": lora.weight} for lora in request.loras]
        if request.controls:
            parameters["guess_mode"] = request.guess_mode
        if request.init_image is not None:
            parameters["strength"] = request.strength
        if request.mask_image is not None:
            parameters["mask"] = True
        if request.tiling is not None:
            parameters["tiling"] = request.tiling
        return parameters


def _step_problems(request: GenerationRequest) -> list[Problem]:
    """More steps than the request's scheduler takes (the few-step ones pick from a short schedule)."""
    most = SCHEDULERS[request.scheduler].max_steps
    if most is None or request.steps <= most:
        return []
    return [Problem(("steps",), f"the {request.scheduler} scheduler takes at most {most} steps (it is made for 4-8)")]


def _families_differ(base: ModelSource | None, family: str | None) -> bool:
    return base is not None and bool(base.family) and bool(family) and base.family != family
