"""Keeping SAM2's tracking state flat, however long the video.

SAM2 keeps every tracked frame's output (about 0.75 MiB per frame and object at S=1024) and never
drops any, although tracking a frame reads only (spec §4): every conditioning frame, the memory
features of the last ``num_maskmem - 1`` non-conditioning frames (6) and the object pointers of
the last ``max_obj_ptrs_in_encoder - 1`` frames (15). After each frame the tracker calls
:func:`prune_state` with what the *next* frame will read: the rest is dropped, outputs read only for
their pointer are slimmed, and ``frames_tracked_per_obj`` is cut to the same window.

The state this leaves is meant for propagation only: slimmed frames can no longer take new clicks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

GROUP_OUTPUTS_KEY = "sbl_output_dict_per_group"
"""Extra state key: batched outputs of objects tracked together (see ``sam2_tracker``)."""


@dataclass(frozen=True)
class FramesRead:
    """Frames whose non-conditioning outputs a tracking step reads, by what it reads of them."""

    maskmem: frozenset[int]
    pointer: frozenset[int]

    def __or__(self, other: FramesRead) -> FramesRead:
        return FramesRead(self.maskmem | other.maskmem, self.pointer | other.pointer)

    @property
    def any(self) -> frozenset[int]:
        return self.maskmem | self.pointer


NOTHING_READ = FramesRead(frozenset(), frozenset())


@dataclass(frozen=True)
class MemoryWindow:
    """The part of SAM2's memory bank a tracking step reads; taken from the model's settings."""

    num_maskmem: int = 7
    max_obj_ptrs: int = 16
    temporal_stride: int = 1
    num_frames: int = 1 << 30

    @classmethod
    def of_model(cls, predictor: torch.nn.Module, num_frames: int) -> MemoryWindow:
        return cls(
            num_maskmem=int(predictor.num_maskmem),
            max_obj_ptrs=int(predictor.max_obj_ptrs_in_encoder) if predictor.use_obj_ptrs_in_encoder else 0,
            temporal_stride=int(predictor.memory_temporal_stride_for_eval),
            num_frames=int(num_frames),
        )

    def frames_read_by(self, frame_index: int, reverse: bool) -> FramesRead:
        """What tracking ``frame_index`` reads; mirrors ``SAM2Base._prepare_memory_conditioned_features``."""
        return FramesRead(
            frozenset(self._maskmem_frames(frame_index, reverse)),
            frozenset(self._pointer_frames(frame_index, reverse)),
        )

    def _maskmem_frames(self, t: int, reverse: bool) -> Iterator[int]:
        r = self.temporal_stride
        for t_rel in range(1, self.num_maskmem):
            if t_rel == 1:
                yield t + 1 if reverse else t - 1
            elif reverse:
                yield -(-(t + 2) // r) * r + (t_rel - 2) * r
            else:
                yield ((t - 2) // r) * r - (t_rel - 2) * r

    def _pointer_frames(self, t: int, reverse: bool) -> Iterator[int]:
        for t_diff in range(1, min(self.num_frames, self.max_obj_ptrs)):
            frame = t + t_diff if reverse else t - t_diff
            if frame < 0 or frame >= self.num_frames:
                return
            yield frame


@dataclass(frozen=True)
class TrackPass:
    """One propagation direction: ``order`` of frames, and memory a later pass starts from."""

    order: range
    reverse: bool
    keep_for_later: FramesRead


def plan_passes(prompt_frames: Sequence[int], start: int, stop: int, window: MemoryWindow) -> list[TrackPass]:
    """Forward from the earliest prompt to ``stop``, then backward from it to ``start``.

    Frames before ``start`` (forward) or from ``stop`` on (backward) are tracked but not yielded,
    so a prompt outside the range still seeds its animal. The forward pass keeps the memory the
    backward pass will read first, as SAM2 has it when it runs the two one after the other.
    """
    first = min(prompt_frames)
    backward = range(first - 1, start - 1, -1)
    anchor = window.frames_read_by(first - 1, reverse=True) if len(backward) else NOTHING_READ
    passes = [TrackPass(range(first, stop), False, anchor), TrackPass(backward, True, NOTHING_READ)]
    return [p for p in passes if len(p.order)]


def new_inference_state(
    images: object,
    video_height: int,
    video_width: int,
    device: torch.device,
    offload_state_to_cpu: bool = False,
) -> dict:
    """An empty SAM2 inference state over lazy ``images`` (what ``init_state`` builds, minus the
    loading of every frame and the warm-up encoder run on frame 0)."""
    return {
        "images": images,
        "num_frames": len(images),  # type: ignore[arg-type]
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": int(video_height),
        "video_width": int(video_width),
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def forked_state(state: dict) -> dict:
    """The entries of ``state`` for a second state that goes on from where ``state`` is now (a pass tracked
    beside this one): dicts of its own, so pruning, recoveries and regrouping in one never touch the other,
    over the same tensors (read only: outputs are replaced, never written in place). Images and cached
    features are the new state's own; groups come from :func:`forked_groups`."""
    per_obj = ("output_dict_per_obj", "temp_output_dict_per_obj")
    forked = {key: {i: _copied_output_dict(d) for i, d in state[key].items()} for key in per_obj}
    for key in ("frames_tracked_per_obj", "point_inputs_per_obj", "mask_inputs_per_obj"):
        forked[key] = {i: dict(entries) for i, entries in state[key].items()}
    forked["obj_id_to_idx"] = OrderedDict(state["obj_id_to_idx"])
    forked["obj_idx_to_id"] = OrderedDict(state["obj_idx_to_id"])
    forked["obj_ids"] = list(state["obj_ids"])
    forked["constants"] = dict(state["constants"])
    return forked


