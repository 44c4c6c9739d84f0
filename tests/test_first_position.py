"""The last layer computed for position 0 only gives the full model's logits and gradients."""

import copy

import pytest
import torch
from transformers import AlbertConfig, BertConfig, ElectraConfig, RobertaConfig
from transformers import AutoModelForSequenceClassification

from crossdisc.accel.first_position import first_position_last_layer

SIZES = {"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
         "intermediate_size": 48, "max_position_embeddings": 64, "num_labels": 3}
CONFIGS = {
    "bert": lambda **kw: BertConfig(**SIZES, **kw),
    "roberta": lambda **kw: RobertaConfig(**SIZES, pad_token_id=1, **kw),
    "electra": lambda **kw: ElectraConfig(**SIZES, embedding_size=16, **kw),
    "albert": lambda **kw: AlbertConfig(**SIZES, embedding_size=16, **kw),
    "albert-2-groups-2-inner": lambda **kw: AlbertConfig(**SIZES, embedding_size=16, num_hidden_groups=2,
                                                          inner_group_num=2, **kw),
}


def pair(family, attention):
    """The same random model twice: as it is, and with its last layer for position 0 only."""
    torch.manual_seed(0)
    config = CONFIGS[family](hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = attention
    full = AutoModelForSequenceClassification.from_config(config)
    pruned = copy.deepcopy(full)
    assert first_position_last_layer(pruned)
    return full, pruned


def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (4, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[3, 2:] = 0, 0  # padded examples
    return {"input_ids": ids, "attention_mask": mask}


def gradients(model, seed=3):
    model.train().zero_grad()
    torch.manual_seed(seed)
    logits = model(**batch()).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 1])).backward()
    return logits, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_logits_and_gradients_equal_the_full_model(family, attention):
    full, pruned = pair(family, attention)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(**batch()).logits, full.eval()(**batch()).logits)
    (full_logits, full_grads), (logits, grads) = gradients(full), gradients(pruned)
    torch.testing.assert_close(logits, full_logits)
    assert grads.keys() == full_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], full_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_other_heads_and_attention_functions_are_left_alone():
    config = BertConfig(**SIZES)
    config._attn_implementation = "flex_attention"  # masks of another shape
    assert not first_position_last_layer(AutoModelForSequenceClassification.from_config(config))
    config = BertConfig(**{**SIZES, "num_labels": 2})
    from transformers import AutoModelForTokenClassification  # reads every position

    assert not first_position_last_layer(AutoModelForTokenClassification.from_config(config))


def test_under_an_untested_transformers_release_the_model_trains_whole(monkeypatch, capsys):
    from transformers import AutoModelForSequenceClassification, BertConfig

    from crossdisc.accel import first_position

    assert first_position.tested_transformers("5.25.0") and not first_position.tested_transformers("5.26.0")
    monkeypatch.setattr(first_position.transformers, "__version__", "6.0.0")
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = AutoModelForSequenceClassification.from_config(config)
    assert not first_position_last_layer(model)
    assert "transformers 6.0.0 is not among the tested releases" in capsys.readouterr().err
