"""The ControlNet list the control units offer, fetched from a live server off the calling thread."""
from sd_blender.core.client import ServerClient
from sd_blender.core.model_list import ModelList


def test_refresh_lists_the_servers_controlnets_with_the_units_type_first(client):
    models = ModelList()
    assert models.names() == [] and "Refresh" in models.status
    models.refresh(client).join(timeout=30)
    assert models.names("depth") == ["tiny"]  # every tiny ControlNet has the one name
    assert models.status == f"7 ControlNets on {client.base_url}"


def test_an_unreachable_server_is_reported_in_the_status():
    models = ModelList()
    models.refresh(ServerClient("http://127.0.0.1:9", timeout=2)).join(timeout=30)
    assert models.names() == []
    assert models.status.startswith("cannot reach the sd_blender server at http://127.0.0.1:9")
