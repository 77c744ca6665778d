"""Re-prompting one animal in the middle of a SAM2 track, and keeping what that adds bounded.

When the drift monitor (:mod:`.drift`) asks for a recovery on frame t, the animal's output on t is
taken out and t is prompted again through SAM2's own API: ``add_new_points_or_box`` with the
predicted box, or ``add_new_mask`` with a banked mask. As the animal no longer counts as tracked on
t, SAM2 segments it there from the prompt alone, as on a first click, and its preflight encodes the
result into memory as a conditioning frame. Conditioning frames are read by every later frame
(spec §4), so each animal keeps at most a few made by recoveries, and none for long: older ones are
demoted to ordinary outputs, which the memory window drops as it moves on (spec §5). The user's own
prompt frames are never touched, so every animal always keeps a conditioning frame.

Objects tracked as one batch share a stacked output dict; a recovery changes one animal's
conditioning frames, so :func:`regroup` rebuilds the batches from the per-object dicts (which hold
every output, as row views) without losing any tracking history, and joins them again once the
recovery frames are demoted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from napari_sbl.segment.drift import Recovery
from napari_sbl.segment.sam2_memory import GROUP_OUTPUTS_KEY, AnimalGroup, output_row

_OUTPUT_KINDS = ("cond_frame_outputs", "non_cond_frame_outputs")
_ROW_KEYS = ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")


@dataclass(frozen=True)
class ReplacedOutput:
    """What a re-prompt took out of the state, to put back if the tracker keeps its own mask."""

    obj_idx: int
    frame_index: int
    output: dict | None
    tracked: dict | None


def reprompt(predictor: torch.nn.Module, state: dict, frame_index: int, request: Recovery) -> ReplacedOutput:
    """Prompt ``request.animal_id`` again on ``frame_index`` as a new conditioning frame.

    The result waits in SAM2's temporary outputs until :func:`finish_reprompts`.
    """
    obj_idx = state["obj_id_to_idx"][request.animal_id]
    replaced = ReplacedOutput(
        obj_idx,
        frame_index,
        state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"].pop(frame_index, None),
        state["frames_tracked_per_obj"][obj_idx].pop(frame_index, None),
    )
    if request.mask is not None:
        predictor.add_new_mask(state, frame_index, request.animal_id, request.mask)
    else:
        predictor.add_new_points_or_box(state, frame_index, request.animal_id, box=request.box)
    return replaced


def finish_reprompts(predictor: torch.nn.Module, state: dict, frame_index: int, reverse: bool,
                     obj_indices: Iterable[int]) -> dict[int, torch.Tensor]:
    """Encode the re-prompted outputs as conditioning frames; their (1, 1, h, w) mask logits by object.

    The prompts themselves are dropped (they only serve re-clicking that frame, and a mask input
    is 4 MiB at S=1024), and the frame is marked tracked as propagation would.
    """
    predictor.propagate_in_video_preflight(state)
    logits = {}
    for obj_idx in obj_indices:
        state["point_inputs_per_obj"][obj_idx].pop(frame_index, None)
        state["mask_inputs_per_obj"][obj_idx].pop(frame_index, None)
        state["frames_tracked_per_obj"][obj_idx][frame_index] = {"reverse": reverse}
        output = state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"][frame_index]
        logits[obj_idx] = output["pred_masks"].to(state["device"], non_blocking=True)
    return logits


def revert(state: dict, replaced: ReplacedOutput) -> None:
    """Undo a re-prompt: the tracked output is back, the conditioning frame gone."""
    outputs = state["output_dict_per_obj"][replaced.obj_idx]
    outputs["cond_frame_outputs"].pop(replaced.frame_index, None)
    if replaced.output is not None:
        outputs["non_cond_frame_outputs"][replaced.frame_index] = replaced.output
    tracked = state["frames_tracked_per_obj"][replaced.obj_idx]
    tracked.pop(replaced.frame_index, None)
    if replaced.tracked is not None:
        tracked[replaced.frame_index] = replaced.tracked


@dataclass
class RecoveryFrames:
    """Conditioning frames made by recoveries, per object, oldest first."""

    frames: dict[int, list[int]] = field(default_factory=dict)

    def add(self, obj_idx: int, frame_index: int) -> None:
        self.frames.setdefault(obj_idx, []).append(frame_index)

    @property
    def most_held(self) -> int:
        return max((len(f) for f in self.frames.values()), default=0)

    def demote_beyond(self, state: dict, limit: int) -> bool:
        """Keep each object's newest ``limit`` recovery frames as conditioning; True if any changed."""
        changed = False
        for obj_idx, frames in self.frames.items():
            while len(frames) > limit:
                demote(state, obj_idx, frames.pop(0))
                changed = True
        return changed

    def demote_older_than(self, state: dict, frame_index: int, age: int) -> bool:
        """Demote recovery frames more than ``age`` frames from ``frame_index``; True if any changed.

        By then the memory window holds only frames tracked after the recovery, and objects
        batched before it can be batched again.
        """
        changed = False
        for obj_idx, frames in self.frames.items():
            while _oldest_expired(frames, frame_index, age):
                demote(state, obj_idx, frames.pop(0))
                changed = True
        return changed

    def would_demote(self, frame_index: int, age: int) -> bool:
        """Whether :meth:`demote_older_than` would demote anything at ``frame_index``."""
        return any(_oldest_expired(frames, frame_index, age) for frames in self.frames.values())

    def demote_all(self, state: dict) -> bool:
        """End of a pass: its recovery frames anchored that direction only."""
        return self.demote_beyond(state, 0)


