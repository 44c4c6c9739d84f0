"""Pre-training corpora: a text corpus in BERT's layout, tokenised once into Parquet shards.

The input is `corpus.txt` as BERT's `create_pretraining_data.py` reads it: one sentence per line,
a blank line between documents. It is prepared in three steps, each a command and a rule, so that
no step holds the corpus in memory and the shards are tokenised in parallel (processes locally,
jobs on a cluster):

1. `split_corpus` reads corpus.txt once, streaming, and appends each document to the text shard
   chosen by its sha256 (of its sentences joined by newlines). Identical documents land in the
   same shard, so dropping the repeats within a shard drops them across the corpus. A text shard
   holds rows of `document` (its position in the corpus), `sha256` and `sentences` (the text), in
   corpus order.
2. `prepare_shard` tokenises one text shard into a prepared shard: one row per distinct document,
   `document`, `sha256` and `sentences` (list<list<int32>>: each sentence's token ids, without
   special tokens); a document that repeats an earlier one is dropped. File metadata (key
   `crossdisc`, JSON) records the corpus's sha256, the shard, the tokenizer (path, vocabulary size
   and a hash of its vocabulary) and the counts.
3. `gather_shards` writes the corpus's manifest (JSON: the shards, their counts, the tokenizer),
   the one path through which pre-training (`PreparedCorpus`, a shard at a time) and the
   most-frequent token map (`token_ids`, a row group at a time) read the corpus.

Sentence pairs are built at training time, where the sequence length is known.
"""

import contextlib
import hashlib
import json
import multiprocessing
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError
from .files import atomic_path, sha256_of, write_text

CORPUS_VERSION = 2
TEXT_SCHEMA = pa.schema([pa.field("document", pa.int64()), pa.field("sha256", pa.string()),
                         pa.field("sentences", pa.list_(pa.string()))])
SCHEMA = pa.schema([pa.field("document", pa.int64()), pa.field("sha256", pa.string()),
                    pa.field("sentences", pa.list_(pa.list_(pa.int32())))])
# characters of text a text shard buffers before writing them as a row group: the splitter holds
# shards x this, a tokenising job one row group (a book-length document makes a row group of its own)
TEXT_BUFFER = 1 << 20
NO_CORPUS = "no corpus file (expected corpus.txt: one sentence per line, blank line between documents)"


def iter_documents(lines):
    """Documents of BERT-layout text lines, each a list of its non-empty, stripped sentences: a line
    of nothing but spaces, tabs and carriage returns ends a document."""
    sentences = []
    for line in lines:
        if line.strip(" \t\r\n"):
            sentences += [sentence.strip() for sentence in line.splitlines() if sentence.strip()]
        elif sentences:
            yield sentences
            sentences = []
    if sentences:
        yield sentences


def read_sentences(path):
    """Every sentence of a BERT-layout corpus file, in order, documents run together."""
    with open(path, encoding="utf-8") as lines:
        return [sentence for document in iter_documents(lines) for sentence in document]


def document_hash(sentences):
    return hashlib.sha256("\n".join(sentences).encode()).hexdigest()


def shard_of(digest, shards):
    """The shard of a document with this sha256: identical documents share one."""
    return int(digest[:16], 16) % shards


