"""The denoiser of issue #8: shapes, training, jit, data parallelism, save/load, the two CLIs end to end."""
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from starlight_jax.denoise import (DenoiserConfig, DenoiseTrainConfig, baseline_source, create_train_state,
                                   denoise, eval_step, init_denoiser, load_denoiser, read_image, save_denoiser,
                                   train_step, write_image)
from starlight_jax.denoise.benchmark_config import METHODS
from legacy import train_config
from clis import load_cli

pytestmark = pytest.mark.usefixtures("fast_compiles")
REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(depth=3, width=8)


def _cli(name):
    return load_cli(name, "denoise_test")


def _smooth(key, shape):
    """Smooth random images in [0.1, 0.9] (a 4x4 grid upsampled), so denoising has something to learn."""
    coarse = jax.random.uniform(key, (*shape[:-3], 4, 4, shape[-1]), minval=0.1, maxval=0.9)
    return jax.image.resize(coarse, shape, "linear")


@pytest.mark.parametrize("channels,residual,lead", [(1, True, ()), (3, False, (2,)), (4, True, (2, 3))])
def test_shapes_for_several_channel_counts(channels, residual, lead):
    cfg = DenoiserConfig(channels=channels, residual=residual, **TINY)
    params = init_denoiser(jax.random.key(0), cfg)
    shape = (*lead, 17, 23, channels)
    y = eval_step(params, jax.random.uniform(jax.random.key(1), shape), config=cfg)
    assert y.shape == shape and y.dtype == jnp.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_bad_inputs_and_configs_raise():
    cfg = DenoiserConfig(channels=3, **TINY)
    params = init_denoiser(jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="4 channel.*built for 3"):
        denoise(params, jnp.zeros((8, 8, 4)), cfg)
    with pytest.raises(ValueError, match="depth"):
        DenoiserConfig(depth=1)
    with pytest.raises(ValueError, match="architecture"):
        DenoiserConfig(architecture="unet")


def test_train_step_decreases_l1_on_gaussian_toy():
    cfg = DenoiserConfig(channels=1, depth=4, width=16)
    tc = DenoiseTrainConfig(lr=3e-3)
    traces = []

    def counted(*args):
        traces.append(1)  # runs only while tracing
        return train_step(*args, config=cfg, train_config=tc)

    step = jax.jit(counted)
    state = create_train_state(jax.random.key(0), cfg, tc)
    losses = []
    for s in range(40):
        k1, k2 = jax.random.split(jax.random.key(100 + s))
        clean = _smooth(k1, (4, 32, 32, 1))
        noisy = clean + 0.1 * jax.random.normal(k2, clean.shape)
        state, m = step(state, {"clean": clean, "noisy": noisy}, jax.random.key(s))
        losses.append(float(m["loss"]))
        assert float(m["l1_in"]) == pytest.approx(float(jnp.mean(jnp.abs(noisy - clean))), rel=1e-5)
    assert int(state.step) == 40 and len(traces) == 1  # no recompilation after the first step
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses


def test_eval_step_jit_equals_eager():
    cfg = DenoiserConfig(channels=3, **TINY)
    params = init_denoiser(jax.random.key(0), cfg)
    x = jax.random.uniform(jax.random.key(1), (2, 24, 24, 3))
    with jax.disable_jit():
        eager = np.asarray(denoise(params, x, cfg))
    np.testing.assert_allclose(np.asarray(eval_step(params, x, config=cfg)), eager, atol=1e-5)


def test_synthesised_pairs_add_the_fixed_pattern_at_the_offset():
    from starlight_jax.baselines import GaussianBaseline
    from starlight_jax.denoise.train import make_noisy

    fp = jax.random.uniform(jax.random.key(0), (20, 24, 2), maxval=0.1)
    src = baseline_source("gaussian", GaussianBaseline(jnp.zeros(2)), fp)  # sigma 0: noisy = clean + fp crop
    clean = jnp.full((2, 3, 8, 8, 2), 0.5)
    offset = jnp.array([[0, 0], [5, 7]], jnp.int32)
    noisy = make_noisy({"clean": clean, "offset": offset}, jax.random.key(1), src.params, noise_fn=src.fn)
    np.testing.assert_allclose(noisy[1, 2], 0.5 + fp[5:13, 7:15], atol=1e-6)
    np.testing.assert_allclose(noisy[0, 0], 0.5 + fp[:8, :8], atol=1e-6)


