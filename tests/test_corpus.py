"""Pre-training corpora prepared once: corpus.txt split by document into shards, each shard
tokenised with its duplicates dropped (and so the corpus's), a manifest of the shards, and what
pre-training and the most-frequent map read from it."""

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


def many_documents(n=60):
    """n documents in BERT's layout, every fifth a repeat of an earlier one: (text, distinct ones)."""
    documents = [[f"Fact {d} about animals.", f"Animal {d} eats {d % 7} plants."] for d in range(n)]
    for d in range(5, n, 5):
        documents[d] = documents[d - 3]
    text = "\n\n".join("\n".join(sentences) for sentences in documents) + "\n"
    return text, {tuple(sentences) for sentences in documents}


def test_the_three_commands_prepare_distinct_documents_as_sentence_ids(corpus_txt, tmp_path, tokenizer, tiny_bert):
    text_shard, shard, manifest = tmp_path / "text-00000.parquet", tmp_path / "c" / "shard-00000.parquet", tmp_path / "c.json"
    main(["split-corpus", "--corpus", str(corpus_txt), "--out", str(text_shard)])
    main(["prepare-corpus", "--text", str(text_shard), "--tokenizer", str(tiny_bert), "--out", str(shard)])
    main(["gather-corpus", "--shards", str(shard), "--out", str(manifest)])
    table = pq.read_table(shard)
    assert table.schema.field("sentences").type == pa.list_(pa.list_(pa.int32()))
    assert table.column("document").to_pylist() == [0, 1, 3]  # the duplicate (document 2) is dropped
    assert len(set(table.column("sha256").to_pylist())) == 3
    first = table.column("sentences").to_pylist()[0]
    assert first == tokenizer(["The cat sat on the mat.", "It was warm."], add_special_tokens=False)["input_ids"]
    tokens = sum(len(ids) for ids in tokenizer([line for line in TEXT.splitlines() if line.strip()][:3] +
                                               ["Birds sing.", "The end of the corpus."], add_special_tokens=False)["input_ids"])
    for meta in corpus.read_meta(shard), corpus.read_meta(manifest):
        assert meta["source_sha256"] == sha256_of(corpus_txt)
        assert (meta["documents"], meta["duplicates_dropped"], meta["sentences"], meta["tokens"]) == (3, 1, 5, tokens)
        assert meta["tokenizer"]["vocab_size"] == len(tokenizer)
        assert meta["tokenizer"]["vocab_sha256"] == corpus.vocabulary_hash(tokenizer)
    assert corpus.shard_paths(manifest) == [shard]  # relative to the manifest: the directory may move


def test_documents_are_split_as_bert_reads_them_and_streamed():
    # a line of spaces, tabs and carriage returns ends a document; one of other blanks does not
    lines = ["First one.\n", "  Still the first.  \r\n", " \t\r\n", "\n", "Second\u2028in two.\n", "\u200b\n",
             "\x0c\n", "Third.\n", "\n", " \n", "Last."]
    assert list(corpus.iter_documents(lines)) == [["First one.", "Still the first."],
                                                  ["Second", "in two.", "\u200b", "Third."], ["Last."]]

    def lines_then_failure():
        yield from ["Early.\n", "\n"]
        raise RuntimeError("read too far")

    documents = corpus.iter_documents(lines_then_failure())
    assert next(documents) == ["Early."]  # a document comes out when its blank line is read


def test_each_document_lands_in_the_shard_of_its_hash_and_duplicates_are_dropped_across_shards(
        tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(corpus, "TEXT_BUFFER", 100)  # a row group every few documents: repeats fall in others
    text, distinct = many_documents()
    (tmp_path / "corpus.txt").write_text(text)
    manifest = corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "corpus.json", shards=3)
    seen = Counter()
    for shard, path in enumerate(corpus.shard_paths(tmp_path / "corpus.json")):
        assert pq.ParquetFile(path).num_row_groups > 3
        table = pq.read_table(path).to_pylist()
        assert table, "60 documents leave no shard of three empty"
        assert all(corpus.shard_of(row["sha256"], 3) == shard for row in table)
        positions = [row["document"] for row in table]
        assert positions == sorted(positions)  # corpus order within a shard
        seen.update(tuple(tokenizer.decode(ids) for ids in row["sentences"]) for row in table)
    assert set(seen.values()) == {1}  # every distinct document exactly once, over all shards
    assert set(seen) == {tuple(sentence.lower() for sentence in document) for document in distinct}
    assert manifest["documents"] == len(distinct) and manifest["duplicates_dropped"] == 60 - len(distinct)
    assert [shard["documents"] for shard in manifest["shards"]] == [len(pq.read_table(p))
                                                                    for p in corpus.shard_paths(tmp_path / "corpus.json")]


def test_one_shard_or_three_in_two_processes_hold_the_same_documents(tmp_path, tokenizer):
    text, _ = many_documents()
    (tmp_path / "corpus.txt").write_text(text)

    def rows(shards):
        manifest = tmp_path / f"{shards}.json"
        corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, manifest, shards, workers=min(shards, 2))
        return sorted((row["document"], row["sha256"], row["sentences"])
                      for path in corpus.shard_paths(manifest) for row in pq.read_table(path).to_pylist())

    one = rows(1)
    assert len(one) == 49 and one == rows(3)  # 60 documents, 11 of them repeats


