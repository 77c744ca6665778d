"""A NumPy reference of the VideoPrism encoder in float64, written from the spec (specs/videoprism.md).

Independent of the Flax module, so the encoder tests can check every numerical detail against it;
kept apart from those tests because it is an implementation of its own.
"""

from __future__ import annotations

import jax
import numpy as np
from scipy.special import erf


def ref_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of jax.image.resize 'bilinear', antialias=True, along one axis."""
    inv_scale = in_size / out_size
    kernel_width = max(inv_scale, 1.0)  # the triangle widens only when shrinking
    centres = (np.arange(out_size) + 0.5) * inv_scale - 0.5
    distance = np.abs(centres[:, None] - np.arange(in_size)[None, :]) / kernel_width
    weights = np.maximum(0.0, 1.0 - distance)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.where(np.abs(totals) > 1000 * np.finfo(np.float32).eps, weights / np.where(totals, totals, 1), 0)
    inside = (centres >= -0.5) & (centres <= in_size - 0.5)
    return np.where(inside[:, None], weights, 0.0)


def ref_resize_spatial(table: np.ndarray, grid: int, rows: int, cols: int) -> np.ndarray:
    square = table.reshape(grid, grid, -1)
    out = np.einsum("ri,ijd,cj->rcd", ref_resize_matrix(grid, rows), square, ref_resize_matrix(grid, cols))
    return out.reshape(rows * cols, -1)


def ref_layer_norm(x, scale, bias, eps=1e-6, offset=True, ddof=0):
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred**2).sum(-1, keepdims=True) / (x.shape[-1] - ddof)
    return centred / np.sqrt(variance + eps) * ((1 + scale) if offset else scale) + bias


def ref_gelu(x, exact=True):
    if exact:
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def ref_attention(x, p, head_dim, cap=50.0, query_scale=None):
    def heads(name):
        return np.einsum("...d,dnh->...nh", x, p[name]["w"]) + p[name]["b"]

    query = heads("query") * (head_dim**-0.5 if query_scale is None else query_scale)
    logits = np.einsum("...qnh,...knh->...nqk", query, heads("key"))
    if cap:
        logits = cap * np.tanh(logits / cap)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("...nqk,...knh->...qnh", probs, heads("value"))
    return np.einsum("...nh,dnh->...d", context, p["post"]["w"]) + p["post"]["b"]


def ref_feed_forward(x, p, exact_gelu=True):
    hidden = ref_layer_norm(x, p["layer_norm"]["scale"], p["layer_norm"]["bias"])
    hidden = ref_gelu(hidden @ p["ffn_layer1"]["linear"]["kernel"] + p["ffn_layer1"]["linear"]["bias"], exact_gelu)
    return hidden @ p["ffn_layer2"]["linear"]["kernel"] + p["ffn_layer2"]["linear"]["bias"]


def ref_stack(x, stack, num_layers, config):
    for layer in range(num_layers):
        p = jax.tree_util.tree_map(lambda leaf, i=layer: np.asarray(leaf[i], np.float64), stack)
        normed = ref_layer_norm(x, p["layer_norm"]["scale"], p["layer_norm"]["bias"])
        x = x + ref_attention(normed, p["self_attention"], config.head_dim, config.logit_cap)
        x = x + ref_feed_forward(x, p["ff_layer"])
    return x


def ref_forward(params, frames, config):
    """Tokens (B, T·N, D) and spatial features, following the spec's ten steps."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    batch, num_frames, height, width, _ = frames.shape
    patch, dim = config.patch_size, config.model_dim
    rows, cols = height // patch, width // patch
    patches = np.empty((batch * num_frames, rows * cols, patch * patch * 3))
    flat_frames = f64(frames).reshape(batch * num_frames, height, width, 3)
    for m in range(rows):
        for n in range(cols):
            block = flat_frames[:, m * patch : (m + 1) * patch, n * patch : (n + 1) * patch, :]
            patches[:, m * cols + n, :] = block.reshape(batch * num_frames, -1)  # (p, q, c) order
    linear = params["patch_projection"]["linear"]
    x = patches @ f64(linear["kernel"]) + f64(linear["bias"])
    x = x + ref_resize_spatial(f64(params["spatial_pos_emb"]["emb_var"]), config.pos_emb_grid, rows, cols)
    x = ref_stack(x, params["spatial_encoder"]["transformers_stack"]["x_layers"], config.num_spatial_layers, config)
    x = ref_layer_norm(x, f64(params["spatial_ln"]["scale"]), f64(params["spatial_ln"]["bias"]))
    spatial = x.reshape(batch, num_frames * rows * cols, dim)
    x = x.reshape(batch, num_frames, rows * cols, dim).transpose(0, 2, 1, 3)
    temporal_table = f64(params["temporal_pos_emb"]["emb_var"])
    x = x + ref_resize_matrix(config.pos_emb_frames, num_frames) @ temporal_table
    x = ref_stack(x, params["temporal_encoder"]["transformers_stack"]["x_layers"], config.num_temporal_layers, config)
    x = ref_layer_norm(x, f64(params["temporal_ln"]["scale"]), f64(params["temporal_ln"]["bias"]))
    tokens = np.empty((batch, num_frames * rows * cols, dim))
    for t in range(num_frames):
        tokens[:, t * rows * cols : (t + 1) * rows * cols] = x[:, :, t]  # token t·N + n
    return tokens, spatial


def rel_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))
