"""The small base models of tests/fixtures/adapters/, built from configs (no download).

``tools/make_adapter_fixtures.py`` writes the fixtures from these; the adapter tests rebuild
them to run PEFT's own merge beside weightviz's. Each builder seeds torch itself.
"""
from __future__ import annotations

import torch
from torch import nn


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=32,
                      max_position_embeddings=32, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=32, n_positions=16,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


class ConvNet(nn.Module):
    """Two convolutions (3×3 and 1×1) and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.mean((2, 3)))


def convnet():
    torch.manual_seed(0)
    return ConvNet().eval()


def unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=4,
        norm_num_groups=2, attention_head_dim=2).eval()


BUILDERS = {"llama": llama, "gpt2": gpt2, "conv": convnet, "unet": unet}


def state_dict(model) -> dict:
    """The model's tensors, each its own contiguous copy (tied weights untied for safetensors)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
