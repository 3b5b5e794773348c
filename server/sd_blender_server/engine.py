"""The generation engine: a catalog that answers questions about models from any thread, and a
runner that owns the device and runs one job at a time (or a batch of alike ones: generate_batch) on
the thread that calls generate().

No HTTP here: the engine takes a GenerationRequest and raises EngineError subclasses, so it can
sit behind the job queue and uvicorn (jobs.py, api.py) or behind anything else that feeds one
worker, e.g. a Ray Serve deployment.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from PIL import Image

from . import batching, hub, synchronized
from .catalog import Catalog
from .config import ServerConfig
from .errors import EngineError, GenerationFailed, JobCancelled, ModelLoadError, OutOfMemory, RequestRefused
from .frame_request import FrameRequest, frame_parameters, frame_problems
from .images import a1111_lora_hash, a1111_model_hash
from .model_sources import ModelSource
from .request import GenerationRequest, Problem
from .runner import Loaded, Runner, RunPlan, free_memory, is_out_of_memory
from .texture_request import TextureRequest, texture_parameters, texture_problems

log = logging.getLogger(__name__)
# What the engine runs: an ordinary job, a synchronized texture job, a frame job.
EngineRequest = GenerationRequest | TextureRequest | FrameRequest


@dataclass
class GenerationResult:
    images: list[Image.Image]
    parameters: dict  # what ran: the catalog's parameters, with the A1111 file hashes


class GenerationEngine:
    def __init__(self, config: ServerConfig):
        """Resolves the configured models (nothing is loaded: see load()); a models folder that
        does not exist raises ModelLoadError."""
        self._catalog = Catalog.from_config(config)
        self._learning = threading.Lock()
        self._runner = Runner(config.device, config.dtype, config.cache_dir, config.models_dirs, config.acceleration)
        self._file_hashes: dict[str, str] = {}

    @property
    def catalog(self) -> Catalog:
        """The catalog as it is now (a snapshot: it never changes, a newer one replaces it)."""
        return self._catalog

    @property
    def loaded(self) -> Loaded:
        return self._runner.loaded

    @property
    def device(self) -> str:
        return self._runner.device

    @property
    def dtype(self) -> str:
        return str(self._runner.dtype).removeprefix("torch.")

    @property
    def acceleration(self) -> dict:
        """What acceleration.py applies on this device (compile, low_vram, ...)."""
        return self._runner.accelerator.report()

    def load(self, name: str | None = None) -> None:
        """Load a base model (None: the default); raises ModelLoadError with a one-line message."""
        try:
            source = self._catalog.base_source(name)
        except ValueError as error:
            raise ModelLoadError(str(error)) from error
        self._runner.load(self._with_hub_family(source))

    def problems(self, request: EngineRequest) -> list[Problem]:
        """What this server cannot run in a request of any kind; [] when it can."""
        if isinstance(request, TextureRequest):
            return texture_problems(self._catalog, request)
        if isinstance(request, FrameRequest):
            return frame_problems(self._catalog, request)
        return self._catalog.problems(request)

    def parameters(self, request: EngineRequest) -> dict:
        """What a request (its seed chosen) will run with, as reported to clients and written into the PNGs."""
        if isinstance(request, TextureRequest):
            return {**texture_parameters(self._catalog, request), **self._preview_parameters(request.settings)}
        if isinstance(request, FrameRequest):
            return {**frame_parameters(self._catalog, request), **self._preview_parameters(request.frames[0])}
        return {**self._catalog.parameters(request), **self._preview_parameters(request)}

    def _preview_parameters(self, request: GenerationRequest) -> dict:
        """How often a job sends previews, and which decoder makes them (taesd or linear)."""
        if not request.preview_every:
            return {"preview_every": 0}
        family = self._catalog.base_source(request.model).family
        return {"preview_every": request.preview_every, "preview_decoder": self._runner.previews.decoder_name(family)}

    def batch_key(self, request: EngineRequest) -> Hashable | None:
        """Ordinary jobs with equal keys can run as one pipeline call (generate_batch); None for a
        job that runs alone: a texture or frame job, or one naming a model this server lacks."""
        if not isinstance(request, GenerationRequest):
            return None
        try:
            return batching.batch_key(request, self._catalog)
        except ValueError:
            return None

    def generate(
        self,
        request: EngineRequest,
        on_step: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_preview: Callable[[int, int, Image.Image], None] | None = None,
    ) -> GenerationResult:
        """Run one request, an ordinary job, a synchronized texture job or a frame job; raises JobCancelled when
        should_cancel() turns true, else an EngineError (OutOfMemory once what the job held is given
        back) for any failure. on_preview(step, total, image) gets the job's first image forming every
        `preview_every` steps (a texture job's first view)."""
        return self._reporting_failures(self._generate, request, on_step, should_cancel, on_preview)

    def generate_batch(
        self,
        requests: list[GenerationRequest],
        on_step: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_previews: list[Callable[[int, int, Image.Image], None] | None] | None = None,
    ) -> list[GenerationResult]:
        """Run ordinary requests of one batch key as one pipeline call: a result for each, in order,
        each image as the request gives alone (within float rounding). on_previews[i] gets request
        i's previews, as generate()'s on_preview; failures as generate()'s, for the whole batch."""
        keys = {self.batch_key(request) for request in requests}
        if len(keys) != 1 or None in keys:
            raise ValueError("a batch runs ordinary requests of one batch key (engine.batch_key) only")
        on_previews = on_previews or [None] * len(requests)
        return self._reporting_failures(self._generate_batch, requests, on_step, should_cancel, on_previews)

    def _reporting_failures(self, generate: Callable, *arguments):
        """generate(*arguments), any failure but JobCancelled an EngineError."""
        try:
            return generate(*arguments)
        except (JobCancelled, EngineError):
            raise
        except Exception as error:
            if is_out_of_memory(error):
                log.warning("out of memory: %s", error)
                failure = OutOfMemory()
            else:
                log.exception("generation failed")
                failure = GenerationFailed(f"{type(error).__name__}: {error}")
        # Outside the except block, so the traceback's frames (and their tensors) are gone.
        free_memory()
        raise failure

    def _generate(self, request, on_step, should_cancel, on_preview) -> GenerationResult:
        if isinstance(request, GenerationRequest):
            return self._generate_batch([request], on_step, should_cancel, [on_preview])[0]
        request = request.with_seed()
        plan = self._plan(request)
        if isinstance(request, TextureRequest):
            settings = request.settings
            targets = [(0, settings.preview_every, on_preview)] if on_preview else []
            preview = self._runner.live_preview(plan.base.family, settings.width, settings.height, targets)
            with self._runner.pipeline_for(settings, plan) as (pipeline, controlnets):
                images = synchronized.denoise(pipeline, controlnets, request, on_step, should_cancel, preview)
        else:
            previews = {0: on_preview} if on_preview else None
            images = self._runner.run(request.batch(), plan, on_step, should_cancel, request.anchor is not None, previews)
        return GenerationResult(images=images, parameters={**self.parameters(request), **self._hash_parameters(plan)})

    def _generate_batch(self, requests, on_step, should_cancel, on_previews) -> list[GenerationResult]:
        requests = [request.with_seed() for request in requests]
        plan = self._plan(requests[0])  # the batch key holds what it resolves
        previews = {index: send for index, send in enumerate(on_previews) if send}
        images = self._runner.run(requests, plan, on_step, should_cancel, on_previews=previews)
        count, hashes = requests[0].num_images, self._hash_parameters(plan)
        return [
            GenerationResult(images[index * count: (index + 1) * count], {**self.parameters(request), **hashes})
            for index, request in enumerate(requests)
        ]

    def _hash_parameters(self, plan: RunPlan) -> dict:
        """The A1111 hashes of the checkpoint and LoRA files a plan runs, as parameters."""
        hashes = {}
        if plan.base.kind == "file":
            hashes["model_hash"] = self._file_hash(plan.base.location, a1111_model_hash)
        lora_files = {entry.name: entry.location for entry in plan.loras if entry.source == "file"}
        if lora_files:
            hashes["lora_hashes"] = {name: self._file_hash(path, a1111_lora_hash) for name, path in lora_files.items()}
        return hashes

    def _plan(self, request: EngineRequest) -> RunPlan:
        """The models a request runs on; refused (RequestRefused) when the catalog cannot run it,
        which may be learnt only now, from the hub."""
        # A texture job's views, or a frame job's frames, run the same models: the first names them.
        if isinstance(request, TextureRequest):
            models = request.view_request(0)
        else:
            models = request.frames[0] if isinstance(request, FrameRequest) else request
        self._learn_hub_families(models)
        problems = self.problems(request)
        if problems:
            raise RequestRefused("; ".join(problem.message for problem in problems))
        catalog = self._catalog
        keys = [catalog.controlnet_key(control) for control in models.controls]
        return RunPlan(
            base=catalog.base_source(models.model),
            controlnets=tuple((key, catalog.controlnet_source(key)) for key in keys),
            loras=tuple(catalog.lora(lora.name) for lora in models.loras),
        )

    def _learn_hub_families(self, request: GenerationRequest) -> None:
        catalog = self._catalog
        try:
            base = catalog.base_source(request.model)
            controlnets = [catalog.controlnet_source(catalog.controlnet_key(control)) for control in request.controls]
        except ValueError:
            return  # an unknown name: refused as it is
        for source in [base, *controlnets]:
            self._with_hub_family(source)

    def _with_hub_family(self, source: ModelSource) -> ModelSource:
        """The source with its family read from the hub before its first download (a name says
        little), and the catalog replaced by one that knows it."""
        if source.kind != "hub" or source.union or not hub.first_download_ahead(source.location):
            return source
        try:
            family = hub.fetch_family(source.location)
        except Exception as error:
            raise ModelLoadError(hub.load_error_message(source.name, error)) from error
        if family is None or family == source.family:
            return source
        with self._learning:
            self._catalog = self._catalog.with_family(source.name, family)
        return dataclasses.replace(source, family=family)

    def _file_hash(self, path: str, hash_function: Callable[[str], str]) -> str:
        """A1111's hash of a checkpoint or LoRA file, read once per file (gigabytes: seconds)."""
        if path not in self._file_hashes:
            self._file_hashes[path] = hash_function(path)
        return self._file_hashes[path]
