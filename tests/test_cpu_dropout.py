"""CPU dropout: the same distribution as nn.Dropout, the attention it runs inside equal to SDPA's."""

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from crossdisc import cpu_dropout
from crossdisc.cpu_dropout import Dropout, keep_mask, use_cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_16_bit_lane_keeps_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    n = 1_000_000
    lanes = keep_mask((n, 4), p).float().mean(0)  # element i uses bits 16*(i % 4).. of a 64-bit draw
    assert torch.all((lanes - (1 - p)).abs() < 5 * math.sqrt(p * (1 - p) / n)), lanes


def test_masks_follow_the_torch_seed_and_are_not_correlated_across_elements():
    torch.manual_seed(3)
    first = keep_mask((200_000,), 0.5)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((200_000,), 0.5))
    agree = (first[1:] == first[:-1]).float().mean().item()
    assert abs(agree - 0.5) < 0.01


def test_dropout_rescales_what_it_keeps_and_is_the_identity_in_eval():
    torch.manual_seed(0)
    x = torch.rand(500, 400) + 1.0
    dropout = Dropout(0.2)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(y[kept], x[kept] / 0.8)
    assert torch.equal(dropout.eval()(x), x)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_training_attention_without_dropped_weights_equals_sdpa(monkeypatch, mask_dtype):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    query, key, value = (torch.randn(3, 2, 7, 8) for _ in range(3))
    allowed = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    allowed[1, ..., 5:] = False  # padding of the second sequence
    mask = allowed if mask_dtype == torch.bool else torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)
    module = torch.nn.Module()
    module.is_causal = False
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    monkeypatch.setattr(cpu_dropout, "keep_mask", lambda shape, p, device: torch.ones(shape, dtype=torch.bool))
    ours, _ = cpu_dropout.attention(module, query, key, value, mask, dropout=0.5, scaling=0.3)
    assert torch.allclose(ours, expected / 0.5, atol=1e-5)  # nothing dropped: only the 1 / (1 - p) rescaling


def test_a_model_with_cpu_dropout_keeps_its_weights_and_eval_outputs(tiny_bert):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    ids = torch.randint(1000, 2000, (4, 16))
    attention = torch.ones_like(ids)
    attention[0, 10:] = 0
    before = model(input_ids=ids, attention_mask=attention).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    use_cpu_dropout(model)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == cpu_dropout.ATTENTION
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.allclose(model(input_ids=ids, attention_mask=attention).logits, before, atol=1e-6)
    model.train()  # now dropout acts, and gradients reach every layer
    logits = model(input_ids=ids, attention_mask=attention).logits
    assert not torch.allclose(logits, before, atol=1e-3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
