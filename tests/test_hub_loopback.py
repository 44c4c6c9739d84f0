"""`source: hub` models against a loopback stand-in for the Hugging Face hub.

A real HTTP server on 127.0.0.1 serves the endpoints that the installed huggingface_hub's
`snapshot_download` calls (read from its 2.x source):

  GET  /api/models/{repo}/revision/{rev}      repo_info: the commit sha (skipped for a commit-hash revision)
  GET  /api/models/{repo}/tree/{commit}       the recursive file listing (path, size, oid, lfs)
  HEAD /{repo}/resolve/{commit}/{file}        ETag (git blob oid) + X-Repo-Commit + Content-Length;
                                              LFS files: 302 to a "CDN" (a second server, another
                                              origin, so the client stops there) with X-Linked-Etag
                                              (the sha256) and X-Linked-Size
  GET  {resolve or CDN url}                   the bytes

No listing carries `xetHash` and no response `X-Xet-Hash`, so Xet is never used.

This is the code path of every hub model of the pipeline: `models:` entries with `source: hub`
(bert-base-uncased, albert-base-v1 in config/paper.yaml) and the steps of a `pretrain` series with
`source: hub` (e.g. MultiBERTs) alike go through rule fetch_model (download.smk), i.e.
`crossdisc fetch-model --spec <spec>` -> `models.fetch_model` -> `models._hub_dir`; a step's spec is
built by `fetched_checkpoint_spec` (common.smk) as {"source": "hub", "id": ..., ["revision"], ["sha256"]}.
"""

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

from crossdisc.errors import InputError
from crossdisc.models import MODEL_FILES, fetch_model

REPO_ID = "google/multiberts-seed_0-step_20k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin")


def _git_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


class Hub:
    """The served repositories ({repo_id: {filename: bytes}}, all at COMMIT) and a log of requests."""

    def __init__(self):
        self.repos = {}
        self.requests = []  # (method, path) of every request, both servers
        self.lock = threading.Lock()

    def requested_files(self):
        """Names of the repository files whose resolve or CDN URL was requested."""
        names = set()
        by_sha = {_sha256(d): n for files in self.repos.values() for n, d in files.items()}
        for _, path in self.requests:
            if m := re.fullmatch(r"/[^/]+/[^/]+/resolve/[^/]+/(.+)", path):
                names.add(unquote(m[1]))
            elif m := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
                names.add(by_sha.get(m[1], m[1]))
        return names