def test_data_parallel_matches_one_device():
    from starlight_jax.baselines import PoissonGaussianBaseline
    from starlight_jax.parallel import DataParallel

    assert jax.local_device_count() >= 4, "conftest.py sets 4 fake CPU devices"
    cfg, tc = DenoiserConfig(channels=2, **TINY), DenoiseTrainConfig()
    src = baseline_source("poisson_gaussian", PoissonGaussianBaseline(jnp.full(2, 0.01), jnp.full(2, 1e-4)))
    clean = np.asarray(_smooth(jax.random.key(3), (4, 2, 16, 16, 2)))
    batch = {"clean": clean, "noisy": clean, "offset": np.zeros((4, 2), np.int32)}
    fn = functools.partial(train_step, config=cfg, train_config=tc, noise_fn=src.fn)
    out = {}
    for name, dp in (("one", DataParallel("shard", jax.local_devices()[:1])),
                     ("shard", DataParallel("shard", jax.local_devices()[:4])),
                     ("pmap", DataParallel("pmap", jax.local_devices()[:4]))):
        state = dp.put_state(create_train_state(jax.random.key(0), cfg, tc))
        step = dp.step(fn, replicated_args=2)
        for s in range(2):
            state, m = step(state, dp.put_batch(batch), jax.random.key(s), src.params)
        out[name] = (dp.metrics(m)["loss"], jax.device_get(dp.get_state(state).params))
    for mode in ("shard", "pmap"):
        assert out[mode][0] == pytest.approx(out["one"][0], rel=1e-5), mode
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), out[mode][1], out["one"][1])


