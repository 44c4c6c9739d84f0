"""Token files: one Parquet schema for every discipline.

Columns: `id` (string), `split` (train/dev/test), `input_ids` (list<int32>), `token_type_ids`
(list<int8>, empty when the task has single sequences), `label` (int64 or float32), `group`
(string; the piece a music segment belongs to, else the id), `subset` (string; the set of a split
an example is from, e.g. MNLI's matched or mismatched test set, else empty). File metadata (key
`crossdisc`, JSON) records what the ids mean: the vocabulary, the label names, the task kind and the
raw input's sha256.

Non-text ("native") vocabularies reserve the first ids for the specials below; the discipline's
symbols follow in alphabet order. Text vocabularies are the model tokenizer's own ids.
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError
from .files import atomic_path

PREPROCESS_VERSION = 2
SPLITS = ("train", "dev", "test")
NATIVE_SPECIALS = ("[PAD]", "[CLS]", "[SEP]")
CLS, SEP = 1, 2  # ids of NATIVE_SPECIALS; [PAD] is 0

SCHEMA_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("split", pa.string()),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("token_type_ids", pa.list_(pa.int8())),
    pa.field("group", pa.string()),
    pa.field("subset", pa.string()),
]
OPTIONAL_COLUMNS = {"token_type_ids": [], "subset": ""}


def native_vocabulary(alphabet):
    """Ids of a non-text vocabulary: specials first, then one id per symbol of the alphabet."""
    return list(NATIVE_SPECIALS) + list(alphabet)


def write_token_file(path, records, meta):
    """Write records (dicts with the schema's columns and `label`) and the metadata atomically."""
    if not records:
        raise InputError(path, "no records to write: the input produced no examples")
    regression = meta["kind"] == "regression"
    label_type = pa.float32() if regression else pa.int64()
    schema = pa.schema(SCHEMA_FIELDS + [pa.field("label", label_type)])
    columns = {f.name: [r.get(f.name, OPTIONAL_COLUMNS[f.name]) if f.name in OPTIONAL_COLUMNS else r[f.name]
                        for r in records] for f in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    meta = dict(meta, preprocess_version=PREPROCESS_VERSION,
                split_sizes={s: sum(r["split"] == s for r in records) for s in SPLITS})
    table = table.replace_schema_metadata({"crossdisc": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_token_file(path):
    """Return (DataFrame, metadata dict) of a token file."""
    if not Path(path).is_file():
        raise InputError(path, "no such token file (crossdisc preprocess writes one)")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"crossdisc")
    if raw is None:
        raise InputError(path, "not a crossdisc token file (no 'crossdisc' metadata)")
    return table.to_pandas(), json.loads(raw)


def read_meta(path):
    raw = pq.read_schema(path).metadata.get(b"crossdisc")
    return json.loads(raw)