def _handler(hub, cdn_base):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, headers=(), body=b"", head=False):
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, payload):
            self._send(200, [("Content-Type", "application/json")], json.dumps(payload).encode())

        def _not_found(self, code, head=False):
            self._send(404, [("X-Error-Code", code), ("X-Repo-Commit", COMMIT)],
                       json.dumps({"error": code}).encode(), head)

        def _revision_ok(self, revision):
            return unquote(revision) in ("main", COMMIT)

        def _route(self, head):
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((self.command, path))
            if m := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):  # the "CDN": content-addressed blobs
                blobs = {_sha256(d): d for files in hub.repos.values() for d in files.values()}
                if m[1] not in blobs:
                    return self._send(404, head=head)
                return self._send(200, [("ETag", f'"{m[1]}"')], blobs[m[1]], head)
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path)
            if m and not head:
                repo, kind, revision = m.groups()
                if repo not in hub.repos:
                    return self._not_found("RepoNotFound")
                if not self._revision_ok(revision):
                    return self._not_found("RevisionNotFound")
                files = hub.repos[repo]
                if kind == "revision":
                    return self._json({"id": repo, "sha": COMMIT, "private": False,
                                       "siblings": [{"rfilename": n} for n in sorted(files)]})
                listing = []
                for name, data in sorted(files.items()):
                    entry = {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
                    if name.endswith(LFS_SUFFIXES):
                        entry["lfs"] = {"oid": _sha256(data), "size": len(data), "pointerSize": 134}
                    listing.append(entry)
                return self._json(listing)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                repo, revision, name = m[1], m[2], unquote(m[3])
                if repo not in hub.repos:
                    return self._not_found("RepoNotFound", head)
                if not self._revision_ok(revision):
                    return self._not_found("RevisionNotFound", head)
                if name not in hub.repos[repo]:
                    return self._not_found("EntryNotFound", head)
                data = hub.repos[repo][name]
                if name.endswith(LFS_SUFFIXES):  # as the hub: a redirect to the CDN, the metadata on it
                    return self._send(302, [("Location", f"{cdn_base}/cdn/{_sha256(data)}"),
                                            ("ETag", f'"{_git_oid(data)}"'),
                                            ("X-Linked-Etag", f'"{_sha256(data)}"'),
                                            ("X-Linked-Size", str(len(data))),
                                            ("X-Repo-Commit", COMMIT)], head=head)
                return self._send(200, [("ETag", f'"{_git_oid(data)}"'), ("X-Repo-Commit", COMMIT)], data, head)
            return self._send(404, head=head)

        def do_GET(self):
            self._route(head=False)

        def do_HEAD(self):
            self._route(head=True)

    return Handler


@pytest.fixture
def hub():
    """Two loopback servers: the hub endpoint, and the CDN that LFS files redirect to."""
    state = Hub()
    cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)
    cdn_base = f"http://127.0.0.1:{cdn.server_address[1]}"
    handler = _handler(state, cdn_base)
    cdn.RequestHandlerClass = handler
    main = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    servers = (main, cdn)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    state.endpoint = f"http://127.0.0.1:{main.server_address[1]}"
    yield state
    for server, thread in zip(servers, threads):
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch):
    """Point huggingface_hub (already imported or not) at the loopback hub, with a private cache and
    no token. Its constants are read from the environment once, at import: patch both."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(cache),
           "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                 "HF_OIDC_RESOURCE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    return cache


@pytest.fixture(scope="module")
def served(tiny_bert):
    """A model repository: the tiny BERT's files, plus files fetch_model must not download."""
    files = {p.name: p.read_bytes() for p in tiny_bert.iterdir() if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files and "vocab.txt" in files
    files["pytorch_model.bin"] = b"\x80\x02 not a real pickle, and never fetched beside safetensors" * 64
    files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny multibert stand-in\n"
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    return files


def _assert_fetched(out, served):
    expected = {name for name in served if name in MODEL_FILES}
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= expected
    assert {p.name for p in out.iterdir()} == expected
    for name in expected:
        assert (out / name).read_bytes() == served[name], name


def test_fetch_hub_model(hub, hub_env, served, tmp_path):
    hub.repos[REPO_ID] = served
    out = tmp_path / "models" / "multiberts@20000"
    fetch_model({"source": "hub", "id": REPO_ID, "sha256": _sha256(served["model.safetensors"])}, out)

    _assert_fetched(out, served)
    # only the allowed files crossed the wire; the rest were listed but never requested
    assert hub.requested_files() == {n for n in served if n in MODEL_FILES}
    assert ("GET", f"/api/models/{REPO_ID}/revision/main") in hub.requests
    assert ("GET", f"/cdn/{_sha256(served['model.safetensors'])}") in hub.requests  # via the LFS redirect
    assert (hub_env / f"models--{REPO_ID.replace('/', '--')}" / "refs" / "main").read_text() == COMMIT
    assert not list(out.parent.glob(".*.part"))


def test_fetch_hub_model_pinned_commit(hub, hub_env, served, tmp_path):
    """A `revision` (as fetched_checkpoint_spec passes one) that is a commit hash skips repo_info."""
    hub.repos[REPO_ID] = served
    out = tmp_path / "model"
    fetch_model({"source": "hub", "id": REPO_ID, "revision": COMMIT}, out)

    _assert_fetched(out, served)
    assert not any(path.startswith("/api/models/") and "/revision/" in path for _, path in hub.requests)


def test_wrong_sha256_is_refused(hub, hub_env, served, tmp_path):
    hub.repos[REPO_ID] = served
    out = tmp_path / "models" / "multiberts@20000"
    wrong = "0" * 64
    with pytest.raises(InputError) as err:
        fetch_model({"source": "hub", "id": REPO_ID, "sha256": wrong}, out)

    assert Path(err.value.path).name == "model.safetensors"
    assert f"sha256 mismatch: expected {wrong}, got {_sha256(served['model.safetensors'])}" in str(err.value)
    assert not out.exists() and not list(out.parent.glob(".*.part"))


@pytest.fixture(scope="module")
def served_pickle_only(tiny_bert):
    """A MultiBERTs-style repository: config, tokenizer and a `BertForPreTraining` state dict as
    pytorch_model.bin (tied output embeddings, pooler and NSP head included), no safetensors."""
    import io

    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_pretrained(tiny_bert))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    files = {p.name: p.read_bytes() for p in tiny_bert.iterdir() if p.is_file() and p.name != "model.safetensors"}
    files["pytorch_model.bin"] = buffer.getvalue()
    return files, {k: v.clone() for k, v in model.state_dict().items()}


