"""Pre-training corpora: a text corpus in BERT's layout, tokenised once into a Parquet file.

The input is `corpus.txt` as BERT's `create_pretraining_data.py` reads it: one sentence per line,
a blank line between documents. The prepared file holds one row per distinct document:
`document` (its position in the corpus), `sha256` (of its sentences joined by newlines) and
`sentences` (list<list<int32>>: each sentence's token ids, without special tokens). Documents
that repeat an earlier one exactly (same sha256) are dropped. File metadata (key `crossdisc`,
JSON) records the corpus's sha256, the tokenizer (path, vocabulary size and a hash of its
vocabulary) and the counts. Sentence pairs are built at training time, where the sequence length
is known.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError
from .files import atomic_path, sha256_of

CORPUS_VERSION = 1
SCHEMA = pa.schema([pa.field("document", pa.int64()), pa.field("sha256", pa.string()),
                    pa.field("sentences", pa.list_(pa.list_(pa.int32())))])
CHUNK = 2000  # documents tokenised and written per row group


def split_documents(text):
    """Documents of a BERT-layout text, each a list of its non-empty, stripped sentences."""
    documents = []
    for block in re.split(r"\n[ \t\r]*\n", text):
        sentences = [line.strip() for line in block.splitlines() if line.strip()]
        if sentences:
            documents.append(sentences)
    return documents


def read_sentences(path):
    """Every sentence of a BERT-layout corpus file, in order, documents run together."""
    return [sentence for document in split_documents(Path(path).read_text()) for sentence in document]


def document_hash(sentences):
    return hashlib.sha256("\n".join(sentences).encode()).hexdigest()


def vocabulary_hash(tokenizer):
    """A hash of the token -> id table: two tokenizers with the same value give the same ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def deduplicate(documents):
    """(position, sha256, sentences) of the first occurrence of every distinct document."""
    seen, kept = set(), []
    for position, sentences in enumerate(documents):
        digest = document_hash(sentences)
        if digest not in seen:
            seen.add(digest)
            kept.append((position, digest, sentences))
    return kept


def tokenize(sentences_of_documents, tokenizer):
    """Token ids (without specials) of every sentence, grouped by document."""
    flat = [s for doc in sentences_of_documents for s in doc]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    grouped, at = [], 0
    for doc in sentences_of_documents:
        grouped.append(ids[at:at + len(doc)])
        at += len(doc)
    return grouped


def prepare_corpus(corpus_path, tokenizer, out_path):
    """Tokenise and deduplicate corpus_path (corpus.txt) into the Parquet file out_path."""
    corpus_path = Path(corpus_path)
    if not corpus_path.is_file():
        raise InputError(corpus_path, "no corpus file (expected corpus.txt: one sentence per line, blank line between documents)")
    documents = split_documents(corpus_path.read_text())
    kept = deduplicate(documents)
    if not kept:
        raise InputError(corpus_path, "the corpus holds no sentences")
    meta = {
        "corpus_version": CORPUS_VERSION,
        "source": str(corpus_path),
        "source_sha256": sha256_of(corpus_path),
        "tokenizer": {"name_or_path": str(tokenizer.name_or_path), "vocab_size": len(tokenizer),
                      "vocab_sha256": vocabulary_hash(tokenizer)},
        "documents": len(kept),
        "duplicates_dropped": len(documents) - len(kept),
        "sentences": sum(len(sentences) for _, _, sentences in kept),
    }
    schema = SCHEMA.with_metadata({"crossdisc": json.dumps(meta)})
    with atomic_path(out_path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(kept), CHUNK):
                chunk = kept[start:start + CHUNK]
                ids = tokenize([sentences for _, _, sentences in chunk], tokenizer)
                writer.write_table(pa.table({"document": [p for p, _, _ in chunk], "sha256": [d for _, d, _ in chunk],
                                             "sentences": ids}, schema=schema))
    return meta


def read_meta(path):
    raw = (pq.read_schema(path).metadata or {}).get(b"crossdisc")
    if raw is None or "corpus_version" not in json.loads(raw):
        raise InputError(path, "not a prepared corpus (run `crossdisc prepare-corpus`)")
    return json.loads(raw)


def check_tokenizer(path, tokenizer):
    """Fail unless the prepared corpus was tokenised with this tokenizer's vocabulary."""
    meta = read_meta(path)
    if meta["tokenizer"]["vocab_sha256"] != vocabulary_hash(tokenizer):
        raise InputError(path, f"prepared with another vocabulary ({meta['tokenizer']['name_or_path']}) "
                               f"than the tokenizer {tokenizer.name_or_path}")
    return meta


@dataclass(frozen=True)
class Documents:
    """The documents of a prepared corpus in three flat arrays, for random access to any sentence
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
    """The documents of a prepared corpus (Documents), checked against tokenizer. Sentences without
    a token (a line the tokenizer reduces to nothing) and documents left without a sentence are
    dropped, as create_pretraining_data.py drops them."""
    check_tokenizer(path, tokenizer)
    column = pq.read_table(path, columns=["sentences"]).column("sentences")
    sentences = pc.list_flatten(column)
    sentence_lengths = pc.list_value_length(sentences).to_numpy(zero_copy_only=False)
    document_lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    kept = sentence_lengths > 0
    kept_before = _starts(kept)  # how many kept sentences precede each sentence
    # np.unique: a document left without sentences starts where the next one does
    documents = Documents(tokens=pc.list_flatten(sentences).to_numpy(zero_copy_only=False),
                          sentence_starts=_starts(sentence_lengths[kept]),
                          document_starts=np.unique(kept_before[_starts(document_lengths)]))
    if not len(documents):
        raise InputError(path, "no sentence of the corpus has a token")
    return documents


def token_ids(path):
    """Every token id of a prepared corpus, flattened (np.int64)."""
    column = pq.read_table(path, columns=["sentences"]).column("sentences")
    flat = pc.list_flatten(pc.list_flatten(column))
    return flat.to_numpy(zero_copy_only=False).astype(np.int64)
