"""CrossFuse's cross attention mechanism (CAM): windows, 2x2-patch tokens, SA and CA blocks.

Split from fusion/models/crossfuse.py (which re-exports these names); the module docstring
there describes the design. Two chainings of stacked CA blocks (s2-c2, s3-c3):

- paper (default): every CA block of a branch takes its query from the other modality's SA
  output and its key, value and residual from the previous block's (normalised) output.
- released (`released_chaining=True`): the authors' `cross_atten_module` passes a list
  [query, key, value] from block to block. After block i the list is
  [norm1_i(query_i), out_i, norm(out_i)], so block i+1 takes its query from block i's norm1
  output (LayerNorms pile up on the query), its key from out_i BEFORE the branch's final norm,
  and its value and residual from norm(out_i). With one block both chainings are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

MODALITIES = ("ir", "vi")


class Attention(nn.Module):
    """Multi-head attention. reverse=True is the paper's re-softmax: softmax(-QK^T / sqrt(d_head))."""

    def __init__(self, dim: int, heads: int, cross: bool, reverse: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by {heads} heads")
        self.heads = heads
        self.cross = cross
        self.reverse = reverse
        if cross:
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, query: torch.Tensor | None = None, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: the values (and keys unless `key` is given); query: the other modality's tokens."""
        if self.cross:
            if query is None:
                raise ValueError("cross attention needs the other modality's tokens as query")
            q, k, v = self.q(query), self.k(x if key is None else key), self.v(x)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        if self.reverse:
            q = -q  # softmax((-Q) K^T s) = softmax(-(Q K^T s))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False, reverse: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, cross=cross, reverse=reverse)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, x: torch.Tensor, query: torch.Tensor | None = None, key: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pre-norm block; x is the residual and the values, `key` (if given) the keys."""
        q = None if query is None else self.norm1(query)
        k = None if key is None else self.norm1(key)
        x = x + self.attn(self.norm1(x), q, k)
        return x + self.mlp(self.norm2(x))


def _to_windows(x: torch.Tensor, w: int) -> torch.Tensor:
    b, c, h, wd = x.shape
    x = x.reshape(b, c, h // w, w, wd // w, w).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, c, w, w)


def _from_windows(xw: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    c = xw.shape[1]
    x = xw.reshape(b, h // w, wd // w, c, w, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, wd)


def _to_tokens(xw: torch.Tensor, p: int) -> torch.Tensor:
    """B' x C x w x w -> B' x (w/p)^2 x (C p p); a token is one p x p patch, channel-major."""
    b, c, w, _ = xw.shape
    n = w // p
    return xw.reshape(b, c, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c * p * p)


def _from_tokens(t: torch.Tensor, p: int, c: int, w: int) -> torch.Tensor:
    b = t.shape[0]
    n = w // p
    return t.reshape(b, n, n, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, w, w)


def _stack(stacks: nn.ModuleDict, modality: str) -> Sequence[TransformerBlock]:
    # ModuleDict types its values as Module; the CAM's are the TransformerBlock lists its stack() builds
    return cast(Sequence[TransformerBlock], stacks[modality])


class CrossAttentionMechanism(nn.Module):
    """CAM (Fig. 4) on B x C x H x W deep maps whose H and W are multiples of `window`."""

    def __init__(
        self,
        channels: int = 128,
        patch: int = 2,
        window: int = 32,
        depth: int = 1,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        resoftmax: bool = True,
        shift: bool = True,
        shift_in_training: bool = True,
        shift_within_window: bool = False,
        released_chaining: bool = False,
    ):
        super().__init__()
        if window % (2 * patch):
            raise ValueError(f"window {window} must be a multiple of twice the patch size {patch}")
        self.channels, self.patch, self.window = channels, patch, window
        self.shift = shift
        self.shift_size = window // 2
        self.shift_in_training = shift_in_training
        self.shift_within_window = shift_within_window
        self.released_chaining = released_chaining
        dim = channels * patch * patch

        def stack(cross: bool) -> nn.ModuleList:
            return nn.ModuleList(
                TransformerBlock(dim, heads, mlp_ratio, cross=cross, reverse=cross and resoftmax) for _ in range(depth)
            )

        self.sa1 = nn.ModuleDict({m: stack(False) for m in MODALITIES})
        self.sa2 = nn.ModuleDict({m: stack(False) for m in MODALITIES})
        # ca[m]: keys, values and residual from modality m, queries from the other one
        self.ca = nn.ModuleDict({m: stack(True) for m in MODALITIES})
        self.ca_norm = nn.ModuleDict({m: nn.LayerNorm(dim, eps=1e-6) for m in MODALITIES})

    def shifting(self) -> bool:
        return self.shift and (self.shift_in_training or not self.training)

    def _roll(self, x: torch.Tensor, sign: int, shape: tuple[int, int, int]) -> torch.Tensor:
        s = sign * self.shift_size
        if self.shift_within_window:
            return torch.roll(x, shifts=(s, s), dims=(2, 3))
        b, h, w = shape
        full = torch.roll(_from_windows(x, self.window, b, h, w), shifts=(s, s), dims=(2, 3))
        return _to_windows(full, self.window)

    def _self_attention(self, xw: torch.Tensor, modality: str, shape: tuple[int, int, int]) -> torch.Tensor:
        p, c, w = self.patch, self.channels, self.window
        t = _to_tokens(xw, p)
        for blk in _stack(self.sa1, modality):
            t = blk(t)
        xw = _from_tokens(t, p, c, w)
        shift = self.shifting()
        if shift:
            xw = self._roll(xw, -1, shape)
        t = _to_tokens(xw, p)
        for blk in _stack(self.sa2, modality):
            t = blk(t)
        xw = _from_tokens(t, p, c, w)
        if shift:
            xw = self._roll(xw, 1, shape)
        return _to_tokens(xw, p)

    def cross_branch(self, own: torch.Tensor, other: torch.Tensor, modality: str) -> torch.Tensor:
        """The CA stack of `modality`: keys/values/residual start from `own`, queries from `other`."""
        t, q, k = own, other, None
        blocks = _stack(self.ca, modality)
        for i, blk in enumerate(blocks):
            out = blk(t, query=q, key=k)
            if self.released_chaining and i + 1 < len(blocks):
                q, k = blk.norm1(q), out
            t = self.ca_norm[modality](out)
        return t

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        b, c, h, w = ir.shape
        shape = (b, h, w)
        tok = {
            "ir": self._self_attention(_to_windows(ir, self.window), "ir", shape),
            "vi": self._self_attention(_to_windows(vi, self.window), "vi", shape),
        }
        fused = self.cross_branch(tok["ir"], tok["vi"], "ir") + self.cross_branch(tok["vi"], tok["ir"], "vi")
        return _from_windows(_from_tokens(fused, self.patch, c, self.window), self.window, b, h, w)