def test_pretraining_reads_a_shard_sentence_by_sentence(corpus_txt, tmp_path, tokenizer):
    corpus.prepare_corpus(corpus_txt, tokenizer, tmp_path / "corpus.json")
    prepared = corpus.PreparedCorpus(tmp_path / "corpus.json", tokenizer)
    assert len(prepared) == 1
    documents = prepared[0]
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
    corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "corpus.json")
    documents = corpus.PreparedCorpus(tmp_path / "corpus.json", tokenizer)[0]
    kept = [[tokenizer.decode(documents.tokens_of(i, i + 1)) for i in documents.sentences(d)] for d in range(len(documents))]
    assert kept == [["fish swim.", "they are wet."], ["birds sing."]]
    (tmp_path / "corpus.txt").write_text("\u200b\n")
    corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "corpus.json", shards=2)
    with pytest.raises(InputError, match="corpus.json: no sentence of the corpus has a token"):
        corpus.PreparedCorpus(tmp_path / "corpus.json", tokenizer)


def test_text_that_names_a_special_token_is_words_not_the_token(tmp_path, tokenizer):
    """As Google's BERT tokenised its corpus: "[SEP]" or "[PAD]" in the text are brackets and words,
    so no sentence carries the ids that delimit and pad pre-training's sequences."""
    (tmp_path / "corpus.txt").write_text("BERT pads with [PAD] and ends with [SEP].\nIt masks with [MASK].\n")
    corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "corpus.json")
    documents = corpus.PreparedCorpus(tmp_path / "corpus.json", tokenizer)[0]
    ids = documents.tokens_of(0, len(documents.sentence_lengths()))
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert tokenizer.convert_ids_to_tokens(ids)[3:6] == ["[", "pad", "]"]


def test_token_counts_come_from_the_prepared_corpus_shard_by_shard(corpus_txt, tmp_path, tokenizer):
    corpus.prepare_corpus(corpus_txt, tokenizer, tmp_path / "one.json")
    corpus.prepare_corpus(corpus_txt, tokenizer, tmp_path / "three.json", shards=3)
    prepared = token_maps.count_tokens(tmp_path / "one.json", tokenizer)
    every_line = tokenizer([line for line in TEXT.splitlines() if line.strip()], add_special_tokens=False)["input_ids"]
    text = Counter(i for ids in every_line for i in ids)
    cat = tokenizer.convert_tokens_to_ids("cat")
    assert len(prepared) == len(tokenizer)
    assert text[cat] == 2 and prepared.loc[cat, "count"] == 1  # duplicates counted once
    unique = tokenizer.convert_tokens_to_ids(["dogs", "bark", "night", "birds"])
    assert all(prepared.loc[i, "count"] == text[i] for i in unique)
    assert token_maps.count_tokens(tmp_path / "three.json", tokenizer).equals(prepared)


def test_a_corpus_prepared_with_another_vocabulary_is_refused(corpus_txt, tmp_path, tokenizer):
    manifest = tmp_path / "corpus.json"
    corpus.prepare_corpus(corpus_txt, tokenizer, manifest, shards=2)
    shard = corpus.shard_paths(manifest)[1]
    meta = corpus.read_meta(shard)
    meta["tokenizer"]["vocab_sha256"] = "0" * 64
    pq.write_table(pq.read_table(shard).replace_schema_metadata({"crossdisc": json.dumps(meta)}), shard)
    with pytest.raises(InputError, match="shard-00001.parquet: prepared with another vocabulary"):
        corpus.PreparedCorpus(manifest, tokenizer)[1]
    with pytest.raises(InputError, match="shard-00001.parquet: not a shard of the corpus"):
        corpus.gather_shards(corpus.shard_paths(manifest), manifest)
    meta = corpus.read_meta(manifest)
    meta["tokenizer"]["vocab_sha256"] = "0" * 64
    manifest.write_text(json.dumps(meta))
    for read in (corpus.PreparedCorpus, token_maps.count_tokens):
        with pytest.raises(InputError, match="corpus.json: prepared with another vocabulary"):
            read(manifest, tokenizer)


def test_the_manifest_needs_every_shard_once(corpus_txt, tmp_path, tokenizer):
    corpus.prepare_corpus(corpus_txt, tokenizer, tmp_path / "corpus.json", shards=3)
    first, _, third = corpus.shard_paths(tmp_path / "corpus.json")
    with pytest.raises(InputError, match="not a shard of the corpus"):  # 2 given of 3
        corpus.gather_shards([first, third], tmp_path / "other.json")
    with pytest.raises(InputError, match="not each shard of the corpus once"):
        corpus.gather_shards([first, first, third], tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


@pytest.mark.parametrize("text, error", [(None, "no corpus file"), ("\n\n  \n", "the corpus holds no sentences"),
                                         (b"Fine.\n\nNot \xff UTF-8.\n", "not UTF-8 text (invalid start byte)")])
def test_a_missing_empty_or_undecodable_corpus_is_one_line_and_no_shard(tmp_path, capsys, text, error):
    path = tmp_path / "corpus.txt"
    if text is not None:
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    shards = [str(tmp_path / f"text-{shard}.parquet") for shard in range(2)]
    with pytest.raises(SystemExit) as exit_code:
        main(["split-corpus", "--corpus", str(path), "--out", *shards])
    assert exit_code.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"crossdisc split-corpus: error: {path}: {error}" + (
        " (expected corpus.txt: one sentence per line, blank line between documents)" if text is None else "")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["corpus.txt"] if text is not None else [])
