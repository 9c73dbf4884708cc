"""A small Vision Transformer for 32x32 images, with attention maps that can be read and replaced.

Architecture after Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021: non-overlapping
patch embedding, a learned CLS token, learned position embeddings, pre-norm transformer blocks,
and a linear head on the final CLS token.

Each block's attention module routes its pre-softmax logits and its probabilities through two
``nn.Identity`` submodules, ``logits`` and ``probs``, so that an ordinary forward hook (for
example via :class:`atcourse.models.Taps`) reads them as ``(B, heads, N, N)`` tensors. Setting
``probs_override`` replaces the probabilities with given ones (attention copy: the module then
mixes its own values with someone else's attention pattern). When nothing needs the explicit
maps, the module uses the fused ``F.scaled_dot_product_attention`` kernel instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "Block", "ConvStem", "Mlp", "VisionTransformer"]


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


class Attention(nn.Module):
    """Multi-head self-attention with an explicit path whose maps can be hooked or replaced.

    Args:
        dim: token width ``C``; must be divisible by ``heads``.
        heads: number of attention heads ``h``.
        dropout: dropout on the attention probabilities and on the output projection.

    Input and output ``(B, N, C)``. On the explicit path ``logits`` sees
    ``q @ k^T / sqrt(C / h)`` and ``probs`` sees its softmax, both ``(B, h, N, N)``.

    Attributes:
        materialize: force the explicit path even when no hook or override needs it.
        probs_override: ``(B, h, N, N)`` probabilities to use instead of the module's own
            softmax. The module's queries and keys then do not affect its output (nor receive
            gradient through it). Reset it to ``None`` to restore normal attention.
    """

    def __init__(self, *, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.logits = nn.Identity()
        self.probs = nn.Identity()
        self.attn_dropout = dropout
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.materialize: bool = False
        # A plain attribute, not a buffer: the override is transient and must never be saved
        # in a state dict.
        self.probs_override: Tensor | None = None

    @property
    def explicit(self) -> bool:
        """Whether the next forward pass takes the explicit (hookable) path."""
        return (
            self.materialize
            or self.probs_override is not None
            or _has_hooks(self.logits)
            or _has_hooks(self.probs)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` tokens -> ``(B, N, C)`` tokens."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim)  # (B, N, 3, h, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, hd)
        drop = self.attn_dropout if self.training else 0.0

        if self.explicit:
            override = self.probs_override
            if override is not None:
                expected = (b, self.heads, n, n)
                if tuple(override.shape) != expected:
                    raise ValueError(
                        f"probs_override must have shape (B, heads, N, N) = {expected}, "
                        f"got {tuple(override.shape)}"
                    )
                if _has_hooks(self.logits):
                    # Only so a tap on ``logits`` still sees the module's own scores; they do
                    # not reach the output.
                    self.logits(q @ k.transpose(-2, -1) * self.scale)
                probs = self.probs(override.to(dtype=v.dtype, device=v.device))
            else:
                logits = self.logits(q @ k.transpose(-2, -1) * self.scale)  # (B, h, N, N)
                probs = self.probs(logits.softmax(dim=-1))  # (B, h, N, N)
            out = F.dropout(probs, drop, training=self.training) @ v  # (B, h, N, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, h, N, hd)

        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear feed-forward network; ``(B, N, C)`` -> ``(B, N, C)``."""

    def __init__(self, *, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Input and output ``(B, N, C)``.
    """

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ConvStem(nn.Module):
    """A convolutional stem in place of the patchify layer (Xiao et al., NeurIPS 2021).

    "Early Convolutions Help Transformers See Better" replaces the single strided
    ``patch x patch`` convolution by a few 3x3 convolutions with batch norm and ReLU, then a
    1x1 projection to the token width, at the same total stride; the ViT then trains
    faster and is far less sensitive to the optimizer and learning rate. Here: one 3x3
    convolution at full resolution, ``log2(patch_size)`` stride-2 3x3 convolutions, then
    the 1x1 projection, so a 32x32 image still gives ``(32 / patch_size)^2`` tokens.

    Input ``(B, in_channels, H, W)``, output ``(B, dim, H / patch_size, W / patch_size)``.
    """

    def __init__(self, *, in_channels: int, dim: int, patch_size: int, width: int) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"the conv stem needs a power-of-two patch_size, got {patch_size}")
        layers: list[nn.Module] = []
        channels = [in_channels, width // 2] + [width] * (patch_size.bit_length() - 1)
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels[-1], dim, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class VisionTransformer(nn.Module):
    """ViT classifier for small images.

    Args:
        image_size: input height and width (square images).
        patch_size: side of the non-overlapping square patches; must divide ``image_size``.
        num_classes: output classes.
        dim: token width ``C``.
        depth: number of transformer blocks.
        heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout in attention, MLP and after the position embedding.
        in_channels: image channels.
        stem: ``"patch"`` (one strided convolution, the original ViT) or ``"conv"``
            (:class:`ConvStem`, 3x3 convolutions; same token grid).
        stem_width: channels of the conv stem.

    Input ``(B, in_channels, image_size, image_size)``, output logits ``(B, num_classes)``.
    Tokens are ``(B, N, C)`` with ``N = (image_size / patch_size)^2 + 1`` (index 0 is CLS);
    attention maps are ``(B, heads, N, N)``.
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        patch_size: int = 4,
        num_classes: int = 10,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float = 0.0,
        in_channels: int = 3,
        stem: str = "patch",
        stem_width: int = 64,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        if stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.dim = dim
        self.heads = heads
        self.num_patches = (image_size // patch_size) ** 2
        self.num_tokens = self.num_patches + 1

        self.stem = stem
        if stem == "conv":
            self.patch_embed: nn.Module = ConvStem(
                in_channels=in_channels, dim=dim, patch_size=patch_size, width=stem_width
            )
        else:
            # A strided conv is the same as flattening each patch and applying one Linear.
            self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.arch = "vit"
        # Layer names per role, read by ``atcourse.models.tap_points``.
        self.tap_points: dict[str, list[str]] = {
            "attention_logits": [f"blocks.{i}.attn.logits" for i in range(depth)],
            "attention_probs": [f"blocks.{i}.attn.probs" for i in range(depth)],
            "groups": [f"blocks.{i}" for i in range(depth)],
            "features": ["norm"],
            "classifier": ["head"],
        }
        self._init_weights()

    def _init_weights(self) -> None:
        # Truncated-normal(0.02) as in the ViT/DeiT recipes; small position embeddings keep
        # the early attention close to content-based.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def attention_layers(self) -> list[Attention]:
        """The ``blocks.{i}.attn`` modules, first block first."""
        return [block.attn for block in self.blocks]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images -> ``(B, num_classes)`` logits."""
        b = x.shape[0]
        x = self.patch_embed(x)  # (B, C, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N-1, C)
        cls = self.cls_token.expand(b, -1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, N, C)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0])  # (B, num_classes)
