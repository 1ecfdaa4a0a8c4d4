"""A Hugging Face Hub without the network, for tests.

`write_cache` lays out a real Hub cache directory, the one huggingface_hub reads and writes:

    models--org--name/
        blobs/<sha256 or git sha1>                  file contents, named by hash
        refs/main, refs/refs/pr/1                   each holds a commit hash
        snapshots/<commit>/<file> -> ../../blobs/<hash>

`FakeHub` is a Hub server behind huggingface_hub's HTTP client (an httpx2 MockTransport installed with
`huggingface_hub.set_client_factory`), so the real `snapshot_download` / `hf_hub_download` / `HfApi`
code runs against it; it records every request.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote

import huggingface_hub
import httpx2
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

Files = dict[str, bytes]


def commit_hash(ref: str, files: Files) -> str:
    h = hashlib.sha1(ref.encode())
    for name in sorted(files):
        h.update(name.encode() + hashlib.sha1(files[name]).digest())
    return h.hexdigest()


def blob_id(content: bytes) -> str:
    """How the Hub names blobs: git sha1 for small (regular) files, sha256 for LFS files."""
    if len(content) > 1000:
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def read_dir(path: Path) -> Files:
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}


def write_cache(cache: Path, repo_id: str, revisions: dict[str, Files]) -> dict[str, str]:
    """Write `revisions` ({ref: {filename: content}}) of `repo_id` into the Hub cache `cache`; -> {ref: commit}."""
    storage = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    commits = {}
    for ref, files in revisions.items():
        commit = commits[ref] = commit_hash(ref, files)
        for name, content in files.items():
            blob = storage / "blobs" / blob_id(content)
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(content)
            link = storage / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        ref_file = storage / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)
    return commits


class FakeHub:
    """Hub HTTP endpoints over in-memory repos: {repo_id: {ref: {filename: content}}}."""

    def __init__(self, repos: dict[str, dict[str, Files]], gated: tuple[str, ...] = ()):
        self.repos = repos
        self.gated = gated
        self.requests: list[tuple[str, str]] = []   # (method, decoded path)
        self.commits = {repo: {ref: commit_hash(ref, files) for ref, files in refs.items()}
                        for repo, refs in repos.items()}

    def downloaded(self) -> list[str]:
        """Filenames fetched with GET .../resolve/..., in order."""
        return [re.sub(r"^/[^/]+/[^/]+/resolve/[0-9a-f]{40}/", "", p)
                for m, p in self.requests if m == "GET" and "/resolve/" in p]

    def install(self) -> None:
        transport = httpx2.MockTransport(self.handle)
        huggingface_hub.set_client_factory(lambda: httpx2.Client(
            transport=transport, event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True))

    @staticmethod
    def uninstall() -> None:
        huggingface_hub.set_client_factory(default_client_factory)

    def _find(self, repo: str, rev: str):
        """-> (commit, files) or an error response."""
        if repo not in self.repos:
            return hub_error(404, "RepoNotFound")
        for ref, files in self.repos[repo].items():
            commit = self.commits[repo][ref]
            if rev in (ref, commit):
                return commit, files
        return hub_error(404, "RevisionNotFound")

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = unquote(request.url.raw_path.decode().split("?")[0])
        self.requests.append((request.method, path))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
            found = self._find(m[1], m[2] or "main")
            if isinstance(found, httpx2.Response):
                return found
            commit, files = found
            return httpx2.Response(200, json={
                "id": m[1], "sha": commit, "private": False, "gated": m[1] in self.gated,
                "siblings": [{"rfilename": f} for f in files]})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
            found = self._find(m[1], m[2])
            if isinstance(found, httpx2.Response):
                return found
            return httpx2.Response(200, json=[
                {"type": "file", "path": f, "size": len(c), "oid": blob_id(c)} for f, c in found[1].items()])
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([0-9a-f]{40}|main|refs/pr/\d+|[\w.-]+)/(.+)", path):
            if m[1] in self.gated and "authorization" not in request.headers:
                return hub_error(401, "GatedRepo")
            found = self._find(m[1], m[2])
            if isinstance(found, httpx2.Response):
                return found
            commit, files = found
            if m[3] not in files:
                return hub_error(404, "EntryNotFound", commit)
            content = files[m[3]]
            headers = {"X-Repo-Commit": commit, "ETag": f'"{blob_id(content)}"',
                       "Content-Length": str(len(content))}
            return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else content)
        return httpx2.Response(404, text=f"FakeHub: no route for {path}")


def hub_error(status: int, code: str, commit: str | None = None) -> httpx2.Response:
    """The Hub's answer for an error: its status, X-Error-Code (which huggingface_hub reads) and a JSON body."""
    headers = {"X-Error-Code": code, "X-Error-Message": code}
    if commit:
        headers["X-Repo-Commit"] = commit
    return httpx2.Response(status, headers=headers, json={"error": code})