def test_save_load_round_trip_and_errors(tmp_path):
    cfg = DenoiserConfig(channels=3, depth=4, width=8, residual=False)
    params = init_denoiser(jax.random.key(0), cfg)
    save_denoiser(tmp_path / "d", params, cfg, meta={"method": "real", "psnr": np.float32(30.5)})
    params2, cfg2, meta = load_denoiser(tmp_path / "d")
    assert cfg2 == cfg and meta == {"method": "real", "psnr": 30.5}
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
    with pytest.raises(FileNotFoundError, match="not a saved denoiser"):
        load_denoiser(tmp_path / "nothing")
    doc = json.loads((tmp_path / "d" / "config.json").read_text())
    doc["denoiser"]["width"] = 16
    (tmp_path / "d" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_denoiser(tmp_path / "d")


@pytest.mark.parametrize("bits", [8, 16])
def test_denoise_cli_keeps_size_and_bit_depth(tmp_path, bits):
    cfg = DenoiserConfig(channels=3, **TINY)
    save_denoiser(tmp_path / "d", init_denoiser(jax.random.key(0), cfg), cfg)
    img = np.random.default_rng(0).uniform(size=(37, 29, 3)).astype(np.float32)
    write_image(tmp_path / "in.png", img, bits=bits)
    back, b = read_image(tmp_path / "in.png")  # the PNG writer round-trips through the project's reader
    assert b == bits and np.abs(back - img).max() <= 0.5 / (2 ** bits - 1) + 1e-6
    _cli("denoise").main(["--checkpoint", str(tmp_path / "d"), "--input", str(tmp_path / "in.png"),
                          "--output", str(tmp_path / "out.png")])
    out, b = read_image(tmp_path / "out.png")
    assert out.shape == (37, 29, 3) and b == bits


def test_denoise_cli_channel_mismatch_is_a_clear_error(tmp_path, capsys):
    cfg = DenoiserConfig(channels=4, **TINY)
    save_denoiser(tmp_path / "d", init_denoiser(jax.random.key(0), cfg), cfg)
    write_image(tmp_path / "in.png", np.zeros((16, 16, 3)))
    with pytest.raises(SystemExit):
        _cli("denoise").main(["--checkpoint", str(tmp_path / "d"), "--input", str(tmp_path / "in.png"),
                              "--output", str(tmp_path / "out.png")])
    assert "has 3 channel(s) but the denoiser" in capsys.readouterr().err


def _fake_noise_run(root: pathlib.Path) -> pathlib.Path:
    """A noise-model run folder as experiments/train.py writes it (config.json + latest/<step>), untrained."""
    from starlight_jax.generator import init_generator
    from starlight_jax.train_loop import RunConfig, _save, _save_config, checkpoint_managers

    workdir = root / "noise_run"
    cfg = train_config(noiselist="shot_read_uniform", network="noUnet", crop_size=64, frames=2, physics_lr=0.02)
    run = RunConfig(workdir=str(workdir), dataset="synthetic", dataset_options=(("frame_size", (64, 64)),))
    _save_config(workdir, cfg, run)
    latest, _ = checkpoint_managers(workdir, 1)
    _save(latest, 1, {"g_params": init_generator(jax.random.key(0), cfg.generator).params}, {"epoch": 0})
    return workdir


def test_benchmark_main_end_to_end_then_denoise_cli(tmp_path, capsys):
    _fake_noise_run(tmp_path / "runs")
    out = tmp_path / "bench"
    result = _cli("denoise_benchmark").main([
        "--root", str(tmp_path / "runs"), "--preset", "tiny", "--seeds", "2", "--batch_images", "4", "--frames", "2",
        "--test_frames", "1", "--max_test", "1", "--max_train_bursts", "2", "--width", "3",
        "--methods", ",".join(METHODS), "--devices", "1", "--log_every", "0", "--out", str(out)])
    doc = json.loads((out / "benchmark.json").read_text())
    assert set(doc) >= {"setup", "noise_checkpoint", "noisy_input", "results", "baselines", "notes", "figure"}
    assert list(doc["results"]) == list(METHODS)
    for r in doc["results"].values():
        assert set(r) >= {"label", "psnr", "ssim", "psnr_gap_to_real", "ssim_gap_to_real", "train_seconds",
                          "saved_to"}
        assert np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1
    assert doc["results"]["real"]["psnr_gap_to_real"] == 0
    assert doc["setup"]["seeds"] == [0, 1] and doc["setup"]["denoiser"]["width"] == 3  # flag over preset
    for m, r in doc["results"].items():  # every seed's numbers are kept, the summary is their mean
        assert [x["seed"] for x in r["per_seed"]] == [0, 1], m
        assert r["psnr"] == pytest.approx(np.mean([x["psnr"] for x in r["per_seed"]]))
        assert r["psnr_spread"] == pytest.approx(np.ptp([x["psnr"] for x in r["per_seed"]]))
        assert isinstance(r["ties"], list) and isinstance(r["tie_with_noisy"], bool)
        assert len(r["per_seed"][1]["psnr_per_image"]) == 1
    assert (out / "denoisers" / "real_seed1" / "params.npz").is_file()
    printed = capsys.readouterr().out
    assert "\ntest set: synthetic test split, 1 images;" in printed and "2 seed(s) [0, 1]" in printed
    assert doc["setup"]["n_test_images"] == 1 and doc["noisy_input"]["psnr"] > 0
    assert doc["noise_checkpoint"]["noiselist"] == "shot_read_uniform"
    assert (out / "denoised.png").is_file() and result["results"]["model"]["psnr"] == doc["results"]["model"]["psnr"]
    # The saved denoiser (a) works on a packed-raw .npy of any size.
    raw = np.random.default_rng(0).uniform(0, 0.5, (21, 30, 4)).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    den = _cli("denoise").main(["--checkpoint", str(out / "denoisers" / "model"), "--input",
                                str(tmp_path / "raw.npy"), "--output", str(tmp_path / "den.npy")])
    assert np.load(tmp_path / "den.npy").shape == (21, 30, 4) and den.shape == (21, 30, 4)


# ------------------------------------------------------------------------------------------------------
# Benchmark: seeds, spread and ties, presets, schedule, the binned-Gaussian source
# ------------------------------------------------------------------------------------------------------
def test_spread_and_tie_rule_on_made_up_numbers():
    from starlight_jax.denoise.benchmark import is_tie, spread

    assert spread([31.2]) == 0 and spread([30.0, 30.3, 30.1]) == pytest.approx(0.3)
    a = [30.0, 30.3]  # mean 30.15, spread 0.3
    assert is_tie(a, [30.3, 30.4])  # gap 0.2 <= the larger spread 0.3 (b's own spread is only 0.1)
    assert is_tie([30.3, 30.4], a)  # symmetric
    assert not is_tie(a, [30.5, 30.6])  # gap 0.4 > 0.3
    assert not is_tie([30.0, 30.01], [30.1, 30.11])  # tight seeds: a 0.1 dB gap is real
    assert is_tie(a, [30.2]) and not is_tie(a, [29.8])  # a seedless reference (noisy input): spread 0
    assert is_tie([30.0], [30.0]) and not is_tie([30.0], [30.01])


def test_compare_fills_gaps_and_ties_and_none_with_one_seed():
    from starlight_jax.denoise.benchmark import _compare, _summarise

    def runs(psnrs):
        return [{"seed": i, "psnr": p, "ssim": 0.9, "psnr_per_image": [p], "ssim_per_image": [0.9],
                 "train_l1_final": 0.01, "train_input_psnr": 30.0, "train_seconds": 1.0, "saved_to": None}
                for i, p in enumerate(psnrs)]

    noisy = {"psnr": 29.0, "ssim": 0.8}
    res = {"poisson_gaussian": _summarise("poisson_gaussian", runs([30.0, 30.3])),
           "binned_gaussian": _summarise("binned_gaussian", runs([30.3, 30.4])),
           "real": _summarise("real", runs([30.9, 31.0]))}
    _compare(res, noisy, 2)
    pg = res["poisson_gaussian"]
    assert pg["psnr"] == pytest.approx(30.15) and pg["psnr_spread"] == pytest.approx(0.3)
    assert pg["psnr_gap_to_real"] == pytest.approx(-0.8) and pg["tie_with_real"] is False
    assert pg["psnr_gap_to_noisy"] == pytest.approx(1.15) and pg["tie_with_noisy"] is False
    assert pg["ties"] == ["binned_gaussian"] and res["real"]["ties"] == []
    assert res["real"]["tie_with_real"] is True
    one = {"real": _summarise("real", runs([30.9]))}
    _compare(one, noisy, 1)
    assert one["real"]["ties"] is None and one["real"]["tie_with_noisy"] is None


def test_presets_and_overrides():
    from starlight_jax.denoise.benchmark_config import PRESETS, BenchmarkConfig, preset_config

    assert preset_config("standard") == BenchmarkConfig()  # the library default is the standard preset
    # "long" is the standard net and schedule, trained 1000 steps (the steps override gives the same config)
    assert preset_config("long") == preset_config("standard", steps=1000) != BenchmarkConfig()
    cfg = preset_config("tiny", steps=7, width=None, lr=3e-3, seeds=3)
    assert cfg.steps == 7 and cfg.seeds == 3 and cfg.train.lr == 3e-3
    assert cfg.denoiser.width == PRESETS["tiny"]["width"] and cfg.crop_size == PRESETS["tiny"]["crop_size"]
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("huge")
    with pytest.raises(ValueError, match="unknown benchmark option"):
        preset_config("tiny", widht=3)
    with pytest.raises(ValueError, match="seeds must be a positive int"):
        preset_config("tiny", seeds=0)


def test_cosine_schedule_warms_up_decays_to_zero_and_is_sized_by_train_denoiser():
    tc = DenoiseTrainConfig(lr=2e-3, schedule="cosine", warmup_steps=10, decay_steps=110)
    lr = tc.learning_rate()
    assert float(lr(0)) == 0 and float(lr(5)) == pytest.approx(1e-3) and float(lr(10)) == pytest.approx(2e-3)
    assert float(lr(60)) == pytest.approx(1e-3, rel=1e-5) and float(lr(110)) == 0
    assert DenoiseTrainConfig(lr=1e-3).learning_rate() == 1e-3
    with pytest.raises(ValueError, match="needs decay_steps"):
        DenoiseTrainConfig(schedule="cosine").optimizer()
    with pytest.raises(ValueError, match="schedule must be one of"):
        DenoiseTrainConfig(schedule="step")
    # train_denoiser sizes the decay to its steps: the same as decay_steps=steps, not as a longer decay.
    from starlight_jax.denoise import train_denoiser
    from starlight_jax.parallel import DataParallel

    cfg = DenoiserConfig(channels=1, **TINY)
    clean = np.asarray(_smooth(jax.random.key(0), (2, 1, 16, 16, 1)))
    noisy = clean + 0.1 * np.asarray(jax.random.normal(jax.random.key(1), clean.shape))

    def train(**kw):
        params, _ = train_denoiser(iter([{"clean": clean, "noisy": noisy}] * 3), 3, config=cfg, seed=0,
                                   parallel=DataParallel("shard", jax.local_devices()[:1]), log=lambda *_: None,
                                   train_config=DenoiseTrainConfig(lr=1e-2, schedule="cosine", **kw))
        return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(params)])

    auto = train()
    np.testing.assert_allclose(auto, train(decay_steps=3), atol=1e-7)
    assert np.abs(auto - train(decay_steps=100)).max() > 1e-5


