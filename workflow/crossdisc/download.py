"""The download stage: fetch or locate each raw data source into results/raw/<source>/.

Every source directory is built in a temporary directory and renamed into place only when it is
complete, with a SHA256SUMS manifest of its files. Remote files are verified against their size
and the sha256 in the config before they are accepted (an interrupted download continues with an
HTTP Range request); a file without a sha256 in the config has the one of its first download
recorded in a lock file, and must match it afterwards. Archives can be extracted in place
(`extract`), refusing any member that would land outside the source directory.
"""

import fcntl
import gzip
import json
import http.client
import os
import logging
import random
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from . import synthetic
from .errors import InputError
from .files import atomic_dir, git_blob_sha1, sha256_of
from .preflight import local_path

log = logging.getLogger(__name__)


class _Restart(Exception):
    """The partial file cannot be continued: the next attempt starts from zero."""


def _content_range(header):
    """(first byte, total size or None) of a 206 answer's `Content-Range: bytes a-b/total`."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if not match:
        raise OSError(f"unreadable Content-Range {header!r}")
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _fetch_once(url, part, timeout, validator):
    """One attempt: continue `part` with a Range request where it holds bytes, append to it on a
    206 answer, rewrite it from zero on a 200 (a server, or file://, that ignores Range). Returns
    (expected total size or None, whether it continued earlier bytes, the response's validator)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if have:
        request.add_header("Range", f"bytes={have}-")
        if validator:  # a changed file is sent whole (200) instead of a mismatched tail
            request.add_header("If-Range", validator)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # the range is past the end: what we hold is not a prefix of the file
            part.unlink(missing_ok=True)
            raise _Restart("the server refused the range (416)") from None
        raise
    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        if have and status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                part.unlink(missing_ok=True)
                raise _Restart(f"the server resumed at byte {first}, not {have}")
            if total is None and length is not None:
                total = have + int(length)
            mode, resumed = "ab", True
        else:
            total = int(length) if length is not None else None
            mode, resumed = "wb", False
            etag = response.headers.get("ETag")
            validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
        with open(part, mode) as out:
            shutil.copyfileobj(response, out, 1 << 20)
    return total, resumed, validator


def fetch_url(url, dest, sha256=None, retries=4, backoff=1.0, timeout=60, recorded_in=None):
    """Download `url` to `dest`, retrying with exponential backoff and continuing the partial file
    with HTTP Range requests where the server allows it; accept it only if its size and sha256
    match. The partial file is `.<name>.part` beside `dest`; the file appears under its final name
    only when complete and verified, and a failed download leaves neither. `recorded_in` names the
    lock file that `sha256` was read from, for the error message."""
    dest = Path(dest)
    if (local := local_path(url)) is not None and not local.is_file():  # no retry brings it back
        raise InputError(local, "no such file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    part.unlink(missing_ok=True)
    validator = None
    try:
        for attempt in range(retries + 1):
            try:
                total, resumed, validator = _fetch_once(url, part, timeout, validator)
                size = part.stat().st_size
                if total is not None and size != total:
                    raise OSError(f"truncated: {size} of {total} bytes")
                digest = sha256_of(part)
                if sha256 and digest != sha256:
                    if resumed:  # the bytes kept from an earlier attempt may be stale: once more from zero
                        part.unlink()
                        raise _Restart(f"sha256 mismatch after resuming: got {digest}")
                    if recorded_in:
                        raise InputError(url, f"sha256 differs from the one recorded in {recorded_in}: "
                                              f"recorded {sha256}, new {digest}")
                    raise InputError(url, f"sha256 mismatch: expected {sha256}, got {digest}")
                os.replace(part, dest)
                log.info("fetched %s (sha256 %s)", url, digest)
                return digest
            except InputError:
                raise
            except (OSError, urllib.error.URLError, http.client.HTTPException, _Restart) as err:
                if attempt == retries:
                    raise InputError(url, f"download failed after {retries + 1} attempts: {err}") from err
                wait = backoff * 2**attempt
                kept = part.stat().st_size if part.exists() else 0
                log.warning("attempt %d of %s failed (%s); retrying in %.1fs%s", attempt + 1, url, err, wait,
                            f", continuing from byte {kept}" if kept else "")
                time.sleep(wait)
    finally:
        part.unlink(missing_ok=True)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
ORIGINS = "ORIGINS.json"  # {file of the source directory: the user's file it copies}


def _member_target(archive, out, name):
    """Where an archive member goes: refuse names that would land outside `out`."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise InputError(archive, "refused: the member would land outside the source directory", f"member '{name}'")
    return out / path


def _members(archive):
    """(name, is_dir, open) of each member of a zip or tar archive; links and special files are
    refused, since they could point outside the source directory."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the archiver stored no file type
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise InputError(archive, "refused: a link or special file", f"member '{info.filename}'")
                yield info.filename, info.is_dir(), lambda info=info: zf.open(info)
    else:
        with tarfile.open(archive) as tf:
            for member in tf:
                if not (member.isfile() or member.isdir()):
                    raise InputError(archive, "refused: a link or special file", f"member '{member.name}'")
                yield member.name, member.isdir(), lambda member=member: tf.extractfile(member)


def extract_archive(archive, out):
    """Extract a zip or tar(.gz) archive into `out`, member by member."""
    try:
        for name, is_dir, open_member in _members(archive):
            target = _member_target(archive, out, name)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputError(archive, f"corrupt or truncated archive ({err})") from None


class ChecksumLock:
    """sha256 of the `url` files that have none in the config, recorded at their first verified
    download and enforced on every later one: lines `<sha256>  <url>`, appended under an exclusive
    lock (flock), so download jobs running side by side can share one file. To accept a changed
    file, delete its line."""

    def __init__(self, path):
        self.path = Path(path)

    def _read(self, handle):
        recorded = {}
        for n, line in enumerate(handle.read().splitlines(), 1):
            if not line.strip():
                continue
            digest, _, url = line.partition("  ")
            if not (re.fullmatch(r"[0-9a-f]{64}", digest) and url):
                raise InputError(self.path, "not a line '<sha256>  <url>'", f"line {n}")
            recorded.setdefault(url, digest)
        return recorded

    def recorded(self, url):
        """The sha256 recorded for `url`, or None."""
        if not self.path.exists():
            return None
        with open(self.path) as handle:
            return self._read(handle).get(url)

    def record(self, url, digest):
        """Record `digest` for `url`, unless a job beside this one has recorded another meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            recorded = self._read(handle).get(url)
            if recorded is None:
                handle.write(f"{digest}  {url}\n")
                handle.flush()
                os.fsync(handle.fileno())
                log.info("recorded sha256 %s of %s in %s", digest, url, self.path)
            elif recorded != digest:
                raise InputError(url, f"sha256 differs from the one recorded in {self.path}: "
                                      f"recorded {recorded}, new {digest}")


def _url_files(spec, out, lock=None):
    """Download each file; with `extract`, archives are also extracted beside it. A remote file
    without a sha256 in the config is checked against `lock` (a ChecksumLock), which records it the
    first time. A local (file://) file is the user's to edit: the lock leaves it alone, and ORIGINS
    records where its copy came from, so that an error in it names the user's file (user_path)."""
    origins = {}
    for entry in spec["files"]:
        name = entry.get("name") or entry["url"].rsplit("/", 1)[-1]
        url, expected, recorded_in = entry["url"], entry.get("sha256"), None
        if (origin := local_path(url)) is not None:
            lock, origins[name] = None, str(origin)
        if not expected and lock is not None:
            expected = lock.recorded(url)
            recorded_in = lock.path if expected else None
        digest = fetch_url(url, out / name, expected, recorded_in=recorded_in)
        if entry.get("git_blob_sha1") and (blob := git_blob_sha1(out / name)) != entry["git_blob_sha1"]:
            raise InputError(url, f"git blob id mismatch: expected {entry['git_blob_sha1']}, got {blob}")
        if not entry.get("sha256") and lock is not None:
            lock.record(url, digest)
        if spec.get("extract") and name.endswith(ARCHIVE_SUFFIXES):
            extract_archive(out / name, out)
    if origins:
        (out / ORIGINS).write_text(json.dumps(origins, indent=1) + "\n")


def user_path(raw_dir, path):
    """The user's own file that `path`, a file of the raw source directory raw_dir, is a copy of
    (a `file://` source), else `path` itself."""
    origins = Path(raw_dir) / ORIGINS
    relative = os.path.relpath(path, raw_dir)
    return json.loads(origins.read_text()).get(relative, str(path)) if origins.is_file() else str(path)


def _python_docs(spec, out):
    """English prose of the Python language reference, which ships with CPython (pydoc_data), in
    BERT's corpus layout: one sentence per line, a blank line between documents. Indented blocks
    (grammar, code) and heading underlines are dropped."""
    from pydoc_data.topics import topics

    documents = []
    for key in sorted(topics):
        paragraphs, current = [], []
        for line in topics[key].splitlines() + [""]:
            prose = line and not line.startswith((" ", "\t")) and not re.fullmatch(r"[*=\-~^]+", line)
            if prose:
                current.append(line.strip())
            elif current:
                paragraphs.append(" ".join(current))
                current = []
        sentences = [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", p)]
        if sentences:
            documents.append("\n".join(sentences))
    (out / "corpus.txt").write_text("\n\n".join(documents) + "\n")


SCORE_SUFFIXES = {".mxl", ".musicxml", ".xml", ".krn", ".mid", ".midi", ".abc"}


def _music21(spec, out):
    """Pieces of the music21 corpus exported to MIDI, with a metadata CSV in MAESTRO's layout, so
    the composer task reads them exactly as it reads MAESTRO. Pieces are split by composer into
    train/validation/test with a fixed seed."""
    import pandas as pd
    from music21 import corpus

    import pretty_midi

    rng = random.Random(spec["seed"])
    (out / "midi").mkdir()
    rows = []
    for composer in spec["composers"]:
        # scores only: the corpus also holds harmonic analyses (.rntxt) of the same pieces
        paths = sorted(str(p) for p in corpus.getComposer(composer) if p.suffix in SCORE_SUFFIXES)
        if not paths:
            raise InputError("music21 corpus", f"no pieces for composer '{composer}'")
        rng.shuffle(paths)
        pieces = []
        for path in paths:
            if len(pieces) == spec["pieces_per_composer"]:
                break
            midi_name = f"midi/{composer}-{Path(path).stem}.mid"
            if (out / midi_name).exists():  # the same piece in a second format
                continue
            score = corpus.parse(path)
            score.write("midi", fp=str(out / midi_name))
            try:  # a few scores export with absurd tick values that MIDI readers reject
                pretty_midi.PrettyMIDI(str(out / midi_name))
            except Exception as err:
                log.warning("skipping %s: exported MIDI unreadable (%s)", path, err)
                (out / midi_name).unlink()
                continue
            pieces.append((Path(path).stem, midi_name, float(score.highestTime)))
        n_test = n_val = max(1, round(len(pieces) * 0.15))
        for i, (title, midi_name, duration) in enumerate(pieces):
            split = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
            rows.append({"canonical_composer": composer.title(), "canonical_title": title,
                         "split": split, "year": "", "midi_filename": midi_name,
                         "audio_filename": "", "duration": duration})
    pd.DataFrame(rows).to_csv(out / "metadata.csv", index=False)


def _synthetic_dna(spec, out):
    records = synthetic.tata_box_records(spec["n"], spec["length"], spec["seed"])
    synthetic.write_hilbert_cnn(out / "data.txt", records)


def _synthetic_protein(spec, out):
    records = synthetic.hydropathy_records(spec["n"], spec["min_length"], spec["max_length"], spec["seed"])
    n_dev = n_test = len(records) // 10
    parts = {"test": records[:n_test], "dev": records[n_test:n_test + n_dev],
             "train": records[n_test + n_dev:]}
    for split, part in parts.items():
        synthetic.write_plus_fasta(out / f"data_{split}.fa", part)


BUILDERS = {
    "url": _url_files,
    "python-docs": _python_docs,
    "music21": _music21,
    "synthetic-dna": _synthetic_dna,
    "synthetic-protein": _synthetic_protein,
}


def build_source(spec, out_dir, checksum_lock=None):
    """Build one raw source directory atomically, ending with its SHA256SUMS manifest.
    `checksum_lock`: the lock file of the sha256 of `url` files that have none in the config
    (see ChecksumLock); without it such files are accepted unchecked."""
    with atomic_dir(out_dir) as tmp:
        if spec["type"] == "url":
            _url_files(spec, tmp, ChecksumLock(checksum_lock) if checksum_lock else None)
        else:
            BUILDERS[spec["type"]](spec, tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = "".join(f"{sha256_of(p)}  {p.relative_to(tmp)}\n" for p in files)
        (tmp / "SHA256SUMS").write_text(manifest)
