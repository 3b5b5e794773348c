"""A fake Hugging Face hub on 127.0.0.1 for tests: serves local folders as model repositories
through the few endpoints huggingface_hub and diffusers use, and counts every request.

Point a process at it with HF_ENDPOINT=FakeHub.url. Standard library only.

Endpoints (what huggingface_hub 1.x/2.x asks for when diffusers' from_pretrained downloads):
- GET  /api/agent-harnesses                      huggingface_hub 2's agent registry: an empty one
- GET  /api/models/{repo}[/revision/{rev}]       model_info / repo_info: id, sha, siblings
- GET  /api/models/{repo}/tree/{rev}[/{path}]    list_repo_tree (snapshot_download's file list)
- HEAD /{repo}/resolve/{rev}/{file}              metadata: X-Repo-Commit, ETag, Content-Length
- GET  /{repo}/resolve/{rev}/{file}              the bytes
No Xet headers (X-Xet-Hash) and no xetHash in listings: downloads are plain HTTP. A repository
that does not exist answers 401 RepoNotFound (as the real hub does without a token), a missing
file 404 EntryNotFound with X-Repo-Commit, anything else 404 (and is listed in `unexpected`).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = ""
    sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sha256 = {path: hashlib.sha256(data).hexdigest() for path, data in self.files.items()}
        listing = "\n".join(f"{path} {digest}" for path, digest in sorted(self.sha256.items()))
        self.commit = hashlib.sha1(listing.encode()).hexdigest()  # 40 hex digits, like a git commit

    def git_oid(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Start with `with FakeHub() as hub:`; add repositories with add_repo (any time)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self._requests: list[tuple[str, str]] = []
        self._unexpected: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up -----------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: str | Path, rename: dict[str, str] | None = None) -> Repo:
        """Serve every file under `folder` as `repo_id`; `rename` maps a file's path to the path
        it is served as (a file mapped to None is left out)."""
        folder = Path(folder)
        files = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                served = (rename or {}).get(relative, relative)
                if served is not None:
                    files[served] = path.read_bytes()
        return self.add_files(repo_id, files)

    def add_files(self, repo_id: str, files: dict[str, bytes]) -> Repo:
        repo = Repo(dict(files))
        self.repos[repo_id] = repo
        return repo

    # --- what it received -------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def unexpected(self) -> list[tuple[str, str]]:
        """Requests for endpoints the fake does not know."""
        with self._lock:
            return list(self._unexpected)

    def downloads(self, repo_id: str | None = None) -> list[str]:
        """The file URLs (/{repo}/resolve/{rev}/{file}) fetched with GET."""
        prefix = f"/{repo_id}/resolve/" if repo_id else None
        return [
            path for method, path in self.requests
            if method == "GET" and "/resolve/" in path and (prefix is None or path.startswith(prefix))
        ]

    def _record(self, method: str, path: str, known: bool) -> None:
        with self._lock:
            self._requests.append((method, path))
            if not known:
                self._unexpected.append((method, path))

    # --- life -------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to keep alive
    server_version = "sd-blender-fake-hub/1"

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        if path == "/api/agent-harnesses" and body:
            # huggingface_hub >= 2 fetches this registry (once a day, cached in HF_HOME) to tell
            # AI coding agents apart in its user agent; an empty one detects none.
            self.fake._record(self.command, self.path, known=True)
            self._json({"standardEnvVars": [], "harnesses": {}})
            return
        for pattern, handler in ((_RESOLVE, self._resolve), (_TREE, self._tree), (_INFO, self._info)):
            match = pattern.match(path)
            if match and (body or pattern is _RESOLVE):
                self.fake._record(self.command, self.path, known=True)
                repo = self.fake.repos.get(match["repo"])
                if repo is None:
                    self._error(401, "RepoNotFound", "Repository not found", body)
                elif (match["rev"] or "main") not in ("main", repo.commit):
                    self._error(404, "RevisionNotFound", "Invalid rev id: " + match["rev"], body, repo)
                else:
                    handler(repo, match, query, body)
                return
        self.fake._record(self.command, self.path, known=False)
        self._error(404, None, "Sorry, we can't find the page you are looking for.", body)

    def _info(self, repo: Repo, match, query, body: bool) -> None:
        self._json(
            {
                "_id": repo.commit[:24],
                "id": match["repo"],
                "modelId": match["repo"],
                "author": match["repo"].split("/")[0],
                "sha": repo.commit,
                "private": False,
                "gated": False,
                "disabled": False,
                "library_name": "diffusers",
                "tags": ["diffusers", "safetensors"],
                "siblings": [{"rfilename": path} for path in sorted(repo.files)],
            },
            repo,
        )

    def _tree(self, repo: Repo, match, query, body: bool) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        base = (match["path"] or "").strip("/")
        prefix = base + "/" if base else ""
        entries, folders = [], set()
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            # The folders on the way (all of them when recursive, the first level otherwise).
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folder = prefix + "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    oid = hashlib.sha1(folder.encode()).hexdigest()
                    entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": repo.git_oid(path), "size": len(repo.files[path]), "path": path}
                if path.endswith((".safetensors", ".bin")):
                    entry["lfs"] = {"oid": repo.sha256[path], "size": len(repo.files[path]), "pointerSize": 134}
                entries.append(entry)
        self._json(entries, repo)

    def _resolve(self, repo: Repo, match, query, body: bool) -> None:
        path = match["path"]
        if path not in repo.files:
            self._error(404, "EntryNotFound", f"{path} does not exist on \"{match['rev']}\"", body, repo)
            return
        data = repo.files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{repo.sha256[path]}"')
        self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _json(self, value, repo: Repo | None = None) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if repo is not None:
            self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, body: bool, repo: Repo | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if repo is not None:
            self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        if body:
            self.wfile.write(data)