def test_binned_gaussian_source_adds_its_mean():
    from starlight_jax.baselines import BinnedGaussianBaseline
    from starlight_jax.denoise.train import make_noisy

    mu = jnp.stack([jnp.linspace(0.0, 0.1, 4)] * 2, axis=-1)  # mean 0 .. 0.1 over 4 bins, 2 channels
    src = baseline_source("binned_gaussian", BinnedGaussianBaseline(mu, jnp.zeros((4, 2))))
    clean = jnp.full((1, 2, 8, 8, 2), 0.625)  # centre of bin 2 of 4: mu = 0.1 * 2 / 3
    noisy = make_noisy({"clean": clean}, jax.random.key(0), src.params, noise_fn=src.fn)
    np.testing.assert_allclose(noisy, 0.625 + 0.2 / 3, atol=1e-6)


def test_benchmark_seeds_differ_and_the_same_seed_repeats():
    from starlight_jax.data import load_dataset
    from starlight_jax.denoise.benchmark import run_benchmark
    from starlight_jax.denoise.benchmark_config import preset_config

    data = load_dataset("synthetic", frame_size=(64, 64))
    methods = ("poisson_gaussian", "real")
    kw = dict(methods=methods, batch_images=4, frames=2, test_frames=1, max_test=1, max_train_bursts=2, devices=1,
              log_every=0)
    quiet = lambda *_: None  # noqa: E731
    two, _ = run_benchmark(data, config=preset_config("tiny", seeds=2, **kw), log=quiet)
    again, _ = run_benchmark(data, config=preset_config("tiny", seed=1, seeds=1, **kw), log=quiet)
    assert two["setup"]["seeds"] == [0, 1] and again["setup"]["seeds"] == [1]
    for m in methods:
        r = two["results"][m]
        runs = r["per_seed"]
        assert [x["seed"] for x in runs] == [0, 1]
        assert abs(runs[0]["psnr"] - runs[1]["psnr"]) > 1e-4  # another init and other batches
        assert r["psnr"] == pytest.approx((runs[0]["psnr"] + runs[1]["psnr"]) / 2)
        assert r["psnr_spread"] == pytest.approx(abs(runs[0]["psnr"] - runs[1]["psnr"]))
        np.testing.assert_allclose(again["results"][m]["per_seed"][0]["psnr_per_image"], runs[1]["psnr_per_image"],
                                   rtol=0, atol=1e-6)  # seed 1 alone = seed 1 of the pair
    assert isinstance(two["results"]["real"]["ties"], list) and again["results"]["real"]["ties"] is None


