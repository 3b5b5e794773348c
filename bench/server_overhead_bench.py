"""Where a job's time goes outside the model: `python bench/server_overhead_bench.py [--jobs 30] [--size 512]`.

Starts its own `sd-blender-server --model tiny` (a subprocess, as the tests do), then submits jobs
one at a time, each as the add-on sends them: a prompt and a depth control image (a PNG of a
rendered-looking depth pass, size x size), 1 step, and downloads the image. The server's own per-job
breakdown (the job status's `timings`, read after the download) gives parsing, validation, image
decoding, queueing, PNG encoding, answering the submission and sending the image: their sum (the
longer of queueing and answering, which overlap: a job starts once its 202 is sent) is the time
outside the model measured by the server, against the target of 10 ms. Generation (the engine
and the model) is left out. Also shown, not counted: what the client's round trips take beyond the
server's parts (the loopback, the HTTP server's own parsing, the client library). Prints the median
and 90th percentile of each; the first --warmup jobs are not counted.
"""
from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from live_server import running_server  # noqa: E402

sys.path.insert(0, str(REPO_ROOT))
from sd_blender.core.png import encode_png  # noqa: E402

OUTSIDE_THE_MODEL = ("parsing", "validation", "decoding", "queued", "encoding", "answer", "download")
CLIENT_SIDE = "round trips beyond"
TARGET_MS = 10.0


def depth_pass_png(size: int) -> bytes:
    """A smooth depth-like image (a sphere in front of a sloped floor), as the add-on's passes look,
    encoded as the add-on encodes its control images."""
    y, x = np.mgrid[0:size, 0:size] / size
    floor = 60 + 120 * y
    sphere = np.sqrt(np.clip(0.16 - (x - 0.5) ** 2 - (y - 0.45) ** 2, 0, None))
    depth = np.where(sphere > 0, 120 + 330 * sphere, floor).clip(0, 255).astype(np.uint8)
    return encode_png(np.repeat(depth[:, :, None], 3, axis=2))


def finished(client: httpx.Client, job_id: str, poll: float) -> dict:
    while True:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(poll)


def one_job(client: httpx.Client, body: dict, poll: float) -> dict:
    """One job's parts in milliseconds (OUTSIDE_THE_MODEL, CLIENT_SIDE, generation)."""
    start = time.perf_counter()
    response = client.post("/v1/jobs", json=body)
    submitted = time.perf_counter()
    response.raise_for_status()
    status = finished(client, response.json()["id"], poll)
    if status["state"] != "done":
        raise SystemExit(f"a job ended {status['state']}: {status['error']}")
    fetch_start = time.perf_counter()
    client.get(status["images"][0]).raise_for_status()
    fetched = time.perf_counter()
    timings = client.get(f"/v1/jobs/{status['id']}").json()["timings"]
    submit_in_server = timings["parsing"] + timings["validation"] + timings["decoding"] + timings["answer"]
    round_trips = (submitted - start + fetched - fetch_start) * 1000
    return {
        **{part: timings[part] for part in OUTSIDE_THE_MODEL},
        CLIENT_SIDE: round_trips - submit_in_server - timings["download"],
        "generation": timings["generation"],
    }


def time_outside_the_model(parts: dict) -> float:
    """The sum of the parts, but `queued` and `answer` overlap (a job starts once its 202 is sent):
    the longer of the two counts."""
    overlapping = ("queued", "answer")
    return sum(parts[part] for part in OUTSIDE_THE_MODEL if part not in overlapping) + max(
        parts[part] for part in overlapping
    )


def summary(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"  {label:<36} median {statistics.median(values):8.2f} ms   p90 {p90:8.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs counted (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="jobs run first and not counted (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="width, height and control image size (default: %(default)s)")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between status polls (default: %(default)s)")
    parser.add_argument("--cache-dir", help="where the tiny model is built (default: a new temporary folder)")
    parser.add_argument("--server-arg", action="append", default=[], help="another flag for the server; repeatable")
    args = parser.parse_args()

    control = depth_pass_png(args.size)
    body = {
        "prompt": "a stone house, overcast", "negative_prompt": "blurry", "width": args.size, "height": args.size,
        "steps": 1, "seed": 1, "controls": [{"type": "depth", "image": base64.b64encode(control).decode("ascii")}],
    }
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="sd_blender_bench_cache_")
    server_args = ["--log-level", "warning", *args.server_arg]
    print(f"{args.jobs} jobs of {args.size}x{args.size}, 1 step, a {len(control) / 1024:.0f} KiB depth PNG each, "
          f"one at a time; server: --model tiny {' '.join(server_args)}", flush=True)
    with running_server(*server_args, cache_dir=cache_dir) as server:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            health = client.get("/health").json()
            print(f"device {health['device']}, dtype {health['dtype']}", flush=True)
            runs = [one_job(client, body, args.poll) for _ in range(args.warmup + args.jobs)][args.warmup:]

    for part in OUTSIDE_THE_MODEL:
        print(summary(part, [run[part] for run in runs]))
    outside = [time_outside_the_model(run) for run in runs]
    print(summary("outside the model", outside))
    print(summary("generation (left out)", [run["generation"] for run in runs]))
    print(summary(f"client {CLIENT_SIDE} (left out)", [run[CLIENT_SIDE] for run in runs]))
    verdict = "meets" if statistics.median(outside) <= TARGET_MS else "misses"
    print(f"median time outside the model {statistics.median(outside):.2f} ms: {verdict} the target of {TARGET_MS:g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
