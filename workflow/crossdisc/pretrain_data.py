"""Pre-training batches: BERT's sentence pairs cut from a prepared corpus, their masking and
collation, each step's batch a function of (seed, step) only (see Batches) and each sequence's
masking of (seed, step, row) (see mask_tokens), so that a resumed, chained or multi-process run
trains on exactly the batches of one uninterrupted run."""

import itertools
import math
import random

import numpy as np
import torch


def document_chunks(documents, max_length, seed, short_seq_probability, shard=0):
    """create_pretraining_data.py's chunks, one training sequence each: every document cut into runs
    of consecutive sentences that reach a target number of tokens (its last run may fall short).
    The target is what [CLS] A [SEP] B [SEP] leaves of max_length, or with probability
    short_seq_probability a random shorter one for the whole document, so that pre-training also
    sees short inputs. `documents` are one shard's, whose draws are its own. Rows of (document,
    first sentence, end sentence, target)."""
    rng = random.Random(f"chunks/{seed}/{max_length}/{shard}")
    most = max_length - 3
    lengths = documents.sentence_lengths().tolist()
    starts = documents.document_starts.tolist()
    chunks = []
    for document in range(len(documents)):
        target = rng.randint(2, most) if rng.random() < short_seq_probability else most
        first, filled = starts[document], 0
        for sentence in range(starts[document], starts[document + 1]):
            filled += lengths[sentence]
            if filled >= target or sentence == starts[document + 1] - 1:
                chunks.append((document, first, sentence + 1, target))
                first, filled = sentence + 1, 0
    return np.array(chunks, dtype=np.int64)


def sentence_pair(documents, chunk, max_length, rng):
    """The training instance of one chunk: segments A and B (token id lists) and whether B is
    random. A is the chunk's first sentences (a random number of them); B the rest of the chunk,
    or, half the time and always for a one-sentence chunk, sentences of another random document
    from a random one on, up to the chunk's target. (create_pretraining_data.py then hands the
    unused rest of the chunk to the document's next chunk; here chunks are fixed, and the other
    epochs' draws use it.)"""
    document, first, end, target = chunk
    a_end = rng.randint(first + 1, end - 1) if end - first >= 2 else first + 1
    tokens_a = documents.tokens_of(first, a_end)
    is_random_next = end - first == 1 or rng.random() < 0.5
    if is_random_next:
        for _ in range(10):  # as BERT: a corpus of one document pairs it with itself
            other = rng.randint(0, len(documents) - 1)
            if other != document:
                break
        sentences = documents.sentences(other)
        tokens_b = []
        for sentence in range(rng.randint(sentences.start, sentences.stop - 1), sentences.stop):
            tokens_b += documents.tokens_of(sentence, sentence + 1)
            if len(tokens_b) >= target - len(tokens_a):
                break
    else:
        tokens_b = documents.tokens_of(a_end, end)
    # create_pretraining_data.py's truncate_seq_pair: the longer segment loses a token at a random end
    while len(tokens_a) + len(tokens_b) > max_length - 3:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        del longer[0 if rng.random() < 0.5 else -1]
    return tokens_a, tokens_b, is_random_next


