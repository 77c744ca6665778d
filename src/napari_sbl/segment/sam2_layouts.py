"""SAM2's token transformers fed contiguous, batch-first tokens.

SAM2's memory attention and its mask decoder's two-way transformer hand their layers transposed or permuted
views (sequence-first memories made batch-first, image maps flattened to tokens), so every add in every layer
runs PyTorch's strided, unvectorised path and every norm and projection copies its input again: on an H100
~100 extra or slower kernels a frame. Here each module copies its inputs into the layout its layers use, once,
and runs SAM2's own layers on them: the same operations on the same values, so the same numbers in float32 and
the same up to bf16 rounding under autocast (a matmul may accumulate differently on another layout); outputs
come back in the layout SAM2 returns. Tracking on an H100 (benchmarks/results/track.md, session 9): the memory
attention's made tiny 138-139 → 141-145 frames/s and large 88 → 90; the mask decoder's changed nothing
measurable (within the ±5 % between repeats of that call).
"""

from __future__ import annotations

from typing import Any

import torch
from sam2.modeling.memory_attention import MemoryAttention
from sam2.modeling.sam.transformer import RoPEAttention, TwoWayTransformer

from napari_sbl.segment.sam2_memory_layers import fused_loop_applies, run_layers


class BatchFirstMemoryAttention(MemoryAttention):
    """SAM2's ``MemoryAttention`` with its sequence-first inputs copied batch-first before the layers."""

    def forward(self, curr: Any, memory: torch.Tensor, curr_pos: Any = None, memory_pos: torch.Tensor | None = None,
                num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        if isinstance(curr, list):
            curr, curr_pos = curr[0], curr_pos[0]
        if not self.batch_first or curr_pos is None or memory_pos is None:
            return super().forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        output = output.transpose(0, 1).contiguous()
        if fused_loop_applies(self, output):  # adds inside the norms, keys once (sam2_memory_layers)
            if output.data_ptr() == curr.data_ptr():
                output = output.clone()  # the loop adds in place: never into the caller's tokens
            return run_layers(self, output, memory, memory_pos, num_obj_ptr_tokens).transpose(0, 1)
        curr_pos, memory, memory_pos = (t.transpose(0, 1).contiguous() for t in (curr_pos, memory, memory_pos))
        for layer in self.layers:
            pointers = {"num_k_exclude_rope": num_obj_ptr_tokens} if isinstance(layer.cross_attn_image,
                                                                               RoPEAttention) else {}
            output = layer(tgt=output, memory=memory, pos=memory_pos, query_pos=curr_pos, **pointers)
        return self.norm(output).transpose(0, 1)


class TokenMajorTwoWayTransformer(TwoWayTransformer):
    """SAM2's mask decoder ``TwoWayTransformer`` with the image map and its encoding copied to (B, HW, C)
    tokens before the layers, instead of permuted views of the (B, C, H, W) maps."""

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        image_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        attended = self.final_attn_token_to_image(q=queries + point_embedding, k=keys + image_pe, v=keys)
        return self.norm_final_attn(queries + attended), keys


def use_contiguous_layouts(predictor: Any) -> int:
    """Swap the predictor's memory attention and mask decoder transformer for the classes above (same
    parameters, same state-dict keys); returns how many were swapped (not those already swapped or not SAM2's)."""
    swapped = 0
    decoder = getattr(predictor, "sam_mask_decoder", None)
    for owner, name, kind in ((predictor, "memory_attention", BatchFirstMemoryAttention),
                              (decoder, "transformer", TokenMajorTwoWayTransformer)):
        module = getattr(owner, name, None)
        if module is not None and type(module) is kind.__mro__[1]:
            module.__class__ = kind
            swapped += 1
    return swapped