def vocabulary_hash(tokenizer):
    """A hash of the token -> id table: two tokenizers with the same value give the same ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def tokenize(sentences_of_documents, tokenizer):
    """Token ids (without specials) of every sentence, grouped by document."""
    flat = [s for doc in sentences_of_documents for s in doc]
    # split_special_tokens: text that reads "[SEP]" or "[PAD]" is words, as Google's BERT tokenised
    # it, never the ids that delimit and pad the pre-training sequences
    ids = tokenizer(flat, add_special_tokens=False, split_special_tokens=True)["input_ids"] if flat else []
    grouped, at = [], 0
    for doc in sentences_of_documents:
        grouped.append(ids[at:at + len(doc)])
        at += len(doc)
    return grouped


def _with_meta(schema, meta):
    return schema.with_metadata({"crossdisc": json.dumps(meta)})


def split_corpus(corpus_path, out_paths):
    """Stream corpus.txt into len(out_paths) text shards, each document into the shard of its sha256
    (`shard_of`), in corpus order. Returns the number of documents."""
    corpus_path = Path(corpus_path)
    if not corpus_path.is_file():
        raise InputError(corpus_path, NO_CORPUS)
    source = {"corpus_version": CORPUS_VERSION, "source": str(corpus_path), "source_sha256": sha256_of(corpus_path),
              "shards": len(out_paths)}
    buffers = [[] for _ in out_paths]  # (position, sha256, sentences) waiting to be written, per shard
    buffered = [0] * len(out_paths)
    documents = 0
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(pq.ParquetWriter(stack.enter_context(atomic_path(path)),
                                                        _with_meta(TEXT_SCHEMA, {**source, "shard": shard})))
                   for shard, path in enumerate(out_paths)]

        def flush(shard):
            rows = buffers[shard]
            writers[shard].write_table(pa.table({"document": [p for p, _, _ in rows], "sha256": [d for _, d, _ in rows],
                                                 "sentences": [s for _, _, s in rows]}, schema=TEXT_SCHEMA))
            buffers[shard], buffered[shard] = [], 0

        with open(corpus_path, encoding="utf-8") as lines:
            try:
                for documents, sentences in enumerate(iter_documents(lines), start=1):
                    digest = document_hash(sentences)
                    shard = shard_of(digest, len(out_paths))
                    buffers[shard].append((documents - 1, digest, sentences))
                    buffered[shard] += sum(map(len, sentences))
                    if buffered[shard] >= TEXT_BUFFER:
                        flush(shard)
            except UnicodeDecodeError as err:
                raise InputError(corpus_path, f"not UTF-8 text ({err.reason})") from None
        if not documents:
            raise InputError(corpus_path, "the corpus holds no sentences")
        for shard in range(len(out_paths)):
            if buffers[shard]:
                flush(shard)
    return documents


def prepare_shard(text_shard, tokenizer, out_path):
    """Tokenise one text shard (`split_corpus`) into a prepared shard, a row group at a time (one in,
    one out), dropping each document that repeats an earlier one of the shard, and so of the corpus."""
    meta = read_meta(text_shard)
    if "tokenizer" in meta:
        raise InputError(text_shard, "already a prepared shard, not a text shard of `crossdisc split-corpus`")
    seen, counts = set(), {"documents": 0, "duplicates_dropped": 0, "sentences": 0, "tokens": 0}
    with atomic_path(out_path) as tmp:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            text = pq.ParquetFile(text_shard)
            for group in range(text.num_row_groups):
                batch = text.read_row_group(group)
                rows = [row for row in zip(*(batch.column(name).to_pylist() for name in TEXT_SCHEMA.names))
                        if row[1] not in seen and not seen.add(row[1])]
                counts["duplicates_dropped"] += batch.num_rows - len(rows)
                ids = tokenize([sentences for _, _, sentences in rows], tokenizer)
                counts["documents"] += len(rows)
                counts["sentences"] += sum(map(len, ids))
                counts["tokens"] += sum(len(sentence) for document in ids for sentence in document)
                writer.write_table(pa.table({"document": [p for p, _, _ in rows], "sha256": [d for _, d, _ in rows],
                                             "sentences": ids}, schema=SCHEMA))
            meta = {**meta, **counts, "tokenizer": {"name_or_path": str(tokenizer.name_or_path),
                                                   "vocab_size": len(tokenizer),
                                                   "vocab_sha256": vocabulary_hash(tokenizer)}}
            writer.add_key_value_metadata({"crossdisc": json.dumps(meta)})
    return meta


def gather_shards(shard_paths, out_path):
    """Write the manifest of a corpus prepared shard by shard: its shards (paths relative to the
    manifest) and counts, checked to be every shard of one corpus, tokenised with one vocabulary."""
    metas = [read_meta(path) for path in shard_paths]
    first = metas[0]
    for path, meta in zip(shard_paths, metas):
        if "tokenizer" not in meta:
            raise InputError(path, "a text shard, not a prepared one (run `crossdisc prepare-corpus` on it)")
        if (meta["source_sha256"], meta["tokenizer"], meta["shards"]) != (
                first["source_sha256"], first["tokenizer"], len(shard_paths)):
            raise InputError(path, f"not a shard of the corpus of {shard_paths[0]} (another text, vocabulary or "
                                   f"number of shards: {meta['shards']}, expected {len(shard_paths)})")
    if sorted(meta["shard"] for meta in metas) != list(range(len(metas))):
        raise InputError(shard_paths[0], "the shards given are not each shard of the corpus once")
    totals = {key: sum(meta[key] for meta in metas) for key in ("documents", "duplicates_dropped", "sentences", "tokens")}
    manifest = {"corpus_version": CORPUS_VERSION, "source": first["source"], "source_sha256": first["source_sha256"],
                "tokenizer": first["tokenizer"], **totals,
                "shards": [{"path": os.path.relpath(path, Path(out_path).parent),
                            **{key: meta[key] for key in ("documents", "sentences", "tokens")}}
                           for path, meta in sorted(zip(shard_paths, metas), key=lambda item: item[1]["shard"])]}
    write_text(out_path, json.dumps(manifest, indent=1) + "\n")
    return manifest


def shard_names(shards):
    """The names of a corpus's shards, `{shard}` in their paths: 00000, 00001..."""
    return [f"{shard:05d}" for shard in range(shards)]


