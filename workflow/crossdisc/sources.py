"""The download stage: fetch or locate each raw data source into results/raw/<source>/.

Every source directory is built in a temporary directory and renamed into place only when it is
complete, with a SHA256SUMS manifest of its files. Remote files are verified against the sha256 in
the config before they are accepted; archives can be extracted in place (`extract`), refusing any
member that would land outside the source directory.
"""

import gzip
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
from .files import atomic_dir, atomic_path, sha256_of

log = logging.getLogger(__name__)


def fetch_url(url, dest, sha256=None, retries=4, backoff=1.0, timeout=60):
    """Download `url` to `dest`, retrying with exponential backoff; accept it only if its sha256
    matches. The file appears under its final name only when complete and verified."""
    for attempt in range(retries + 1):
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
                    expected = response.headers.get("Content-Length")
                if expected is not None and tmp.stat().st_size != int(expected):
                    raise OSError(f"truncated: {tmp.stat().st_size} of {expected} bytes")
                digest = sha256_of(tmp)
                if sha256 and digest != sha256:
                    raise InputError(url, f"sha256 mismatch: expected {sha256}, got {digest}")
            log.info("fetched %s (sha256 %s)", url, digest)
            return digest
        except InputError:
            raise
        except (OSError, urllib.error.URLError) as err:
            if attempt == retries:
                raise InputError(url, f"download failed after {retries + 1} attempts: {err}") from err
            wait = backoff * 2**attempt
            log.warning("attempt %d of %s failed (%s); retrying in %.1fs", attempt + 1, url, err, wait)
            time.sleep(wait)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


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


def _url_files(spec, out):
    """Download each file; with `extract`, archives are also extracted beside it."""
    for entry in spec["files"]:
        name = entry.get("name") or entry["url"].rsplit("/", 1)[-1]
        fetch_url(entry["url"], out / name, entry.get("sha256"))
        if spec.get("extract") and name.endswith(ARCHIVE_SUFFIXES):
            extract_archive(out / name, out)


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


def build_source(spec, out_dir):
    """Build one raw source directory atomically, ending with its SHA256SUMS manifest."""
    with atomic_dir(out_dir) as tmp:
        BUILDERS[spec["type"]](spec, tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = "".join(f"{sha256_of(p)}  {p.relative_to(tmp)}\n" for p in files)
        (tmp / "SHA256SUMS").write_text(manifest)