class Batches:
    """The batch of every step as a function of the step alone, from a corpus of shards (a sequence:
    `shards[i]` loads shard i's Documents, as corpus.PreparedCorpus does) of which at most two are
    held at a time. A step trains at the sequence length of its phase (max_length, then
    long_max_length from long_from_step on); each phase runs epochs over its length's chunks, every
    epoch visiting the shards in an order drawn from (seed, length, epoch) and each shard's chunks in
    an order drawn from (seed, length, epoch, shard); an instance's own draws come from (seed,
    length, epoch, shard, chunk). So a step's position in its epoch maps to (shard, chunk) through
    each shard's number of chunks, counted once per length. Every batch is full (an epoch's
    remainder is left out, as BERT's input pipeline drops it), unless the corpus has fewer chunks
    than a batch: then each epoch is one batch of them all. A pair's random next-sentence document
    comes from its own shard: create_pretraining_data.py runs once per input shard and draws it from
    that shard too. Nothing depends on earlier steps or on the process that builds a batch, so a
    resumed or chained run sees exactly an uninterrupted run's batches."""

    HELD = 2  # shards kept loaded: a batch that crosses from one shard into the next needs both

    def __init__(self, shards, hp, seed):
        self.shards, self.hp, self.seed = shards, hp, seed
        self.chunk_counts = {}  # per sequence length: each shard's number of chunks
        self.held = {}  # shard -> (its Documents, its chunks per length), least recently used first
        self.order = (None, None)  # the (key, chunk order) of the shard visited last

    def phase(self, step):
        """(sequence length, first step) of the phase that `step` belongs to."""
        if "long_from_step" in self.hp and step >= self.hp["long_from_step"]:
            return self.hp["long_max_length"], self.hp["long_from_step"]
        return self.hp["max_length"], 0

    def shard_chunks(self, shard, length):
        """A shard's Documents and its chunks at `length`, loading it (and letting the least recently
        used go) unless it is held."""
        if shard in self.held:
            self.held[shard] = self.held.pop(shard)  # now the most recently used
        else:
            while len(self.held) >= self.HELD:
                del self.held[next(iter(self.held))]
            self.held[shard] = (self.shards[shard], {})
        documents, chunks = self.held[shard]
        if length not in chunks:
            chunks[length] = document_chunks(documents, length, self.seed, self.hp["short_seq_probability"], shard)
        return documents, chunks[length]

    def counts(self, length):
        """Each shard's number of chunks at `length`: one pass over the corpus, a shard at a time."""
        if length not in self.chunk_counts:
            self.chunk_counts[length] = np.array([len(self.shard_chunks(shard, length)[1])
                                                  for shard in range(len(self.shards))])
        return self.chunk_counts[length]

    def count_chunks(self, steps):
        """Count each shard's chunks at the sequence lengths of `steps` (a range) now: the pass over
        the corpus that a phase's first batch makes, made once here rather than again in each worker
        process that forks from this one to build batches. Holds no shard afterwards (a process
        whose workers build its batches reads none)."""
        for step in {steps[0], steps[-1]} if steps else ():
            self.counts(self.phase(step)[0])
        self.held.clear()

    def __call__(self, step):
        length, phase_start = self.phase(step)
        counts, size = self.counts(length), self.hp["batch_size"]
        # as run_pretraining.py's drop_remainder: an epoch's last, short batch is left out
        epoch, position = divmod(step - phase_start, max(1, counts.sum() // size))
        visits = np.random.default_rng([self.seed, length, epoch]).permutation(len(counts))
        ends = np.cumsum(counts[visits])  # where each visited shard's chunks end in the epoch
        first, end = position * size, min((position + 1) * size, ends[-1])
        pairs = []
        for visit in range(np.searchsorted(ends, first, side="right"), len(visits)):
            shard, start = int(visits[visit]), ends[visit] - counts[visits[visit]]
            if start >= end:
                break
            documents, chunks = self.shard_chunks(shard, length)
            key = (length, epoch, shard)
            if self.order[0] != key:
                self.order = key, np.random.default_rng([self.seed, length, epoch, shard]).permutation(len(chunks))
            pairs += [sentence_pair(documents, chunks[c].tolist(), length,
                                    random.Random(f"{self.seed}/{length}/{epoch}/{shard}/{c}"))
                      for c in self.order[1][max(first - start, 0):end - start]]
        return pairs


# Tells the masking's seeds ([seed, step, row, MASKING]) from Batches' ([seed, length, epoch]).
MASKING = 1


def prediction_counts(ids, attention, tokenizer, probability, max_predictions):
    """How many tokens each row of a padded batch predicts (create_pretraining_data.py's
    num_to_predict): min(max_predictions, max(1, round(n * probability))), n the row's length with
    [CLS] and [SEP] (as BERT counts), and at most its tokens other than those."""
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    lengths, candidates = attention.sum(1).tolist(), (attention & ~special).sum(1).tolist()
    return [min(max_predictions, max(1, round(n * probability)), c) for n, c in zip(lengths, candidates)]


def mask_tokens(ids, attention, tokenizer, probability, max_predictions, seed, step, first_row=0):
    """BERT's masking (create_pretraining_data.py's create_masked_lm_predictions) of a padded batch
    (`attention`: its real tokens). Each row predicts prediction_counts of its tokens other than
    [CLS] and [SEP], chosen at random; of those 80% become [MASK], 10% a random token, 10% stay. Row
    i draws from a generator of (seed, step, first_row + i) alone, so a slice of a batch (first_row:
    the index of its first row in the whole batch) masks as the whole batch does, padded to any
    width. Returns the corrupted ids and (rows, max_predictions) tensors of the predicted positions,
    their original ids and their weights: 1, and 0 for the unused slots (position 0, id 0, as BERT
    pads them)."""
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    counts = prediction_counts(ids, attention, tokenizer, probability, max_predictions)
    # numpy row by row (a BERT-base batch of 256 is built on the CPU while the GPU trains on the last)
    tokens, selectable = ids.numpy(), (attention & ~special).numpy()
    corrupted = tokens.copy()
    positions = np.zeros((len(ids), max_predictions), dtype=np.int64)
    targets, weights = np.zeros_like(positions), np.zeros(positions.shape, dtype=np.float32)
    mask_id, vocabulary = tokenizer.mask_token_id, len(tokenizer)
    for row, count in enumerate(counts):
        rng = np.random.default_rng([seed, step, first_row + row, MASKING])
        chosen = np.sort(rng.permutation(np.flatnonzero(selectable[row]))[:count])
        action, random_words = rng.random(count), rng.integers(vocabulary, size=count)
        original = tokens[row, chosen]
        corrupted[row, chosen] = np.where(action < 0.8, mask_id, np.where(action < 0.9, random_words, original))
        positions[row, :count], targets[row, :count], weights[row, :count] = chosen, original, 1.0
    return tuple(map(torch.from_numpy, (corrupted, positions, targets, weights)))


def collate(pairs, tokenizer, width=None):
    """Padded tensors of a batch of pairs, to `width` or else to the longest: the ids of
    [CLS] A [SEP] B [SEP], their token type (segment) ids, the next-sentence labels (0: B follows
    A, 1: B is random) and where the sequences' tokens are (True; False for padding)."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    sequences = [[cls, *a, sep, *b, sep] for a, b, _ in pairs]
    lengths = np.array([len(sequence) for sequence in sequences])
    columns = np.arange(width or lengths.max())
    tokens = columns < lengths[:, None]
    ids = np.full(tokens.shape, tokenizer.pad_token_id, dtype=np.int64)
    ids[tokens] = np.fromiter(itertools.chain.from_iterable(sequences), np.int64, lengths.sum())  # row by row
    segments = tokens & (columns >= np.array([len(a) + 2 for a, _, _ in pairs])[:, None])
    return (torch.from_numpy(ids), torch.from_numpy(segments.astype(np.int64)),
            torch.tensor([int(is_random_next) for _, _, is_random_next in pairs]), torch.from_numpy(tokens))


def max_predictions(hp, length):
    """Masked positions per sequence of `length` tokens: long_max_predictions in the long_max_length
    phase, else max_predictions (BERT: 20 at 128, 80 at 512); unset, length x mask_probability
    rounded up, the most a sequence of that length predicts."""
    key = "long_max_predictions" if length == hp.get("long_max_length") else "max_predictions"
    return hp.get(key) or math.ceil(length * hp["mask_probability"])


def pack(lengths, width):
    """First-fit decreasing packing of sequences of `lengths` tokens into rows of `width`: each
    sequence, longest first, goes into the first row with room for it (near the fewest rows for
    BERT's lengths, Krell et al. 2021). Returns each sequence's row and offset in it, and the
    number of rows."""
    rows, offsets = np.zeros(len(lengths), np.int64), np.zeros(len(lengths), np.int64)
    free = np.full(len(lengths) + 1, width)  # tokens left in each row; never more rows than sequences
    used = 0
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        row = int(np.argmax(free[:used + 1] >= lengths[i]))  # row `used` is still empty, so one has room
        rows[i], offsets[i] = row, width - free[row]
        free[row] -= lengths[i]
        used = max(used, row + 1)
    return rows, offsets, used


def arrange(ids, segments, attention, rows, offsets, n_rows, width, pad_token_id):
    """Sequences (rows of `ids` and `segments`; their tokens where `attention`) placed at their
    (row, offset) in `n_rows` rows of `width` tokens: the model's input_ids, token_type_ids,
    position_ids (each token's position in its own sequence) and sequence_ids (the index of each
    token's sequence; -1 for padding), and `starts`, the index of each sequence's first token in the
    rows flattened."""
    sequence, position = attention.nonzero(as_tuple=True)
    starts = torch.as_tensor(rows * width + offsets)
    at = starts[sequence] + position

    def placed(values, fill):
        flat = torch.full((n_rows * width,), fill, dtype=torch.long)
        flat[at] = values
        return flat.view(n_rows, width)

    return {"input_ids": placed(ids[sequence, position], pad_token_id),
            "token_type_ids": placed(segments[sequence, position], 0), "position_ids": placed(position, 0),
            "sequence_ids": placed(sequence, -1)}, starts


def masked_batch(pairs, tokenizer, hp, length, seed, step, rows=None, pad_to_length=False, pack_rows_multiple=None):
    """The tensors a pre-training step trains on, from the pairs of step `step`'s batch in its phase
    of `length` tokens: of its `rows` (a range; a data-parallel process's share; default all),
    masked as mask_tokens does, one sequence per row padded to the longest of the batch, or to
    `length` itself (pad_to_length: one shape for the whole phase). With pack_rows_multiple, the
    sequences are packed several to a row (pack) instead, the number of rows rounded up to a multiple
    of it, each row as long as the fullest (pad_to_length: `length`); each token attends to its own
    sequence only, so the loss is the one-per-row layout's. Keys: the model's input_ids (masked),
    token_type_ids, position_ids and sequence_ids (see arrange); masked_positions (the predicted
    tokens' indices in the rows flattened), masked_targets and masked_weights (sequences x
    max_predictions); first_positions (each sequence's [CLS] in the rows flattened);
    next_sentence_labels; and the whole batch's `predictions` and `sequences`, which the loss's means
    divide by, whichever rows a process trains on."""
    rows = range(len(pairs)) if rows is None else rows
    packed = pack_rows_multiple is not None
    ids, segments, next_labels, attention = collate(pairs, tokenizer, length if pad_to_length and not packed else None)
    predictions = sum(prediction_counts(ids, attention, tokenizer, hp["mask_probability"], max_predictions(hp, length)))
    mine = slice(rows.start, rows.stop)
    corrupted, positions, targets, weights = mask_tokens(ids[mine], attention[mine], tokenizer, hp["mask_probability"],
                                                         max_predictions(hp, length), seed, step, rows.start)
    if packed:
        lengths = attention[mine].sum(1).numpy()
        where, offsets, n_rows = pack(lengths, length)
        n_rows = min(-(-n_rows // pack_rows_multiple) * pack_rows_multiple, len(rows))  # never more than one per row
        width = length if pad_to_length else int((offsets + lengths).max())
    else:
        where, offsets, n_rows, width = np.arange(len(rows)), np.zeros(len(rows), np.int64), len(rows), ids.shape[1]
    inputs, starts = arrange(corrupted, segments[mine], attention[mine], where, offsets, n_rows, width,
                             tokenizer.pad_token_id)
    return {**inputs, "masked_positions": starts.unsqueeze(1) + positions, "masked_targets": targets,
            "masked_weights": weights, "first_positions": starts, "next_sentence_labels": next_labels[mine],
            "predictions": torch.tensor(float(predictions)), "sequences": torch.tensor(float(len(pairs)))}
