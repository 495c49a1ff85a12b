"""Nothing silent at the API: defaults by channel count, the [0, 1] range, half precision, and loaders that
name the file (generator.json / .npz, a run's config.json, a saved denoiser)."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import starlight_jax as sj
from starlight_jax import generator, validation
from starlight_jax.checkpoint import load_generator, load_noise_model, save_generator
from starlight_jax.noiselist import parse_noiselist

pytestmark = pytest.mark.usefixtures("fast_compiles")
KEY = jax.random.key(3)
needs_default = pytest.mark.skipif(not (generator.DEFAULT_MODEL_DIR / "generator.json").is_file(),
                                   reason="no starlight_jax/assets/default in this checkout")


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """The default-model registry with only the shipped 4-channel model (3 → an absent folder); caches
    cleared before and after, as the models are cached per channel count."""
    monkeypatch.setattr(generator, "DEFAULT_MODEL_DIRS", {4: generator.DEFAULT_MODEL_DIR, 3: tmp_path / "srgb"})
    generator.default_model.cache_clear()
    yield generator.DEFAULT_MODEL_DIRS
    generator.default_model.cache_clear()


def _image(shape, lo=0.2, hi=0.8):
    return jax.random.uniform(jax.random.key(0), shape, minval=lo, maxval=hi)


# ------------------------------------------------------------------------------------------------------
# Defaults by channel count
# ------------------------------------------------------------------------------------------------------
def test_no_trained_default_for_the_channel_count_raises(registry):
    with pytest.raises(ValueError, match=r"no trained default model for 3-channel images.*\[4\].*noiselist"):
        sj.synthesize(KEY, _image((2, 16, 16, 3)))


def test_channels_first_array_gets_the_nchw_hint(registry):
    with pytest.raises(ValueError, match=r"64-channel.*\(2, 3, 64, 64\) looks like channels-first"):
        sj.synthesize(KEY, _image((2, 3, 64, 64)))


def test_registered_3_channel_default_is_used_when_its_folder_exists(registry, tmp_path):
    cfg = sj.GeneratorConfig(noise=parse_noiselist("shot_read", channels=3))
    # Not the initial values: the test tells the registered model from the noiselist's initial one.
    noise = jax.tree_util.tree_map(lambda v: v + 0.5, sj.init_params(cfg.noise))
    model = sj.NoiseModel(params={"noise": noise}, config=cfg)
    save_generator(model, registry[3])
    clean = _image((2, 16, 16, 3))
    np.testing.assert_array_equal(np.asarray(sj.synthesize(KEY, clean)), np.asarray(sj.synthesize(KEY, clean, model)))
    # Built once: the second call returns the cached object.
    assert generator.default_model(None, "physics", 3) is generator.default_model(None, "physics", 3)


def test_explicit_noiselist_without_params_keeps_its_initial_values(registry):
    clean = _image((2, 16, 16, 3))
    ref = sj.synthesize(KEY, clean, sj.init_params("shot_read", channels=3), noiselist="shot_read")
    np.testing.assert_array_equal(np.asarray(sj.synthesize(KEY, clean, noiselist="shot_read")), np.asarray(ref))


def test_starlight_compat_without_params_or_noiselist_raises(registry):
    with pytest.raises(ValueError, match="compat='starlight'"):
        sj.synthesize(KEY, _image((2, 16, 16, 4)), compat="starlight")


# ------------------------------------------------------------------------------------------------------
# Values and dtypes
# ------------------------------------------------------------------------------------------------------
PARAMS = sj.init_params("shot_read")


@pytest.mark.parametrize("lo,hi,match", [(0.0, 255.0, "divide by 255"), (-1.0, 1.0, r"\(x \+ 1\) / 2"),
                                         (0.0, 1.01, "clip"), (0.0, 4095.0, "white level")])
def test_values_outside_unit_range_raise_outside_jit(lo, hi, match):
    clean = _image((16, 16, 4), lo, hi).at[0, 0, 0].set(lo).at[0, 0, 1].set(hi)
    with pytest.raises(ValueError, match=match):
        sj.synthesize(KEY, clean, PARAMS, noiselist="shot_read")
    # Under jit the values are unknown: no check, the output is clipped as before.
    out = jax.jit(lambda k, x: sj.synthesize(k, x, PARAMS, noiselist="shot_read"))(KEY, clean)
    assert float(out.max()) <= 1.0


def test_values_within_the_tolerance_pass():
    tol = validation.RANGE_TOLERANCE
    clean = _image((16, 16, 4)).at[0, 0, 0].set(-0.5 * tol).at[0, 0, 1].set(1 + 0.5 * tol)
    assert sj.synthesize(KEY, clean, PARAMS, noiselist="shot_read").shape == clean.shape


@needs_default
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_computed_in_float32_and_cast_back(dtype):
    """The default model has periodic noise (an FFT, float32 and up only)."""
    clean = _image((2, 16, 16, 4)).astype(dtype)
    out = sj.synthesize(KEY, clean)
    assert out.dtype == dtype
    ref = sj.synthesize(KEY, clean.astype(jnp.float32)).astype(dtype)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))
    assert float(jnp.abs(out.astype(jnp.float32) - clean.astype(jnp.float32)).mean()) > 1e-3  # noise was added


# ------------------------------------------------------------------------------------------------------
# Loaders name the file
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def exported(tmp_path):
    model = sj.init_generator(KEY, sj.GeneratorConfig(noise=parse_noiselist("shot_read_uniform")))
    return save_generator(model, tmp_path / "gen")


def _edit_json(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_per_channel_that_does_not_match_the_arrays_raises(exported):
    _edit_json(exported / "generator.json", lambda d: d["config"]["noise"].update(per_channel=True))
    with pytest.raises(ValueError, match=r"generator.npz does not match .*generator.json: \['noise'\]\['\w+'\] "
                                         r"has shape \(\), expected \(4,\).*per_channel True"):
        load_generator(exported)


def test_truncated_npz_raises_naming_the_file(exported):
    data = (exported / "generator.npz").read_bytes()
    (exported / "generator.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"gen/generator.npz is not a readable .npz archive"):
        load_generator(exported)


@needs_default
def test_truncated_shipped_default_raises_naming_the_file(tmp_path):
    folder = tmp_path / "default"
    shutil.copytree(generator.DEFAULT_MODEL_DIR, folder)
    (folder / "generator.npz").write_bytes((folder / "generator.npz").read_bytes()[:100])
    with pytest.raises(ValueError, match="default/generator.npz is not a readable"):
        load_generator(folder)


def test_truncated_json_raises_naming_the_file(exported):
    text = (exported / "generator.json").read_text()
    (exported / "generator.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"gen/generator.json is not valid JSON .* line \d+"):
        load_generator(exported)


def test_unknown_keys_are_listed(exported):
    _edit_json(exported / "generator.json", lambda d: d["config"].update(netwerk="Unet", zz=1))
    with pytest.raises(ValueError, match=r"generator.json key 'config' has unknown keys \['netwerk', 'zz'\]"):
        load_generator(exported)
    _edit_json(exported / "generator.json", lambda d: (d["config"].pop("netwerk"), d["config"].pop("zz"),
                                                       d["config"]["noise"].update(shott=True)))
    with pytest.raises(ValueError, match=r"key 'config.noise' has unknown keys \['shott'\]"):
        load_generator(exported)


def test_refused_config_value_names_the_file(exported):
    _edit_json(exported / "generator.json", lambda d: d["config"].update(network="Unet3"))
    with pytest.raises(ValueError, match=r"generator.json key 'config': network must be one of"):
        load_generator(exported)


@needs_default
@pytest.mark.parametrize("edit,match", [
    (lambda p: p.write_text(p.read_text()[:40]), r"config.json is not valid JSON"),
    (lambda p: _edit_json(p, lambda d: d["train"].update(lr_decya="cosine")),
     r"config.json key 'train' has unknown keys \['lr_decya'\]"),
    (lambda p: _edit_json(p, lambda d: d.pop("run")), r"config.json has no 'run' section"),
])
def test_run_config_errors_name_the_file(tmp_path, edit, match):
    folder = tmp_path / "default"
    shutil.copytree(generator.DEFAULT_MODEL_DIR, folder)
    edit(folder / "config.json")
    with pytest.raises(ValueError, match=match):
        load_noise_model(folder)


def test_denoiser_loader_names_the_file(tmp_path):
    from starlight_jax.denoise import DenoiserConfig, init_denoiser, load_denoiser, save_denoiser

    cfg = DenoiserConfig(channels=3, depth=2, width=4)
    folder = save_denoiser(tmp_path / "d", init_denoiser(KEY, cfg), cfg)
    npz = (folder / "params.npz").read_bytes()
    (folder / "params.npz").write_bytes(npz[:50])
    with pytest.raises(ValueError, match=r"d/params.npz is not a readable .npz archive"):
        load_denoiser(folder)
    (folder / "params.npz").write_bytes(npz)
    _edit_json(folder / "config.json", lambda d: d["denoiser"].update(dept=3))
    with pytest.raises(ValueError, match=r"d/config.json key 'denoiser' has unknown keys \['dept'\]"):
        load_denoiser(folder)


def test_non_finite_npy_image_is_refused(tmp_path):
    from starlight_jax.denoise import read_image

    np.save(tmp_path / "nan.npy", np.full((8, 8, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"nan.npy: 256 of 256 values are NaN or inf"):
        read_image(tmp_path / "nan.npy")
