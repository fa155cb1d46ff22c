"""A small ModelScope-compatible HTTP hub for tests and benchmarks (127.0.0.1 only).

It answers the two endpoints the real ``modelscope`` client needs for a snapshot download (see
../shared/FACTS.md)::

    GET /api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True   -> the listing (Path, Size, Sha256)
    GET /api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=P             -> the bytes (honours Range)

Any directory of files can be served as ``owner/name`` at a revision. Faults can be injected per file, so
tests reproduce what real networks and CDNs do:

- ``cut``:        close the connection after N bytes of a file (the client sees a short body and resumes),
- ``die``:        end the whole server process after N bytes of a file (``os._exit``; subprocess mode only),
- ``corrupt``:    serve flipped bytes (same length) the next K times (``-1``: always),
- ``wrong_size``: serve a body shorter than the listed size (the listing keeps the true size),
- ``slow``:       throttle every file body to N bytes per second,
- an unknown repo or revision answers 404 like the real hub.

Every request is recorded (in memory and, with ``log_path``, as JSON lines) with the Range it asked for and
the bytes sent, so a test can prove that a resume asked for ``bytes=N-`` or that nothing was downloaded.

In-process::

    with HubServer() as hub:
        hub.add_repo("vboot/tiny", Path("bootstrap/assets/tiny-qwen2"))
        env["MODELSCOPE_ENDPOINT"] = hub.url

As a process (the test can then SIGKILL or restart it on the same port)::

    python tests/support/hub_server.py --port 8123 --repo vboot/tiny=DIR[@REV] [--die PATH=BYTES] [--log FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

_FILES = re.compile(r"^/api/v1/models/([^/]+)/([^/]+)/repo/files$")
_BLOB = re.compile(r"^/api/v1/models/([^/]+)/([^/]+)/repo$")
_INFO = re.compile(r"^/api/v1/models/([^/]+)/([^/]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class RepoFile:
    path: str
    local: Path
    size: int
    sha256: str


@dataclass
class Repo:
    model_id: str
    revision: str
    files: dict[str, RepoFile]


@dataclass
class Faults:
    """Mutable fault plan; tests change it between calls (guarded by the server's lock)."""

    cut: dict[str, int] = field(default_factory=dict)  # path -> close the connection after N body bytes (once)
    die: dict[str, int] = field(default_factory=dict)  # path -> os._exit(1) after N body bytes
    corrupt: dict[str, int] = field(default_factory=dict)  # path -> serve bad bytes this many more times (-1 = always)
    wrong_size: dict[str, int] = field(default_factory=dict)  # path -> serve this many bytes fewer than listed
    slow_bps: int = 0  # throttle file bodies (bytes per second), 0 = full speed


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    range: str | None
    status: int
    sent_bytes: int
    file: str | None = None


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def scan_dir(root: Path) -> dict[str, RepoFile]:
    """Every regular file under ``root`` (hidden files and __pycache__ skipped), with size and sha256."""
    out: dict[str, RepoFile] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.split("/")):
            continue
        if rel == "__init__.py":
            continue
        out[rel] = RepoFile(rel, p, p.stat().st_size, hash_file(p))
    return out


class HubServer:
    """The hub: ``start()``/``stop()`` or a context manager; ``url`` is what MODELSCOPE_ENDPOINT takes."""

    def __init__(self, port: int = 0, log_path: Path | None = None, allow_exit: bool = False) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults = Faults()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.log_path = log_path
        self.allow_exit = allow_exit
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------------------------------
    def add_repo(self, model_id: str, root: Path, revision: str = "master") -> Repo:
        """Serve every file under ``root`` as ``model_id`` at ``revision``."""
        repo = Repo(model_id, revision, scan_dir(Path(root)))
        with self.lock:
            self.repos[(model_id.lower(), revision)] = repo
        return repo

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened ------------------------------------------------------------------------------------
    def file_requests(self, path: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.file is not None and (path is None or r.file == path)]

    def listing_requests(self) -> list[Request]:
        """The repo-listing requests (``.../repo/files``) answered so far."""
        with self.lock:
            return [r for r in self.requests if _FILES.match(r.path)]

    def bytes_sent(self) -> int:
        return sum(r.sent_bytes for r in self.file_requests())

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def _record(self, req: Request) -> None:
        with self.lock:
            self.requests.append(req)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(req.__dict__) + "\n")