def prepare_corpus(corpus_path, tokenizer, manifest_path, shards=1, workers=1):
    """The three steps without the workflow, the shards tokenised by `workers` processes: corpus.txt
    into a manifest at manifest_path and its shards in the directory of its name."""
    manifest_path = Path(manifest_path)
    names = shard_names(shards)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=manifest_path.parent) as tmp:
        text_shards = [Path(tmp) / f"text-{name}.parquet" for name in names]
        split_corpus(corpus_path, text_shards)
        prepared = [manifest_path.with_suffix("") / f"shard-{name}.parquet" for name in names]
        jobs = [(text_shard, tokenizer, path) for text_shard, path in zip(text_shards, prepared)]
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                pool.starmap(prepare_shard, jobs)
        else:
            for job in jobs:
                prepare_shard(*job)
    return gather_shards(prepared, manifest_path)


def read_meta(path):
    """The metadata of a corpus manifest (.json) or of one of its shards (Parquet)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no prepared corpus (run `crossdisc prepare-corpus`)")
    if path.suffix == ".json":
        meta = json.loads(path.read_text())
    else:
        try:
            raw = (pq.read_metadata(path).metadata or {}).get(b"crossdisc")
        except pa.ArrowInvalid:
            raw = None
        meta = json.loads(raw) if raw is not None else {}
    if not isinstance(meta, dict) or "corpus_version" not in meta:
        raise InputError(path, "not a prepared corpus (run `crossdisc prepare-corpus`)")
    if meta["corpus_version"] != CORPUS_VERSION:
        raise InputError(path, f"a corpus prepared by an earlier release (version {meta['corpus_version']}, "
                               f"expected {CORPUS_VERSION}): delete it to prepare it again")
    return meta


def check_tokenizer(path, tokenizer):
    """Fail unless the prepared corpus (manifest or shard) was tokenised with this tokenizer's vocabulary."""
    meta = read_meta(path)
    if meta["tokenizer"]["vocab_sha256"] != vocabulary_hash(tokenizer):
        raise InputError(path, f"prepared with another vocabulary ({meta['tokenizer']['name_or_path']}) "
                               f"than the tokenizer {tokenizer.name_or_path}")
    return meta


def shard_paths(manifest_path):
    """The prepared shards of a corpus, in shard order."""
    manifest_path = Path(manifest_path)
    return [manifest_path.parent / shard["path"] for shard in read_meta(manifest_path)["shards"]]


@dataclass(frozen=True)
class Documents:
    """The documents of a prepared shard in three flat arrays, for random access to any sentence
    without a Python object per token: document d is sentences document_starts[d] up to
    document_starts[d + 1], sentence i is tokens[sentence_starts[i]:sentence_starts[i + 1]]."""

    tokens: np.ndarray
    sentence_starts: np.ndarray
    document_starts: np.ndarray

    def __len__(self):
        return len(self.document_starts) - 1

    def sentences(self, document):
        return range(self.document_starts[document], self.document_starts[document + 1])

    def tokens_of(self, first, end):
        """The token ids of sentences first up to end, run together (a list)."""
        return self.tokens[self.sentence_starts[first]:self.sentence_starts[end]].tolist()

    def sentence_lengths(self):
        return np.diff(self.sentence_starts)


def _starts(lengths):
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def read_documents(path, tokenizer):
    """The documents of one prepared shard (Documents), checked against tokenizer. Sentences without
    a token (a line the tokenizer reduces to nothing) and documents left without a sentence are
    dropped, as create_pretraining_data.py drops them, so a shard may hold none."""
    check_tokenizer(path, tokenizer)
    column = pq.read_table(path, columns=["sentences"]).column("sentences")
    sentences = pc.list_flatten(column)
    sentence_lengths = pc.list_value_length(sentences).to_numpy(zero_copy_only=False)
    document_lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    kept = sentence_lengths > 0
    kept_before = _starts(kept)  # how many kept sentences precede each sentence
    # np.unique: a document left without sentences starts where the next one does
    return Documents(tokens=pc.list_flatten(sentences).to_numpy(zero_copy_only=False),
                     sentence_starts=_starts(sentence_lengths[kept]),
                     document_starts=np.unique(kept_before[_starts(document_lengths)]))


class PreparedCorpus:
    """A prepared corpus read through its manifest one shard at a time: `corpus[shard]` loads that
    shard's Documents (checked against the tokenizer), and nothing here keeps it, so a reader holds
    only the shards it uses, whatever the corpus's size."""

    def __init__(self, manifest_path, tokenizer):
        meta = check_tokenizer(manifest_path, tokenizer)
        if not meta["tokens"]:
            raise InputError(manifest_path, "no sentence of the corpus has a token")
        self.paths, self.tokenizer = shard_paths(manifest_path), tokenizer

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, shard):
        return read_documents(self.paths[shard], self.tokenizer)


def token_ids(manifest_path):
    """Every token id of a prepared corpus, one row group at a time (arrays of np.int32), so that a
    corpus of any size streams through."""
    for path in shard_paths(manifest_path):
        shard = pq.ParquetFile(path)
        for group in range(shard.num_row_groups):
            column = shard.read_row_group(group, columns=["sentences"]).column("sentences")
            yield pc.list_flatten(pc.list_flatten(column)).to_numpy(zero_copy_only=False)
