"""Pre-training batches: BERT's sentence pairs cut from a prepared corpus, their masking and
collation, each step's batch a function of (seed, step) only (see Batches), so that a resumed,
chained or multi-process run trains on exactly the batches of one uninterrupted run."""

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
    each shard's number of chunks, counted once per length. A pair's random next-sentence document
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

    def __call__(self, step):
        length, phase_start = self.phase(step)
        counts, size = self.counts(length), self.hp["batch_size"]
        epoch, position = divmod(step - phase_start, math.ceil(counts.sum() / size))
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


def mask_tokens(ids, special, mask_id, vocab_size, probability, generator):
    """BERT masking: returns the corrupted ids, the selected positions and their original ids."""
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    action = torch.rand(ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[chosen & (action < 0.8)] = mask_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[randomise] = torch.randint(vocab_size, ids.shape, generator=generator)[randomise]
    return corrupted, chosen, ids[chosen]


def collate(pairs, tokenizer):
    """Padded tensors of a batch of pairs: the ids of [CLS] A [SEP] B [SEP], their token type
    (segment) ids and the next-sentence labels (0: B follows A, 1: B is random)."""
    sequences = [[tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id] for a, b, _ in pairs]
    ids = torch.full((len(pairs), max(map(len, sequences))), tokenizer.pad_token_id)
    segments = torch.zeros_like(ids)
    for i, (sequence, (a, _, _)) in enumerate(zip(sequences, pairs)):
        ids[i, : len(sequence)] = torch.as_tensor(sequence)
        segments[i, len(a) + 2: len(sequence)] = 1
    return ids, segments, torch.tensor([int(is_random_next) for _, _, is_random_next in pairs])
