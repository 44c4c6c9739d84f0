"""Generated DNA and protein data for offline runs, written in the real sources' file formats.

No real DNA or protein data ships with any package, so the offline default generates data whose
labels follow a stated biological rule. Every such source is named `synthetic-*`. The files use the
layouts of the real sources (Hilbert-CNN's three-line records, PLUS's FASTA headers), so the same
readers serve generated and real data.
"""

import random
import re

# A TATA box, the core-promoter element, in its consensus form TATAWAW (W = A or T).
TATA_BOX = re.compile(r"TATA[AT]A[AT]")

# Kyte & Doolittle (1982) hydropathy index per residue.
KYTE_DOOLITTLE = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4,
    "H": -3.2, "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8,
    "T": -0.7, "W": -0.9, "Y": -1.3, "V": 4.2,
}


def tata_box_records(n, length, seed):
    """Records (id, sequence, label): label 1 iff the sequence carries a TATA box (TATAWAW)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = i % 2
        while True:
            seq = "".join(rng.choice("ACGT") for _ in range(length))
            if label:
                box = "TATA" + rng.choice("AT") + "A" + rng.choice("AT")
                at = rng.randrange(length - len(box) + 1)
                seq = seq[:at] + box + seq[at + len(box):]
            if bool(TATA_BOX.search(seq)) == bool(label):
                break
        records.append((f"tata{i:05d}", seq, label))
    rng.shuffle(records)
    return records


def write_hilbert_cnn(path, records):
    """Hilbert-CNN layout: three lines per record (id, sequence, label)."""
    with open(path, "w") as handle:
        for name, seq, label in records:
            handle.write(f"{name}\n{seq}\n{label}\n")


def hydropathy_peak(sequence, window):
    """The highest mean hydropathy over any `window` consecutive residues: the hydropathy-plot
    peak by which Kyte & Doolittle located membrane-spanning segments."""
    values = [KYTE_DOOLITTLE[r] for r in sequence]
    return max(sum(values[i:i + window]) / window for i in range(len(values) - window + 1))


def hydropathy_records(n, min_length, max_length, seed, window=7):
    """Records (id, sequence, hydropathy peak): residues drawn from a mix of hydrophobic and
    hydrophilic preferences that varies per sequence, so the peak depends on composition and on
    where hydrophobic residues cluster."""
    rng = random.Random(seed)
    residues = sorted(KYTE_DOOLITTLE)
    hydrophobic = [KYTE_DOOLITTLE[r] + 4.6 for r in residues]
    hydrophilic = [4.6 - KYTE_DOOLITTLE[r] for r in residues]
    records = []
    for i in range(n):
        w = rng.uniform(0.3, 0.7)
        weights = [w * a + (1 - w) * b for a, b in zip(hydrophobic, hydrophilic)]
        seq = "".join(rng.choices(residues, weights, k=rng.randint(max(min_length, window), max_length)))
        records.append((f"hydro{i:05d}", seq, round(hydropathy_peak(seq, window), 4)))
    return records


def write_plus_fasta(path, records):
    """PLUS layout: header `>NAME LABEL`, sequence on the next line."""
    with open(path, "w") as handle:
        for name, seq, label in records:
            handle.write(f">{name} {label}\n{seq}\n")
