"""Every way a request can fail ends as a ServerError saying what happened and what to do, and a
job in a worker thread always ends (never a silent hang). Stand-in servers on 127.0.0.1 fail as
networks and proxies do (tests/stand_in_server.py); the rest is the live tiny-model server."""
import threading

import pytest
from PIL import Image

from sd_blender.core.client import ServerClient, ServerError
from sd_blender.core.job import DONE, FAILED, GenerationJob
from sd_blender.core.request import GenerationSettings, build_job_request
from stand_in_server import PROXY_ERROR_PAGE, answering, cutting_off, hanging_up, silent_until, stand_in

JOB = build_job_request(GenerationSettings(prompt="a red door", width=64, height=64, steps=2, seed=3))


def always(method, path):
    return True


def image_downloads(method, path):
    return path.endswith(".png")


@pytest.mark.parametrize(("respond", "call", "words"), [
    (hanging_up, "health", "the connection to the server broke before its answer was complete"),
    (answering(502, PROXY_ERROR_PAGE, "text/html"), "health",
     "answered 502 Bad Gateway with an HTML page, not the sd_blender API: is this the sd_blender server's URL, "
     "or is a proxy in between answering for it? (it may be down or restarting: try again in a moment)"),
    (answering(404, b"Not Found", "text/plain"), "models", "answered 404 Not Found with 'Not Found', not the sd_blender API"),
    (answering(200, b"<html><body>Welcome to nginx!</body></html>", "text/html"), "models",
     "answered /v1/models with '<html><body>Welcome to nginx!</body></html>', not the sd_blender API"),
    (answering(200, b'{"hello": "world"}', "application/json"), "health", "answered /health with JSON that lacks status"),
    (answering(200, b"[1, 2]", "application/json"), "models", "answered /v1/models with JSON that is not an object"),
    (answering(200, b"\xff\xfe not utf-8", "application/json"), "models", "answered /v1/models with '"),
])
def test_each_failed_request_says_what_happened(respond, call, words):
    with stand_in(respond) as url:
        with pytest.raises(ServerError) as raised:
            getattr(ServerClient(url), call)()
    assert words in str(raised.value)
    assert str(raised.value).startswith(("the server at", "the connection"))


def test_a_cut_off_answer_says_how_much_came(client):
    with stand_in(cutting_off(client.base_url, always)) as url:
        with pytest.raises(ServerError) as raised:
            ServerClient(url).models()
    message = str(raised.value)
    assert message.startswith("the server's answer was cut off after ") and " bytes (the server stopped, or a proxy" in message
    assert message.endswith(f"check that the sd_blender server at {url} is running, then try again.")
    assert raised.value.transient


def test_an_answer_that_never_comes_times_out():
    released = threading.Event()
    with stand_in(silent_until(released)) as url:
        with pytest.raises(ServerError) as raised:
            ServerClient(url, timeout=0.5).health()
        released.set()
    assert str(raised.value) == (f"the sd_blender server at {url} did not answer within 0.5 s: it may be overloaded "
                                 "or stuck (see its console); try again.")


def finished_job(url, output_dir, **options):
    """Runs a job to its end; a job that never ends fails the test (the hang this file is about)."""
    job = GenerationJob(ServerClient(url), JOB, str(output_dir), "shot", poll_interval=0.05, **options).start()
    snapshot = job.wait(timeout=120)
    assert snapshot.finished, f"the job hangs: {snapshot}"
    return snapshot


def test_a_result_cut_off_once_is_downloaded_again_whole(client, tmp_path):
    cuts = []

    def first_download(method, path):
        cut = image_downloads(method, path) and True not in cuts
        cuts.append(cut)
        return cut

    with stand_in(cutting_off(client.base_url, first_download)) as url:
        snapshot = finished_job(url, tmp_path)
    assert snapshot.state == DONE, snapshot.message
    assert any(cuts)
    (path,) = snapshot.result_paths
    assert Image.open(path).size == (64, 64) and [p.name for p in tmp_path.iterdir()] == ["shot_3.png"]


def test_a_result_always_cut_off_fails_the_job_and_writes_nothing(client, tmp_path):
    with stand_in(cutting_off(client.base_url, image_downloads)) as url:
        snapshot = finished_job(url, tmp_path, reconnect_grace=0.5)
    assert snapshot.state == FAILED
    assert snapshot.message.startswith(f"lost the sd_blender server at {url} during the job (no whole answer for ")
    assert "last: the server's answer was cut off after" in snapshot.message
    assert snapshot.message.endswith("Start it again, then press Generate.")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("respond", "words"), [
    (hanging_up, "the connection to the server broke before its answer was complete"),
    (answering(502, PROXY_ERROR_PAGE, "text/html"), "answered 502 Bad Gateway with an HTML page"),
    (answering(200, b"OK", "text/plain"), "answered /v1/jobs with 'OK', not the sd_blender API"),
])
def test_a_submit_that_fails_ends_the_job_with_the_reason(respond, words, tmp_path):
    with stand_in(respond) as url:
        snapshot = finished_job(url, tmp_path)
    assert snapshot.state == FAILED and words in snapshot.message
    assert list(tmp_path.iterdir()) == []


def test_a_submit_cut_off_ends_the_job(client, tmp_path):
    with stand_in(cutting_off(client.base_url, lambda method, path: method == "POST")) as url:
        snapshot = finished_job(url, tmp_path)
    assert snapshot.state == FAILED and snapshot.message.startswith("the server's answer was cut off after ")


def test_a_status_that_is_not_the_apis_ends_the_job(client, tmp_path):
    def spoiled_status(handler):
        if handler.command == "GET":
            answering(200, b'{"state": "running"}', "application/json")(handler)
        else:
            cutting_off(client.base_url, lambda method, path: False)(handler)

    with stand_in(spoiled_status) as url:
        snapshot = finished_job(url, tmp_path)
    assert snapshot.state == FAILED
    assert snapshot.message.startswith(f"the server at {url} answered /v1/jobs/")
    assert snapshot.message.endswith("with JSON that lacks progress, images, not the sd_blender API: is this the "
                                     "sd_blender server's URL, or is a proxy in between answering for it?")
