"""``compat="starlight"`` training reproduces the original loop's oddities (SPEC §12.8, 12.14, 12.15, 12.17);
``compat="physics"`` keeps the fixes."""
import dataclasses
import functools

import jax
import numpy as np
import pytest

from legacy import train_config
from starlight_jax import train_loop, training
from starlight_jax.data import PipelineConfig, load_dataset, make_loader
from starlight_jax.models.discriminator import apply_discriminator

pytestmark = pytest.mark.usefixtures("fast_compiles")

# Real-space critic of width 8, no LPIPS: the smallest steps that still run every D call.
STAR = train_config(noiselist="shot_read", compat="starlight", network="noUnet", frames=1, crop_size=64,
                    critic_width=8, n_critic=5, discriminator_loss="real", generator_loss="none")
PHYS = dataclasses.replace(STAR, compat="physics")


def _batch(seed=0, b=1):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.1, 0.5, (b, 1, 64, 64, 4)).astype(np.float32)
    noisy = np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    return {"clean": clean, "noisy": noisy, "offset": np.zeros((b, 2), np.int32)}


def test_n_critic_counts_the_batch_index_within_the_epoch():
    # 7 batches per epoch, n_critic 5: the original steps G at batch 0 and 5 of every epoch (§12.14).
    star = [s for s in range(21) if training.generator_steps_at(STAR, s, 7)]
    assert star == [0, 5, 7, 12, 14, 19]
    assert [s for s in range(21) if training.generator_steps_at(PHYS, s, 7)] == [0, 5, 10, 15, 20]
    for n in range(22):
        assert train_loop.generator_steps(STAR, n, 7) == sum(s < n for s in star)
    with pytest.raises(ValueError, match="batches_per_epoch"):
        training.generator_steps_at(STAR, 3)


def test_starlight_order_is_the_same_every_epoch():
    dataset = load_dataset("synthetic", frame_size=(128, 128))
    same = make_loader(dataset, "train", PipelineConfig(batch_size=1, crop_size=64, frames=1, reshuffle=False))
    new = make_loader(dataset, "train", PipelineConfig(batch_size=1, crop_size=64, frames=1))
    try:
        assert all(np.array_equal(same.order(0), same.order(e)) for e in range(1, 4))
        assert not np.array_equal(new.order(0), new.order(1))
        np.testing.assert_array_equal(same.order(0), new.order(0))
        # crops still change with the epoch (only the order is the original's bug)
        assert not np.array_equal(same.batch_at(0, 0)["offset"], same.batch_at(1, 0)["offset"])
    finally:
        same.close()
        new.close()


# Compiled once: op by op, each first call of the critic compiles its every op apart (~8 s).
_apply = jax.jit(apply_discriminator, static_argnames=("update_stats", "sigmoid", "dtype"))


def _advanced(cfg, d_params, sn, n, example):
    for _ in range(n):
        sn = _apply(d_params, sn, example, update_stats=True, sigmoid=cfg.sigmoid)[1]
    return sn


@pytest.mark.parametrize("cfg,d_calls,g_calls", [(STAR, 3, 1), (PHYS, 1, 0)], ids=["starlight", "physics"])
def test_spectral_norm_advances_per_d_call(cfg, d_calls, g_calls):
    state = training.create_train_state(jax.random.key(0), cfg)
    batch = _batch()
    example = training.prepare(cfg, batch["noisy"], batch["clean"])[0][:1]
    after_d, metrics = jax.jit(functools.partial(training.d_step, cfg))(state, batch)
    expect = _advanced(cfg, state.d_params, state.sn_state, d_calls, example)
    for name in expect:
        np.testing.assert_allclose(after_d.sn_state[name]["u"], expect[name]["u"], rtol=1e-5, atol=1e-6)
    # D(real) is scored with the state of the first call (the original advances before it scores)
    first = _advanced(cfg, state.d_params, state.sn_state, 1, example)
    real_in = training.prepare(cfg, batch["noisy"], batch["clean"])[0]
    d_real = _apply(state.d_params, first, real_in, update_stats=False)[0].mean()
    np.testing.assert_allclose(metrics["d_real"], d_real, rtol=1e-5)
    after_g, _ = jax.jit(functools.partial(training.g_step, cfg))(after_d, batch)
    expect_g = _advanced(cfg, after_d.d_params, after_d.sn_state, g_calls, example)
    for name in expect_g:
        np.testing.assert_allclose(after_g.sn_state[name]["u"], expect_g[name]["u"], rtol=1e-5, atol=1e-6)
    if d_calls == 1:  # physics: the step's power iteration differs from three
        three = _advanced(cfg, state.d_params, state.sn_state, 3, example)
        name = next(iter(three))
        assert not np.allclose(after_d.sn_state[name]["u"], three[name]["u"], rtol=1e-4, atol=1e-6)


def test_starlight_fixed_pattern_offset_is_random_per_call_in_training():
    fixed = np.random.default_rng(1).normal(0, 0.01, (128, 128, 4)).astype(np.float32)
    star = train_config(noiselist="fixed1", compat="starlight", network="noUnet", frames=1, crop_size=64)
    phys = dataclasses.replace(star, compat="physics")
    batch = _batch()
    moved = {**batch, "offset": np.full((1, 2), 37, np.int32)}
    keys = jax.random.split(jax.random.key(3), 1)
    for cfg, ignores in ((star, True), (phys, False)):
        params = training.create_train_state(jax.random.key(0), cfg, fixed_pattern=fixed).g_params
        a = np.asarray(training.generate_batch(cfg, params, keys, batch))
        b = np.asarray(training.generate_batch(cfg, params, keys, moved))
        assert np.array_equal(a, b) == ignores, cfg.compat
        # evaluation keeps the crop's offset in both modes
        a = np.asarray(training.generate_batch(cfg, params, keys, batch, train=False))
        b = np.asarray(training.generate_batch(cfg, params, keys, moved, train=False))
        assert not np.array_equal(a, b)
    # and the random offset differs between calls (keys)
    params = training.create_train_state(jax.random.key(0), star, fixed_pattern=fixed).g_params
    other = jax.random.split(jax.random.key(4), 1)
    assert not np.array_equal(np.asarray(training.generate_batch(star, params, keys, batch)),
                              np.asarray(training.generate_batch(star, params, other, batch)))
