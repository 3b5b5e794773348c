"""Load a real server with thousands of small jobs: `python bench/server_load_bench.py [--jobs 2000] [--clients 16]`.

Starts its own `sd-blender-server --model tiny` (a subprocess, as the tests do) with a small
--max-queue and --keep-results, then C client threads (httpx, one connection each) share N jobs:
each client submits one job, and on a 429 waits what Retry-After says (or --retry-wait) and
submits again; on a 202 it polls the job until it is finished and downloads its image. Prints:

- throughput (finished jobs per second of the run) and the number of 429 answers;
- p50 / p95 / max job latency, from the 202 to the client seeing `done`, and the client's whole
  wait (from its first submit, 429s and their waits included);
- the server process's resident memory (RSS) at start (healthy, no job run), after the warm-up
  jobs, every 250 finished jobs and at the end, with /health's `finished_jobs` beside it.

Any answer other than 202/429 to a submit, a 429 without a positive whole Retry-After, or an
accepted job that does not end `done` is counted and printed as an error (exit status 1).
`--server-arg` passes more flags to the server (e.g. `--server-arg=--device=cuda`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from live_server import running_server  # noqa: E402

TERMINAL = ("done", "failed", "cancelled")


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Load:
    def __init__(self, args, url: str, pid: int):
        self.args = args
        self.url = url
        self.process = psutil.Process(pid)
        self.lock = threading.Lock()
        self.claimed = 0  # jobs a client has taken on (submitted or about to be)
        self.finished = 0
        self.refused = 0
        self.latencies: list[float] = []  # from the 202 to `done` seen
        self.waits: list[float] = []  # from the first submit (429s included) to `done` seen
        self.errors: list[str] = []
        self.samples: list[tuple[str, int, int, int]] = []  # (label, finished jobs, rss, finished_jobs kept)
        self.next_sample = args.warmup
        self.body = {"width": args.size, "height": args.size, "steps": args.steps, "prompt": "load"}

    def sample(self, label: str, client: httpx.Client) -> None:
        kept = client.get("/health").json()["finished_jobs"]
        self.samples.append((label, self.finished, self.process.memory_info().rss, kept))
        print(f"  {label:>14}: {self.finished:5d} jobs done, RSS {mib(self.samples[-1][2])}, "
              f"{kept} finished jobs kept", flush=True)

    def claim(self) -> bool:
        with self.lock:
            if self.claimed >= self.args.jobs:
                return False
            self.claimed += 1
            return True

    def one_job(self, client: httpx.Client) -> None:
        first_try = time.perf_counter()
        while True:
            response = client.post("/v1/jobs", json=self.body)
            if response.status_code == 202:
                break
            retry_after = response.headers.get("retry-after", "")
            if response.status_code != 429 or not retry_after.isdigit() or int(retry_after) < 1:
                with self.lock:
                    self.errors.append(f"submit: {response.status_code} Retry-After={retry_after!r} {response.text[:200]}")
                return
            with self.lock:
                self.refused += 1
            time.sleep(int(retry_after) if self.args.retry_wait is None else self.args.retry_wait)
        accepted = time.perf_counter()
        job_id = response.json()["id"]
        while True:
            status = client.get(f"/v1/jobs/{job_id}").json()
            if status["state"] in TERMINAL:
                break
            time.sleep(self.args.poll)
        latency = time.perf_counter() - accepted
        wait = time.perf_counter() - first_try
        if status["state"] != "done":
            with self.lock:
                self.errors.append(f"job {job_id} ended {status['state']}: {status['error']}")
            return
        image = client.get(status["images"][0])
        if image.status_code != 200 or not image.content.startswith(b"\x89PNG"):
            with self.lock:
                self.errors.append(f"image of job {job_id}: {image.status_code}")
        with self.lock:
            self.finished += 1
            self.latencies.append(latency)
            self.waits.append(wait)
            if self.finished >= self.next_sample:
                label = "after warm-up" if self.next_sample == self.args.warmup else "running"
                self.next_sample = (self.finished // 250 + 1) * 250
                self.sample(label, client)

    def client(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=120) as client:
                while self.claim():
                    self.one_job(client)
        except Exception as error:  # reported with the others
            with self.lock:
                self.errors.append(f"client: {type(error).__name__}: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to finish (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="width and height of each job (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of each job (default: %(default)s)")
    parser.add_argument("--max-queue", type=int, default=4, help="the server's --max-queue (default: %(default)s)")
    parser.add_argument("--keep-results", type=int, default=50, help="the server's --keep-results (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=100, help="jobs before the 'after warm-up' sample (default: %(default)s)")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between status polls (default: %(default)s)")
    parser.add_argument(
        "--retry-wait", type=float, default=None,
        help="seconds to wait after a 429 (default: what Retry-After says)",
    )
    parser.add_argument("--cache-dir", help="where the tiny model is built (default: a new temporary folder)")
    parser.add_argument("--server-arg", action="append", default=[], help="another flag for the server; repeatable")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for the server (e.g. OMP_NUM_THREADS=1); repeatable",
    )
    args = parser.parse_args()

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="sd_blender_bench_cache_")
    server_args = ["--max-queue", str(args.max_queue), "--keep-results", str(args.keep_results),
                   "--log-level", "warning", *args.server_arg]
    print(f"{args.jobs} jobs of {args.size}x{args.size}, {args.steps} steps, from {args.clients} clients; "
          f"server: --model tiny {' '.join(server_args)}", flush=True)
    server_env = dict(item.split("=", 1) for item in args.server_env)
    if server_env:
        print("server environment:", " ".join(args.server_env), flush=True)
    with running_server(*server_args, cache_dir=cache_dir, env=server_env) as server:
        with httpx.Client(base_url=server.url, timeout=60) as probe:
            health = probe.get("/health").json()
            print(f"server pid {server.process.pid}, device {health['device']}, dtype {health['dtype']}", flush=True)
            load = Load(args, server.url, server.process.pid)
            load.sample("start", probe)
            started = time.perf_counter()
            threads = [threading.Thread(target=load.client, name=f"client-{n}") for n in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            load.sample("end", probe)
            health = probe.get("/health").json()
        if server.process.poll() is not None:
            load.errors.append(f"the server exited with status {server.process.returncode}")

    latencies = load.latencies or [0.0]
    waits = load.waits or [0.0]
    rss = {label: value for label, _, value, _ in load.samples}
    running = [value for label, _, value, _ in load.samples if label in ("after warm-up", "running", "end")]
    print()
    print(f"finished {load.finished} of {args.jobs} jobs in {seconds:.1f} s: {load.finished / seconds:.1f} jobs/s")
    print(f"429 answers: {load.refused} ({load.refused / max(1, load.refused + load.finished):.0%} of submits)")
    print(f"latency (202 to done seen): p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
          f"mean {statistics.fmean(latencies) * 1000:.0f} ms")
    print(f"client's wait (first submit, 429s included, to done seen): p50 {percentile(waits, 0.5) * 1000:.0f} ms, "
          f"p95 {percentile(waits, 0.95) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms")
    print(f"RSS: start {mib(rss['start'])}, after warm-up {mib(rss.get('after warm-up', 0))}, "
          f"end {mib(rss['end'])}; after warm-up min {mib(min(running))}, max {mib(max(running))}, "
          f"end - after warm-up {(rss['end'] - rss.get('after warm-up', rss['end'])) / 2**20:+.1f} MiB")
    print(f"health at the end: queue_length {health['queue_length']}, finished_jobs {health['finished_jobs']} "
          f"(--keep-results {args.keep_results})")
    for error in load.errors[:20]:
        print("error:", error)
    if load.errors:
        print(f"{len(load.errors)} errors")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
