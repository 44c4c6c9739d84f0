"""Dropout for training on a CPU.

PyTorch draws a CPU dropout mask one Bernoulli sample at a time, and its fused CPU attention
kernel refuses attention dropout, so a BERT training step at batch 32 x 128 spends about a quarter
of its time drawing masks (MiniLM, two cores: 0.40 of 1.68 s). Here one 64-bit draw of torch's
generator gives four elements 16 random bits each, compared against the drop probability rounded
to 1/65536. Same distribution, same generator: a seeded run stays deterministic and resumes
exactly. `use_cpu_dropout(model)` swaps it into a Hugging Face model of the BERT family (every
`nn.Dropout` and the attention-probability dropout); on a GPU the fused kernels are faster and
the model is left as it is.
"""

import math

import torch

ATTENTION = "crossdisc-cpu-dropout"


def keep_mask(shape, p, device="cpu"):
    """A boolean tensor of `shape`, each element True with probability 1 - p (p in 1/65536ths)."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    return words.view(torch.int16)[:n].view(shape) >= round(p * 65536) - 32768


class Dropout(torch.nn.Dropout):
    """nn.Dropout with the mask drawn by keep_mask."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return torch.where(keep_mask(x.shape, self.p, x.device), x, 0.0).mul_(1.0 / (1.0 - self.p))


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Transformers attention function: PyTorch's fused SDPA without dropout (evaluation), the
    explicit softmax(QK^T)V with keep_mask dropout in training."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)).mul_(query.size(-1) ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:  # SDPA's mask: True where attention is allowed, or additive
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores += attention_mask
    kept = torch.where(keep_mask(scores.shape, dropout, scores.device), torch.softmax(scores, -1), 0.0)
    # (P * keep / (1 - p)) V, with the rescaling applied to the smaller product
    output = torch.matmul(kept, value).mul_(1.0 / (1.0 - dropout))
    return output.transpose(1, 2).contiguous(), None


def use_cpu_dropout(model):
    """Swap keep_mask dropout into `model` (in place; its weights and state dict are unchanged) when
    it is on a CPU; a model on a GPU is returned as it is."""
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