def test_a_pickle_only_repository_is_converted_to_safetensors_and_fine_tunes(
        hub, hub_env, served_pickle_only, tmp_path, task_files):
    from safetensors.torch import load_file

    from crossdisc import finetune
    from crossdisc.models import build_classifier

    files, state = served_pickle_only
    hub.repos[REPO_ID] = files
    out = tmp_path / "models" / "multiberts@20000"
    fetch_model({"source": "hub", "id": REPO_ID}, out)  # sha256: the one the hub lists for the LFS file

    assert "pytorch_model.bin" not in {p.name for p in out.iterdir()}
    converted = load_file(out / "model.safetensors")
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    classifier = build_classifier(out, "pretrained", num_labels=2, seed=100)
    assert torch.equal(classifier.bert.pooler.dense.weight, state["bert.pooler.dense.weight"])
    assert torch.equal(classifier.bert.encoder.layer[0].output.dense.weight,
                       state["bert.encoder.layer.0.output.dense.weight"])

    token_file, map_file = task_files
    summary = finetune.finetune(token_file, map_file, out, "pretrained", tmp_path / "run", tmp_path / "state",
                                {"lr": 1e-3, "batch_size": 8, "max_steps": 4})
    assert 0 <= summary["metrics"]["test"]["accuracy"] <= 1


def test_pickled_weights_with_a_wrong_sha256_are_never_unpickled(hub, hub_env, served_pickle_only, tmp_path,
                                                                monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called on unchecked bytes")

    monkeypatch.setattr(torch, "load", refuse)
    hub.repos[REPO_ID] = served_pickle_only[0]
    out = tmp_path / "model"
    with pytest.raises(InputError, match=f"sha256 mismatch: expected {'0' * 64}"):
        fetch_model({"source": "hub", "id": REPO_ID, "sha256": "0" * 64}, out)
    assert not out.exists() and not list(out.parent.glob(".*.part"))


def test_a_pickle_holding_more_than_tensors_is_refused(hub, hub_env, served, tmp_path):
    """weights_only unpickling builds tensors and containers only: a pickle that names any other
    callable (here os.getcwd, harmless; a real attack would name os.system) is refused unrun."""
    import io

    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "hook": os.getcwd}, buffer)
    files = {n: d for n, d in served.items() if n != "model.safetensors"}
    files["pytorch_model.bin"] = buffer.getvalue()
    hub.repos[REPO_ID] = files
    out = tmp_path / "model"
    with pytest.raises(InputError, match="pytorch_model.bin: not a plain tensor checkpoint, refused"):
        fetch_model({"source": "hub", "id": REPO_ID}, out)
    assert not out.exists()


def test_a_repository_without_weights_is_refused(hub, hub_env, served, tmp_path):
    hub.repos[REPO_ID] = {n: d for n, d in served.items() if n not in ("model.safetensors", "pytorch_model.bin")}
    out = tmp_path / "model"
    with pytest.raises(InputError, match="neither model.safetensors nor pytorch_model.bin in the repository"):
        fetch_model({"source": "hub", "id": REPO_ID}, out)
    assert not out.exists()


def test_unknown_repository_fails(hub, hub_env, tmp_path):
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        fetch_model({"source": "hub", "id": "google/no-such-model"}, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_fetch_model_command(hub, served, tmp_path):
    """`crossdisc fetch-model`, as rule fetch_model runs it, in a fresh process where HF_ENDPOINT and
    HF_HOME are read from the environment at import: a pass, then a sha256 mismatch (exit 1, one line)."""
    hub.repos[REPO_ID] = served
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                        "HF_OIDC_RESOURCE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1",
               no_proxy="127.0.0.1")

    def run(spec, out):
        return subprocess.run([sys.executable, "-m", "crossdisc", "fetch-model", "--spec", json.dumps(spec),
                               "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)

    good = tmp_path / "models" / "good"
    result = run({"source": "hub", "id": REPO_ID, "sha256": _sha256(served["model.safetensors"])}, good)
    assert result.returncode == 0, result.stderr
    _assert_fetched(good, served)
    assert (tmp_path / "hf-home" / "hub" / f"models--{REPO_ID.replace('/', '--')}").is_dir()

    bad = tmp_path / "models" / "bad"
    result = run({"source": "hub", "id": REPO_ID, "sha256": "f" * 64}, bad)
    assert result.returncode == 1
    assert re.search(r"crossdisc fetch-model: error: \S*model\.safetensors: sha256 mismatch", result.stderr)
    assert not bad.exists()
    assert "pytorch_model.bin" not in hub.requested_files() and "README.md" not in hub.requested_files()
