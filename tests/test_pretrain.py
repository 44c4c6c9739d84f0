"""BERT's pre-training data and heads: next-sentence pairs cut from documents as
create_pretraining_data.py cuts them, the two sequence lengths, its masking (a fixed number of
predictions per sequence) and run_pretraining.py's loss, and checkpoints that carry the pooler the
next-sentence task trains into fine-tuning."""

import gc
import random
import weakref
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import ARCH, PRETRAIN_HP, prepared_corpus

from crossdisc import pretrain, pretrain_data
from crossdisc.corpus import Documents
from crossdisc.errors import InputError
from crossdisc.models import build_classifier

SENTENCE = 4  # tokens per sentence of the synthetic corpus


def numbered_documents(n_documents, n_sentences, first=0):
    """Documents whose sentence s of document d is the 4 tokens [1000 + first + d, 2000 + s, 7, 7],
    so a pair's segments say which sentences they hold (`first`: a shard's first document)."""
    tokens = [[1000 + first + d, 2000 + s, 7, 7] for d in range(n_documents) for s in range(n_sentences)]
    return Documents(tokens=np.array(tokens).ravel(),
                     sentence_starts=np.arange(n_documents * n_sentences + 1) * SENTENCE,
                     document_starts=np.arange(n_documents + 1) * n_sentences)


def sentences_of(segment):
    """(document, sentence) of each whole sentence of a segment of numbered_documents."""
    assert len(segment) % SENTENCE == 0
    return [(segment[i] - 1000, segment[i + 1] - 2000) for i in range(0, len(segment), SENTENCE)]


def test_documents_are_cut_into_chunks_that_fill_a_sequence():
    documents = numbered_documents(3, 10)
    # [CLS] A [SEP] B [SEP] in 15 tokens: 12 for the segments, three sentences a chunk
    chunks = pretrain_data.document_chunks(documents, 15, seed=1, short_seq_probability=0.0)
    expected = [(d, 10 * d + first, 10 * d + end, 12) for d in range(3) for first, end in ((0, 3), (3, 6), (6, 9), (9, 10))]
    assert [tuple(row) for row in chunks.tolist()] == expected


def test_a_tenth_of_the_documents_get_a_shorter_target():
    chunks = pretrain_data.document_chunks(numbered_documents(2000, 1), 15, seed=1, short_seq_probability=0.1)
    short = chunks[:, 3] < 12  # a random target of 2..12 tokens is short 10 times in 11
    assert short.mean() == pytest.approx(0.1 * 10 / 11, abs=0.02)
    assert chunks[short, 3].min() >= 2


def test_pairs_are_the_next_sentences_half_the_time_and_another_documents_otherwise():
    documents = numbered_documents(20, 10)
    chunks = pretrain_data.document_chunks(documents, 15, seed=1, short_seq_probability=0.0)
    random_next = Counter()
    for draw in range(20):
        for index, (document, first, end, target) in enumerate(chunks.tolist()):
            a, b, is_random_next = pretrain_data.sentence_pair(documents, (document, first, end, target), 15,
                                                          random.Random(f"{draw}/{index}"))
            a, b = sentences_of(a), sentences_of(b)
            in_chunk = [(document, s - 10 * document) for s in range(first, end)]
            assert a and b and len(a) + len(b) <= 3
            assert a == in_chunk[:len(a)]  # A: the chunk's first sentences
            if is_random_next:
                assert {d for d, _ in b} == {b[0][0]} != {document}
                assert [s for _, s in b] == list(range(b[0][1], b[0][1] + len(b)))  # consecutive
                assert len(b) == 3 - len(a) or b[-1][1] == 9  # up to the target or the document's end
            else:
                assert a + b == in_chunk
            random_next[end - first, is_random_next] += 1
    assert random_next[1, False] == 0  # a one-sentence chunk has no next sentence in it
    share = random_next[3, True] / (random_next[3, True] + random_next[3, False])
    assert share == pytest.approx(0.5, abs=0.05)


