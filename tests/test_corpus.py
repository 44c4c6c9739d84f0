"""Pre-training corpora prepared once: one row per distinct document, token ids per sentence,
and what pre-training and the most-frequent map read from it."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossdisc import corpus, token_maps
from crossdisc.cli import main
from crossdisc.errors import InputError
from crossdisc.files import sha256_of

TEXT = ("The cat sat on the mat.\nIt was warm.\n\n"
        "Dogs bark at night.\n\n"
        "The cat sat on the mat.\nIt was warm.\n\n"  # an exact duplicate of the first document
        "  \n"
        "Birds sing.\nThe end of the corpus.\n")


@pytest.fixture
def corpus_txt(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def test_prepared_corpus_holds_distinct_documents_as_sentence_ids(corpus_txt, tmp_path, tokenizer, tiny_bert):
    out = tmp_path / "prepared.parquet"
    main(["prepare-corpus", "--corpus", str(corpus_txt), "--tokenizer", str(tiny_bert), "--out", str(out)])
    table = pq.read_table(out)
    assert table.schema.field("sentences").type == pa.list_(pa.list_(pa.int32()))
    assert table.column("document").to_pylist() == [0, 1, 3]  # the duplicate (document 2) is dropped
    assert len(set(table.column("sha256").to_pylist())) == 3
    first = table.column("sentences").to_pylist()[0]
    assert first == tokenizer(["The cat sat on the mat.", "It was warm."], add_special_tokens=False)["input_ids"]
    meta = corpus.read_meta(out)
    assert meta["source_sha256"] == sha256_of(corpus_txt)
    assert meta["documents"] == 3 and meta["duplicates_dropped"] == 1 and meta["sentences"] == 5
    assert meta["tokenizer"]["vocab_size"] == len(tokenizer)
    assert meta["tokenizer"]["vocab_sha256"] == corpus.vocabulary_hash(tokenizer)


def test_pretraining_reads_the_prepared_documents_sentence_by_sentence(corpus_txt, tmp_path, tokenizer):
    out = tmp_path / "prepared.parquet"
    corpus.prepare_corpus(corpus_txt, tokenizer, out)
    documents = corpus.read_documents(out, tokenizer)
    distinct = [["The cat sat on the mat.", "It was warm."], ["Dogs bark at night."],
                ["Birds sing.", "The end of the corpus."]]
    assert len(documents) == 3
    for document, sentences in enumerate(distinct):
        ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
        assert [documents.tokens_of(i, i + 1) for i in documents.sentences(document)] == ids
        assert documents.tokens_of(documents.sentences(document).start, documents.sentences(document).stop) == sum(ids, [])


def test_sentences_without_a_token_are_left_out_of_pretraining(tmp_path, tokenizer):
    """A line of a zero-width space survives strip() but not the tokenizer: as in
    create_pretraining_data.py, neither it nor a document of nothing else reaches a sentence pair."""
    (tmp_path / "corpus.txt").write_text("Fish swim.\n\u200b\nThey are wet.\n\n\u200b\n\nBirds sing.\n")
    corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "prepared.parquet")
    documents = corpus.read_documents(tmp_path / "prepared.parquet", tokenizer)
    kept = [[tokenizer.decode(documents.tokens_of(i, i + 1)) for i in documents.sentences(d)] for d in range(len(documents))]
    assert kept == [["fish swim.", "they are wet."], ["birds sing."]]
    (tmp_path / "corpus.txt").write_text("\u200b\n")
    corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "prepared.parquet")
    with pytest.raises(InputError, match="no sentence of the corpus has a token"):
        corpus.read_documents(tmp_path / "prepared.parquet", tokenizer)


def test_token_counts_come_from_the_prepared_corpus(corpus_txt, tmp_path, tokenizer):
    out = tmp_path / "prepared.parquet"
    corpus.prepare_corpus(corpus_txt, tokenizer, out)
    prepared = token_maps.count_tokens(out, tokenizer)
    every_line = tokenizer([line for line in TEXT.splitlines() if line.strip()], add_special_tokens=False)["input_ids"]
    text = Counter(i for ids in every_line for i in ids)
    cat = tokenizer.convert_tokens_to_ids("cat")
    assert len(prepared) == len(tokenizer)
    assert text[cat] == 2 and prepared.loc[cat, "count"] == 1  # duplicates counted once
    unique = tokenizer.convert_tokens_to_ids(["dogs", "bark", "night", "birds"])
    assert all(prepared.loc[i, "count"] == text[i] for i in unique)


def test_a_corpus_prepared_with_another_vocabulary_is_refused(corpus_txt, tmp_path, tokenizer):
    out = tmp_path / "prepared.parquet"
    corpus.prepare_corpus(corpus_txt, tokenizer, out)
    table = pq.read_table(out)
    meta = corpus.read_meta(out)
    meta["tokenizer"]["vocab_sha256"] = "0" * 64
    pq.write_table(table.replace_schema_metadata({"crossdisc": json.dumps(meta)}), out)
    with pytest.raises(InputError, match="another vocabulary"):
        corpus.read_documents(out, tokenizer)
    with pytest.raises(InputError, match="another vocabulary"):
        token_maps.count_tokens(out, tokenizer)


def test_an_empty_corpus_is_an_input_error(tmp_path, tokenizer):
    (tmp_path / "corpus.txt").write_text("\n\n  \n")
    with pytest.raises(InputError, match="no sentences"):
        corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
