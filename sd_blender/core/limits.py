"""The server's limits (GET /v1/limits, docs/api.md), read from the server, never copied: what a
request would break of them, said before anything is rendered or sent."""


def _count_problem(count, most, what, advice=""):
    if count > most:
        return f"{count} {what} are enabled; the server takes at most {most}{advice}"
    return None


def _range_problems(label, values, bounds):
    low, high = bounds["min"], bounds["max"]
    return [f"{label} {value:g} is outside this server's range {low:g} to {high:g}"
            for value in values if not low <= value <= high]


def request_problems(limits, width, height, steps, num_images, control_weights, lora_weights, scheduler):
    """What a request of this size, steps, images, weights and sampler breaks of the server's
    limits (a /v1/limits answer); [] when nothing."""
    problems = [
        _count_problem(len(control_weights), limits["controls"]["max"], "control units"),
        _count_problem(len(lora_weights), limits["loras"]["max"], "LoRAs", ": switch some off"),
    ]
    problems += _range_problems("a control unit's weight", control_weights, limits["control_weight"])
    problems += _range_problems("a LoRA's weight", lora_weights, limits["lora_weight"])
    problems += _range_problems("Steps", [steps], limits["steps"])
    problems += _range_problems("Images", [num_images], limits["num_images"])
    if scheduler not in limits["schedulers"]:
        problems.append(f"Sampler '{scheduler}' is not one of this server's: {', '.join(limits['schedulers'])}")
    if width * height > limits["max_pixels"]:
        problems.append(f"{width}x{height} is {width * height} pixels; this server takes at most "
                        f"{limits['max_pixels']}: make the image smaller")
    return [problem for problem in problems if problem]
