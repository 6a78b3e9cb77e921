"""SAM's prompt encoder and two-way-transformer mask decoder, as LiteMedSAM uses them.

Our own definitions; parameter names match the bundled checkpoint (strict load).
Coordinates given to the prompt encoder are pixels of the 256x256 model input, (x, y).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medvl.engines.litemedsam.encoder import LayerNorm2d


class RandomFourierPE(nn.Module):
    """Positional encoding of normalised (x, y) by a fixed random Gaussian projection."""

    def __init__(self, num_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:  # coords in [0, 1], (..., 2)
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """(C, h, w) encoding of every cell centre of an h x w grid."""
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self._encode(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        coords = coords.clone().float()
        coords[..., 0] = coords[..., 0] / image_hw[1]
        coords[..., 1] = coords[..., 1] / image_hw[0]
        return self._encode(coords)


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int = 256, embedding_hw: int = 64, image_hw: int = 256, mask_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.embedding_hw = (embedding_hw, embedding_hw)
        self.image_hw = (image_hw, image_hw)
        self.pe_layer = RandomFourierPE(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, 2, 2), LayerNorm2d(mask_chans // 4), nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, 2, 2), LayerNorm2d(mask_chans), nn.GELU(),
            nn.Conv2d(mask_chans, embed_dim, 1))
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        return self.pe_layer.grid(*self.embedding_hw).unsqueeze(0)

    def forward(self, points: torch.Tensor | None, labels: torch.Tensor | None,
                boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, 2) with labels (B, N) in {1, 0}; boxes (B, 4) as x0, y0, x1, y1.

        Returns sparse (B, T, C) and dense (B, C, 64, 64) embeddings.
        """
        bs = points.shape[0] if points is not None else boxes.shape[0]
        sparse = [torch.empty(bs, 0, self.embed_dim)]
        if points is not None:
            pts, lab = points.float() + 0.5, labels
            if boxes is None:  # pad with a "not a point" token, as SAM does without a box
                pts = torch.cat([pts, torch.zeros(bs, 1, 2)], dim=1)
                lab = torch.cat([lab, -torch.ones(bs, 1, dtype=lab.dtype)], dim=1)
            emb = self.pe_layer.points(pts, self.image_hw)
            emb[lab == -1] = 0.0
            emb[lab == -1] += self.not_a_point_embed.weight
            emb[lab == 0] += self.point_embeddings[0].weight
            emb[lab == 1] += self.point_embeddings[1].weight
            sparse.append(emb)
        if boxes is not None:
            corners = self.pe_layer.points(boxes.float().reshape(-1, 2, 2) + 0.5, self.image_hw)
            corners[:, 0, :] += self.point_embeddings[2].weight
            corners[:, 1, :] += self.point_embeddings[3].weight
            sparse.append(corners)
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.embedding_hw)
        return torch.cat(sparse, dim=1), dense


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q, k, v):
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(q)), self._heads(self.k_proj(k)),
                                             self._heads(self.v_proj(v)))
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 256, heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList([TwoWayBlock(dim, heads, mlp_dim, i == 0) for i in range(depth)])
        self.final_attn_token_to_image = Attention(dim, heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image, image_pe, tokens):
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries), keys


class MLP(nn.Module):
    def __init__(self, din: int, hidden: int, dout: int, num_layers: int):
        super().__init__()
        dims = [din] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [dout]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    def __init__(self, dim: int = 256, num_multimask: int = 3):
        super().__init__()
        self.transformer = TwoWayTransformer(dim=dim)
        self.num_mask_tokens = num_multimask + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, 2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, 2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3)

    def forward(self, image_embedding, image_pe, sparse, dense, multimask: bool = False):
        """Returns low-res mask logits (B, M, 256, 256) and predicted IoU (B, M).

        `image_embedding` (1 or B, C, 64, 64) is broadcast over the prompt batch B.
        """
        bs = sparse.shape[0]
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(bs, -1, -1), sparse], dim=1)
        src = image_embedding.expand(bs, -1, -1, -1) + dense
        pos = image_pe.expand(bs, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out, mask_out = hs[:, 0, :], hs[:, 1:1 + self.num_mask_tokens, :]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        b, c, h, w = up.shape
        masks = (hyper @ up.view(b, c, h * w)).view(b, -1, h, w)
        iou = self.iou_prediction_head(iou_out)
        sel = slice(1, None) if multimask else slice(0, 1)
        return masks[:, sel], iou[:, sel]