def read_log(path: Path) -> list[dict]:
    """The requests a hub running as a process wrote to ``--log``."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -----------------------------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = unquote(url.path)
        if m := _FILES.match(path):
            self._listing(f"{m.group(1)}/{m.group(2)}", query, path)
        elif m := _BLOB.match(path):
            self._blob(f"{m.group(1)}/{m.group(2)}", query, path, head)
        elif m := _INFO.match(path):
            repo = self._repo(f"{m.group(1)}/{m.group(2)}", query.get("Revision", "master"))
            if repo is None:
                self._not_found(path, query)
            else:
                self._json(200, {"Code": 200, "Success": True, "Data": {"Path": repo.model_id.split("/")[0],
                                                                        "Name": repo.model_id.split("/")[1]}},
                           path, query)
        else:
            self._not_found(path, query)

    def _repo(self, model_id: str, revision: str) -> Repo | None:
        with self.hub.lock:
            return self.hub.repos.get((model_id.lower(), revision))

    def _json(self, status: int, payload: dict, path: str, query: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.hub._record(Request(self.command, path, query, self.headers.get("Range"), status, 0))

    def _not_found(self, path: str, query: dict[str, str]) -> None:
        self._json(404, {"Code": 10010205001, "Success": False, "Message": "model not found",
                         "RequestId": "hub-test"}, path, query)

    def _listing(self, model_id: str, query: dict[str, str], path: str) -> None:
        repo = self._repo(model_id, query.get("Revision", "master"))
        if repo is None:
            self._not_found(path, query)
            return
        files = [{"Path": f.path, "Name": f.path.rsplit("/", 1)[-1], "Type": "blob", "Size": f.size,
                  "Sha256": f.sha256, "Revision": repo.revision} for f in repo.files.values()]
        self._json(200, {"Code": 200, "Success": True, "Data": {"Files": files}}, path, query)

    def _blob(self, model_id: str, query: dict[str, str], path: str, head: bool) -> None:
        repo = self._repo(model_id, query.get("Revision", "master"))
        file_path = query.get("FilePath", "")
        entry = repo.files.get(file_path) if repo else None
        if entry is None:
            self._not_found(path, query)
            return
        faults = self.hub.faults
        with self.hub.lock:
            corrupt = faults.corrupt.get(file_path, 0)
            if corrupt > 0:
                faults.corrupt[file_path] = corrupt - 1
            short = faults.wrong_size.get(file_path, 0)
            cut = faults.cut.pop(file_path, None)
            die = faults.die.get(file_path)
            slow = faults.slow_bps
        size = max(0, entry.size - short)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and (m := _RANGE.match(rng.strip())):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.hub._record(Request(self.command, path, query, rng, 416, 0, file_path))
                return
            status = 206
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        sent = 0
        try:
            if not head and length:
                sent = self._send_body(entry.local, start, length, corrupt != 0, cut, die, slow)
        finally:
            self.hub._record(Request(self.command, path, query, rng, status, sent, file_path))
        if cut is not None and sent < length:
            self.close_connection = True

    def _send_body(self, local: Path, start: int, length: int, corrupt: bool, cut: int | None, die: int | None,
                   slow: int) -> int:
        plain = not corrupt and cut is None and die is None and not slow
        with local.open("rb") as fh:
            if plain:
                self.wfile.flush()
                return self.connection.sendfile(fh, start, length)
            fh.seek(start)
            sent = 0
            limit = min(x for x in (length, cut, die) if x is not None)
            step = min(CHUNK, max(1, slow // 10)) if slow else CHUNK
            began = time.monotonic()
            while sent < limit:
                block = fh.read(min(step, limit - sent))
                if not block:
                    break
                if corrupt:
                    block = bytes(b ^ 0xFF for b in block) if sent == 0 else block
                    corrupt = False  # flipping the first block is enough to change the hash
                self.wfile.write(block)
                sent += len(block)
                if slow:
                    ahead = sent / slow - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            self.wfile.flush()
            if die is not None and sent >= die:
                if self.hub.allow_exit:
                    os._exit(1)
                self.close_connection = True
            return sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", action="append", default=[], help="owner/name=DIR[@REVISION] (repeatable)")
    parser.add_argument("--die", action="append", default=[], help="PATH=BYTES: exit after BYTES of PATH")
    parser.add_argument("--cut", action="append", default=[], help="PATH=BYTES: drop the connection once")
    parser.add_argument("--slow", type=int, default=0, help="bytes per second for file bodies")
    parser.add_argument("--log", type=Path, default=None, help="append every request as a JSON line")
    args = parser.parse_args(argv)
    hub = HubServer(port=args.port, log_path=args.log, allow_exit=True)
    for spec in args.repo:
        model_id, _, rest = spec.partition("=")
        root, _, rev = rest.partition("@")
        hub.add_repo(model_id, Path(root), rev or "master")
    for spec in args.die:
        name, _, n = spec.rpartition("=")
        hub.faults.die[name] = int(n)
    for spec in args.cut:
        name, _, n = spec.rpartition("=")
        hub.faults.cut[name] = int(n)
    hub.faults.slow_bps = args.slow
    hub.start()
    print(f"READY {hub.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
