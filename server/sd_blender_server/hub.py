"""Hugging Face hub ids: the shared cache, a model's family before its weights are downloaded,
and one-line errors that tell an unreachable hub from a hub that answered.

The cache is huggingface_hub's (HF_HOME, shared with other tools); `--offline` sets
HF_HUB_OFFLINE before anything here is imported, so nothing here touches the network then.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import LocalEntryNotFoundError, OfflineModeIsEnabled

from . import registry

log = logging.getLogger(__name__)

# Raised (or wrapped by diffusers) when the hub could not be asked: huggingface_hub turns a failed
# connection into LocalEntryNotFoundError when nothing is cached. An HTTP answer (404, 401...) is
# none of these.
_UNREACHABLE = (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError, socket.gaierror)
class HubUnreachable(ConnectionError):
    """No direct connection to the hub's host (checked before asking it anything)."""


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# model_index.json for a pipeline, config.json for a ControlNet; unet/config.json tells SD 1.5 from SD 2.
_CONFIG_FILES = ("model_index.json", "config.json")


def cached_folder(repo_id: str) -> Path | None:
    """The cached snapshot of a hub model (its model_index.json or config.json is there); never
    the network."""
    try:
        for filename in _CONFIG_FILES:
            cached = try_to_load_from_cache(repo_id, filename)
            if isinstance(cached, str):
                return Path(cached).parent
    except Exception:  # an odd cache is no reason to refuse a model
        log.debug("cannot look %s up in the cache", repo_id, exc_info=True)
    return None


def family(repo_id: str) -> str | None:
    """A hub model's family from its cached configs, else guessed from its name (a model not
    downloaded yet; fetch_family() reads it before the download)."""
    cached = cached_folder(repo_id)
    if cached is not None:
        return registry.folder_kind_family(cached)[1]
    name = repo_id.lower()
    if "xl" in name:
        return "sdxl"
    if "sd15" in name or "stable-diffusion-v1" in name:
        return "sd15"
    return None


def first_download_ahead(repo_id: str) -> bool:
    """Whether loading this hub model will download it (online, and not in the cache)."""
    return not hub_constants.HF_HUB_OFFLINE and cached_folder(repo_id) is None


def fetch_family(repo_id: str) -> str | None:
    """Before a model's first download: fetch its config files (kilobytes) into the cache and read
    its family from them. None when the hub has no config to tell (the download that follows says
what is missing); an unreachable hub raises at once."""
    log.info("downloading %s from the Hugging Face hub into %s", repo_id, hub_constants.HF_HUB_CACHE)
    _check_connection()
    for filename in _CONFIG_FILES:
        try:
            path = Path(hf_hub_download(repo_id, filename))
        except Exception as error:
            if is_unreachable(error):
                raise  # asking again for the next file would only wait through the hub's retries again
            log.debug("no %s in %s", filename, repo_id, exc_info=True)
            continue
        if filename == "model_index.json":
            try:
                hf_hub_download(repo_id, "unet/config.json")
            except Exception:
                log.debug("no unet/config.json in %s", repo_id, exc_info=True)
        return registry.folder_kind_family(path.parent)[1]
    return None


def _check_connection() -> None:
    """Raise HubUnreachable at once when the hub's host cannot be reached directly (no network:
    its name does not resolve, or nothing answers), instead of waiting through huggingface_hub's
    retries (about 25 s). Behind a proxy only the proxy can tell: nothing is checked then."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    endpoint = urlsplit(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=10).close()
    except OSError as error:
        raise HubUnreachable(f"cannot connect to {hub_constants.ENDPOINT}: {error}") from error


def _causes(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_unreachable(error: BaseException) -> bool:
    return any(isinstance(cause, _UNREACHABLE) for cause in _causes(error))


def load_error_message(name: str, error: BaseException) -> str:
    """One line for a hub model that failed to load: not downloadable (and why), or what the hub
    answered (a missing file, an unknown repository, pickle-only weights)."""
    if is_unreachable(error):
        reason = next((f" ({cause})" for cause in _causes(error) if isinstance(cause, HubUnreachable)), "")
        why = "the server is offline (--offline)" if hub_constants.HF_HUB_OFFLINE else f"the hub could not be reached{reason}"
        return (
            f"model '{name}' is not available offline: it is not in the Hugging Face cache "
            f"({hub_constants.HF_HUB_CACHE}) and {why} (details: --log-level debug)"
        )
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return f"cannot load model '{name}' from the Hugging Face hub: {detail}"