def _oldest_expired(frames: list[int], frame_index: int, age: int) -> bool:
    """Whether the oldest of an object's recovery frames is more than ``age`` frames from ``frame_index``."""
    return bool(frames) and abs(frame_index - frames[0]) > age


def demote(state: dict, obj_idx: int, frame_index: int) -> None:
    """Turn a conditioning output into a non-conditioning one; pruning then treats it like any other."""
    outputs = state["output_dict_per_obj"][obj_idx]
    output = outputs["cond_frame_outputs"].pop(frame_index, None)
    if output is not None:
        outputs["non_cond_frame_outputs"][frame_index] = output


def regroup(state: dict, batch_animals: bool) -> list[AnimalGroup]:
    """Batch objects with the same conditioning frames again, keeping all their outputs.

    Unlike the first grouping (``sam2_memory.group_animals``, made before any tracking), the
    non-conditioning history is stacked too, and each object's dict is pointed at rows of the new
    stack so no output is held twice.
    """
    per_obj = state["output_dict_per_obj"]
    by_frames: dict[tuple[int, ...], list[int]] = {}
    for obj_idx, outputs in per_obj.items():
        by_frames.setdefault(tuple(sorted(outputs["cond_frame_outputs"])), []).append(obj_idx)
    members = list(by_frames.values()) if batch_animals else [[obj_idx] for obj_idx in per_obj]
    groups = [AnimalGroup(m, per_obj[m[0]] if len(m) == 1 else _stacked_history(per_obj, m)) for m in members]
    state[GROUP_OUTPUTS_KEY] = {n: g.outputs for n, g in enumerate(groups) if len(g.obj_indices) > 1}
    return groups


def _stacked_history(per_obj: dict, obj_indices: list[int]) -> dict:
    dicts = [per_obj[i] for i in obj_indices]
    stacked_dict: dict = {}
    for kind in _OUTPUT_KINDS:
        frames = set.intersection(*(set(d[kind]) for d in dicts))
        stacked_dict[kind] = {}
        for frame_index in sorted(frames):
            stacked = stack_rows([d[kind][frame_index] for d in dicts])
            stacked_dict[kind][frame_index] = stacked
            for row, outputs in enumerate(dicts):
                outputs[kind][frame_index] = output_row(stacked, row)
    return stacked_dict


def stack_rows(outputs: list[dict]) -> dict:
    """One output with a row per object; a part any object lacks (slimmed outputs) is None."""
    stacked = {
        key: None if any(o[key] is None for o in outputs) else torch.cat([o[key] for o in outputs])
        for key in _ROW_KEYS
    }
    stacked["maskmem_pos_enc"] = [pos[:1].expand(len(outputs), -1, -1, -1) for pos in outputs[0]["maskmem_pos_enc"]]
    return stacked
