"""Downloads against a real HTTP server on loopback."""

import hashlib
import re
import http.server
import io
import random
import tarfile
import threading
import zipfile

import pytest

from crossdisc import sources
from crossdisc.errors import InputError

PAYLOAD = b"ACGT" * 5000


class Handler(http.server.BaseHTTPRequestHandler):
    failures_left = 0
    truncate = False
    payload = PAYLOAD

    def do_GET(self):
        if Handler.failures_left > 0:
            Handler.failures_left -= 1
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(Handler.payload)))
        self.end_headers()
        self.wfile.write(Handler.payload[: len(Handler.payload) // 2] if Handler.truncate else Handler.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.failures_left, Handler.truncate, Handler.payload = 0, False, PAYLOAD
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data.txt"
    httpd.shutdown()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_the_checksum(server, tmp_path):
    assert sources.fetch_url(server, tmp_path / "data.txt", SHA) == SHA
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD


def test_a_server_that_fails_twice_then_succeeds_is_retried(server, tmp_path):
    Handler.failures_left = 2
    sources.fetch_url(server, tmp_path / "data.txt", SHA, retries=3, backoff=0.01)
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD


def test_a_wrong_checksum_leaves_no_file(server, tmp_path):
    with pytest.raises(InputError, match="sha256 mismatch"):
        sources.fetch_url(server, tmp_path / "data.txt", "0" * 64, backoff=0.01)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_fails_after_retries_and_leaves_no_file(server, tmp_path):
    Handler.truncate = True
    with pytest.raises(InputError, match="download failed after 2 attempts"):
        sources.fetch_url(server, tmp_path / "data.txt", SHA, retries=1, backoff=0.01)
    assert list(tmp_path.iterdir()) == []


def test_a_source_directory_has_a_manifest_of_its_files(server, tmp_path):
    sources.build_source({"type": "url", "files": [{"url": server, "sha256": SHA}]}, tmp_path / "src")
    assert (tmp_path / "src" / "SHA256SUMS").read_text() == f"{SHA}  data.txt\n"


def test_a_failed_source_leaves_no_directory(server, tmp_path):
    with pytest.raises(InputError):
        sources.build_source({"type": "url", "files": [{"url": server, "sha256": "1" * 64}]}, tmp_path / "src")
    assert not (tmp_path / "src").exists()


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def tar_with(path, add):
    with tarfile.open(path, "w:gz") as tf:
        add(tf)


def add_file(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_an_archive_source_is_extracted_beside_the_archive(server, tmp_path):
    Handler.payload = zip_bytes({"CoLA/train.tsv": "a\t1\n", "CoLA/dev.tsv": "b\t0\n"})
    spec = {"type": "url", "extract": True, "files": [{"url": server, "name": "CoLA.zip"}]}
    sources.build_source(spec, tmp_path / "src")
    assert (tmp_path / "src" / "CoLA" / "train.tsv").read_text() == "a\t1\n"
    manifest = (tmp_path / "src" / "SHA256SUMS").read_text()
    assert "  CoLA.zip\n" in manifest and "  CoLA/dev.tsv\n" in manifest


def test_a_tar_gz_is_extracted(tmp_path):
    tar_with(tmp_path / "a.tar.gz", lambda tf: add_file(tf, "data/H3.txt", b"r1\nACGT\n1\n"))
    sources.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "data" / "H3.txt").read_bytes() == b"r1\nACGT\n1\n"


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "data/../../evil"])
def test_a_zip_member_outside_the_target_is_refused(tmp_path, name):
    (tmp_path / "a.zip").write_bytes(zip_bytes({"ok.txt": "fine", name: "evil"}))
    with pytest.raises(InputError, match=f"a.zip: member '{name}': refused"):
        sources.extract_archive(tmp_path / "a.zip", tmp_path / "out" / "src")
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


def symlink(tf, target="/etc/passwd"):
    info = tarfile.TarInfo("link")
    info.type, info.linkname = tarfile.SYMTYPE, target
    tf.addfile(info)


def hardlink(tf):
    info = tarfile.TarInfo("hard")
    info.type, info.linkname = tarfile.LNKTYPE, "../outside"
    tf.addfile(info)


@pytest.mark.parametrize("add, member", [(symlink, "link"), (hardlink, "hard"),
                                         (lambda tf: add_file(tf, "../evil", b"x"), "../evil")])
def test_a_tar_with_a_link_or_an_escaping_member_is_refused(tmp_path, add, member):
    tar_with(tmp_path / "a.tar.gz", add)
    with pytest.raises(InputError, match=f"a.tar.gz: member '{re.escape(member)}': refused"):
        sources.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out" / "link").exists() and not (tmp_path / "evil").exists()


def test_a_zip_symlink_is_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="member 'link': refused: a link"):
        sources.extract_archive(tmp_path / "a.zip", tmp_path / "out")


def corrupted(data):
    """The archive with bytes in the middle of its compressed data zeroed; its directory intact."""
    return data[:1000] + b"\0" * 100 + data[1100:]


@pytest.mark.parametrize("name, data", [
    ("a.zip", zip_bytes({"big.txt": "ACGT" * 10000})[:-200]),  # no central directory
    ("a.zip", corrupted(zip_bytes({"big.txt": "".join(random.Random(0).choices("ACGT", k=20000))}))),
    ("a.tar.gz", None),
])
def test_a_truncated_archive_is_an_input_error(tmp_path, name, data):
    if data is None:
        tar_with(tmp_path / name, lambda tf: add_file(tf, "big.txt", bytes(range(256)) * 400))
        data = (tmp_path / name).read_bytes()[:500]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError, match=f"{name}: corrupt or truncated archive"):
        sources.extract_archive(tmp_path / name, tmp_path / "out")


def test_a_source_with_a_refused_archive_leaves_no_directory(server, tmp_path):
    Handler.payload = zip_bytes({"../evil": "x"})
    spec = {"type": "url", "extract": True, "files": [{"url": server, "name": "a.zip"}]}
    with pytest.raises(InputError, match="refused"):
        sources.build_source(spec, tmp_path / "src")
    assert not (tmp_path / "src").exists() and not (tmp_path / "evil").exists()
