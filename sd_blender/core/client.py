"""HTTP client for the sd_blender server (docs/api.md), standard library only.

Blocking calls: the add-on only uses it from a worker thread, never from Blender's UI thread.
"""
import json
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_SERVER_URL = "http://127.0.0.1:7870"


class ServerError(Exception):
    """The server refused a request or could not be reached; the message says what to fix."""

    def __init__(self, message, status=None, retry_after=None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429's Retry-After header


def _retry_after(headers):
    try:
        return max(1, int(headers.get("Retry-After", "")))
    except ValueError:
        return None


def _describe_error_body(body):
    """{"detail": "text"} or {"detail": [{"msg": "field: problem", ...}, ...]} (docs/api.md)."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or "no details"
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) for item in detail)
    return str(detail)


class ServerClient:
    def __init__(self, base_url=DEFAULT_SERVER_URL, token="", timeout=30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method, path, body=None):
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
                return response.read()
        except urllib.error.HTTPError as error:
            message = _describe_error_body(error.read())
            raise ServerError(
                f"server answered {error.code}: {message}", status=error.code, retry_after=_retry_after(error.headers)
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerError(
                f"cannot reach the sd_blender server at {self.base_url} ({reason}). Is it running? "
                "Start it with `sd-blender-server`, or fix the server URL in the add-on preferences."
            ) from None

    def _json(self, method, path, body=None):
        return json.loads(self._call(method, path, body))

    def health(self):
        return self._json("GET", "/health")

    def models(self):
        return self._json("GET", "/v1/models")

    def submit(self, job_request):
        """Queue a job; returns its id."""
        return self._json("POST", "/v1/jobs", job_request)["id"]

    def job(self, job_id):
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id):
        return self._json("DELETE", f"/v1/jobs/{job_id}")

    def download(self, path):
        """Bytes of a result, by the URL path the job status lists."""
        return self._call("GET", path)
