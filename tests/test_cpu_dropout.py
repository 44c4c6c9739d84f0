"""CPU dropout: the C kernel equals its PyTorch reference bit for bit, keeps with probability
1 - p, and the attention it runs inside equals SDPA's."""

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from crossdisc.accel import cpu_dropout
from crossdisc.accel.cpu_dropout import Dropout, hash_dropout, keep_mask, use_cpu_dropout


@pytest.fixture(params=["kernel", "pytorch"])
def path(request, monkeypatch):
    """Run a test through the compiled kernel and through the PyTorch fallback."""
    if request.param == "kernel":
        assert cpu_dropout._library() is not None, "the test machine has a C compiler"
    else:
        monkeypatch.setattr(cpu_dropout, "_library", lambda: None)
    return request.param


def reference(x, p, scale, seed):
    """hash_dropout spelled out: the key is one draw of the seeded generator."""
    torch.manual_seed(seed)
    key = torch.empty((), dtype=torch.int64).random_(-2**63, None)
    return x * (keep_mask(torch.arange(x.numel()).view(x.shape), key, p).float() * scale)


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 1001), (4, 3, 129, 127)])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_forward_and_backward_equal_the_pytorch_reference_bit_for_bit(shape, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # (4, 3, 129, 127) is split across threads: the split must not matter
    try:
        x = torch.randn(shape, requires_grad=True)
        torch.manual_seed(5)
        ours = hash_dropout(x, 0.1, 1 / 0.9)
        expected = reference(x, 0.1, 1 / 0.9, seed=5)
        assert torch.equal(ours, expected)
        grad = torch.randn(shape)
        ours.backward(grad)
        assert torch.equal(x.grad, torch.autograd.grad(expected, x, grad)[0])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_dropout_kernel_matches_softmax_then_dropout(monkeypatch, threads):
    """Forward bit for bit, backward (one C pass per row) to float rounding, thread count irrelevant."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        scores = (3 * torch.randn(4, 3, 67, 67)).requires_grad_()  # rows of odd width
        grad = torch.randn(scores.shape)
        allowed = torch.ones(4, 1, 67, 67, dtype=torch.bool)
        allowed[1, ..., 50:] = False  # padding of the second sequence
        results = []
        for mask in (None, allowed, torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)):
            torch.manual_seed(9)
            ours = cpu_dropout.softmax_dropout(scores * 1, mask, 0.1, 1 / 0.9)
            (ours_grad,) = torch.autograd.grad(ours, scores, grad)
            with monkeypatch.context() as patched:
                patched.setattr(cpu_dropout, "_library", lambda: None)
                torch.manual_seed(9)
                expected = cpu_dropout.softmax_dropout(scores * 1, mask, 0.1, 1 / 0.9)  # softmax, then PyTorch dropout
                (expected_grad,) = torch.autograd.grad(expected, scores, grad)
            results.append((mask, ours, ours_grad, expected, expected_grad))
    finally:
        torch.set_num_threads(before)
    for mask, ours, ours_grad, expected, expected_grad in results:
        assert torch.equal(ours, expected)
        assert torch.allclose(ours_grad, expected_grad, rtol=1e-5, atol=1e-6)  # float rounding
        kept = torch.ones(scores.shape, dtype=torch.bool) if mask is None else allowed.expand(scores.shape)
        assert (ours_grad[kept] == 0).sum() == 0  # dropped probabilities still pass softmax's gradient
        assert (ours_grad[~kept] == 0).all() and (ours[~kept] == 0).all()  # masked ones get none


def test_kernel_hashes_indices_beyond_32_bits_as_the_reference_does():
    """Tensors of more than 2**32 elements: the high half of the index enters the hash. Called on a
    small buffer through pointers shifted so that its elements sit at indices around 2**32."""
    start, key, p = 2**32 - 8, -0x0123456789ABCDEF, 0.5  # a key as torch draws it, signed
    x, out = torch.rand(16) + 1.0, torch.empty(16)
    cpu_dropout._library().dropout_f32(x.data_ptr() - 4 * start, out.data_ptr() - 4 * start, start, start + 16, key,
                          cpu_dropout.threshold(p), 2.0)
    kept = keep_mask(torch.arange(start, start + 16), key, p)
    assert torch.equal(out, x * (kept.float() * 2.0))
    assert 0 < kept.sum() < 16


def test_without_a_working_compiler_it_says_so_and_falls_back(monkeypatch, capsys):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    cpu_dropout._library.cache_clear()
    try:
        assert cpu_dropout._library() is None
        assert "CPU dropout runs as PyTorch operations" in capsys.readouterr().err
        x = torch.randn(3, 50)
        torch.manual_seed(5)
        assert torch.equal(hash_dropout(x, 0.3, 2.0), reference(x, 0.3, 2.0, seed=5))
    finally:
        cpu_dropout._library.cache_clear()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_elements_are_kept_with_probability_one_minus_p(path, p):
    torch.manual_seed(0)
    n = 1_000_000
    kept = (hash_dropout(torch.ones(n), p, 1.0) != 0).float()
    for part in kept.view(-1, 4).T:  # every residue of the index, not just on average
        assert abs(part.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / (n / 4)), part.mean()


def test_masks_follow_the_torch_seed_and_are_not_correlated(path):
    x = torch.ones(400_000)
    torch.manual_seed(3)
    first, second = hash_dropout(x, 0.5, 1.0) != 0, hash_dropout(x, 0.5, 1.0) != 0
    torch.manual_seed(3)
    assert torch.equal(first, hash_dropout(x, 0.5, 1.0) != 0)
    pairs = {"calls": (first, second)} | {f"lag {k}": (first[k:], first[:-k]) for k in (1, 2, 4, 16, 65536)}
    for name, (a, b) in pairs.items():
        assert abs((a == b).float().mean().item() - 0.5) < 0.005, name


def test_dropout_rescales_what_it_keeps_and_is_the_identity_in_eval(path):
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
    monkeypatch.setattr(cpu_dropout, "hash_dropout", lambda x, p, scale: x * scale)  # none dropped
    monkeypatch.setattr(cpu_dropout, "_library", lambda: None)
    ours, _ = cpu_dropout.attention(module, query, key, value, mask, dropout=0.5, scaling=0.3)
    assert torch.allclose(ours, expected / 0.5, atol=1e-5)  # only the 1 / (1 - p) rescaling


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


def test_dropout_runs_under_the_profiler_recording_input_shapes():
    """The profiler records every argument of the autograd function, the 64-bit key included."""
    x = torch.randn(64, 64, requires_grad=True)
    with torch.profiler.profile(record_shapes=True) as profile:
        for _ in range(20):  # keys of both signs
            hash_dropout(x, 0.1, 1 / 0.9).sum().backward()
    recorded = [event for event in profile.events() if "_KernelDropout" in event.name]
    assert recorded and all(event.input_shapes[0] == [64, 64] for event in recorded if event.input_shapes)
    kept = x.grad / 20  # each element's gradient is its scale times the share of the 20 draws that kept it
    assert torch.allclose(kept.mean(), torch.tensor(1.0), atol=0.05) and kept.min() < kept.max()
