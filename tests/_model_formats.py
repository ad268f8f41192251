"""The tiny model and the format labels of the ``model_files`` fixture (tests/conftest.py).

Kept in its own module: test modules cannot ``from conftest import ...`` reliably,
since notebooks/ has a conftest.py of its own and both are imported as ``conftest``;
the same goes for pickling ``Tiny`` by its module name.
"""
FORMATS = ("pt", "pt_legacy", "torchscript", "whole_model", "safetensors", "sharded",
           "npy", "npz", "npz_compressed", "h5", "gguf", "onnx")


import torch  # noqa: E402
from torch import nn  # noqa: E402


class Tiny(nn.Module):
    """Conv + BN (int64 num_batches_tracked) + Linear, and bf16 / fp8 buffers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.register_buffer("scale_bf16", torch.randn(3).bfloat16())
        self.register_buffer("codes_fp8", torch.randn(6).clamp(-4, 4).to(torch.float8_e4m3fn))

    def forward(self, x):
        x = self.bn(self.conv(x)).mean((2, 3))
        return self.fc(x) * self.scale_bf16.float().mean() + self.codes_fp8.float().sum()
