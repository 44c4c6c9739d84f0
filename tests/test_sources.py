"""Downloads against a real HTTP server on loopback."""

import hashlib
import http.server
import threading

import pytest

from crossdisc import sources
from crossdisc.errors import InputError

PAYLOAD = b"ACGT" * 5000


class Handler(http.server.BaseHTTPRequestHandler):
    failures_left = 0
    truncate = False

    def do_GET(self):
        if Handler.failures_left > 0:
            Handler.failures_left -= 1
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2] if Handler.truncate else PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.failures_left, Handler.truncate = 0, False
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
