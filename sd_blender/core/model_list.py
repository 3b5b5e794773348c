"""The server's models (GET /v1/models) and limits (GET /v1/limits), fetched off the UI thread for
the panel's search lists and the checks made before rendering."""
import threading

from .client import ServerError

_KINDS = ("base_models", "controlnets", "loras")


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _limits_of(client):
    """The server's limits; None from a server older than GET /v1/limits."""
    try:
        return client.limits()
    except ServerError as error:
        if error.status == 404:
            return None
        raise


class ModelList:
    """The last answers of GET /v1/models and /v1/limits. refresh() returns at once; the panel reads the rest."""

    def __init__(self):
        self._lock = threading.Lock()
        self._models = {kind: [] for kind in _KINDS}  # {kind: [{"name", "family", ...}]} as the server lists them
        self._limits = None
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
            answer, limits = client.models(), _limits_of(client)
        except ServerError as error:
            with self._lock:
                self._status = str(error)
            return
        models = {kind: answer.get(kind, []) for kind in _KINDS}
        with self._lock:
            self._models, self._limits = models, limits
            self._status = (
                f"{len(models['controlnets'])} ControlNets on {client.base_url}, with "
                f"{_count(len(models['base_models']), 'base model')} and {_count(len(models['loras']), 'LoRA')}"
            )

    @property
    def fetching(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def limits(self):
        """The server's limits (a GET /v1/limits answer), or None before they were fetched."""
        with self._lock:
            return self._limits

    @property
    def status(self):
        with self._lock:
            return self._status

    def names(self, control_type=None):
        """ControlNet names, those serving control_type first, each once."""
        with self._lock:
            controlnets = self._models["controlnets"]
        ordered = sorted(controlnets, key=lambda item: (item.get("type") != control_type, item["name"]))
        return list(dict.fromkeys(item["name"] for item in ordered))

    def _with_families(self, kind):
        with self._lock:
            return [(item["name"], item.get("family")) for item in self._models[kind]]

    def base_models(self):
        """[(name, family)] of the base models."""
        return self._with_families("base_models")

    def loras(self):
        """[(name, family)] of the LoRAs."""
        return self._with_families("loras")

    def _default_base_model(self):
        with self._lock:
            return next((item["name"] for item in self._models["base_models"] if item.get("default")), None)

    def lora_family_problem(self, model, lora_names):
        """What to fix when a LoRA is for another family than the base model (model None or "":
        the server's default), both as this list knows them; None when nothing is known to clash."""
        model = model or self._default_base_model()
        family = dict(self.base_models()).get(model)
        lora_families = dict(self.loras())
        for name in lora_names:
            lora_family = lora_families.get(name)
            if family and lora_family and lora_family != family:
                return (f"LoRA '{name}' is for {lora_family} but base model '{model}' is {family}: "
                        f"pick a LoRA for {family} or a base model for {lora_family}, or switch the LoRA off")
        return None
