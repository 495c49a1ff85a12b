"""Tests for starlight_jax.evaluation, starlight_jax.plots and the experiments/evaluate.py and sample.py CLIs.

Everything runs on a tiny synthetic dataset (64x64 frames, one burst per scene: 9 train and 2 test bursts)
and a run folder holding the *initial* ``shot_read_uniform`` generator, written without training (a
training step's compile costs ~40 s on a loaded 2-core CPU; the loader code is the same either way).
"""

import json
import math
import pathlib
import types

import jax
import numpy as np
import pytest

from starlight_jax import evaluation, plots, structure, train_loop, training
from starlight_jax.checkpoint import load_noise_model
from starlight_jax.data import SensorModel, load_dataset
from starlight_jax.generator import GeneratorConfig, init_generator
from starlight_jax.models import TINY_WIDTHS
from starlight_jax.noiselist import parse_noiselist
from legacy import train_config
from clis import load_cli

pytestmark = pytest.mark.usefixtures("fast_compiles")

REPO = pathlib.Path(__file__).resolve().parents[1]
OPTIONS = (("frame_size", (64, 64)), ("bursts_per_scene", 1))
CFG = train_config(noiselist="shot_read_uniform", network="noUnet", frames=2, crop_size=64)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("synthetic", **dict(OPTIONS))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as experiments/train.py writes it, holding the step-0 state."""
    workdir = tmp_path_factory.mktemp("runs") / "tiny"
    run = train_loop.RunConfig(workdir=str(workdir), dataset="synthetic", dataset_options=OPTIONS, steps=1,
                               progress=False)
    state = training.create_train_state(jax.random.key(0), CFG)
    train_loop._save_config(workdir, CFG, run)
    latest, _ = train_loop.checkpoint_managers(workdir, keep=1)
    train_loop._save(latest, 0, state, {"epoch": 0, "index": 0, "seed": 0})
    return workdir


@pytest.fixture(scope="module")
def model(run_dir):
    return load_noise_model(run_dir)[0]


def _cli(name):
    return load_cli(name, "evaluation_test")


def _finite(x):
    return all(_finite(v) for v in x) if isinstance(x, list) else x is not None and math.isfinite(x)


# ------------------------------------------------------------------------------------------------------
# evaluate_model
# ------------------------------------------------------------------------------------------------------
def test_evaluate_model_keys_and_values(model, dataset):
    result = evaluation.evaluate_model(model, dataset, crop_size=64, frames=2, max_bursts=2, n_samples=2)
    for name in evaluation.MODELS:
        m = result[name]
        for key in ("kld_starlight_mean", "kld_starlight_sum", "kld_noiseflow", "akld"):
            assert math.isfinite(m[key]), (name, key, m[key])
        assert "kld_srgb" not in m  # raw data
        assert m["n_bursts"] == 2 and m["n_images"] == 2 * 2 and m["n_samples"] == 2
        assert m["kld_starlight_sum"] == pytest.approx(2 * m["kld_starlight_mean"])
        assert m["akld"] >= 0
        # Sample 0 against sample 1: for white noise about 1 / 25 whatever its level (the 7x7 window
        # averages ~25 pixels; `test_akld_scores_an_exact_correlated_model_above_white_noise...` has 0.043).
        if name != "model":
            assert 0.03 < m["akld_floor"] < 0.06, (name, m["akld_floor"])
    phys = result["physical_parameters"]
    assert set(phys) == {"shot", "read", "uniform", "variance_intercept"}
    assert phys["read"]["truth_key"] == "read"  # the model has its own quantisation term
    assert phys["variance_intercept"]["truth_key"] == "variance_law_b"
    for entry in phys.values():
        assert _finite(entry["learned"]) and _finite(entry["truth"]) and _finite(entry["relative_error"])
    # The untrained model holds the physics init values; relative error is (learned - truth) / truth.
    assert phys["shot"]["learned"] == pytest.approx(1e-3, rel=1e-5)
    want = (1e-3 - dataset.truth["shot"][0]) / dataset.truth["shot"][0]
    assert phys["shot"]["relative_error"][0] == pytest.approx(want, rel=1e-5)
    assert result["setup"]["residual_kld"] == "kld_noiseflow" and len(result["setup"]["bursts"]) == 2
    assert any("fixed1" in note for note in result["notes"])  # the data's pedestal, the model lacks it
    nlf = result["noise_level_function"]
    assert set(nlf) == {"real", *evaluation.MODELS} and len(nlf["real"]["variance"]) == 32
    json.dumps(evaluation.to_json(result), allow_nan=False)  # JSON-ready as it is
    text = evaluation.metrics_table(result)
    assert all(label in text for label in ("learned model", "Gaussian", "Poisson-Gaussian", "binned Gaussian"))
    # Structure metrics, their floors (samples 1 vs 0) and the descriptive statistics, for every model.
    for name in evaluation.MODELS:
        for part in ("structure", "structure_floor"):
            assert all(math.isfinite(result[name][part][k]) for k in structure.METRIC_NAMES), (name, part)
        assert result[name]["residual_structure"]["xcorr_pairs"][0] == "R-G1"
    assert result["real"]["residual_structure"]["block2_var_ratio"] == pytest.approx(1.0, abs=0.1)
    assert result["setup"]["structure_lattice_step"] is None  # raw residuals against a continuous clean
    assert len(result["baselines"]["binned_gaussian"]["sigma"]) == evaluation.BINNED_BINS
    text = evaluation.structure_table(result) + evaluation.residual_structure_table(result)
    assert text.count("floor (2 draws)") == len(evaluation.MODELS) and "corr G2-B" in text


def test_baselines_match_the_synthetic_truth():
    """Fitted on 9 bursts x 2 frames x 64 x 64 = 73,728 pixels per channel, with the fixed pattern removed.

    The sensor keeps a 32-DN black pedestal (8.6 read-noise std), so almost no noisy value is clipped at 0
    and the truth is exactly the law the fits assume. Truth: a = ``shot``, b = ``variance_law_b`` (every
    signal-independent variance term), and for the Gaussian sigma_c^2 = a mean(x_c) + b over the same
    pixels. Tolerances are ~4 standard errors, measured as the spread of the fits over 8 dataset seeds:
    a 1.2-2.5 % (R and B cover a narrower intensity range), b 0.8-1.9 %, sigma 0.2-0.35 %
    (sqrt(2 / N) / 2 = 0.26 % for Gaussian noise).
    """
    dataset = load_dataset("synthetic", **dict(OPTIONS), sensor=SensorModel(pedestal_dn=32.0))
    base = evaluation.fit_baselines(dataset, crop_size=64, frames=2)
    assert base.fixed_pattern and base.n_bursts == 9
    truth = dataset.truth
    np.testing.assert_allclose(np.asarray(base.poisson_gaussian.a), truth["shot"], rtol=0.10)
    np.testing.assert_allclose(np.asarray(base.poisson_gaussian.b), truth["variance_law_b"], rtol=0.08)
    batches = evaluation.load_batches(dataset, "train", crop_size=64, frames=2)
    mean_x = np.concatenate([b["clean"] for b in batches]).reshape(-1, 4).mean(0)
    sigma = np.sqrt(truth["shot"] * mean_x + truth["variance_law_b"])
    np.testing.assert_allclose(np.asarray(base.gaussian.sigma), sigma, rtol=0.015)


def test_a_model_without_its_own_map_gets_the_datas_pattern_as_the_baselines_do(model, dataset):
    """The shipped default has no fixed1 map; on data with a fixed pattern it is scored on its random noise,
    as the baselines are (and as the denoiser benchmark trains on it): its samples carry the cropped map."""
    from starlight_jax.generator import generate

    base = evaluation.fit_baselines(dataset, crop_size=64, frames=2, max_bursts=1)
    assert base.fixed_pattern and not (model.config.noise.fixed or model.config.noise.learned_fixed)
    samples = evaluation.draw_samples(model, dataset, base, crop_size=64, frames=2, max_bursts=1, n_samples=1,
                                      models=("model",))
    fmap = samples.offset_map[0]
    assert np.abs(fmap).mean() > 1e-3  # not vacuous: the embedded sensor's pedestal and column pattern
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
        jax.random.key(0), 0), evaluation.MODELS.index("model")), 0)
    plain = generate(model.params, key, jax.numpy.asarray(samples.clean[0]), model.config, train=False)
    np.testing.assert_allclose(samples.generated["model"][0, 0], np.clip(np.asarray(plain) + fmap, 0, 1),
                               atol=1e-6)
    # One draw: no second one to put in the real data's place, so no AKLD floor.
    assert evaluation.score_samples(samples, srgb=False)["model"]["akld_floor"] is None


def test_structure_scores_known_answers():
    """Hand-made samples: model sample 0 is 1.1 x the real residual (NLF error 0.10, spectrum 0.83 dB
    exactly); sample 1 is sample 0 again, so the floor is 0; the data lie on a 1/255 lattice, except the
    1.1 x residuals, which only the real residuals decide the bins by."""
    rng = np.random.default_rng(0)
    step = 1 / 255
    clean = np.round(rng.uniform(0.2, 0.8, (2, 1, 32, 32, 3)) / step) * step
    real_res = np.round(0.02 * rng.standard_normal((2, 3, 32, 32, 3)) / step) * step
    gen = np.stack([clean + 1.1 * real_res] * 2).astype(np.float32)
    samples = evaluation.EvalSamples(clean.astype(np.float32), (clean + real_res).astype(np.float32),
                                     {"model": gen}, np.zeros((2, 2), np.int32), ("a", "b"),
                                     np.zeros((2, 1, 32, 32, 3), np.float32))
    out = evaluation.structure_scores(samples, step=step, channel_names=("R", "G", "B"))
    assert out["setup"]["step"] == step
    m = out["model"]["structure"]
    assert m["nlf_err"] == pytest.approx(0.10, abs=1e-4) and m["spectrum_db"] == pytest.approx(0.828, abs=1e-3)
    assert m["xcorr_err"] == pytest.approx(0.0, abs=1e-6)
    assert all(out["model"]["structure_floor"][k] == pytest.approx(0.0, abs=1e-9) for k in structure.METRIC_NAMES)
    assert out["real"]["residual_structure"]["xcorr_pairs"] == ["RG", "RB", "GB"]
    ratio = out["model"]["residual_structure"]["block2_var_ratio"]
    assert ratio == pytest.approx(out["real"]["residual_structure"]["block2_var_ratio"], rel=1e-5)


def test_train_loop_evaluate_logs_the_structure_metrics(dataset):
    batches = evaluation.load_batches(dataset, "test", crop_size=64, frames=2)
    state = training.create_train_state(jax.random.key(0), CFG)
    ev = train_loop.evaluate(CFG, state.g_params, batches, jax.random.key(1))
    assert {"test_kld_mean", "test_kld_sum", *(f"test_{k}" for k in structure.METRIC_NAMES)} <= set(ev)
    assert all(math.isfinite(v) for v in ev.values())
    json.dumps(ev)


def test_channel_mismatch_raises(dataset):
    three = init_generator(jax.random.key(0), GeneratorConfig(noise=parse_noiselist("shot_read", channels=3)))
    with pytest.raises(ValueError, match="4 channels .* 3-channel"):
        evaluation.evaluate_model(three, dataset, crop_size=64, frames=2)


def test_read_is_compared_with_quantisation_folded_in_without_uniform(dataset):
    m = init_generator(jax.random.key(0), GeneratorConfig(noise=parse_noiselist("shot_read_row")))
    phys = evaluation.physical_parameters(m, dataset.truth)
    assert phys["read"]["truth_key"] == "read_with_quantisation"
    assert phys["row"]["truth_key"] == "row"
    # intercept = read + row^2 (no uniform)
    assert phys["variance_intercept"]["learned"] == pytest.approx(1e-5 + 1e-6, rel=1e-5)


def test_display_channels():
    assert plots.display_channels(("R", "G1", "G2", "B")) == [0, 1, 3]
    assert plots.display_channels(("R", "G", "B", "NIR")) == [0, 1, 2]
    assert plots.display_channels(("R", "G", "B")) == [0, 1, 2]
    assert plots.display_channels(("Y",)) == [0]


# ------------------------------------------------------------------------------------------------------
# CLIs
# ------------------------------------------------------------------------------------------------------
def test_sample_cli_writes_the_figures(run_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    _cli("sample").main(["--checkpoint", str(run_dir), "--out", str(out), "--max_bursts", "1"])
    from PIL import Image

    for name in ("images", "components", "histograms", "nlf", "power_spectra", "parameters"):
        path = out / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as im:
            assert min(im.size) > 200, (name, im.size)
    assert "| shot" in (out / "parameters.md").read_text()
    assert str(out / "images.png") in capsys.readouterr().out  # says where it wrote them


def test_sample_cli_input_with_the_wrong_channel_count_explains(run_dir, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(png)
    with pytest.raises(SystemExit) as exit_info:
        _cli("sample").main(["--checkpoint", str(run_dir), "--input", str(png), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "3 channel(s)" in err and "expects 4" in err and "--pack_rggb" in err
    assert not (tmp_path / "photo_noisy.png").exists()
    # With the mosaic it works: a 32x32 RGB image becomes a 16x16 packed RGGB frame.
    _cli("sample").main(["--checkpoint", str(run_dir), "--input", str(png), "--out", str(tmp_path), "--pack_rggb"])
    assert (tmp_path / "photo_noisy.png").read_bytes()[:8] == PNG_SIGNATURE
    assert np.load(tmp_path / "photo_noisy.npy").shape == (16, 16, 4)


def test_evaluate_cli_writes_json(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    _cli("evaluate").main(["--checkpoint", str(run_dir), "--json", str(out), "--max_bursts", "1", "--samples", "1",
                           "--max_train_bursts", "3"])
    data = json.loads(out.read_text())
    assert {"model", "gaussian", "poisson_gaussian", "physical_parameters", "baselines", "setup"} <= set(data)
    assert data["model"]["n_images"] == 2 and data["setup"]["crop_size"] == 64  # the whole 64² frames
    assert data["checkpoint"]["step"] == 0
    printed = capsys.readouterr().out
    assert "Poisson-Gaussian" in printed and "KLD starlight (mean)" in printed
    assert "block-2 KLD" in printed and "block-2 var ratio" in printed and "binned Gaussian" in printed
    assert data["model"]["structure_floor"] is None and any("floor" in n for n in data["notes"])  # 1 sample
    assert set(structure.METRIC_NAMES) <= set(data["binned_gaussian"]["structure"])


def test_largest_crop_is_the_largest_multiple_of_64_that_fits_every_frame():
    frames = lambda shape: types.SimpleNamespace(frame_shape=shape)  # noqa: E731
    assert evaluation.largest_crop(frames((241, 1024)), 64) == 192
    assert evaluation.largest_crop(frames((512, 512)), 64) == 512
    assert evaluation.largest_crop(frames((1024, 2048)), 64) == 512
    assert evaluation.largest_crop(frames((1024, 2048)), 64, cap=256) == 256
    assert evaluation.largest_crop(frames((40, 40)), 64) == 64
    assert evaluation.largest_crop(frames(None), 128) == 128


def test_evaluate_cli_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli("evaluate").main(["--checkpoint", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "not a run folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------
# Exporting a generator for synthesize (experiments/export.py, checkpoint.without_sensor_maps)
# ------------------------------------------------------------------------------------------------------
def test_export_cli_round_trip_and_default_pickup(run_dir, model, tmp_path, capsys, monkeypatch):
    from starlight_jax import generator, synthesize
    from starlight_jax.checkpoint import load_generator

    out = tmp_path / "default"
    _cli("export").main(["--checkpoint", str(run_dir), "--out", str(out), "--note", "test"])
    assert "generator.json" in capsys.readouterr().out
    exported = load_generator(out)
    assert exported.config == model.config
    jax.tree_util.tree_map(np.testing.assert_array_equal, exported.params, model.params)
    info = json.loads((out / "generator.json").read_text())["info"]
    assert info["step"] == 0 and info["note"] == "test" and "export.py" in info["command"]
    # The exported folder carries its run's config, so the tools that take a run folder take it too.
    from starlight_jax.checkpoint import load_noise_model

    loaded, cfg, loaded_info = load_noise_model(out)
    assert loaded_info["which"] == "exported" and loaded_info["step"] == 0
    assert cfg == load_noise_model(run_dir)[1] and loaded.config == model.config
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, model.params)
    # synthesize(key, clean) with no params uses the exported folder when it is the default one.
    monkeypatch.setitem(generator.DEFAULT_MODEL_DIRS, 4, out)
    clean = jax.numpy.full((32, 32, 4), 0.3)
    key = jax.random.key(5)
    generator.default_model.cache_clear()  # it caches the folder's model: start and end without this one
    try:
        np.testing.assert_array_equal(synthesize(key, clean), synthesize(key, clean, exported))
    finally:
        generator.default_model.cache_clear()


def test_without_sensor_maps_leaves_the_random_components_unchanged():
    from starlight_jax.checkpoint import without_sensor_maps

    noise = parse_noiselist("shot_read_row_fixed1", fixed_shape=(64, 64))
    fixed = 0.01 * jax.random.normal(jax.random.key(1), (64, 64, 4))
    full = init_generator(jax.random.key(0), GeneratorConfig(noise=noise), fixed_pattern=fixed)
    slim = without_sensor_maps(full)
    assert slim.config.noise.noiselist == parse_noiselist("shot_read_row").noiselist
    assert "fixed_pattern" not in slim.params["noise"]
    # Keys are split in a fixed order over all components, so dropping the map leaves the other draws alone.
    clean = jax.numpy.full((2, 64, 64, 4), 0.4)
    key = jax.random.key(2)
    with_map = generator_generate(full, key, clean, offset=jax.numpy.zeros(2, jax.numpy.int32))
    np.testing.assert_allclose(generator_generate(slim, key, clean) + fixed, with_map, atol=1e-6)
    # ... and the slim model applies to any image size.
    assert generator_generate(slim, key, jax.numpy.full((80, 48, 4), 0.4)).shape == (80, 48, 4)
    # The output rounding goes with the maps.
    rounded = init_generator(jax.random.key(0), GeneratorConfig(noise=noise, quantize=1 / 255), fixed_pattern=fixed)
    assert rounded.config.quantize == 1 / 255 and without_sensor_maps(rounded).config.quantize is None
    with pytest.raises(ValueError, match="Unet"):
        unet = GeneratorConfig(noise=noise, network="Unet", unet_widths=TINY_WIDTHS)
        without_sensor_maps(init_generator(jax.random.key(0), unet, fixed_pattern=fixed))


def generator_generate(model, key, clean, offset=None):
    """`generate` compiled (op by op, each of its ops compiles apart)."""
    from starlight_jax.generator import generate

    return jax.jit(lambda p, k, x, o: generate(p, k, x, model.config, fixed_offset=o))(model.params, key, clean, offset)


def test_evaluate_cli_compare_with_uses_the_same_keys(run_dir, tmp_path, capsys):
    # The run compared with itself: the same sample keys give the same draws, so every per-scene difference
    # is exactly 0 and every verdict a tie.
    out = tmp_path / "eval.json"
    _cli("evaluate").main(["--checkpoint", str(run_dir), "--json", str(out), "--max_bursts", "2", "--samples", "1",
                           "--max_train_bursts", "3", "--compare_with", "latest"])
    data = json.loads(out.read_text())
    comp = data["comparison"]["metrics"]
    assert set(comp) == set(structure.METRIC_NAMES) and data["comparison"]["b_checkpoint"]["step"] == 0
    for k, c in comp.items():
        assert c["n"] == 2 and c["mean_diff"] == 0.0 and c["verdict"] == "tie", k
        assert c["per_scene_a"] == c["per_scene_b"]
    assert data["compared_model"]["structure"]["xcorr_err"] == data["model"]["structure"]["xcorr_err"]
    assert "paired comparison" in capsys.readouterr().out


def test_evaluate_cli_compare_with_a_missing_checkpoint_fails(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _cli("evaluate").main(["--checkpoint", str(run_dir), "--json", str(tmp_path / "e.json"),
                               "--compare_with", "init"])
    assert e.value.code == 2 and "init" in capsys.readouterr().err
