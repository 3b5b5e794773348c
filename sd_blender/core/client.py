"""HTTP client for the sd_blender server (docs/api.md), standard library only.

Blocking calls: the add-on only uses it from a worker thread, never from Blender's UI thread.
Every way a request can fail (not reached, reset, cut off, timed out, an answer that is not the
API's) is a ServerError whose message says what happened and what to do.
"""
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_SERVER_URL = "http://127.0.0.1:7870"
_GATEWAY_STATUSES = (502, 503, 504)  # a proxy in front of a server that is down or restarting


class ServerError(Exception):
    """The server refused a request or could not be reached; the message says what to fix."""

    def __init__(self, message, status=None, retry_after=None, transient=False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429's Retry-After header
        self.transient = transient  # the same request may succeed later (no answer, a cut-off one)


def _retry_after(headers):
    try:
        return max(1, int(headers.get("Retry-After", "")))
    except ValueError:
        return None


def _excerpt(body, length=80):
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= length else text[:length] + "…"


def _error_detail(body):
    """{"detail": "text"} or {"detail": [{"msg": "field: problem", ...}, ...]} (docs/api.md); None
    when the body is not the API's (a proxy's error page)."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    return str(detail)


class ServerClient:
    def __init__(self, base_url=DEFAULT_SERVER_URL, token="", timeout=30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _not_the_api(self, what):
        return (f"the server at {self.base_url} answered {what}, not the sd_blender API: is this the "
                "sd_blender server's URL, or is a proxy in between answering for it?")

    def _refusal(self, error):
        try:
            body = error.read()
        except (http.client.HTTPException, OSError):
            body = b""
        transient = error.code in _GATEWAY_STATUSES
        detail = _error_detail(body)
        if detail is None:
            page = "an HTML page" if b"<html" in body[:512].lower() else f"'{_excerpt(body)}'" if body else "no details"
            message = self._not_the_api(f"{error.code} {error.reason} with {page}")
            if transient:
                message += " (it may be down or restarting: try again in a moment)"
            return ServerError(message, status=error.code, transient=transient)
        return ServerError(f"server answered {error.code}: {detail}", status=error.code,
                           retry_after=_retry_after(error.headers), transient=transient)

    def _broken(self, what):
        return ServerError(
            f"{what} (the server stopped, or a proxy closed the connection): check that the sd_blender "
            f"server at {self.base_url} is running, then try again.", transient=True
        )

    def _call(self, method, path, body=None):
        """The answer's body."""
        return self._exchange(method, path, body)[2]

    def _exchange(self, method, path, body=None):
        """The answer's (status, headers, body)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(urllib.parse.urljoin(self.base_url + "/", path.lstrip("/")),
                                         data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            raise self._refusal(error) from None
        except urllib.error.URLError as error:  # no connection was made
            raise ServerError(
                f"cannot reach the sd_blender server at {self.base_url} ({error.reason}). Is it running? "
                "Start it with `sd-blender-server`, or fix the server URL (add-on preferences, or --server).",
                transient=True,
            ) from None
        except TimeoutError:
            raise ServerError(
                f"the sd_blender server at {self.base_url} did not answer within {self.timeout:g} s: it may be "
                "overloaded or stuck (see its console); try again.", transient=True
            ) from None
        except http.client.IncompleteRead as error:
            raise self._broken(f"the server's answer was cut off after {len(error.partial)} bytes") from None
        except (http.client.HTTPException, OSError) as error:
            raise self._broken(f"the connection to the server broke before its answer was complete ({error})") from None

    def _json(self, method, path, body=None, required=()):
        """The answer as a JSON object holding the `required` fields."""
        answer = self._call(method, path, body)
        try:
            value = json.loads(answer)
        except ValueError:
            raise ServerError(self._not_the_api(f"{path} with '{_excerpt(answer)}'")) from None
        if not isinstance(value, dict):
            raise ServerError(self._not_the_api(f"{path} with JSON that is not an object"))
        missing = [name for name in required if name not in value]
        if missing:
            raise ServerError(self._not_the_api(f"{path} with JSON that lacks {', '.join(missing)}"))
        return value

    def health(self):
        return self._json("GET", "/health", required=("status",))

    def models(self):
        return self._json("GET", "/v1/models")

    def limits(self):
        """The bounds the server enforces on a job (GET /v1/limits)."""
        return self._json("GET", "/v1/limits", required=("max_pixels", "controls", "loras"))

    def submit(self, job_request, route="/v1/jobs"):
        """Queue a job (at /v1/texture-jobs: a synchronized texture job); returns its id."""
        return self._json("POST", route, job_request, required=("id",))["id"]

    def job(self, job_id):
        return self._json("GET", f"/v1/jobs/{job_id}", required=("state", "progress", "images"))

    def cancel(self, job_id):
        return self._json("DELETE", f"/v1/jobs/{job_id}", required=("state",))

    def preview(self, job_id):
        """(PNG bytes, step) of the job's latest preview, or None while it has none (204)."""
        status, headers, data = self._exchange("GET", f"/v1/jobs/{job_id}/preview")
        if status == 204:
            return None
        try:
            return data, int(headers.get("X-Preview-Step", ""))
        except ValueError:
            raise ServerError(self._not_the_api(f"a preview of job {job_id} without its X-Preview-Step")) from None

    def download(self, path):
        """Bytes of a result, by the URL path the job status lists."""
        return self._call("GET", path)