def forked_groups(groups: Sequence[AnimalGroup], state: dict) -> list[AnimalGroup]:
    """``groups`` over a state made with :func:`forked_state` (set as its grouped outputs)."""
    forked = [
        AnimalGroup(list(g.obj_indices), state["output_dict_per_obj"][g.obj_indices[0]] if len(g.obj_indices) == 1
                    else _copied_output_dict(g.outputs))
        for g in groups
    ]
    state[GROUP_OUTPUTS_KEY] = {n: g.outputs for n, g in enumerate(forked) if len(g.obj_indices) > 1}
    return forked


def _copied_output_dict(output_dict: dict) -> dict:
    return {kind: dict(outputs) for kind, outputs in output_dict.items()}


def shared_tensors(state: dict) -> Iterator[torch.Tensor]:
    """The device tensors of a state's outputs, inputs and constants (what two forked states share)."""
    roots = [state[key] for key in ("output_dict_per_obj", "temp_output_dict_per_obj", "point_inputs_per_obj",
                                    "mask_inputs_per_obj", "constants")]
    roots.append(state.get(GROUP_OUTPUTS_KEY, {}))
    return (t for t in _tensors(roots) if t.device.type != "cpu")


@dataclass
class AnimalGroup:
    """Objects (SAM2 indices) prompted on the same frames, tracked as one batch.

    ``outputs`` is a SAM2 output dict whose tensors have one row per object. A group of one uses
    the object's own output dict; larger groups keep a batched dict in the state under
    :data:`GROUP_OUTPUTS_KEY` and row views of it in each object's dict, so the state stays what
    SAM2 expects.
    """

    obj_indices: list[int]
    outputs: dict

    @property
    def cond_frames(self) -> dict:
        return self.outputs["cond_frame_outputs"]


def group_animals(state: dict, batch_animals: bool) -> list[AnimalGroup]:
    """Group objects by their set of conditioning frames (after SAM2's preflight), or one per group."""
    per_obj = state["output_dict_per_obj"]
    by_frames: dict[tuple[int, ...], list[int]] = {}
    for obj_idx, output_dict in per_obj.items():
        by_frames.setdefault(tuple(sorted(output_dict["cond_frame_outputs"])), []).append(obj_idx)
    members = list(by_frames.values()) if batch_animals else [[obj_idx] for obj_idx in per_obj]
    groups = []
    for obj_indices in members:
        if len(obj_indices) == 1:
            groups.append(AnimalGroup(obj_indices, per_obj[obj_indices[0]]))
            continue
        cond_frames = per_obj[obj_indices[0]]["cond_frame_outputs"]
        stacked = {t: stack_outputs([per_obj[i]["cond_frame_outputs"][t] for i in obj_indices]) for t in cond_frames}
        groups.append(AnimalGroup(obj_indices, {"cond_frame_outputs": stacked, "non_cond_frame_outputs": {}}))
    state[GROUP_OUTPUTS_KEY] = {n: g.outputs for n, g in enumerate(groups) if len(g.obj_indices) > 1}
    return groups


def record_output(state: dict, group: AnimalGroup, frame_index: int, output: dict, reverse: bool) -> None:
    """Store a group's non-conditioning output for ``frame_index`` as SAM2's propagation would."""
    group.outputs["non_cond_frame_outputs"][frame_index] = output
    if len(group.obj_indices) > 1:
        for row, obj_idx in enumerate(group.obj_indices):
            state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"][frame_index] = output_row(output, row)
    mark_tracked(state, group, frame_index, reverse)


def mark_tracked(state: dict, group: AnimalGroup, frame_index: int, reverse: bool) -> None:
    """Record, as SAM2 does, that the group's objects were tracked on ``frame_index``."""
    for obj_idx in group.obj_indices:
        state["frames_tracked_per_obj"][obj_idx][frame_index] = {"reverse": reverse}


def stack_outputs(outputs: list[dict]) -> dict:
    """One output with a row per object from single-object outputs of the same frame."""
    rows = len(outputs)
    stacked = {key: torch.cat([o[key] for o in outputs]) for key in _ROW_TENSORS}
    stacked["maskmem_pos_enc"] = [pos.expand(rows, -1, -1, -1) for pos in outputs[0]["maskmem_pos_enc"]]
    return stacked


