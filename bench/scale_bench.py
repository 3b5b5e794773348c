"""Throughput with 1 and 2 (or more) Ray Serve replicas in one run:
`python bench/scale_bench.py [--replicas 1 2] [--jobs 24] [--size 256] [--steps 8] [--device cpu]`.

For each replica count it starts its own `sd-blender-server --ray --replicas N --model tiny` (a local
Ray instance; a subprocess, as the tests do), runs one warm-up job per replica, then submits --jobs
jobs at once (as `generate --frames` does against a cluster: up to the server's parallel_jobs in
flight would be enough, all at once measures the same) and times them from the first submit to the
last job done. Prints jobs/s for each count and the ratio to the first. On a GPU machine pass
--device cuda (a replica per GPU: --replicas 1 N with N GPUs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from live_server import running_ray_server  # noqa: E402


def wait_done(client: httpx.Client, job_id: str) -> None:
    while True:
        state = client.get(f"/v1/jobs/{job_id}").json()["state"]
        if state == "done":
            return
        if state in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} {state}: {client.get(f'/v1/jobs/{job_id}').json()['error']}")
        time.sleep(0.05)


def run_jobs(client: httpx.Client, body: dict, count: int) -> float:
    """Seconds from the first submit to the last of `count` jobs done."""
    start = time.perf_counter()
    ids = []
    for _ in range(count):
        response = client.post("/v1/jobs", json=body)
        response.raise_for_status()
        ids.append(response.json()["id"])
    for job_id in ids:
        wait_done(client, job_id)
    return time.perf_counter() - start


def throughput(replicas: int, args: argparse.Namespace, body: dict) -> tuple[float, list[int]]:
    """Jobs per second with `replicas` replicas, and how many jobs each replica ran."""
    with running_ray_server(replicas, "--device", args.device, "--max-queue", str(args.jobs), start_timeout=600) as live:
        with httpx.Client(base_url=live.url, timeout=120) as client:
            run_jobs(client, body, replicas)  # warm-up: each replica's first job
            before = jobs_ran(client)
            seconds = run_jobs(client, body, args.jobs)
            ran = [count - before.get(replica, 0) for replica, count in jobs_ran(client).items()]
    return args.jobs / seconds, ran


def jobs_ran(client: httpx.Client) -> dict[str, int]:
    return {replica["replica"]: replica["jobs_ran"] for replica in client.get("/health").json()["replicas"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    body = {"prompt": "a stone tower", "width": args.size, "height": args.size, "steps": args.steps, "seed": 1}
    print(f"{args.jobs} jobs of {args.size}x{args.size}, {args.steps} steps, tiny model on {args.device}")
    baseline = None
    for replicas in args.replicas:
        rate, ran = throughput(replicas, args, body)
        baseline = baseline or rate
        print(f"{replicas} replica(s): {rate:.2f} jobs/s ({rate / baseline:.2f}x), jobs ran per replica {ran}")


if __name__ == "__main__":
    main()
