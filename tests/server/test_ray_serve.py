"""The server on Ray Serve with two replicas (a local Ray instance, the tiny model on the CPU): jobs
spread over the replicas, a second base model loaded by one replica only, and a replica killed in
the middle of a job or while idle. (The API tests run on Ray Serve too: conftest.py's `server`.)"""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from live_server import free_port, ray_server_options, running_ray_server, running_server, serving
from model_builders import TINY_METADATA, save_ldm_single_file
from server_helpers import (
    LONG_JOB, cancel_all, fill_queue, run_job, started_count, submit, wait_finished, wait_running,
)
from waiting import wait_for

from sd_blender_server.tiny import ensure_tiny_model

SMALL_JOB = {"prompt": "a house", "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def cluster(tiny_cache, tmp_path_factory):
    """A client of a two-replica server whose models folder has a second base model, `tiny-copy`."""
    checkpoints = tmp_path_factory.mktemp("ray_models") / "checkpoints"
    checkpoints.mkdir()
    save_ldm_single_file(ensure_tiny_model(tiny_cache) / "pipeline", checkpoints / "tiny-copy.safetensors", TINY_METADATA)
    with running_ray_server(2, "--device", "cpu", "--models-dir", str(checkpoints.parent), cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def live_replicas(client: httpx.Client) -> list[dict]:
    return [replica for replica in client.get("/health").json()["replicas"] if replica["alive"]]


def test_both_replicas_report_and_the_limits_say_two_jobs_run_at_once(cluster):
    replicas = live_replicas(cluster)
    assert len(replicas) == 2 and len({replica["pid"] for replica in replicas}) == 2
    assert all(replica["model"] == "tiny" and replica["load_counts"]["base_model"] == 1 for replica in replicas)
    assert cluster.get("/v1/limits").json()["parallel_jobs"] == 2


def test_twenty_jobs_are_spread_over_both_replicas(cluster):
    before = {replica["replica"]: replica["jobs_ran"] for replica in live_replicas(cluster)}
    ids = [submit(cluster, **SMALL_JOB) for _ in range(20)]
    assert {wait_finished(cluster, job_id)["state"] for job_id in ids} == {"done"}
    ran = {replica["replica"]: replica["jobs_ran"] - before[replica["replica"]] for replica in live_replicas(cluster)}
    assert sum(ran.values()) == 20
    assert all(count > 0 for count in ran.values()), ran


def test_a_second_base_model_is_loaded_by_one_replica_only(cluster):
    ran_on = {run_job(cluster, **SMALL_JOB, model="tiny-copy")["replica"] for _ in range(3)}
    assert len(ran_on) == 1, "Serve's model multiplexing sends the model's jobs to the replica that has it"
    by_id = {replica["replica"]: replica for replica in live_replicas(cluster)}
    holder = by_id.pop(ran_on.pop())
    (other,) = by_id.values()
    assert holder["model"] == "tiny-copy" and holder["load_counts"]["base_model"] == 2  # tiny at start, then the copy
    assert other["load_counts"]["base_model"] == 1  # tiny, never the copy
    assert {model["name"]: model["loaded"] for model in cluster.get("/v1/models").json()["base_models"]} == {
        "tiny": True, "tiny-copy": True
    }


def test_the_queue_bound_is_the_clusters(cluster):
    ids, refused = fill_queue(cluster)  # a job running on each replica, then submitted until a 429
    wait_for(lambda: started_count(cluster, ids) == 2, "a job running on each replica")
    while (refused := cluster.post("/v1/jobs", json=LONG_JOB)).status_code == 202:  # a place a start freed
        ids.append(refused.json()["id"])
    assert int(refused.headers["retry-after"]) >= 1 and "--max-queue" in refused.json()["detail"]
    max_queue = cluster.get("/v1/limits").json()["max_queue"]
    assert cluster.get("/health").json()["queue_length"] == len(ids) - 2 == max_queue
    cancel_all(cluster, ids)


def test_a_replica_killed_mid_job_fails_that_job_only(cluster):
    victim = submit(cluster, **LONG_JOB)
    wait_running(cluster, victim)
    wait_for(lambda: cluster.get(f"/v1/jobs/{victim}").json()["progress"]["step"] > 0, "the long job stepping")
    replica = cluster.get(f"/v1/jobs/{victim}").json()["replica"]
    others = [submit(cluster, **SMALL_JOB) for _ in range(4)]
    (pid,) = [entry["pid"] for entry in live_replicas(cluster) if entry["replica"] == replica]
    os.kill(pid, signal.SIGKILL)

    failed = wait_finished(cluster, victim)
    assert failed["state"] == "failed"
    assert f"replica {replica} stopped" in failed["error"] and "submit the job again" in failed["error"]
    later = [submit(cluster, **SMALL_JOB) for _ in range(2)]
    assert [wait_finished(cluster, job_id, timeout=180)["state"] for job_id in others + later] == ["done"] * 6
    health = cluster.get("/health")
    assert health.status_code == 200
    assert [entry["alive"] for entry in health.json()["replicas"] if entry["replica"] == replica] == [False]


def test_a_replica_killed_while_idle_shows_stopped_and_its_replacement_serves(cluster):
    wait_for(lambda: len(live_replicas(cluster)) == 2, "two live replicas (Serve replaces a killed one)", timeout=180)
    victim, survivor = live_replicas(cluster)
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: victim["replica"] not in {entry["replica"] for entry in live_replicas(cluster)},
             "the killed replica shown stopped with no job of it failing")
    stopped = [entry for entry in cluster.get("/health").json()["replicas"] if entry["replica"] == victim["replica"]]
    assert [entry["alive"] for entry in stopped] == [False]
    wait_for(lambda: len(live_replicas(cluster)) == 2, "Serve's new replica registered", timeout=180)
    assert survivor["replica"] in {entry["replica"] for entry in live_replicas(cluster)}
    assert run_job(cluster, **SMALL_JOB)["state"] == "done"


@pytest.fixture(scope="module")
def batching_cluster(tiny_cache):
    """Two replicas that each take up to two jobs (--max-batch 2): one running, one waiting behind it."""
    with running_ray_server(2, "--device", "cpu", "--max-batch", "2", cache_dir=tiny_cache) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            yield client


def test_a_job_a_killed_replica_had_not_started_is_sent_to_another(batching_cluster):
    client = batching_cluster
    # Unlike (their steps differ), so no two run as one batch: one runs on each replica, one waits on either.
    jobs = [submit(client, **{**LONG_JOB, "steps": LONG_JOB["steps"] - index}) for index in range(3)]
    wait_for(lambda: started_count(client, jobs) == 2, "a long job running on each replica")
    statuses = {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in jobs}
    (waiting,) = [job_id for job_id, status in statuses.items() if status["state"] == "queued"]
    wait_for(lambda: client.get(f"/v1/jobs/{waiting}").json()["replica"], "the waiting job taken by a replica")
    victim = client.get(f"/v1/jobs/{waiting}").json()["replica"]
    (doomed,) = [job_id for job_id, status in statuses.items() if status["replica"] == victim and job_id != waiting]
    (other,) = set(jobs) - {waiting, doomed}
    (pid,) = [entry["pid"] for entry in live_replicas(client) if entry["replica"] == victim]
    os.kill(pid, signal.SIGKILL)

    failed = wait_finished(client, doomed)
    assert failed["state"] == "failed" and f"replica {victim} stopped" in failed["error"]
    client.delete(f"/v1/jobs/{other}")  # room on the live replica
    wait_running(client, waiting, timeout=180)
    resent = client.get(f"/v1/jobs/{waiting}").json()
    assert resent["state"] in ("running", "done") and resent["replica"] not in (victim, None)
    cancel_all(client, jobs)


def test_ray_serves_tools_run_it_from_a_config_file_with_the_servers_flags(tiny_cache, tmp_path):
    """`serve run` with a Serve config file naming sd_blender_server.ray_app:app_builder and the flags;
    a time limit every job passes (checked before the first step too) holds on the replica."""
    port = free_port()
    flags = f"--model tiny --device cpu --replicas 1 --cache-dir {tiny_cache} --job-timeout 0.001"
    application = {
        "name": "sd_blender", "route_prefix": "/", "import_path": "sd_blender_server.ray_app:app_builder",
        "args": {"args": flags},
    }
    config = tmp_path / "serve.json"  # YAML, which JSON is
    config.write_text(json.dumps({"http_options": {"host": "127.0.0.1", "port": port}, "applications": [application]}))
    _, env = ray_server_options(replicas=1)
    serve = Path(sys.executable).with_name("serve")
    with serving([str(serve), "run", str(config)], port, env=env) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            assert [replica["alive"] for replica in client.get("/health").json()["replicas"]] == [True]
            assert client.get("/v1/limits").json()["job_timeout_s"] == 0.001
            status = wait_finished(client, submit(client, **SMALL_JOB))
            assert status["state"] == "failed"
            assert status["error"].endswith("the job ran past this server's time limit of 0.001 s (--job-timeout)")


def test_the_single_process_server_does_not_import_ray():
    code = (
        "import sys\n"
        "from sd_blender_server.cli import main\n"
        "assert main(['--model', 'tiny', '--print-openapi']) == 0\n"
        "assert not [name for name in sys.modules if name.split('.')[0] == 'ray'], 'ray imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def ray_cluster():
    """A Ray cluster of one node started with Ray's own `ray start --head` (as on a head machine);
    its address. Stopped with its process group."""
    port = free_port()
    _, env = ray_server_options(replicas=1)
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--block",
         f"--temp-dir={env['RAY_TMPDIR']}"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: _accepts(port) or head.poll() is not None, "the Ray head answering")
        assert head.poll() is None, "ray start --head stopped"
        yield f"127.0.0.1:{port}", env, head
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_server_joins_an_existing_ray_cluster_and_leaves_it_running(ray_cluster, tiny_cache):
    address, env, head = ray_cluster
    with running_server("--device", "cpu", "--ray-address", address, "--replicas", "1", cache_dir=tiny_cache,
                        env=env) as live:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            assert [replica["alive"] for replica in client.get("/health").json()["replicas"]] == [True]
            assert run_job(client, **SMALL_JOB)["state"] == "done"
    assert head.poll() is None  # the cluster goes on without the server's application


def test_a_missing_models_folder_stops_the_ray_server_before_ray_starts(tmp_path):
    missing = tmp_path / "no-such-folder"
    result = subprocess.run(
        [sys.executable, "-m", "sd_blender_server", "--ray", "--model", "tiny", "--models-dir", str(missing)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert str(missing) in result.stderr and "Started a local Ray instance" not in result.stderr