def output_row(output: dict, row: int) -> dict:
    """Row ``row`` of a batched output, as views."""
    sliced = {key: None if output[key] is None else output[key][row : row + 1] for key in _ROW_TENSORS}
    sliced["maskmem_pos_enc"] = [pos[row : row + 1] for pos in output["maskmem_pos_enc"]]
    return sliced


_ROW_TENSORS = ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")


def slimmed(output: dict) -> dict:
    """A frame's output reduced to what pointer reads need (object pointer and score)."""
    return {**output, "maskmem_features": None, "pred_masks": None}


def prune_output_dict(output_dict: dict, keep: FramesRead) -> None:
    """Drop non-conditioning outputs outside ``keep``; slim those kept for their pointer only."""
    non_cond = output_dict["non_cond_frame_outputs"]
    for frame_index in list(non_cond):
        if frame_index in keep.maskmem:
            continue
        if frame_index in keep.pointer:
            if non_cond[frame_index]["maskmem_features"] is not None:
                non_cond[frame_index] = slimmed(non_cond[frame_index])
        else:
            del non_cond[frame_index]


def prune_state(state: dict, keep: FramesRead) -> None:
    """Cut every object's (and object group's) memory to ``keep`` plus its conditioning frames."""
    for output_dict in _output_dicts(state):
        prune_output_dict(output_dict, keep)
    window = keep.any
    for obj_idx, tracked in state["frames_tracked_per_obj"].items():
        cond_frames = state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"]
        for frame_index in [f for f in tracked if f not in window and f not in cond_frames]:
            del tracked[frame_index]


def untouched(state: dict, frame_index: int) -> bool:
    """Whether no object or group holds any output or tracked mark for ``frame_index``: tracking it
    can then be undone exactly by :func:`forget_frame`."""
    if any(frame_index in tracked for tracked in state["frames_tracked_per_obj"].values()):
        return False
    return not any(frame_index in d["non_cond_frame_outputs"] or frame_index in d["cond_frame_outputs"]
                   for d in _output_dicts(state))


def forget_frame(state: dict, frame_index: int) -> None:
    """Undo tracking ``frame_index`` (its non-conditioning outputs and tracked marks), which was
    :func:`untouched` before; regrouping since then is covered, as every output dict is searched."""
    for output_dict in _output_dicts(state):
        output_dict["non_cond_frame_outputs"].pop(frame_index, None)
    for tracked in state["frames_tracked_per_obj"].values():
        tracked.pop(frame_index, None)


@dataclass(frozen=True)
class HeldFrames:
    """How much tracking state a SAM2 inference state holds right now (maxima over objects)."""

    non_cond_outputs: int
    maskmem_outputs: int
    cond_outputs: int
    frames_tracked: int
    cached_features: int
    tensor_bytes: int


def held_frames(state: dict, with_bytes: bool = True) -> HeldFrames:
    """Frame counts per object or object group (the largest) and, optionally, bytes of all tensors."""
    dicts = list(_output_dicts(state))
    non_cond = [d["non_cond_frame_outputs"] for d in dicts]
    return HeldFrames(
        non_cond_outputs=max((len(d) for d in non_cond), default=0),
        maskmem_outputs=max((sum(o["maskmem_features"] is not None for o in d.values()) for d in non_cond), default=0),
        cond_outputs=max((len(d["cond_frame_outputs"]) for d in dicts), default=0),
        frames_tracked=max((len(t) for t in state["frames_tracked_per_obj"].values()), default=0),
        cached_features=len(state["cached_features"]),
        tensor_bytes=state_tensor_bytes(state) if with_bytes else 0,
    )


def non_cond_frames_held(state: dict) -> dict[int, int]:
    """Animal id → number of non-conditioning outputs SAM2 holds for it."""
    return {
        state["obj_idx_to_id"][idx]: len(d["non_cond_frame_outputs"]) for idx, d in state["output_dict_per_obj"].items()
    }


def frames_tracked_held(state: dict) -> dict[int, int]:
    """Animal id → number of ``frames_tracked_per_obj`` entries."""
    return {state["obj_idx_to_id"][idx]: len(t) for idx, t in state["frames_tracked_per_obj"].items()}


def state_tensor_bytes(state: dict) -> int:
    """Bytes of every distinct tensor storage the state's outputs, caches and constants use."""
    roots = [
        state["output_dict_per_obj"],
        state["temp_output_dict_per_obj"],
        state.get(GROUP_OUTPUTS_KEY, {}),
        state["cached_features"],
        state["constants"],
    ]
    seen: dict[int, int] = {}
    for tensor in _tensors(roots):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _output_dicts(state: dict) -> Iterator[dict]:
    yield from state["output_dict_per_obj"].values()
    yield from state.get(GROUP_OUTPUTS_KEY, {}).values()


def _tensors(value: object) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
