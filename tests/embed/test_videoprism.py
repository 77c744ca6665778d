"""VideoPrism encoder: key layout, checkpoint checks, and every numerical detail against NumPy.

The NumPy reference (:mod:`tests.embed.videoprism_reference`) is written from the spec
(specs/videoprism.md), independently of the Flax module, and runs in float64.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from napari_sbl.embed import checkpoint as ckpt  # noqa: E402
from napari_sbl.embed import videoprism as vp  # noqa: E402
from napari_sbl.embed import videoprism_model as vpm  # noqa: E402
from napari_sbl.errors import SblError, WeightsMissingError  # noqa: E402
from napari_sbl.weights import load_manifest  # noqa: E402
from tests.embed.videoprism_reference import (  # noqa: E402
    ref_attention,
    ref_feed_forward,
    ref_forward,
    ref_layer_norm,
    ref_resize_matrix,
    ref_resize_spatial,
    rel_error,
)

TINY = vp.VideoPrismConfig.tiny()
BASE = vp.VideoPrismConfig.base()
LARGE = vp.VideoPrismConfig.large()
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- fixtures
def perturbed(variables, seed=1, logit_gain=3.0):
    """Random variables with non-zero LN scales and biases and q/k large enough to reach the cap."""
    rng = np.random.default_rng(seed)
    flat = {}
    for key, leaf in ckpt.flatten(variables).items():
        value = np.asarray(leaf, np.float32)
        if key.endswith(("/scale", "/bias", "/b")):
            value = rng.normal(0.0, 0.3, value.shape).astype(np.float32)
        elif key.endswith(("query/w", "key/w")):
            value = value * logit_gain
        flat[key] = value
    return ckpt.unflatten(flat)


@pytest.fixture(scope="module")
def tiny_variables():
    return perturbed(vp.random_variables(TINY, seed=0))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_variables):
    return ckpt.save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.npz", tiny_variables, TINY)


def frames_of(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# ---------------------------------------------------------------- layout and configs
@pytest.mark.parametrize(("config", "count"), [(BASE, 114_365_184), (LARGE, 353_965_056)], ids=["base", "large"])
def test_module_tree_is_the_checkpoint_table(config, count):
    abstract = ckpt.flatten(vpm.abstract_variables(config))
    assert {key: tuple(leaf.shape) for key, leaf in abstract.items()} == ckpt.expected_shapes(config)
    assert len(abstract) == 40
    assert ckpt.parameter_count(config) == count
    assert ckpt.expected_shapes(config)["params/spatial_encoder/transformers_stack/x_layers/self_attention/post/w"] == (
        config.num_spatial_layers,
        config.model_dim,
        config.num_heads,
        64,
    )


def test_flops_match_spec():
    assert vp.matmul_flops_per_clip(BASE, 16, 288, 288) / 1e9 == pytest.approx(973.3, abs=0.05)
    assert vp.matmul_flops_per_clip(LARGE, 8, 288, 288) / 1e9 == pytest.approx(1499.0, abs=0.05)


def test_manifest_entries_and_third_party_copy():
    specs = load_manifest("videoprism")
    assert specs["videoprism_base"].filename == "flax_base_f16r288_repeated.npz"
    assert specs["videoprism_large"].filename == "flax_large_f8r288_repeated.npz"
    for name, spec in specs.items():
        assert spec.urls[0].startswith("https://huggingface.co/google/videoprism-")
        assert spec.urls[1] == f"https://storage.googleapis.com/videoprism/v1/{spec.filename}"
        assert spec.sha256 is None and spec.env_var == f"NAPARI_SBL_{name.upper()}"
    packaged = REPO / "src/napari_sbl/manifests/videoprism.json"
    assert json.loads(packaged.read_text()) == json.loads((REPO / "third_party/weights/videoprism.json").read_text())


# ---------------------------------------------------------------- numerical details
def test_patch_flatten_order():
    frames = np.arange(2 * 12 * 8 * 3, dtype=np.float32).reshape(2, 12, 8, 3)
    patches = np.asarray(vpm.patchify(jnp.asarray(frames), 4))
    assert patches.shape == (2, 3 * 2, 48)
    for f, m, n, p, q, c in [(0, 0, 0, 0, 0, 0), (1, 2, 1, 3, 2, 1), (0, 1, 0, 0, 3, 2), (1, 0, 1, 2, 0, 0)]:
        assert patches[f, m * 2 + n, (p * 4 + q) * 3 + c] == frames[f, m * 4 + p, n * 4 + q, c]


def test_temporal_resize_worked_examples():
    ramp16 = jnp.arange(16.0)[:, None]
    shrunk = np.asarray(vpm.resize_temporal_table(ramp16, 8))[:, 0]
    np.testing.assert_allclose(shrunk, [5 / 7, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5, 15 - 5 / 7], rtol=1e-6)
    np.testing.assert_allclose(ref_resize_matrix(16, 8)[1, :6], np.array([0, 1, 3, 3, 1, 0]) / 8)
    np.testing.assert_allclose(ref_resize_matrix(16, 8)[0, :3], np.array([3, 3, 1]) / 7)
    grown = np.asarray(vpm.resize_temporal_table(jnp.arange(8.0)[:, None], 16))[:, 0]
    np.testing.assert_allclose(grown, [0.0, *np.arange(0.25, 7.0, 0.5), 7.0], atol=1e-6)


@pytest.mark.parametrize("out_frames", [1, 3, 5, 8, 12, 16, 20, 32])
def test_temporal_resize_matches_reference(out_frames):
    table = np.random.default_rng(out_frames).normal(size=(16, 6)).astype(np.float32)
    ours = np.asarray(vpm.resize_temporal_table(jnp.asarray(table), out_frames))
    np.testing.assert_allclose(ours, ref_resize_matrix(16, out_frames) @ table, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("rows", "cols"), [(8, 8), (5, 7), (16, 12), (20, 20), (3, 24), (16, 16)])
def test_spatial_resize_matches_reference(rows, cols):
    table = np.random.default_rng(rows * cols).normal(size=(256, 5)).astype(np.float32)
    ours = np.asarray(vpm.resize_spatial_table(jnp.asarray(table), 16, rows, cols))
    np.testing.assert_allclose(ours, ref_resize_spatial(table, 16, rows, cols), rtol=1e-5, atol=1e-5)


def _apply(module, params, x):
    with jax.default_matmul_precision("highest"):
        return np.asarray(module.apply({"params": params}, jnp.asarray(x)), np.float64)


def test_layer_norm_offset_scale_eps_and_biased_variance():
    rng = np.random.default_rng(0)
    x = (1e-3 * rng.normal(size=(4, 16))).astype(np.float32)  # variance ~1e-6, comparable to eps
    params = {
        "scale": rng.normal(0, 0.5, 16).astype(np.float32),
        "bias": rng.normal(0, 0.1, 16).astype(np.float32),
    }
    ours = _apply(vpm.LayerNorm(1e-6), params, x)
    reference = partial(ref_layer_norm, x.astype(np.float64), params["scale"], params["bias"])
    assert rel_error(ours, reference()) < 1e-5
    for wrong in (dict(eps=1e-5), dict(eps=1e-7), dict(offset=False), dict(ddof=1)):
        assert rel_error(ours, reference(**wrong)) > 5e-3, wrong


def test_feed_forward_uses_exact_gelu(tiny_variables):
    layer0 = jax.tree_util.tree_map(lambda a: a[0], tiny_variables["params"]["spatial_encoder"])
    params = layer0["transformers_stack"]["x_layers"]["ff_layer"]
    x = np.random.default_rng(0).normal(0, 2, (3, 5, TINY.model_dim)).astype(np.float32)
    ours = _apply(vpm.FeedForward(TINY), params, x)
    assert rel_error(ours, ref_feed_forward(x.astype(np.float64), params)) < 1e-5
    assert rel_error(ours, ref_feed_forward(x.astype(np.float64), params, exact_gelu=False)) > 1e-4


def test_attention_query_scale_and_logit_cap(tiny_variables):
    stack = tiny_variables["params"]["temporal_encoder"]["transformers_stack"]["x_layers"]
    params = jax.tree_util.tree_map(lambda a: np.asarray(a[1], np.float64), stack["self_attention"])
    params["query"]["w"] = params["query"]["w"] * 4  # logits well past the ±50 cap
    x = np.random.default_rng(1).normal(size=(2, 7, TINY.model_dim))
    raw = np.einsum("...d,dnh->...nh", x, params["query"]["w"]) * TINY.head_dim**-0.5
    assert np.abs(np.einsum("qnh,knh->nqk", raw[0], np.einsum("...d,dnh->...nh", x, params["key"]["w"])[0])).max() > 60
    ours = _apply(vpm.SelfAttention(TINY), params, x.astype(np.float32))
    assert rel_error(ours, ref_attention(x, params, TINY.head_dim)) < 1e-5
    assert rel_error(ours, ref_attention(x, params, TINY.head_dim, cap=0.0)) > 1e-3
    assert rel_error(ours, ref_attention(x, params, TINY.head_dim, query_scale=1.0)) > 1e-3
    assert rel_error(ours, ref_attention(x, params, TINY.head_dim, query_scale=1 / TINY.head_dim)) > 1e-3


def _equations(jaxpr):
    for equation in jaxpr.eqns:
        yield equation
        for param in equation.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def test_bf16_computes_in_bf16_with_fp32_softmax(tiny_variables):
    params = ckpt.cast_params(tiny_variables, "bfloat16")
    module = vpm.FactorizedEncoder(TINY, jnp.bfloat16)
    trained_grid = jnp.zeros((1, TINY.pos_emb_frames, 16, 16, 3), jnp.float32)  # no table resize
    jaxpr = jax.make_jaxpr(module.apply)(params, trained_grid).jaxpr
    equations = list(_equations(jaxpr))
    dots = [eq for eq in equations if eq.primitive.name == "dot_general"]
    assert dots and all(str(var.aval.dtype) == "bfloat16" for eq in dots for var in eq.invars)
    exps = [eq for eq in equations if eq.primitive.name == "exp"]
    assert exps and all(str(var.aval.dtype) == "float32" for eq in exps for var in eq.outvars)
    assert any(str(eq.outvars[0].aval.dtype) == "bfloat16" for eq in equations if eq.primitive.name == "tanh")


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 12, 12, 3), (1, 6, 20, 24, 3), (1, 4, 16, 16, 3)],
    ids=["shrink-grid-and-time", "grow-grid-and-time", "trained-grid"],
)
def test_full_forward_matches_numpy_reference(tiny_variables, shape):
    encoder = vp.VideoPrismEncoder(TINY, tiny_variables)
    frames = frames_of(shape)
    with jax.default_matmul_precision("highest"):
        output = encoder.features(frames)
    tokens, spatial = ref_forward(tiny_variables["params"], frames, TINY)
    assert output.tokens.shape == tokens.shape
    np.testing.assert_allclose(np.asarray(output.spatial_features), spatial, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(output.tokens), tokens, rtol=1e-4, atol=1e-4)
    assert rel_error(output.tokens, tokens) < 1e-5


def test_shapes_grid_view_and_time_major_order(tiny_variables):
    encoder = vp.VideoPrismEncoder(TINY, tiny_variables)
    frames = frames_of((2, 3, 16, 12, 3))
    per_frame = 4 * 3
    before = encoder.features(frames)
    assert before.tokens.shape == before.spatial_features.shape == (2, 3 * per_frame, TINY.model_dim)
    grid = encoder.features(frames, grid=True)
    assert grid.tokens.shape == (2, 3, 4, 3, TINY.model_dim)
    np.testing.assert_array_equal(np.asarray(grid.tokens).reshape(before.tokens.shape), before.tokens)
    np.testing.assert_array_equal(
        np.asarray(grid.spatial_features).reshape(before.tokens.shape), before.spatial_features
    )
    changed = frames.copy()
    changed[:, 1] = frames_of((2, 16, 12, 3), seed=5)
    after = encoder.features(changed)
    moved = np.abs(np.asarray(after.spatial_features) - np.asarray(before.spatial_features)).max(axis=(0, 2))
    assert np.all(moved[per_frame : 2 * per_frame] > 1e-3)  # tokens t·N..(t+1)·N-1 belong to frame t
    assert np.all(moved[:per_frame] == 0) and np.all(moved[2 * per_frame :] == 0)
    uint8_frames = (frames * 255).round().astype(np.uint8)
    np.testing.assert_allclose(
        np.asarray(encoder.features(uint8_frames).tokens),
        np.asarray(encoder.features(uint8_frames / np.float32(255)).tokens),
        atol=1e-5,
    )


def test_bad_frame_shapes_are_refused(tiny_variables):
    encoder = vp.VideoPrismEncoder(TINY, tiny_variables)
    with pytest.raises(vp.ClipShapeError, match="multiple of the 4-px patch"):
        encoder(np.zeros((1, 2, 14, 16, 3), np.float32))
    with pytest.raises(vp.ClipShapeError, match=r"\(B, T, H, W, 3\)"):
        encoder(np.zeros((2, 16, 16, 3), np.float32))


def test_bf16_is_close_to_fp32():
    variables = perturbed(vp.random_variables(TINY, seed=0), logit_gain=1.0)  # softmax not saturated
    fp32 = vp.VideoPrismEncoder(TINY, variables)
    bf16 = vp.VideoPrismEncoder(TINY, variables, dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16.variables)} == {jnp.dtype(jnp.bfloat16)}
    frames = frames_of((2, 4, 16, 16, 3))
    with jax.default_matmul_precision("highest"):
        expected = fp32(frames)
    actual = bf16(frames)
    assert actual.dtype == jnp.bfloat16
    assert rel_error(np.asarray(actual, np.float32), expected) < 2e-2


# ---------------------------------------------------------------- checkpoints
def test_save_load_round_trip_and_provenance(tiny_variables, tiny_checkpoint):
    with np.load(tiny_checkpoint) as archive:
        assert set(archive.files) == set(ckpt.expected_shapes(TINY))
    encoder = vp.load_encoder(tiny_checkpoint, model="tiny", download=False)
    for key, value in ckpt.flatten(encoder.variables).items():
        np.testing.assert_array_equal(np.asarray(value), ckpt.flatten(tiny_variables)[key])
    assert encoder.checkpoint_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert encoder.provenance["checkpoint"] == "tiny.npz" and encoder.provenance["dtype"] == "float32"
    bf16 = vp.load_encoder(tiny_checkpoint, model="tiny", dtype="bf16", download=False)
    assert bf16.dtype == "bfloat16"
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16.variables)} == {jnp.dtype(jnp.bfloat16)}


def _rewrite(source: Path, target: Path, edit) -> Path:
    arrays = ckpt.read_npz(source)
    edit(arrays)
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda a: a.update({"params/spatial_ln/scale": np.zeros(31, np.float32)}),
            r"params/spatial_ln/scale: expected shape \(32,\), found \(31,\)",
        ),
        (
            lambda a: a.pop("params/temporal_pos_emb/emb_var"),
            r"missing key params/temporal_pos_emb/emb_var \(expected shape \(4, 32\)\)",
        ),
        (
            lambda a: a.update({"params/vision_encoder/extra": np.zeros(3, np.float32)}),
            r"unexpected key params/vision_encoder/extra \(shape \(3,\)\)",
        ),
        (
            lambda a: a.update({"params/spatial_ln/bias": np.zeros(32, np.int32)}),
            r"params/spatial_ln/bias: expected floating-point values, found dtype int32",
        ),
    ],
    ids=["wrong-shape", "missing", "unexpected", "not-float"],
)
def test_mismatched_checkpoint_is_rejected(tiny_checkpoint, tmp_path, edit, message):
    broken = _rewrite(tiny_checkpoint, tmp_path / "broken.npz", edit)
    with pytest.raises(ckpt.CheckpointError, match=message) as info:
        vp.load_encoder(broken, model="tiny", download=False)
    assert isinstance(info.value, SblError)
    assert "VideoPrism 'tiny'" in str(info.value)


def test_base_file_loaded_as_large_names_the_right_model():
    base_like = {key: np.broadcast_to(np.float32(0), shape) for key, shape in ckpt.expected_shapes(BASE).items()}
    with pytest.raises(ckpt.CheckpointError, match="model='base'") as info:
        ckpt.validate(base_like, LARGE, candidates=vp.PUBLISHED_CONFIGS)
    assert "expected shape (972, 1024), found (972, 768)" in str(info.value)
    assert "and " in str(info.value)  # long lists are cut short


def test_corrupt_file_is_rejected(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ckpt.CheckpointError, match=r"not a readable \.npz"):
        ckpt.read_npz(broken)


def test_synthetic_base_checkpoint_loads_and_runs(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {key: rng.standard_normal(shape, dtype=np.float32) for key, shape in ckpt.expected_shapes(BASE).items()}
    for array in arrays.values():
        array *= 0.05  # in place: keeps activations in a realistic range without a second copy
    path = tmp_path / "synthetic_base.npz"
    np.savez(path, **arrays)
    encoder = vp.load_encoder(path, model="base", download=False)
    assert sum(leaf.size for leaf in jax.tree_util.tree_leaves(encoder.variables)) == 114_365_184
    frames = frames_of((1, 2, 36, 36, 3))
    with jax.default_matmul_precision("highest"):
        tokens = np.asarray(encoder(frames))
    assert tokens.shape == (1, 2 * 4, 768)
    del encoder
    expected, _ = ref_forward(ckpt.unflatten(arrays)["params"], frames, BASE)
    assert rel_error(tokens, expected) < 1e-4


# ---------------------------------------------------------------- weights resolution
def test_missing_weights_say_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SBL_CACHE", str(tmp_path))
    monkeypatch.delenv("NAPARI_SBL_VIDEOPRISM_BASE", raising=False)
    with pytest.raises(WeightsMissingError, match=r"flax_base_f16r288_repeated\.npz") as info:
        vp.load_encoder(model="base", download=False)
    assert str(tmp_path) in str(info.value) and "NAPARI_SBL_VIDEOPRISM_BASE" in str(info.value)


def test_failed_download_raises_weights_missing(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setenv("NAPARI_SBL_CACHE", str(tmp_path))
    monkeypatch.delenv("NAPARI_SBL_VIDEOPRISM_LARGE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsMissingError, match="offline in tests"):
        vp.load_encoder(model="large")
    with pytest.raises(WeightsMissingError, match="not a file"):
        vp.load_encoder(tmp_path / "nowhere.npz", model="base", download=False)


def test_random_weights_warn_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="napari_sbl.embed.videoprism"):
        encoder = vp.load_encoder(model="tiny", weights="random")
    assert "RANDOM weights" in caplog.text
    assert encoder.provenance["weights"] == "random(seed=0)" and encoder.checkpoint_sha256 is None
    with pytest.raises(ValueError, match="either a checkpoint"):
        vp.load_encoder("some.npz", model="tiny", weights="random")
