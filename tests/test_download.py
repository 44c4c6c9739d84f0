"""Downloads against a real HTTP server on loopback."""

import hashlib
import re
import http.server
import io
import random
import tarfile
import threading
import time
import zipfile

import pytest

from crossdisc import download
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
    assert download.fetch_url(server, tmp_path / "data.txt", SHA) == SHA
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD


def test_a_server_that_fails_twice_then_succeeds_is_retried(server, tmp_path):
    Handler.failures_left = 2
    download.fetch_url(server, tmp_path / "data.txt", SHA, retries=3, backoff=0.01)
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD


def test_a_wrong_checksum_leaves_no_file(server, tmp_path):
    with pytest.raises(InputError, match="sha256 mismatch"):
        download.fetch_url(server, tmp_path / "data.txt", "0" * 64, backoff=0.01)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_fails_after_retries_and_leaves_no_file(server, tmp_path):
    Handler.truncate = True
    with pytest.raises(InputError, match="download failed after 2 attempts"):
        download.fetch_url(server, tmp_path / "data.txt", SHA, retries=1, backoff=0.01)
    assert list(tmp_path.iterdir()) == []


def test_a_source_directory_has_a_manifest_of_its_files(server, tmp_path):
    download.build_source({"type": "url", "files": [{"url": server, "sha256": SHA}]}, tmp_path / "src")
    assert (tmp_path / "src" / "SHA256SUMS").read_text() == f"{SHA}  data.txt\n"


def test_a_failed_source_leaves_no_directory(server, tmp_path):
    with pytest.raises(InputError):
        download.build_source({"type": "url", "files": [{"url": server, "sha256": "1" * 64}]}, tmp_path / "src")
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
    download.build_source(spec, tmp_path / "src")
    assert (tmp_path / "src" / "CoLA" / "train.tsv").read_text() == "a\t1\n"
    manifest = (tmp_path / "src" / "SHA256SUMS").read_text()
    assert "  CoLA.zip\n" in manifest and "  CoLA/dev.tsv\n" in manifest


def test_a_tar_gz_is_extracted(tmp_path):
    tar_with(tmp_path / "a.tar.gz", lambda tf: add_file(tf, "data/H3.txt", b"r1\nACGT\n1\n"))
    download.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "data" / "H3.txt").read_bytes() == b"r1\nACGT\n1\n"


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "data/../../evil"])
def test_a_zip_member_outside_the_target_is_refused(tmp_path, name):
    (tmp_path / "a.zip").write_bytes(zip_bytes({"ok.txt": "fine", name: "evil"}))
    with pytest.raises(InputError, match=f"a.zip: member '{name}': refused"):
        download.extract_archive(tmp_path / "a.zip", tmp_path / "out" / "src")
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
        download.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out" / "link").exists() and not (tmp_path / "evil").exists()


def test_a_zip_symlink_is_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="member 'link': refused: a link"):
        download.extract_archive(tmp_path / "a.zip", tmp_path / "out")


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
        download.extract_archive(tmp_path / name, tmp_path / "out")


def test_a_source_with_a_refused_archive_leaves_no_directory(server, tmp_path):
    Handler.payload = zip_bytes({"../evil": "x"})
    spec = {"type": "url", "extract": True, "files": [{"url": server, "name": "a.zip"}]}
    with pytest.raises(InputError, match="refused"):
        download.build_source(spec, tmp_path / "src")
    assert not (tmp_path / "src").exists() and not (tmp_path / "evil").exists()


# ---- Resumable downloads: a partial file is continued with a Range request.