def test_binned_gaussian_source_with_a_fixed_pattern_adds_both():
    # The benchmark passes the data's fixed pattern to every baseline on the embedded data: the binned
    # Gaussian's mean must not be replaced by it (evaluation adds both; so must the denoiser's pairs).
    from starlight_jax.baselines import BinnedGaussianBaseline, sample_baseline
    from starlight_jax.denoise.train import make_noisy

    mu = jnp.stack([jnp.linspace(0.0, 0.1, 4)] * 2, axis=-1)
    fp = jax.random.uniform(jax.random.key(0), (20, 24, 2), maxval=0.1)
    base = BinnedGaussianBaseline(mu, jnp.zeros((4, 2)))
    src = baseline_source("binned_gaussian", base, fp)
    clean = jnp.full((2, 1, 8, 8, 2), 0.625)
    offset = jnp.array([[0, 0], [5, 7]], jnp.int32)
    noisy = make_noisy({"clean": clean, "offset": offset}, jax.random.key(1), src.params, noise_fn=src.fn)
    np.testing.assert_allclose(noisy[1, 0], 0.625 + 0.2 / 3 + fp[5:13, 7:15], atol=1e-6)
    # one sampler for every caller: without an offset map it is the baseline's own `sample`
    key = jax.random.key(2)
    wide = BinnedGaussianBaseline(mu, jnp.full((4, 2), 0.02))
    np.testing.assert_array_equal(sample_baseline(wide, key, clean), wide.sample(key, clean))