def test_pairs_of_real_text_are_cut_to_the_sequence_length(tmp_path, tiny_bert, tokenizer):
    from crossdisc.corpus import PreparedCorpus

    documents = PreparedCorpus(prepared_corpus(tmp_path, tiny_bert), tokenizer)[0]
    chunks = pretrain_data.document_chunks(documents, 24, seed=1, short_seq_probability=0.1)
    pairs = [pretrain_data.sentence_pair(documents, chunk, 24, random.Random(i)) for i, chunk in enumerate(chunks.tolist())]
    assert all(a and b and len(a) + len(b) <= 21 for a, b, _ in pairs)
    ids, segments, labels, _ = pretrain_data.collate(pairs, tokenizer)
    a, b, is_random_next = pairs[0]
    assert ids[0, : len(a) + len(b) + 3].tolist() == [101, *a, 102, *b, 102]
    assert segments[0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (ids.shape[1] - len(a) - len(b) - 3)
    assert labels.tolist() == [int(r) for _, _, r in pairs]


def test_batches_switch_to_the_long_length_and_depend_on_the_step_alone():
    documents = numbered_documents(40, 12)
    hp = {**pretrain.DEFAULTS, "max_length": 11, "long_max_length": 27, "long_from_step": 6, "batch_size": 8,
          "short_seq_probability": 0.0}
    batches = pretrain_data.Batches([documents], hp, seed=3)
    lengths = {step: max(len(a) + len(b) + 3 for a, b, _ in batches(step)) for step in range(12)}
    assert all(lengths[s] <= 11 for s in range(6)) and all(lengths[s] <= 27 for s in range(6, 12))
    assert min(lengths[s] for s in range(6, 12)) > 11
    # from step 6 on, the long phase's first epoch holds every chunk of its length once
    chunks = pretrain_data.document_chunks(documents, 27, seed=3, short_seq_probability=hp["short_seq_probability"])
    first_sentences = Counter()
    for step in range(6, 6 + -(-len(chunks) // 8)):
        first_sentences.update(sentences_of(a)[0] for a, _, _ in batches(step))
    assert first_sentences == Counter((d, s - 12 * d) for d, s, _, _ in chunks.tolist())
    fresh = pretrain_data.Batches([documents], hp, seed=3)
    assert fresh(9) == batches(9) and fresh(2) == batches(2)  # in any order, from any process


class CountedShards:
    """Shards of numbered documents (sizes in documents of 10 sentences), each load a new object:
    remembers the loads, and checks that a reader has let all but one go before it loads another."""

    def __init__(self, sizes):
        self.firsts = np.concatenate([[0], np.cumsum(sizes)])
        self.loads, self.loaded = [], []

    def __len__(self):
        return len(self.firsts) - 1

    def held(self):
        gc.collect()
        return sum(ref() is not None for ref in self.loaded)

    def __getitem__(self, shard):
        assert self.held() <= 1, "a third shard loaded while two are held"
        documents = numbered_documents(self.firsts[shard + 1] - self.firsts[shard], 10, first=self.firsts[shard])
        self.loads.append(shard)
        self.loaded.append(weakref.ref(documents))
        return documents

    def shard_of(self, document):
        return int(np.searchsorted(self.firsts, document, side="right")) - 1


HP = {**pretrain.DEFAULTS, "max_length": 15, "batch_size": 8, "short_seq_probability": 0.0}


def test_an_epoch_over_shards_holds_every_chunk_once_and_pairs_within_a_shard():
    shards = CountedShards([10, 0, 7, 12])  # an empty shard has no chunk to visit
    batches = pretrain_data.Batches(shards, HP, seed=5)
    chunks = 4 * 29  # 29 documents of 10 sentences, in chunks of 3, 3, 3 and 1 sentences
    first_sentences, random_next = Counter(), Counter()
    for step in range(chunks // 8):
        for a, b, is_random_next in batches(step):
            (document, sentence), other = sentences_of(a)[0], sentences_of(b)[0][0]
            first_sentences[document, sentence] += 1
            assert shards.shard_of(other) == shards.shard_of(document)  # B from A's own shard
            random_next[is_random_next] += 1
        assert shards.held() <= 2
    # every chunk at most once; the epoch's remainder (116 = 14 x 8 + 4) is left out, as BERT drops it
    assert set(first_sentences.values()) == {1} and len(first_sentences) == chunks - chunks % 8
    assert set(first_sentences) <= {(d, s) for d in range(29) for s in (0, 3, 6, 9)}
    assert random_next[True] > 20 and random_next[False] > 20
    assert batches(chunks // 8 + 1) != batches(1)  # the next epoch visits shards and chunks in another order


def test_batches_over_shards_depend_on_the_seed_and_step_alone():
    hp = {**HP, "long_max_length": 27, "long_from_step": 30}
    steps = [0, 3, 14, 15, 29, 30, 31, 44, 70]  # across epochs, and into the long phase
    batches = pretrain_data.Batches(CountedShards([6, 9, 5]), hp, seed=7)
    reference = {step: batches(step) for step in steps}
    for order in (steps[::-1], [44, 0, 70, 15]):
        fresh = pretrain_data.Batches(CountedShards([6, 9, 5]), hp, seed=7)
        assert all(fresh(step) == reference[step] for step in order)
    other_seed = pretrain_data.Batches(CountedShards([6, 9, 5]), hp, seed=8)
    assert other_seed(3) != reference[3]


def test_a_reader_holds_at_most_two_shards_and_loads_each_about_once_an_epoch():
    shards = CountedShards([3] * 12)  # 12 chunks a shard, batches of 8 cross from shard to shard
    batches = pretrain_data.Batches(shards, HP, seed=1)
    batches(0)
    assert shards.loads[:12] == list(range(12))  # counting the chunks: one pass, a shard at a time
    counted = len(shards.loads)
    for step in range(1, 2 * 12 * 12 // 8):  # two epochs
        batches(step)
        assert shards.held() <= 2
    assert len(shards.loads) - counted <= 2 * 12 + 2  # each shard once per epoch, give or take the boundary


def trained_checkpoint(tmp_path, tiny_bert, steps):
    out = tmp_path / f"step-{steps}"  # from a corpus of two shards: the loop reads across them
    pretrain.pretrain(prepared_corpus(tmp_path, tiny_bert, shards=2), tiny_bert, ARCH, out, steps, steps, PRETRAIN_HP)
    return out


def test_checkpoints_load_strictly_into_bert_for_pretraining_with_a_trained_pooler(tmp_path, tiny_bert):
    from safetensors.torch import load_file
    from transformers import BertForPreTraining

    initial, trained = trained_checkpoint(tmp_path, tiny_bert, 0), trained_checkpoint(tmp_path, tiny_bert, 3)
    _, info = BertForPreTraining.from_pretrained(trained, output_loading_info=True)
    assert not any(info.values())  # no missing, unexpected or mismatched weight
    before, after = load_file(initial / "model.safetensors"), load_file(trained / "model.safetensors")
    for name in ("bert.pooler.dense.weight", "cls.seq_relationship.weight"):
        assert not torch.equal(before[name], after[name])  # next-sentence prediction trained them


@pytest.mark.parametrize("init", ["pretrained", "re-emb"])
def test_fine_tuning_starts_from_the_checkpoints_pooler(tmp_path, tiny_bert, init):
    from safetensors.torch import load_file

    checkpoint = load_file(trained_checkpoint(tmp_path, tiny_bert, 2) / "model.safetensors")
    model = build_classifier(tmp_path / "step-2", init, num_labels=2, seed=0).state_dict()
    for name in ("bert.pooler.dense.weight", "bert.pooler.dense.bias"):
        assert torch.equal(model[name], checkpoint[name])


def test_batches_built_by_worker_processes_are_the_ones_built_here(tmp_path, tiny_bert, tokenizer):
    from crossdisc.accel import built_ahead
    from crossdisc.corpus import PreparedCorpus

    hp = {**pretrain.DEFAULTS, **PRETRAIN_HP, "long_max_length": 64, "long_from_step": 5}
    # four shards: the workers read shards of their own (the training process holds none after counting)
    batches = pretrain_data.Batches(PreparedCorpus(prepared_corpus(tmp_path, tiny_bert, shards=4), tokenizer), hp, 7)
    batches.count_chunks(range(2, 12))
    assert not batches.held

    def build(step):
        if step == 11:
            raise InputError("corpus.json", "no batch at step 11")
        return pretrain_data.masked_batch(batches(step), tokenizer, hp, batches.phase(step)[0], 7, step, range(1, 3),
                                          pack_rows_multiple=1)

    ahead = built_ahead(build, range(2, 12), workers=2)
    for step, batch in zip(range(2, 11), ahead):  # steps of both phases, in order, each by one of two workers
        here = build(step)
        assert batch.keys() == here.keys() and all(torch.equal(batch[k], here[k]) for k in here)
    with pytest.raises(InputError, match="corpus.json: no batch at step 11"):  # itself, not a worker's traceback
        next(ahead)


def test_a_job_whose_batches_worker_processes_build_trains_as_one_that_builds_them(tmp_path, tiny_bert, monkeypatch):
    from safetensors.torch import load_file

    from crossdisc import accel
    from crossdisc.accel import built_ahead

    hp = {**PRETRAIN_HP, "long_max_length": 64, "long_from_step": 4}
    corpus = prepared_corpus(tmp_path, tiny_bert, shards=2)
    pretrain.pretrain(corpus, tiny_bert, ARCH, tmp_path / "here", 6, 6, hp, batch_workers=2)  # on a CPU: none
    monkeypatch.setattr(accel, "batch_workers", lambda device, workers: workers)  # as on a GPU
    workers_asked = []
    monkeypatch.setattr(accel, "built_ahead", lambda build, steps, workers: workers_asked.append(workers) or
                        built_ahead(build, steps, workers))
    pretrain.pretrain(corpus, tiny_bert, ARCH, tmp_path / "ahead", 6, 6, hp, batch_workers=2)
    assert workers_asked == [2]
    here, ahead = (load_file(tmp_path / run / "model.safetensors") for run in ("here", "ahead"))
    assert here.keys() == ahead.keys() and all(torch.equal(here[k], ahead[k]) for k in here)


def test_a_masked_lm_only_state_is_refused(tmp_path, tiny_bert):
    previous = tmp_path / "step-0"
    previous.mkdir()
    torch.save({"model": {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, "step": 0},
               previous / pretrain.STATE_FILE)
    with pytest.raises(InputError, match="not a state of this series' model"):
        pretrain.pretrain(prepared_corpus(tmp_path, tiny_bert), tiny_bert, ARCH, tmp_path / "step-2", 2, 2, PRETRAIN_HP,
                          previous_dir=previous)


def padded_rows(tokenizer, lengths, width):
    """Rows [CLS] 1000 1001 ... [SEP] of the given lengths, padded to width."""
    ids = torch.full((len(lengths), width), tokenizer.pad_token_id)
    for row, length in enumerate(lengths):
        words = range(1000, 1000 + length - 2)
        ids[row, :length] = torch.tensor([tokenizer.cls_token_id, *words, tokenizer.sep_token_id])
    return ids


def test_each_sequence_predicts_bert_s_number_of_positions_never_a_special_token(tokenizer):
    # create_pretraining_data.py: min(max_predictions_per_seq, max(1, round(len(tokens) * 0.15))),
    # Python's round (half to even: 30 tokens, 4.5 -> 4), [CLS] and [SEP] counted but never chosen
    expected = {2: 0, 3: 1, 4: 1, 7: 1, 10: 2, 30: 4, 37: 6, 128: 19, 200: 20}
    ids = padded_rows(tokenizer, list(expected), 210)
    attention = ids != tokenizer.pad_token_id
    corrupted, positions, targets, weights = pretrain_data.mask_tokens(ids, attention, tokenizer, 0.15, 20, seed=5,
                                                                       step=7)
    assert positions.shape == targets.shape == weights.shape == (len(expected), 20)
    assert weights.sum(1).tolist() == list(expected.values())
    for row, length in enumerate(expected):
        count = expected[length]
        chosen = positions[row, :count]
        assert chosen.tolist() == sorted(set(chosen.tolist()))  # distinct, in order, as BERT's
        assert ((chosen > 0) & (chosen < length - 1)).all()  # never [CLS], the [SEP]s or padding
        assert targets[row, :count].tolist() == ids[row, chosen].tolist()
        assert positions[row, count:].eq(0).all() and targets[row, count:].eq(0).all()  # BERT's padding slots
        changed = (corrupted[row] != ids[row]).nonzero().flatten().tolist()
        assert set(changed) <= set(chosen.tolist())


def test_a_slice_of_a_batch_masks_as_the_whole_batch_does_at_any_width(tokenizer):
    documents = numbered_documents(20, 10)
    hp = {**pretrain.DEFAULTS, "max_length": 64, "batch_size": 8, "max_predictions": 5}
    pairs = pretrain_data.Batches([documents], hp, seed=3)(4)
    whole = pretrain_data.masked_batch(pairs, tokenizer, hp, 64, seed=3, step=4)
    part = pretrain_data.masked_batch(pairs, tokenizer, hp, 80, seed=3, step=4, rows=range(3, 6), pad_to_length=True)
    assert part["input_ids"].shape == (3, 80) and whole["input_ids"].shape[1] <= 64
    width = whole["input_ids"].shape[1]
    for key, tensor in whole.items():
        if key in ("input_ids", "token_type_ids", "position_ids"):
            assert torch.equal(part[key][:, :width], tensor[3:6]) and not part[key][:, width:].any()
        elif key == "sequence_ids":  # each part numbers its own sequences; padding is -1
            assert torch.equal(part[key][:, :width], torch.where(tensor[3:6] < 0, -1, tensor[3:6] - 3))
            assert part[key][:, width:].eq(-1).all()
        elif key in ("masked_positions", "first_positions"):  # indices into the part's rows, flattened
            shift = torch.arange(3).view(-1, *[1] * (tensor.dim() - 1))
            assert torch.equal(part[key] - shift * 80, tensor[3:6] - (shift + 3) * width)
        elif key in ("predictions", "sequences"):  # the whole batch's counts, in every part
            assert torch.equal(part[key], tensor)
        else:
            assert torch.equal(part[key], tensor[3:6])
    assert whole["predictions"] == whole["masked_weights"].sum() and whole["sequences"] == 8
    lengths = (whole["sequence_ids"] >= 0).sum(1).tolist()
    assert whole["masked_weights"].sum(1).tolist() == [min(5, round(0.15 * n)) for n in lengths]
    assert min(lengths) < 30 < max(lengths)  # short pairs (a document's end) and full ones
    other_step = pretrain_data.masked_batch(pairs, tokenizer, hp, 64, seed=3, step=5)
    assert not torch.equal(other_step["masked_positions"], whole["masked_positions"])


def test_the_long_phase_has_its_own_number_of_predictions():
    bert = {**pretrain.DEFAULTS, "max_length": 128, "long_max_length": 512, "long_from_step": 9,
            "max_predictions": 20, "long_max_predictions": 80}
    assert (pretrain_data.max_predictions(bert, 128), pretrain_data.max_predictions(bert, 512)) == (20, 80)
    # unset: the most a full sequence predicts (15% of 64 is 9.6, of 128 19.2), so no slot is idle by design
    derived = {**pretrain.DEFAULTS, "max_length": 64, "long_max_length": 128, "long_from_step": 9}
    assert (pretrain_data.max_predictions(derived, 64), pretrain_data.max_predictions(derived, 128)) == (10, 20)


def model_inputs(batch):
    """Hugging Face's inputs of a one-sequence-per-row batch."""
    return {"input_ids": batch["input_ids"], "token_type_ids": batch["token_type_ids"],
            "attention_mask": (batch["sequence_ids"] >= 0).long()}


def tiny_model_and_pairs(tokenizer):
    """A tiny BertForPreTraining (evaluation mode: no dropout) and 8 pairs of at most 40 tokens."""
    from transformers import BertConfig

    documents = numbered_documents(20, 10)
    hp = {**pretrain.DEFAULTS, "max_length": 40, "batch_size": 8, "max_predictions": 6}
    torch.manual_seed(0)
    model = pretrain.pretraining_model(BertConfig(vocab_size=len(tokenizer), **ARCH), torch.device("cpu")).eval()
    pairs = pretrain_data.Batches([documents], hp, seed=1)(0)
    return model, pairs, hp


def test_the_loss_is_bert_s_weighted_mean_over_the_predicted_positions(tokenizer):
    model, pairs, hp = tiny_model_and_pairs(tokenizer)
    batch = pretrain_data.masked_batch(pairs, tokenizer, hp, 48, seed=1, step=0)
    output = model(**model_inputs(batch))  # Hugging Face's scores at every position
    log_probs = output.prediction_logits.flatten(0, 1)[batch["masked_positions"]].log_softmax(-1)
    nll = -log_probs.gather(-1, batch["masked_targets"].unsqueeze(-1)).squeeze(-1)
    weights = batch["masked_weights"]
    masked_lm = (weights * nll).sum() / (weights.sum() + 1e-5)  # run_pretraining.py's get_masked_lm_output
    next_sentence = torch.nn.functional.cross_entropy(output.seq_relationship_logits, batch["next_sentence_labels"])
    assert 0 < weights.sum() < weights.numel()  # some rows have unused slots
    assert pretrain.pretraining_loss(model, batch).item() == pytest.approx((masked_lm + next_sentence).item(), rel=1e-6)

    # rows split across processes: each divides by the whole batch's counts, and the parts add up
    parts = [pretrain_data.masked_batch(pairs, tokenizer, hp, 48, seed=1, step=0, rows=rows)
             for rows in (range(0, 3), range(3, 8))]
    assert sum(pretrain.pretraining_loss(model, part) for part in parts).item() == pytest.approx(
        (masked_lm + next_sentence).item(), rel=1e-5)


def test_padding_every_batch_to_the_sequence_length_leaves_the_loss_as_it_is(tokenizer):
    model, pairs, hp = tiny_model_and_pairs(tokenizer)
    longest = pretrain_data.masked_batch(pairs, tokenizer, hp, 48, seed=1, step=0)
    fixed = pretrain_data.masked_batch(pairs, tokenizer, hp, 48, seed=1, step=0, pad_to_length=True)
    assert longest["input_ids"].shape[1] < fixed["input_ids"].shape[1] == 48
    loss = pretrain.pretraining_loss(model, longest).item()
    assert pretrain.pretraining_loss(model, fixed).item() == pytest.approx(loss, abs=1e-5)


def test_packing_places_every_sequence_once_without_overlap_in_few_rows():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([np.full(200, 128), rng.integers(5, 128, size=56)])  # BERT's mix at 128
    rows, offsets, n_rows = pretrain_data.pack(lengths, 128)
    assert ((offsets >= 0) & (offsets + lengths <= 128)).all() and rows.max() == n_rows - 1
    for row in range(n_rows):  # the sequences of a row lie side by side, none overlapping
        mine = np.flatnonzero(rows == row)
        spans = sorted(zip(offsets[mine], offsets[mine] + lengths[mine]))
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    fills = np.bincount(rows, weights=lengths)
    assert np.sort(fills)[:2].sum() > 128  # first fit: no two rows could have been one
    assert n_rows <= 11 / 9 * -(-lengths.sum() // 128) + 6 / 9  # first-fit decreasing's bound (Dosa 2007)
    assert pretrain_data.pack([3, 3, 3], 8)[2] == 2 and pretrain_data.pack([8], 8)[2] == 1


def test_a_token_with_the_padding_id_is_a_token_of_its_sequence(tokenizer):
    """What a sequence holds is its length, not its ids other than padding's: packed, a pair with the
    padding id among its words keeps every token in place and its neighbours theirs."""
    pad = tokenizer.pad_token_id
    pairs = [([1000, pad, 1001], [1002, 1003], False), ([1004] * 5, [1005] * 4, True), ([1006], [1007], False)]
    hp = {**pretrain.DEFAULTS, "max_length": 16, "batch_size": 3, "max_predictions": 3}
    packed = pretrain_data.masked_batch(pairs, tokenizer, hp, 16, seed=1, step=0, pack_rows_multiple=1)
    one_per_row = pretrain_data.masked_batch(pairs, tokenizer, hp, 16, seed=1, step=0)
    assert (packed["sequence_ids"] >= 0).sum() == (one_per_row["sequence_ids"] >= 0).sum() == 8 + 12 + 5
    assert one_per_row["sequence_ids"][0].tolist() == [0] * 8 + [-1] * 4
    for key in ("masked_positions", "first_positions"):
        assert torch.equal(packed["input_ids"].flatten()[packed[key]],
                           one_per_row["input_ids"].flatten()[one_per_row[key]])


@pytest.mark.parametrize("pad_to_length", [False, True])
def test_packed_sequences_train_as_one_sequence_per_row(tokenizer, pad_to_length):
    """Several sequences to a row, each attending to itself alone with its own positions: the loss
    and every gradient are those of the one-per-row batch (no dropout; float rounding apart)."""
    model, pairs, hp = tiny_model_and_pairs(tokenizer)  # 8 pairs of at most 40 tokens, in rows of 80
    one_per_row = pretrain_data.masked_batch(pairs, tokenizer, hp, 80, seed=1, step=0)
    packed = pretrain_data.masked_batch(pairs, tokenizer, hp, 80, seed=1, step=0, pad_to_length=pad_to_length,
                                        pack_rows_multiple=4)
    rows, width = packed["input_ids"].shape
    # pairs of 40, 11, 11, 40, 11, 40, 23 and 40 tokens: 3 rows, and one of padding to a multiple of 4
    assert rows == 4 and packed["sequence_ids"][3].eq(-1).all() and (width == 80 or not pad_to_length)
    placed = packed["sequence_ids"]
    assert (placed >= 0).sum() == (one_per_row["sequence_ids"] >= 0).sum()  # every token, once
    assert ((placed >= 0).sum(1) > (placed >= 0).sum(1).min()).any()  # rows hold different numbers of tokens
    assert torch.equal(packed["input_ids"].flatten()[packed["masked_positions"]],
                       one_per_row["input_ids"].flatten()[one_per_row["masked_positions"]])
    assert packed["input_ids"].flatten()[packed["first_positions"]].eq(tokenizer.cls_token_id).all()

    def loss_and_gradients(batch):
        model.zero_grad()
        loss = pretrain.pretraining_loss(model, batch)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss, gradients = loss_and_gradients(one_per_row)
    packed_loss, packed_gradients = loss_and_gradients(packed)
    assert packed_loss == pytest.approx(loss, abs=1e-5)
    torch.testing.assert_close(packed_gradients, gradients, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_graphed_step_trains_as_the_eager_one(tmp_path, tiny_bert):
    """On a GPU, in fp32 and without dropout: steps replayed as CUDA graphs (batches padded to the
    sequence length, both phases) give the losses of eager steps (batches padded to their longest)."""
    corpus = prepared_corpus(tmp_path, tiny_bert)
    architecture = {**ARCH, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    hp = {**PRETRAIN_HP, "precision": "fp32", "long_max_length": 48, "long_from_step": 6}
    curves = {}
    for graphs in (True, False):
        out = tmp_path / f"graphs-{graphs}"
        pretrain.pretrain(corpus, tiny_bert, architecture, out, 10, 10, {**hp, "cuda_graphs": graphs}, device="cuda")
        curves[graphs] = [point["loss"] for point in torch.load(out / pretrain.STATE_FILE, weights_only=True)["curve"]]
    np.testing.assert_allclose(curves[True], curves[False], rtol=1e-3)


def test_a_negative_number_of_batch_workers_is_one_line(tmp_path, capsys):
    from crossdisc import cli

    with pytest.raises(SystemExit) as exit:
        cli.main(["pretrain", "--corpus", "c.json", "--tokenizer", "t", "--spec", "{}", "--step", "1",
                  "--batch-workers", "-1", "--out", str(tmp_path / "out")])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("argument --batch-workers: '-1' is not a whole "
                                                                     "number of 0 or more")
    assert not (tmp_path / "out").exists()
