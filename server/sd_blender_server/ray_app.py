"""sd_blender's server on Ray Serve: the same HTTP API over several GPUs and machines.

Two deployments: `Generator`, one replica per GPU (or CPU process), each an engine and its job
queue as the single-process server has; and `Ingress`, the FastAPI app of api.py around a
cluster_jobs.ClusterJobs, which sends each job to a replica with Serve's model multiplexing (by
base model: a replica that has it loaded is preferred) and follows the job's updates there. Serve's
HTTP proxies (one on every node) all reach the one ingress, so any job can be read, streamed and
cancelled through any of them.

Imported only with `sd-blender-server --ray` (or by `serve run`): the single-process server does not
import Ray. docs/scaling.md tells how to run it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
import threading

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from .api import create_app
from .arguments import parse_args, quiet_libraries, server_config
from .cluster_jobs import ClusterJobs, replica_update
from .config import ServerConfig
from .engine import GenerationEngine
from .errors import ModelLoadError
from .jobs import JobQueue
from .timings import RequestClock

log = logging.getLogger(__name__)

APP_NAME = "sd_blender"
_INGRESS = "Ingress"
_POLL_SECONDS = 0.02  # how often a replica looks for news of a job it streams
_WATCH_SECONDS = 2.0  # how often the ingress checks that the replicas it knows are still there
# What the command line sets for the libraries (--offline, quiet logs), set for every replica too,
# on whichever machine it runs.
_CARRIED_ENVIRONMENT = ("HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY")


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Generator:
    """One replica: an engine with its model loaded, and the job queue that runs its jobs."""

    async def __init__(self, config: ServerConfig):
        quiet_libraries(debug=False)
        self.engine = GenerationEngine(config)
        await asyncio.to_thread(self.engine.load)
        self.jobs = JobQueue(self.engine, config)
        self.jobs.start()
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.node = ray.get_runtime_context().get_node_id()
        actor = ray.get_runtime_context().current_actor
        await serve.get_deployment_handle(_INGRESS, context.app_name).register.remote(self.snapshot(), actor)

    def snapshot(self) -> dict:
        """This replica's health: the single server's, and where it runs."""
        loaded = self.engine.loaded
        return {
            **self.jobs.health(),
            "replica": self.replica, "pid": os.getpid(), "node": self.node,
            "loaded_controlnet_keys": sorted(loaded.controlnets),
        }

    @serve.multiplexed(max_num_models_per_replica=1)
    async def base_model(self, name: str) -> str:
        """Serve's record of the base model this replica holds, for routing (the job loads it, on the
        worker thread, when it runs)."""
        return name

    async def run(self, job_id: str, request, request_ages: tuple):
        """Queue the job here and stream its updates (cluster_jobs.replica_update) until it ends;
        cancelling the stream cancels the job."""
        await self.base_model(serve.get_multiplexed_model_id())
        job = self.jobs.submit(request, RequestClock.aged(request_ages), job_id)
        sent_events, sent_preview = 0, None
        try:
            while True:
                if len(job.events) > sent_events or job.preview is not sent_preview:
                    update = replica_update(job, sent_events, sent_preview, self.replica, self.snapshot)
                    sent_events += len(update["events"])
                    sent_preview = job.preview
                    yield update
                    if job.finished:
                        return
                await asyncio.sleep(_POLL_SECONDS)
        except asyncio.CancelledError:
            if not job.finished:
                self.jobs.cancel(job_id)
            raise


@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    """The HTTP API (api.py) for the whole cluster; nothing loaded here but the catalog."""

    async def __init__(self, generator: DeploymentHandle, config: ServerConfig, replicas: int, max_batch: int):
        self.config = config
        streams = generator.options(stream=True)

        def open_stream(job_id: str, request, request_ages: tuple, model: str):
            return streams.options(multiplexed_model_id=model).run.remote(job_id, request, request_ages)

        self.jobs = ClusterJobs(GenerationEngine(config), config, open_stream, replicas, max_batch)
        self._actors: dict = {}  # replica id -> its actor, while it is there
        self._watching = asyncio.get_running_loop().create_task(self._watch_replicas())

    def __serve_build_asgi_app__(self):
        return create_app(self.config, self.jobs)

    async def register(self, snapshot: dict, actor) -> None:
        self.jobs.replica_seen(snapshot)
        self._actors[snapshot["replica"]] = actor

    async def _watch_replicas(self) -> None:
        """Mark a replica whose process has ended as stopped in /health, an idle one too (a busy
        one's job says so at once); the replica Serve starts in its place registers itself."""
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            for replica, actor in list(self._actors.items()):
                try:
                    await actor.__ray_ready__.remote()
                except ray.exceptions.ActorDiedError:
                    del self._actors[replica]
                    self.jobs.replica_stopped(replica)
                except ray.exceptions.RayError:  # not reachable now (ActorUnavailableError...): asked again
                    log.debug("replica %s did not answer", replica, exc_info=True)


def build_app(config: ServerConfig, replicas: int, gpus_per_replica: float):
    """The Serve application: `replicas` Generators (with `gpus_per_replica` each; without GPUs, an
    equal share of the cluster's CPUs each, which is also the threads torch uses there) behind one
    Ingress."""
    max_batch = config.max_batch_on("cuda" if gpus_per_replica else "cpu")
    resources = (
        {"num_gpus": gpus_per_replica, "num_cpus": 0} if gpus_per_replica
        else {"num_cpus": ray.cluster_resources().get("CPU", 1) / replicas}
    )
    generator = Generator.options(
        num_replicas=replicas,
        # More waits in Serve's router, where any replica may take it (and never fills a replica's own queue).
        max_ongoing_requests=min(max_batch, config.max_queue),
        ray_actor_options=resources,
    ).bind(config)
    return Ingress.bind(generator, config, replicas, max_batch)


def _replicas_and_gpus(requested: int | None) -> tuple[int, float]:
    """--replicas (default: one per GPU of the cluster, else 1), and each one's share of a GPU."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    replicas = requested or max(gpus, 1)
    return replicas, (1.0 if gpus >= replicas else gpus / replicas) if gpus else 0.0


def app_builder(args: dict):
    """For Ray's own tools: `serve run sd_blender_server.ray_app:app_builder args="--model tiny
    --replicas 2"` (or the same in a Serve config file): the flags of sd-blender-server."""
    options = parse_args(shlex.split(args.get("args", "")))
    return build_app(server_config(options), *_replicas_and_gpus(options.replicas))


def serve_cluster(options, config: ServerConfig) -> int:
    """`sd-blender-server --ray` / `--ray-address`: start (or join) Ray, run the application, and
    serve until SIGINT or SIGTERM. 2 when the models named cannot be found or loaded."""
    try:
        GenerationEngine(config)  # names and folders checked here, before any replica starts
    except ModelLoadError as error:
        print(f"sd-blender-server: {error}", file=sys.stderr)
        return 2
    carried = {name: os.environ[name] for name in _CARRIED_ENVIRONMENT if name in os.environ}
    ray.init(
        address=options.ray_address, include_dashboard=False, logging_level=options.log_level.upper(),
        runtime_env={"env_vars": carried},
    )
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    try:
        replicas, gpus = _replicas_and_gpus(options.replicas)
        serve.start(http_options={"host": config.host, "port": config.port})
        try:
            serve.run(build_app(config, replicas, gpus), name=APP_NAME, route_prefix="/")
        except RuntimeError as error:  # a replica could not start: Serve's message has the replica's error
            print(f"sd-blender-server: the Ray Serve application did not start: {error}", file=sys.stderr)
            return 2
        where = f"Ray Serve, {replicas} replica{'s' * (replicas > 1)}" + (f", {gpus:g} GPU each" if gpus else " on CPUs")
        print(f"sd_blender server ready on http://{config.host}:{config.port} ({where})", flush=True)
        stop.wait()
    finally:
        if options.ray_address:
            serve.delete(APP_NAME)  # the cluster goes on without this application
        ray.shutdown()  # a local instance stops with it
    return 0
