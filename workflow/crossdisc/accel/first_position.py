"""The last encoder layer, computed for the first position only.

A sequence classifier of the BERT family reads a single final hidden state, the first position's
([CLS] or <s>): BERT's and ALBERT's pooler, RoBERTa's and ELECTRA's heads. In the last layer only the
keys and values need every position; the query, the attention output, the feed-forward block and the
layer norms need the first alone. `first_position_last_layer(model)` makes the last layer compute
just that, so the encoder's output is (batch, 1, hidden) and the logits and gradients are the full
model's (tests/test_first_position.py). An L-layer model does about 1/L less matrix work per step
(1/6 on MiniLM-L6, 1/12 on BERT-base), in training and in evaluation alike.

Only the layer layouts written below are changed (BERT, RoBERTa, ELECTRA and their copies; ALBERT),
and only under the transformers releases they were tested with (TESTED_TRANSFORMERS): the ALBERT
path re-implements its encoder's forward over transformers internals. Any other model, or another
release, is left as it is (with one line on stderr).
"""

import sys

import transformers

# transformers releases (major, minor) whose layer internals the code below was tested against.
TESTED_TRANSFORMERS = ((5, 20), (5, 25))
# Heads that read only position 0 of the encoder's output.
FIRST_POSITION_HEADS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                        "XLMRobertaForSequenceClassification", "CamembertForSequenceClassification",
                        "ElectraForSequenceClassification", "AlbertForSequenceClassification")
# Attention functions that take a (batch, 1 or heads, queries, keys) mask, or none.
ROW_MASKED = ("eager", "sdpa")


def _first_query_rows(mask):
    """The attention mask of the first query: 4-D masks keep their first row."""
    return mask[:, :, :1] if mask is not None and mask.dim() == 4 and mask.size(2) > 1 else mask


def _first_position_attention(heads, hidden_states, mask, dropout):
    """Multi-head attention of position 0 over every position, before the output projection:
    (batch, 1, heads * head size). `heads` holds query, key, value, scaling and the config."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    batch, length, width = hidden_states.size(0), hidden_states.size(1), heads.attention_head_size
    query = heads.query(hidden_states[:, :1]).view(batch, 1, -1, width).transpose(1, 2)
    key = heads.key(hidden_states).view(batch, length, -1, width).transpose(1, 2)
    value = heads.value(hidden_states).view(batch, length, -1, width).transpose(1, 2)
    eager = sys.modules[type(heads).__module__].eager_attention_forward  # the model file's own
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(heads.config._attn_implementation, eager)
    context, _ = attend(heads, query, key, value, _first_query_rows(mask),
                        dropout=dropout if heads.training else 0.0, scaling=heads.scaling)
    return context.reshape(batch, 1, -1)


def _bert_layer(layer):
    """BertLayer's forward (BERT, RoBERTa, ELECTRA, ...) for position 0."""
    attention = layer.attention

    def forward(hidden_states, attention_mask=None, *args, **kwargs):
        context = _first_position_attention(attention.self, hidden_states, attention_mask, attention.self.dropout.p)
        return layer.feed_forward_chunk(attention.output(context, hidden_states[:, :1]))

    return forward


def _albert_layer(layer, hidden_states, mask):
    """AlbertLayer's forward for position 0."""
    heads = layer.attention
    context = _first_position_attention(heads, hidden_states, mask, heads.attention_dropout.p)
    attended = heads.LayerNorm(hidden_states[:, :1] + heads.output_dropout(heads.dense(context)))
    return layer.full_layer_layer_norm(layer.ff_chunk(attended) + attended)


def _albert_encoder(encoder):
    """AlbertTransformer's forward, its shared layer run for position 0 on the last pass."""
    from transformers.modeling_outputs import BaseModelOutput

    config = encoder.config

    def forward(hidden_states, attention_mask=None, **kwargs):
        hidden_states = encoder.embedding_hidden_mapping_in(hidden_states)
        for i in range(config.num_hidden_layers):
            group = encoder.albert_layer_groups[int(i / (config.num_hidden_layers / config.num_hidden_groups))]
            if i < config.num_hidden_layers - 1:
                hidden_states = group(hidden_states, attention_mask, **kwargs)
                continue
            for j, layer in enumerate(group.albert_layers):
                last = j == len(group.albert_layers) - 1
                hidden_states = _albert_layer(layer, hidden_states, attention_mask) if last else layer(
                    hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)

    return forward


def tested_transformers(version=None):
    release = tuple(int(part) for part in (version or transformers.__version__).split(".")[:2])
    return TESTED_TRANSFORMERS[0] <= release <= TESTED_TRANSFORMERS[1]


def first_position_last_layer(model):
    """Make `model`'s last encoder layer compute position 0 only, in place (its weights and state
    dict are unchanged). Returns whether it did: True for the heads and layouts above."""
    config, encoder = model.config, getattr(model.base_model, "encoder", None)
    if type(model).__name__ not in FIRST_POSITION_HEADS or config._attn_implementation not in ROW_MASKED:
        return False
    if not tested_transformers():
        print(f"crossdisc: the [CLS]-only last layer is off: transformers {transformers.__version__} is not "
              f"among the tested releases {TESTED_TRANSFORMERS[0]}..{TESTED_TRANSFORMERS[1]}", file=sys.stderr)
        return False
    if getattr(config, "is_decoder", False) or getattr(config, "chunk_size_feed_forward", 0):
        return False
    if config.model_type == "albert":
        encoder.forward = _albert_encoder(encoder)
        return True
    last = encoder.layer[-1] if hasattr(encoder, "layer") else None
    if last is None or not hasattr(getattr(last.attention, "self", None), "query"):
        return False
    last.forward = _bert_layer(last)
    return True