class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payloads` in turn (the last one from then on); `drops` requests are cut off after
    half their bytes, the connection closed; Range is honoured (206) when `honour_range`.
    `ranges` records the Range header of every request."""
    payloads = [PAYLOAD]
    drops = 0
    honour_range = True
    ranges = []

    def do_GET(self):
        cls = RangeHandler
        payload = cls.payloads.pop(0) if len(cls.payloads) > 1 else cls.payloads[0]
        asked = self.headers.get("Range")
        cls.ranges.append(asked)
        start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1]) if asked and cls.honour_range else 0
        if start >= len(payload) and asked and cls.honour_range:
            self.send_error(416)
            return
        body = payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.drops > 0:
            cls.drops -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def range_server():
    RangeHandler.payloads, RangeHandler.drops, RangeHandler.honour_range = [PAYLOAD], 0, True
    RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data.txt"
    httpd.shutdown()


HALF = len(PAYLOAD) // 2


def test_a_dropped_download_continues_with_a_range_request(range_server, tmp_path):
    RangeHandler.drops = 1
    assert download.fetch_url(range_server, tmp_path / "data.txt", SHA, backoff=0.01) == SHA
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD
    assert RangeHandler.ranges == [None, f"bytes={HALF}-"]  # the second request asked for the rest only
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]  # no partial file left


def test_a_server_that_ignores_range_restarts_from_zero(range_server, tmp_path):
    RangeHandler.drops, RangeHandler.honour_range = 1, False
    assert download.fetch_url(range_server, tmp_path / "data.txt", SHA, backoff=0.01) == SHA
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD
    assert RangeHandler.ranges == [None, f"bytes={HALF}-"]


def test_a_resumed_download_with_a_stale_start_restarts_from_zero(range_server, tmp_path):
    new = b"TTGA" * 5000
    RangeHandler.payloads, RangeHandler.drops = [PAYLOAD, new], 1  # the file changed between requests
    digest = hashlib.sha256(new).hexdigest()
    assert download.fetch_url(range_server, tmp_path / "data.txt", digest, backoff=0.01) == digest
    assert (tmp_path / "data.txt").read_bytes() == new
    assert RangeHandler.ranges == [None, f"bytes={HALF}-", None]


def test_a_download_dropped_every_time_fails_and_leaves_no_partial_file(range_server, tmp_path):
    RangeHandler.drops = 10
    with pytest.raises(InputError, match="download failed after 3 attempts: truncated"):
        download.fetch_url(range_server, tmp_path / "data.txt", SHA, retries=2, backoff=0.01)
    assert list(tmp_path.iterdir()) == []


# ---- Checksums of url files without a sha256 in the config: recorded, then enforced.

def test_a_checksum_is_recorded_at_the_first_download_and_enforced_later(server, tmp_path):
    lock = tmp_path / "raw" / "checksums.lock"
    spec = {"type": "url", "files": [{"url": server}]}
    download.build_source(spec, tmp_path / "raw" / "a", checksum_lock=lock)
    assert lock.read_text() == f"{SHA}  {server}\n"
    download.build_source(spec, tmp_path / "raw" / "b", checksum_lock=lock)  # same file: accepted
    assert lock.read_text() == f"{SHA}  {server}\n"
    Handler.payload = PAYLOAD + b"changed"
    new = hashlib.sha256(Handler.payload).hexdigest()
    with pytest.raises(InputError) as err:
        download.build_source(spec, tmp_path / "raw" / "c", checksum_lock=lock)
    assert str(err.value) == (f"{server}: sha256 differs from the one recorded in {lock}: "
                              f"recorded {SHA}, new {new}")
    assert not (tmp_path / "raw" / "c").exists()
    assert lock.read_text() == f"{SHA}  {server}\n"


def test_a_users_own_file_is_never_held_to_a_recorded_checksum(tmp_path):
    mine, lock = tmp_path / "data.tsv", tmp_path / "raw" / "checksums.lock"
    mine.write_text("text\tlabel\n")
    spec = {"type": "url", "files": [{"url": mine.as_uri()}]}
    download.build_source(spec, tmp_path / "raw" / "a", checksum_lock=lock)
    mine.write_text("text\tlabel\nedited\t1\n")
    download.build_source(spec, tmp_path / "raw" / "b", checksum_lock=lock)
    assert (tmp_path / "raw" / "b" / "data.tsv").read_text().endswith("edited\t1\n") and not lock.exists()


def test_the_copy_of_a_users_file_leads_back_to_it_and_a_downloaded_file_to_itself(server, tmp_path):
    mine = tmp_path / "mine.tsv"
    mine.write_text("text\tlabel\n")
    raw = tmp_path / "raw"
    download.build_source({"type": "url", "files": [{"url": mine.as_uri(), "name": "data.tsv"},
                                                    {"url": server, "sha256": SHA}]}, raw)
    assert download.user_path(raw, raw / "data.tsv") == str(mine)
    assert download.user_path(raw, raw / "data.txt") == str(raw / "data.txt")
    assert download.user_path(tmp_path, tmp_path / "x.tsv") == str(tmp_path / "x.tsv")  # a source without local files


def test_a_missing_local_file_fails_at_once_naming_it(tmp_path):
    started = time.monotonic()
    with pytest.raises(InputError, match=f"^{tmp_path}/gone.tsv: no such file$"):
        download.fetch_url((tmp_path / "gone.tsv").as_uri(), tmp_path / "out" / "gone.tsv")
    assert time.monotonic() - started < 0.5  # not retried with backoff


def test_a_checksum_given_in_the_config_is_not_recorded(server, tmp_path):
    lock = tmp_path / "checksums.lock"
    download.build_source({"type": "url", "files": [{"url": server, "sha256": SHA}]}, tmp_path / "src",
                         checksum_lock=lock)
    assert not lock.exists()


def test_a_lock_recorded_beside_this_job_is_enforced(tmp_path):
    lock = download.ChecksumLock(tmp_path / "checksums.lock")
    lock.record("file:///x", "a" * 64)
    lock.record("file:///x", "a" * 64)  # the same again: nothing new
    with pytest.raises(InputError, match=f"file:///x: .*recorded {'a' * 64}, new {'b' * 64}"):
        lock.record("file:///x", "b" * 64)
    assert lock.path.read_text() == f"{'a' * 64}  file:///x\n"


def test_the_cli_records_and_enforces_a_checksum(server, tmp_path, capsys):
    import json

    from crossdisc import cli

    lock = tmp_path / "checksums.lock"
    argv = ["download", "--spec", json.dumps({"type": "url", "files": [{"url": server}]}),
            "--checksum-lock", str(lock)]
    cli.main(argv + ["--out", str(tmp_path / "a")])
    assert lock.read_text() == f"{SHA}  {server}\n"
    Handler.payload = b"other"
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv + ["--out", str(tmp_path / "b")])
    assert exit_.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"crossdisc download: error: {server}: sha256 differs") and f"recorded {SHA}" in message


def test_a_file_is_checked_against_its_git_object_id(server, tmp_path):
    blob = hashlib.sha1(b"blob %d\0" % len(PAYLOAD) + PAYLOAD).hexdigest()  # what `git hash-object` prints
    spec = {"type": "url", "files": [{"url": server, "git_blob_sha1": blob}]}
    download.build_source(spec, tmp_path / "good")
    assert (tmp_path / "good/data.txt").read_bytes() == PAYLOAD
    spec["files"][0]["git_blob_sha1"] = "0" * 40
    with pytest.raises(InputError, match=f"git blob id mismatch: expected {'0' * 40}, got {blob}"):
        download.build_source(spec, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
