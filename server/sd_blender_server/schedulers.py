"""The schedulers a job can name: the diffusers class each builds (with its options) and the
sampler name AUTOMATIC1111 writes for it. The one list of scheduler names."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Scheduler:
    diffusers_class: str  # a class in the diffusers package
    a1111_name: str
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


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
})
SCHEDULER_NAMES = tuple(SCHEDULERS)
