"""What the server's limits say about a request before it is rendered and sent (core/limits.py),
with limits as a live server reports them (GET /v1/limits)."""
import pytest

from sd_blender.core.limits import request_problems

LIMITS = {  # the shape of GET /v1/limits (docs/api.md), as a server started with --max-pixels 262144 answers
    "max_pixels": 262144, "width": {"min": 64, "max": 2048, "multiple_of": 8},
    "height": {"min": 64, "max": 2048, "multiple_of": 8}, "steps": {"min": 1, "max": 150},
    "num_images": {"min": 1, "max": 8}, "guidance_scale": {"min": 0.0, "max": 30.0},
    "strength": {"min": 0.0, "max": 1.0}, "prompt_max_length": 4000, "controls": {"max": 4},
    "control_weight": {"min": 0.0, "max": 2.0}, "loras": {"max": 8}, "lora_weight": {"min": -4.0, "max": 4.0},
    "schedulers": ["unipc", "euler_a"], "max_queue": 32, "job_timeout_s": None, "max_body_mb": 64.0,
}
ALLOWED = dict(width=512, height=512, steps=20, num_images=1, control_weights=[1.0, 0.5], lora_weights=[-3.5, 4.0],
               scheduler="euler_a")


def test_a_request_within_the_limits_has_no_problem():
    assert request_problems(LIMITS, **ALLOWED) == []


@pytest.mark.parametrize(("change", "problem"), [
    ({"control_weights": [1.0] * 5}, "5 control units are enabled; the server takes at most 4"),
    ({"lora_weights": [1.0] * 9}, "9 LoRAs are enabled; the server takes at most 8: switch some off"),
    ({"lora_weights": [4.5]}, "a LoRA's weight 4.5 is outside this server's range -4 to 4"),
    ({"control_weights": [2.5]}, "a control unit's weight 2.5 is outside this server's range 0 to 2"),
    ({"steps": 151}, "Steps 151 is outside this server's range 1 to 150"),
    ({"num_images": 9}, "Images 9 is outside this server's range 1 to 8"),
    ({"width": 1024}, "1024x512 is 524288 pixels; this server takes at most 262144: make the image smaller"),
    ({"scheduler": "karras"}, "Sampler 'karras' is not one of this server's: unipc, euler_a"),
])
def test_each_limit_broken_is_said(change, problem):
    assert request_problems(LIMITS, **{**ALLOWED, **change}) == [problem]
