"""The server's ControlNets, fetched off the UI thread for the control units' model field."""
import threading

from .client import ServerError


class ModelList:
    """The last answer of GET /v1/models. refresh() returns at once; the panel reads the rest."""

    def __init__(self):
        self._lock = threading.Lock()
        self._controlnets = []  # [{"name", "type", ...}] as the server lists them
        self._status = "not fetched: press Refresh"
        self._thread = None

    def refresh(self, client):
        """Fetch in a daemon thread; a refresh already running is not started twice."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self._thread
            self._status = f"fetching from {client.base_url}"
            self._thread = threading.Thread(target=self._fetch, args=(client,), daemon=True)
            self._thread.start()
            return self._thread

    def _fetch(self, client):
        try:
            controlnets = client.models()["controlnets"]
        except ServerError as error:
            with self._lock:
                self._status = str(error)
            return
        with self._lock:
            self._controlnets = controlnets
            self._status = f"{len(controlnets)} ControlNets on {client.base_url}"

    @property
    def fetching(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self):
        with self._lock:
            return self._status

    def names(self, control_type=None):
        """ControlNet names, those serving control_type first, each once."""
        with self._lock:
            ordered = sorted(self._controlnets, key=lambda item: (item.get("type") != control_type, item["name"]))
        return list(dict.fromkeys(item["name"] for item in ordered))
