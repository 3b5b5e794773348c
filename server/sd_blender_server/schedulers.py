"""The schedulers a job can name: the diffusers class each builds (with its options), the sampler
name AUTOMATIC1111 writes for it, the pipeline arguments it runs with and the most steps it takes.
The one list of scheduler names.

`lcm` and `tcd` are the few-step samplers of distilled models and LoRAs (LCM-LoRA, Hyper-SD, TCD):
4-8 steps, guidance 1-2. Both pick their steps from a 50-step schedule, so take at most 50. TCD's
gamma (the pipelines' `eta`) is 0.3, the value its authors, diffusers' examples and ComfyUI start
from: a little fresh noise each step (0 is deterministic, with more detail; 1, fully stochastic)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

# The steps of the schedule LCM and TCD pick theirs from (their `original_inference_steps`).
FEW_STEP_SCHEDULE = 50


@dataclass(frozen=True)
class Scheduler:
    diffusers_class: str  # a class in the diffusers package
    a1111_name: str
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    call_options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # pipeline arguments
    max_steps: int | None = None  # None: the server's limit


SCHEDULERS = MappingProxyType({
    "unipc": Scheduler("UniPCMultistepScheduler", "UniPC"),
    "euler_a": Scheduler("EulerAncestralDiscreteScheduler", "Euler a"),
    "euler": Scheduler("EulerDiscreteScheduler", "Euler"),
    "dpmpp_2m": Scheduler(
        "DPMSolverMultistepScheduler", "DPM++ 2M",
        MappingProxyType({"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    ),
    "dpmpp_2m_karras": Scheduler(
        "DPMSolverMultistepScheduler", "DPM++ 2M Karras",
        MappingProxyType({"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    ),
    "ddim": Scheduler("DDIMScheduler", "DDIM", MappingProxyType({"clip_sample": False})),
    "pndm": Scheduler("PNDMScheduler", "PLMS", MappingProxyType({"skip_prk_steps": True})),
    "lms": Scheduler("LMSDiscreteScheduler", "LMS"),
    "heun": Scheduler("HeunDiscreteScheduler", "Heun"),
    "lcm": Scheduler("LCMScheduler", "LCM", max_steps=FEW_STEP_SCHEDULE),
    "tcd": Scheduler("TCDScheduler", "TCD", call_options=MappingProxyType({"eta": 0.3}), max_steps=FEW_STEP_SCHEDULE),
})
SCHEDULER_NAMES = tuple(SCHEDULERS)
