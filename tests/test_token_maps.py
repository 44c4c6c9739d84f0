import numpy as np
import pytest

from crossdisc import corpus, token_maps, tokens
from crossdisc.errors import InputError
from crossdisc.grid import RANDOM_TABLES

TEXT = {"task": "t", "vocabulary": "text", "vocab_size": 30522}
DNA = {"task": "dna", "vocabulary": "native", "vocab_size": 7, "symbols": tokens.native_vocabulary("ACGT")}


def prepared_corpus(tmp_path, text, tokenizer):
    """`text` as a corpus.txt prepared for `tokenizer` (what most-frequent counts)."""
    (tmp_path / "corpus.txt").write_text(text)
    corpus.prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "corpus.json")
    return tmp_path / "corpus.json"


def test_shift_maps_every_id_including_specials_and_padding(tokenizer):
    table = token_maps.build_table("shift-1000", TEXT, tokenizer, seed=100)
    assert table[0] == 1000  # [PAD]
    assert table[tokenizer.cls_token_id] == tokenizer.cls_token_id + 1000
    assert table[30521] == (30521 + 1000) % 30522
    assert sorted(table) == list(range(30522))  # a bijection


def test_shift_1000_turns_the_papers_example_sentence_into_the_papers_shifted_sentence(tokenizer):
    # Section 2.1 of the paper, with the BERT uncased vocabulary.
    ids = tokenizer("his healthy sense of satire is light and fun...", add_special_tokens=False)["input_ids"]
    table = token_maps.build_table("shift-1000", TEXT, tokenizer, seed=100)
    shifted = tokenizer.decode(table[ids].tolist())
    assert shifted == "canadian franzme 1988pia leader watch sports czech at at at"


def test_random_shift_is_a_seeded_permutation(tokenizer):
    a = token_maps.build_table("random-shift", TEXT, tokenizer, seed=100)
    b = token_maps.build_table("random-shift", TEXT, tokenizer, seed=100)
    c = token_maps.build_table("random-shift", TEXT, tokenizer, seed=101)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert sorted(a) == list(range(30522))


def test_random_real_puts_every_symbol_and_special_on_a_real_token(tokenizer):
    table = token_maps.build_table("random-real", DNA, tokenizer, seed=100)
    assert len(table) == 7 and len(set(table)) == 7
    assert all(i >= 1000 for i in table)


def test_unused_uses_bert_unused_slots_and_model_specials(tokenizer):
    table = token_maps.build_table("unused", DNA, tokenizer, seed=100)
    assert table[:3].tolist() == [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]
    assert tokenizer.convert_ids_to_tokens(table[3:].tolist()) == ["[unused0]", "[unused1]", "[unused2]", "[unused3]"]


def test_most_frequent_assigns_symbols_to_the_most_frequent_non_special_tokens(tokenizer, tmp_path):
    counts = token_maps.count_tokens(prepared_corpus(tmp_path, "the the the cat cat sat\non the mat\n", tokenizer),
                                     tokenizer)
    table = token_maps.build_table("most-frequent", DNA, tokenizer, seed=100, token_counts=counts)
    assert tokenizer.convert_ids_to_tokens(table[3:5].tolist()) == ["the", "cat"]
    assert len(set(table)) == 7


def test_a_text_map_on_a_native_vocabulary_is_refused(tokenizer):
    with pytest.raises(InputError, match="does not apply"):
        token_maps.build_table("shift-1000", DNA, tokenizer, seed=100)


def test_saved_table_is_auditable(tokenizer, tmp_path):
    import pandas as pd

    table = token_maps.build_table("random-real", DNA, tokenizer, seed=100)
    token_maps.write_table(tmp_path / "map.parquet", table, DNA, tokenizer)
    frame = pd.read_parquet(tmp_path / "map.parquet")
    assert frame["input_token"].tolist() == DNA["symbols"]
    assert np.array_equal(token_maps.read_table(tmp_path / "map.parquet"), table)


def test_a_map_built_for_another_task_is_refused_naming_both(tokenizer, tmp_path):
    table = token_maps.build_table("random-real", DNA, tokenizer, seed=100)
    token_maps.write_table(tmp_path / "map.parquet", table, DNA, tokenizer)
    with pytest.raises(InputError, match=f"^{tmp_path}/map.parquet: built for task 'dna', not 'rna'$"):
        token_maps.read_table(tmp_path / "map.parquet", {**DNA, "task": "rna"})
    with pytest.raises(InputError, match="maps 7 ids; the token file of 'dna' has 9"):
        token_maps.read_table(tmp_path / "map.parquet", {**DNA, "vocab_size": 9})
    with pytest.raises(InputError, match="gone.parquet: no such token map"):
        token_maps.read_table(tmp_path / "gone.parquet", DNA)


@pytest.mark.parametrize("strategy", ["identity", "shift-1", "shift-1000", "shift-30521", "random-shift"])
def test_text_maps_are_bijections_that_round_trip(tokenizer, strategy):
    table = token_maps.build_table(strategy, TEXT, tokenizer, seed=7)
    inverse = np.empty_like(table)
    inverse[table] = np.arange(len(table))
    ids = np.array(tokenizer("a shifted sentence still carries all of its structure")["input_ids"])
    assert sorted(table) == list(range(30522))
    assert np.array_equal(inverse[table[ids]], ids)


@pytest.mark.parametrize("strategy", ["most-frequent", "random-real", "unused", "random-real+model-specials"])
def test_native_maps_are_injective_on_the_ids_they_touch(tokenizer, strategy, tmp_path):
    corpus = prepared_corpus(tmp_path, "the quick brown fox jumps over the lazy dog again and again\n", tokenizer)
    table = token_maps.build_table(strategy, DNA, tokenizer, seed=100, token_counts=token_maps.count_tokens(corpus, tokenizer))
    assert len(table) == DNA["vocab_size"] and len(set(table.tolist())) == len(table)
    assert table.max() < 30522


def test_model_specials_suffix_keeps_the_models_own_specials(tokenizer):
    authors = token_maps.build_table("random-real", DNA, tokenizer, seed=100)
    table = token_maps.build_table("random-real+model-specials", DNA, tokenizer, seed=100)
    assert table[:3].tolist() == [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]
    assert np.array_equal(table[3:], authors[3:])


@pytest.mark.parametrize("strategy, meta", [("identity", TEXT), ("shift-1000", TEXT), ("unused", DNA),
                                            ("most-frequent", DNA), ("random-shift", TEXT), ("random-real", DNA)])
def test_only_the_random_tables_depend_on_the_seed(tokenizer, strategy, meta, tmp_path):
    # grid.RANDOM_TABLES names the tables a run-seeded config draws per seed; the others are shared
    corpus = prepared_corpus(tmp_path, "the quick brown fox jumps over the lazy dog again and again\n", tokenizer)
    counts = token_maps.count_tokens(corpus, tokenizer)
    first, second = (token_maps.build_table(strategy, meta, tokenizer, seed, counts) for seed in (100, 101))
    assert np.array_equal(first, second) == (strategy not in RANDOM_TABLES)
