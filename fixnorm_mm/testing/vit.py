"""A small pre-norm vision transformer for the 8x8 digits and the toy images:
what the transformer tests and the digits-ViT experiments train.

Laid out like mmpretrain's ViT (``patch_embed.projection``, ``cls_token``,
``pos_embed``, ``layers.<i>.{ln1, attn.qkv, attn.proj, ln2, ffn.fc1,
ffn.fc2}``, ``ln_final``, ``head.fc``), so that what holds for it (no layer
feeds a normalization; ``weight_norm='attention_mlp'`` finds the attention and
MLP projections; Hyperball's input embedding is the patch projection) holds
for the stock configs too::

    x -> patch conv (p x p, stride p) -> tokens + [cls] + pos ->
         L x [ x + attn(ln1(x)); x + mlp(ln2(x)) ] -> ln_final([cls]) -> head.fc
"""
import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from .toy import FC_TYPES, ToyClassifier, check_fc_type


class Attention(nn.Module):
    """Multi-head self-attention: qkv projection, softmax(q k^T / sqrt(d)) v, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f'Attention: dim={dim} is not a multiple of heads={heads}')
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm: each LayerNorm comes before its projections and is fed by a residual sum."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class _Head(nn.Module):
    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc


class _PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x).flatten(2).transpose(1, 2)


@MODELS.register_module()
class DigitsViT(ToyClassifier):
    """A ViT for small images (8x8 digits by default).

    Args:
        width: embedding dimension (the width sweep of the experiments).
        depth: number of blocks.
        heads: attention heads (``width`` must be a multiple).
        patch: patch side; ``image_size / patch`` patches a side.
        mlp_ratio: hidden width of the MLP / ``width``.
        in_channels, image_size, num_classes: the images and classes.
        fc_type: the classifier, a key of :data:`~fixnorm_mm.testing.toy.FC_TYPES`.
        alpha: FixNorm-FC's alpha (Eq. 10).
    """

    def __init__(self, width: int = 32, depth: int = 2, heads: int = 4, patch: int = 2,
                 mlp_ratio: float = 2.0, in_channels: int = 1, image_size: int = 8,
                 num_classes: int = 10, fc_type: str = 'fc', alpha: float = 1.0,
                 data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        check_fc_type(fc_type, 'DigitsViT')
        if image_size % patch:
            raise ValueError(f'DigitsViT: image_size={image_size} is not a multiple of '
                             f'patch={patch}')
        tokens = (image_size // patch) ** 2
        self.patch_embed = _PatchEmbed(in_channels, width, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, width))
        self.layers = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)
        self.head = _Head(FC_TYPES[fc_type](width, num_classes, alpha))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT's init: truncated normal (std 0.02) for tokens, positions and
        linear weights, zero biases; the patch conv like a linear layer."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if type(m) is nn.Linear:
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        fan_in = self.patch_embed.projection.weight[0].numel()
        nn.init.trunc_normal_(self.patch_embed.projection.weight, std=math.sqrt(1 / fan_in))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.layers:
            x = block(x)
        return self.head.fc(self.ln_final(x[:, 0]))
