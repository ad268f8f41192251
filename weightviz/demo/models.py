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

from ..errors import WeightvizError, message

__all__ = ["MLP", "SmallCNN", "KerasCNNPort", "as_images"]

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


class KerasCNNPort(nn.Module):
    """A hand-written torch port of the demo Keras CNN (``demo/data/keras_model.h5``).

    conv1(8, 3x3 'same') -> relu -> pool -> conv2(16, 3x3 'same') -> relu -> pool -> flatten
    -> dense1(32) -> relu -> dropout -> predictions(10) -> softmax, with the Keras layer names
    (and ``relu1``... for the activations Keras folds into its layers).  It takes the Keras
    model's inputs (channels-last ``(N, 16, 16, 1)``, or any layout :func:`as_images` accepts)
    and returns softmax probabilities.  Copy the Keras weights in with :meth:`load_keras`.

    ``flatten="hwc"`` is the correct port: the ``(N, C, H, W)`` feature map is moved to
    channels-last before flattening, the order the Keras Dense rows expect.
    ``flatten="chw"`` plants the classic slip: flattening torch's channel-first map directly,
    so ``dense1`` sees the right numbers in the wrong order (``weightviz.divergence`` finds it).
    """

    def __init__(self, flatten: str = "hwc", num_classes: int = 10):
        super().__init__()
        if flatten not in ("hwc", "chw"):
            raise WeightvizError(message(
                "KerasCNNPort: unknown flatten order", expected="'hwc' (Keras order) or 'chw'",
                got=repr(flatten)))
        self.flatten_order = flatten
        self.conv1, self.relu1 = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dense1, self.relu3 = nn.Linear(16 * 4 * 4, 32), nn.ReLU()
        self.dropout = nn.Dropout(0.2)
        self.predictions, self.softmax = nn.Linear(32, num_classes), nn.Softmax(dim=-1)

    def forward(self, x) -> torch.Tensor:
        h = self.pool1(self.relu1(self.conv1(as_images(x))))
        h = self.pool2(self.relu2(self.conv2(h)))
        if self.flatten_order == "hwc":
            h = h.permute(0, 2, 3, 1)             # (N, C, H, W) -> (N, H, W, C), as Keras flattens
        h = self.dropout(self.relu3(self.dense1(self.flatten(h))))
        return self.softmax(self.predictions(h))

    def load_keras(self, path) -> "KerasCNNPort":
        """Copy the weights of a Keras file of the demo CNN (``.h5``, ``.keras``, ``.weights.h5``)
        into this port: conv kernels HWIO -> OIHW, Dense kernels ``(in, out)`` -> ``(out, in)``.
        Returns the port."""
        from ..formats import open_checkpoint
        ckpt = path if hasattr(path, "entries") else open_checkpoint(path)
        names = list(ckpt)
        with torch.no_grad():
            for layer in ("conv1", "conv2", "dense1", "predictions"):
                kernel = self._keras_entry(ckpt, names, layer, ("kernel", "0"))
                bias = self._keras_entry(ckpt, names, layer, ("bias", "1"))
                kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
                mod = getattr(self, layer)
                if tuple(mod.weight.shape) != kernel.shape or tuple(mod.bias.shape) != bias.shape:
                    raise WeightvizError(message(
                        f"KerasCNNPort.load_keras: layer {layer!r} has other shapes than the port",
                        expected=f"weight {tuple(mod.weight.shape)}, bias {tuple(mod.bias.shape)} "
                                 "after transposing", got=f"{kernel.shape}, {bias.shape}"))
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32)))
                mod.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)))
        return self

    @staticmethod
    def _keras_entry(ckpt, names, layer, keys) -> np.ndarray:
        for n in names:
            parts = n.split("/")
            if layer in parts[:-1] and parts[-1].split(":")[0] in keys:
                return np.asarray(ckpt[n].numpy())
        raise WeightvizError(message(
            f"KerasCNNPort.load_keras: no {keys[0]} for layer {layer!r} in the file",
            expected="a Keras file of the demo CNN (demo.path('keras_model.h5'))",
            got=", ".join(names[:10])))
