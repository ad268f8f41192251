"""The torch classes of the demo models (imported lazily by :mod:`weightviz.demo`).

Both take a batch of 16x16 one-channel images in any of these layouts, as a
torch tensor or a NumPy array:

* ``(N, 16, 16, 1)`` channels-last, the layout of :func:`weightviz.demo.images`
  and of the Keras models;
* ``(N, 16, 16)``; ``(N, 256)`` flattened row by row; ``(N, 1, 16, 16)``
  channels-first.

``forward`` returns softmax probabilities ``(N, 10)`` (so the torch models,
the NumPy MLP and the Keras models can be compared directly); ``logits(x)``
returns the scores before the softmax, which is what training uses.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import WeightvizError, message

__all__ = ["MLP", "SmallCNN", "as_images"]

_SIDE = 16


def as_images(x) -> torch.Tensor:
    """``x`` in any accepted layout -> float32 tensor ``(N, 1, 16, 16)``."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.to(torch.float32)
    shape = tuple(t.shape)
    if t.dim() == 2 and shape[1] == _SIDE * _SIDE:
        return t.reshape(-1, 1, _SIDE, _SIDE)
    if t.dim() == 3 and shape[1:] == (_SIDE, _SIDE):
        return t.unsqueeze(1)
    if t.dim() == 4 and shape[1:] == (_SIDE, _SIDE, 1):
        return t.permute(0, 3, 1, 2)
    if t.dim() == 4 and shape[1:] == (1, _SIDE, _SIDE):
        return t
    raise WeightvizError(message(
        "The demo models got an input of an unexpected shape",
        expected="a batch of 16x16 one-channel images: (N, 16, 16, 1), (N, 16, 16), "
                 "(N, 256) or (N, 1, 16, 16)",
        fix="add the batch dimension (x[None]) or use weightviz.demo.images()",
        got=str(shape)))


class MLP(nn.Module):
    """256 -> 64 -> 32 -> 10 perceptron; activations relu, relu, softmax.

    Layers ``fc1``, ``fc2``, ``fc3`` (``nn.Linear``, weight ``(out, in)``).  The
    NumPy copy of its weights (``mlp_weights.npy``) stores ``W = fc.weight.T``,
    ``(in, out)``, so that ``y = act(x @ W + b)``.
    """

    def __init__(self, hidden=(64, 32), num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(_SIDE * _SIDE, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def logits(self, x) -> torch.Tensor:
        h = as_images(x).flatten(1)
        h = torch.relu(self.fc1(h))
        h = torch.relu(self.fc2(h))
        return self.fc3(h)

    def forward(self, x) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


class SmallCNN(nn.Module):
    """conv(8) -> batchnorm -> relu -> pool -> conv(16) -> relu -> pool -> fc(32) -> dropout -> fc(10).

    Has buffers (the batch-norm running statistics) and dropout, so eval mode
    matters: call ``model.eval()`` before predicting.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, num_classes)

    def logits(self, x) -> torch.Tensor:
        h = self.pool(torch.relu(self.bn1(self.conv1(as_images(x)))))
        h = self.pool(torch.relu(self.conv2(h)))
        h = self.dropout(torch.relu(self.fc1(h.flatten(1))))
        return self.fc2(h)

    def forward(self, x) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)
