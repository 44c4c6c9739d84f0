"""Hilbert-CNN (Yin et al., 2018, "An image representation based convolutional network for DNA
classification"), the paper's discipline-specific DNA model, as a model family of the one training
engine: built from its architecture (init `scratch` only), fed the same token files.

Faithful to the authors' code (github Doulrs/Hilbert-CNN, commit 5754b8b: `functions.py` for the
input, `network.py` for the network):
- Input: every k-mer (k = 4) of the sequence one-hot over the 4^k words, the i-th k-mer written to
  the i-th cell of a Hilbert curve, empty cells zero. The 500-bp histone sequences (497 k-mers) fill
  the first half of the 32x32 curve, the 16x32 image the authors cut (`hilbert_curve(32)[:16, :]`);
  a task of other lengths gets the smallest such image (a square curve or its first half) that
  holds its k-mers (splice's 60 bp: 8x8).
- Network: two convolutions (7x7, 5x5), then blocks of two parallel residual units, average pooling,
  three fully connected layers, ELU throughout; batch normalisation with epsilon 1e-3 and moving
  averages of decay 0.35; convolutions without bias, initialised N(0, 2 / (9 k^2 c_out)); fully
  connected layers uniform in +-sqrt(3 / fan_in), zero bias; an L2 penalty 1.5 * 5e-4 * ||W||^2 / 2
  on the convolution kernels (`weight_reg_strength` 5e-4, `reg_loss * 1.5`), returned as the
  output's `penalty` for the engine to add to the task loss.

Deviations (the first three change nothing the network computes, the fourth next to nothing, the
last fills a gap of the authors' code):
- `network.py` builds a block C_BLOCK2 whose output it never uses (`act6 = act2`): left out. With
  it the network has 5,968 more parameters.
- Its dropout layers are identities (`dropout_super` is called without `training=True`): left out.
- The one-hot word order is A, C, G, T (`itertools.product` of "ACGT"), where the authors take the
  bases in their order of first appearance in the file's second sequence: a permutation of the
  input channels of a randomly initialised first layer (as is the channel-major flattening before
  the first fully connected layer, where TensorFlow's is channel-minor).
- The moving variance of batch normalisation averages PyTorch's unbiased batch variance where
  TensorFlow's averages the biased one: a factor n / (n - 1), n = batch x rows x cols.
- A k-mer holding a symbol other than A, C, G, T (splice's ambiguity codes N, D, R, S) leaves its
  cell empty; the authors' encoding has no word for it (their code stops with a KeyError).

Parameters on the histone image: 963,460, of which 961,924 are convolution and fully connected
weights and biases (the paper's "961K") and 1,536 batch-normalisation scales and shifts.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import tokens

FAMILY = "hilbert-cnn"
BASES = "ACGT"
L2_STRENGTH = 5e-4  # network.py: weight_reg_strength
L2_FACTOR = 1.5  # network.py: cost = loss + reg_loss * 1.5
BN_EPSILON = 1e-3
BN_DECAY = 0.35  # network.py: ExponentialMovingAverage(decay=0.35); PyTorch's momentum is 1 - decay


def hilbert_curve(n):
    """The (n, n) array of each cell's index along the Hilbert curve (n a power of two), built as
    the authors' `functions.hilbert_curve`: four rotated or flipped copies of the curve of n / 2."""
    if n == 1:
        return np.zeros((1, 1), np.int64)
    t = hilbert_curve(n // 2)
    a = np.flipud(np.rot90(t))
    b = t + t.size
    c = t + t.size * 2
    d = np.flipud(np.rot90(t, -1)) + t.size * 3
    return np.vstack([np.hstack([a, b]), np.hstack([d, c])])


def curve_image(cells):
    """The smallest image on a Hilbert curve with at least `cells` cells: the n x n curve, or its
    first half (n / 2 rows of n), which the curve fills before the second."""
    n = 1
    while n * n < cells:
        n *= 2
    return hilbert_curve(n)[: n // 2] if n > 1 and n * n // 2 >= cells else hilbert_curve(n)


def kmer_codes(bases, k):
    """The word index of every k-mer of a sequence of base indices (A, C, G, T = 0..3; -1 for any
    other symbol), first base most significant as in `itertools.product`; -1 where a k-mer holds a
    base outside A, C, G, T. Works on the last dimension: (..., L) -> (..., L - k + 1)."""
    windows = bases.unfold(-1, k, 1)
    powers = 4 ** torch.arange(k - 1, -1, -1, device=bases.device)
    codes = (windows.clamp(min=0) * powers).sum(-1)
    return torch.where((windows >= 0).all(-1), codes, -1)


class HilbertImage(nn.Module):
    """Token ids of the native vocabulary (specials first, then the task's symbols) to the image:
    (batch, 4^k, rows, cols), one-hot k-mers along the Hilbert curve, zeros elsewhere."""

    def __init__(self, symbols, longest, k):
        super().__init__()
        self.k = k
        self.curve = curve_image(max(1, longest - k + 1))  # a bound: specials take no cell
        base_of = [BASES.index(s) if s in BASES else -1 for s in symbols]
        base_of[: len(tokens.NATIVE_SPECIALS)] = [-1] * len(tokens.NATIVE_SPECIALS)
        self.register_buffer("base_of", torch.tensor(base_of), persistent=False)
        # the flat image cell of each curve position
        self.register_buffer("cell_of", torch.from_numpy(np.argsort(self.curve.ravel())), persistent=False)

    def forward(self, input_ids):
        batch, cells = input_ids.size(0), self.curve.size
        image = torch.zeros(batch, 4 ** self.k * cells, device=input_ids.device)
        if input_ids.size(1) >= self.k:
            codes = kmer_codes(self.base_of[input_ids], self.k)
            # a k-mer's place on the curve: how many symbols precede its first base
            symbol = (input_ids >= len(tokens.NATIVE_SPECIALS)).long()
            position = (symbol.cumsum(1) - symbol)[:, : codes.size(1)].clamp(max=cells - 1)
            found = codes >= 0
            index = codes.clamp(min=0) * cells + self.cell_of[position]
            image.scatter_add_(1, index, found.float())  # each cell receives one k-mer at most
        return image.view(batch, 4 ** self.k, *self.curve.shape)


class SameConv2d(nn.Conv2d):
    """A stride-1 convolution without bias, padded as TensorFlow's SAME: an even kernel's extra
    row and column of padding go after the input."""

    def __init__(self, c_in, c_out, k):
        super().__init__(c_in, c_out, k, bias=False)
        self.pads = ((k - 1) // 2, k // 2) * 2  # left, right, top, bottom

    def forward(self, x):
        return super().forward(nn.functional.pad(x, self.pads))


def _conv(c_in, c_out, k):
    conv = SameConv2d(c_in, c_out, k)
    nn.init.normal_(conv.weight, std=np.sqrt(2.0 / 9.0 / (k * k * c_out)))
    return conv


def _batch_norm(n):
    return nn.BatchNorm2d(n, eps=BN_EPSILON, momentum=1 - BN_DECAY)


def _fully_connected(n_in, n_out):
    linear = nn.Linear(n_in, n_out)  # TF's uniform_unit_scaling_initializer(factor=1.0)
    nn.init.uniform_(linear.weight, -np.sqrt(3.0 / n_in), np.sqrt(3.0 / n_in))
    nn.init.zeros_(linear.bias)
    return linear


def _pool():
    return nn.AvgPool2d(2, 2, ceil_mode=True)  # TF's SAME pooling averages the cells inside only


class ResidualUnit(nn.Module):
    """network.py `ResBlock`: conv-BN-ELU, conv-BN, plus the input (through a 1x1 convolution where
    the widths differ), BN-ELU."""

    def __init__(self, c_in, c_mid, c_out, k1, k2):
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, c_mid, k1), _batch_norm(c_mid)
        self.conv2, self.bn2 = _conv(c_mid, c_out, k2), _batch_norm(c_out)
        self.shortcut = nn.Identity() if c_in == c_out else _conv(c_in, c_out, 1)
        self.bn3 = _batch_norm(c_out)

    def forward(self, x):
        y = self.bn2(self.conv2(nn.functional.elu(self.bn1(self.conv1(x)))))
        return nn.functional.elu(self.bn3(self.shortcut(x) + y))


class ComputationalBlock(nn.Module):
    """network.py `computational_Block`: two residual units of 4-wide middles side by side, summed
    with the input (a 1x1 convolution where the widths differ), then 1x1 conv-BN-ELU."""

    def __init__(self, c_in, c_out, kernels):
        super().__init__()
        k1, k2, k3, k4 = kernels
        self.a = ResidualUnit(c_in, 4, c_out, k1, k2)
        self.b = ResidualUnit(c_in, 4, c_out, k3, k4)
        self.shortcut = nn.Identity() if c_in == c_out else _conv(c_in, c_out, 1)
        self.conv, self.bn = _conv(c_out, c_out, 1), _batch_norm(c_out)

    def forward(self, x):
        return nn.functional.elu(self.bn(self.conv(self.a(x) + self.b(x) + self.shortcut(x))))


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    penalty: torch.Tensor  # added to the task loss by the engine


class HilbertCNN(nn.Module):
    """network.py `HCNN.create_network`, on the image of `HilbertImage`."""

    def __init__(self, symbols, longest, num_labels, kmer=4):
        super().__init__()
        self.image = HilbertImage(symbols, longest, kmer)
        self.features = nn.Sequential(
            _conv(4 ** kmer, 64, 7), _conv(64, 64, 5), _batch_norm(64), nn.ELU(), _pool(),
            ComputationalBlock(64, 32, (8, 4, 4, 3)), _pool(),
            ComputationalBlock(32, 32, (2, 4, 4, 3)),
            ComputationalBlock(32, 32, (2, 2, 2, 2)),
            ComputationalBlock(32, 32, (3, 2, 2, 3)), _pool(),
            _batch_norm(32), nn.ELU(), _pool(),
            nn.Flatten())
        rows, cols = self.image.curve.shape
        for _ in range(4):
            rows, cols = -(-rows // 2), -(-cols // 2)
        self.classifier = nn.Sequential(
            _fully_connected(32 * rows * cols, 100), nn.ELU(),
            _fully_connected(100, 50), nn.ELU(),
            _fully_connected(50, num_labels))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Logits, and the L2 penalty; padding and specials need no mask, they take no cell."""
        logits = self.classifier(self.features(self.image(input_ids)))
        kernels = (m.weight for m in self.modules() if isinstance(m, nn.Conv2d))
        penalty = L2_FACTOR * L2_STRENGTH * sum(w.float().pow(2).sum() for w in kernels) / 2
        return ClassifierOutput(logits=logits, penalty=penalty)
