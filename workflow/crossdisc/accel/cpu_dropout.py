"""Dropout for training on a CPU.

PyTorch draws a CPU dropout mask one Bernoulli sample at a time, and its fused CPU attention
kernel refuses attention dropout, so a BERT training step at batch 32 x 128 spends about a quarter
of its time on dropout (MiniLM, two cores: 0.40 of 1.68 s). Here whether an element is kept is a
keyed hash of its position (cpu_dropout.c): one 64-bit key per call from torch's generator, the
drop probability rounded to 1/65536. The C kernel applies it in one vectorised pass on PyTorch's
own OpenMP threads, and the backward pass recomputes it from the key instead of storing a mask; on
the attention probabilities the backward passes of dropout and softmax are one pass per row. A
seeded run stays deterministic and resumes exactly. Without a C compiler (or under torch.compile)
the same hash runs as PyTorch operations, with the same masks, more slowly.

`use_cpu_dropout(model)` swaps it into a Hugging Face model of the BERT family (every `nn.Dropout`
and the attention-probability dropout); on a GPU the fused kernels are faster and the model is left
as it is.
"""

import ctypes
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ATTENTION = "crossdisc-cpu-dropout"
SOURCE = Path(__file__).with_name("cpu_dropout.c")


def threshold(p):
    """Hash values (16 bits) below this are dropped."""
    return round(p * 65536)


def _mix32(x):
    """cpu_dropout.c's mix32 on int64 tensors holding 32-bit values (products stay below 2**63)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    return x ^ (x >> 15)


def keep_mask(index, key, p):
    """Whether the elements at flat positions `index` (int64 tensor) are kept under `key` (int64,
    tensor or int): True with probability 1 - p, exactly as cpu_dropout.c decides."""
    low, high = key & 0xFFFFFFFF, (key >> 32) & 0xFFFFFFFF
    bits = _mix32(_mix32((index & 0xFFFFFFFF) ^ low) ^ high ^ (index >> 32)) >> 16
    return bits >= threshold(p)


@functools.cache
def _library():
    """cpu_dropout.c, compiled for this machine on first use; None without a C compiler."""
    compiler = next(filter(None, map(shutil.which, os.environ.get("CC", "").split()[:1] + ["cc", "gcc", "clang"])), None)
    problem = "no C compiler found (cc, gcc, clang or $CC)"
    with tempfile.TemporaryDirectory() as tmp:  # the loaded library outlives its file
        path = Path(tmp) / "cpu_dropout.so"
        for flags in (["-fopenmp"], []) if compiler else ():  # OpenMP where the compiler has it, else one thread
            try:
                subprocess.run([compiler, "-O3", "-shared", "-fPIC", *flags, "-o", str(path), str(SOURCE)],
                               check=True, capture_output=True, text=True, timeout=300)
                library = ctypes.CDLL(str(path))
                break
            except subprocess.CalledProcessError as failed:
                problem = (failed.stderr.strip().splitlines() or [str(failed)])[-1]
            except (OSError, subprocess.TimeoutExpired) as failed:
                problem = str(failed)
        else:
            print(f"crossdisc: CPU dropout runs as PyTorch operations, more slowly: {SOURCE.name} was not "
                  f"compiled ({problem})", file=sys.stderr)
            return None
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    library.dropout_f32.argtypes = [pointer, pointer, int64, int64, int64, ctypes.c_int32, ctypes.c_float]
    library.softmax_dropout_backward_f32.argtypes = [pointer, pointer, pointer, int64, int64, int64,
                                                     ctypes.c_int32, ctypes.c_float]
    return library


def _uses_kernel(x):
    return x.dtype == torch.float32 and x.device.type == "cpu" and not torch.compiler.is_compiling() and _library()


def _draw_key():
    return torch.empty((), dtype=torch.int64).random_(-2**63, None)  # one draw of torch's generator


def _apply_kernel(x, key, p, scale):
    x = x.contiguous()
    out = torch.empty_like(x)
    _library().dropout_f32(x.data_ptr(), out.data_ptr(), 0, x.numel(), key, threshold(p), scale)
    return out


class _KernelDropout(torch.autograd.Function):
    """Forward and backward are the same masked scaling; the mask is recomputed from the key."""

    @staticmethod
    def forward(ctx, x, key, p, scale):
        ctx.mask = (key, p, scale)
        return _apply_kernel(x, key, p, scale)

    @staticmethod
    def backward(ctx, grad):
        return _apply_kernel(grad, *ctx.mask), None, None, None


def hash_dropout(x, p, scale):
    """x with each element kept with probability 1 - p and multiplied by `scale`, or zeroed."""
    key = _draw_key()
    if _uses_kernel(x):
        return _KernelDropout.apply(x, key.item(), p, scale)
    index = torch.arange(x.numel(), device=x.device).view(x.shape)
    return x * (keep_mask(index, key.to(x.device), p).to(x.dtype) * scale)


def _mask_scores_(scores, attention_mask):
    """SDPA's mask applied to attention scores in place: True where attention is allowed, or additive."""
    if attention_mask is None:
        return scores
    if attention_mask.dtype == torch.bool:
        return scores.masked_fill_(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
    return scores.add_(attention_mask)


class _KernelSoftmaxDropout(torch.autograd.Function):
    """hash_dropout(softmax(masked scores)) with a backward pass of one C pass per row (dropout's
    backward, then softmax's) instead of PyTorch passes over the whole tensor. The mask needs no
    backward pass of its own: masked positions have probability 0, so softmax's gradient there is 0.
    The scores are masked in place: they are the caller's fresh product, saved by nothing."""

    @staticmethod
    def forward(ctx, scores, attention_mask, key, p, scale):
        probabilities = torch.softmax(_mask_scores_(scores, attention_mask), -1)
        ctx.save_for_backward(probabilities)
        ctx.mask = (key, p, scale)
        return _apply_kernel(probabilities, key, p, scale)

    @staticmethod
    def backward(ctx, grad):
        (probabilities,), (key, p, scale) = ctx.saved_tensors, ctx.mask
        grad, out, columns = grad.contiguous(), torch.empty_like(probabilities), probabilities.size(-1)
        _library().softmax_dropout_backward_f32(grad.data_ptr(), probabilities.data_ptr(), out.data_ptr(),
                                                probabilities.numel() // columns, columns, key, threshold(p), scale)
        return out, None, None, None, None


def softmax_dropout(scores, attention_mask, p, scale):
    """hash_dropout(torch.softmax(scores masked by attention_mask, -1), p, scale), with the same masks.
    `scores` is overwritten (masked)."""
    if _uses_kernel(scores):
        return _KernelSoftmaxDropout.apply(scores.contiguous(), attention_mask, _draw_key().item(), p, scale)
    return hash_dropout(torch.softmax(_mask_scores_(scores, attention_mask), -1), p, scale)


class Dropout(torch.nn.Dropout):
    """nn.Dropout through hash_dropout()."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return hash_dropout(x, self.p, 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0)


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Transformers attention function: PyTorch's fused SDPA without dropout (evaluation), the
    explicit softmax(QK^T)V with softmax_dropout() on the attention probabilities in training."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    (batch, heads, length, width), keys = query.shape, key.size(2)
    # QK^T with the scaling applied by the matrix product (its gradient scales the smaller factors)
    scores = torch.baddbmm(query.new_zeros(()), query.reshape(-1, length, width),
                           key.reshape(-1, keys, width).transpose(1, 2), beta=0,
                           alpha=width ** -0.5 if scaling is None else scaling).view(batch, heads, length, keys)
    kept = softmax_dropout(scores, attention_mask, dropout, 1.0 / (1.0 - dropout))
    return torch.matmul(kept, value).transpose(1, 2).contiguous(), None


def use_cpu_dropout(model):
    """Swap hash_dropout() into `model` (in place; its weights and state dict are unchanged) when it is on
    a CPU; a model on a GPU is returned as it is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if next(model.parameters()).device.type != "cpu":
        return model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(module, name, Dropout(child.p).train(child.training))
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # padding masks as SDPA gets them
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(ATTENTION)
    return model
