"""Tests for the WGAN-GP steps (starlight_jax.training), data parallelism, the training loop and its CLI.

Shapes are the smallest the fixed-size critic allows: 64×64 crops, one or two frames, so one or two
64×64 patches per burst, and the ``noUnet`` generator, with a width-8 critic (the losses, not the width,
are under test). Compiling the critic's steps is most of the time: XLA's optimisations are skipped
(``fast_compiles``: a width-8 critic step then compiles in 10 s instead of 19 s and runs in 0.16 s
instead of 0.13 s; a width-64 one would run ~7x slower) and tests share compiled steps (fixtures
``shared_step_compiles`` and ``one_device``).
"""

import contextlib
import dataclasses
import functools
import math
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from starlight_jax import noise as noise_lib
from starlight_jax import losses, train_loop, training
from starlight_jax.data import load_dataset
from starlight_jax.data_init import data_init
from starlight_jax.data.pipeline import BurstLoader
from starlight_jax.models.discriminator import apply_discriminator
from starlight_jax.parallel import DataParallel
import legacy
from clis import load_cli

pytestmark = pytest.mark.usefixtures("fast_compiles")


def train_config(**fields) -> training.TrainConfig:
    """`legacy.train_config` with a width-8 critic unless given."""
    return legacy.train_config(**{"critic_width": 8, **fields})


REPO = pathlib.Path(__file__).resolve().parents[1]
# Physical shot+read noise, Fourier critic input, 2 frames (2 patches per burst): the steps of the toy and
# reference tests and of the training-loop tests, which thus share one compiled d_step.
CFG = train_config(noiselist="shot_read", network="noUnet", frames=2, crop_size=64, n_critic=2)
# The parallel test: a global batch of 4 one-frame bursts.
PAR_CFG = dataclasses.replace(CFG, frames=1)
GLOBAL_BATCH = 4
K = 2  # training-loop steps per half run; CFG.n_critic = 2 puts a generator step in each half


def _toy_batch(b, t, seed):
    """A separable toy: real bursts bright (~0.8), clean input (hence the generator's fakes) dark (~0.1)."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.05, 0.15, (b, t, 64, 64, 4)).astype(np.float32)
    noisy = (0.8 + 0.02 * rng.standard_normal((b, t, 64, 64, 4))).astype(np.float32)
    return {"clean": clean, "noisy": noisy, "offset": np.zeros((b, 2), np.int32)}


def _tree_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(jax.device_get(a))
    leaves_b, tree_b = jax.tree_util.tree_flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)


@contextlib.contextmanager
def _count_compiles():
    """Counts XLA compilations in the block: ``with _count_compiles() as n: ...; n[0]``."""
    count = [0]

    def listener(event, duration, **kwargs):
        count[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module", autouse=True)
def shared_step_compiles():
    """`DataParallel.step` (so each `train_and_evaluate` call) jits anew; let calls with the same step
    function, config, devices and options reuse one compiled program. Only compile time is saved: the
    program is the same."""
    cache, original = {}, DataParallel.step

    def step(self, fn, *args, **kwargs):
        if not isinstance(fn, functools.partial):
            return original(self, fn, *args, **kwargs)
        key = (self.mode, tuple(self.devices), fn.func, fn.args, tuple(sorted(fn.keywords.items())), args,
               tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(self, fn, *args, **kwargs)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DataParallel, "step", step)
        yield


@pytest.fixture(scope="module")
def initial_state():
    """``create_train_state(key(0), CFG)`` on the host (numpy), so each placement makes its own copy. It is
    also PAR_CFG's (frames play no part in it) and the state a run with seed 0 starts from."""
    return jax.device_get(training.create_train_state(jax.random.key(CFG.seed), CFG))


@pytest.fixture(scope="module")
def one_device():
    return DataParallel("shard", jax.local_devices()[:1])


# ------------------------------------------------------------------------------------------------------
# Loss values against hand-computed references
# ------------------------------------------------------------------------------------------------------
def test_d_step_matches_hand_computed_loss_with_linear_critic(monkeypatch):
    """D(x) = <x, w> per patch and a noise-free generator: every term of the critic loss is closed-form."""
    def linear_critic(params, sn_state, x, *, update_stats, sigmoid=False, dtype=None):
        return jnp.sum(x * params["w"], axis=(1, 2, 3)), sn_state

    monkeypatch.setattr(losses, "apply_discriminator", linear_critic)
    # compat="starlight" stores the noise scales as used, so shot = read = 0 makes the fakes the clean input.
    cfg = train_config(noiselist="shot_read", compat="starlight", network="noUnet",
                               discriminator_loss="real", frames=1, crop_size=64, lambda_gp=10.0)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 1.5, (64, 64, 4))
    w = (1.7 * w / np.linalg.norm(w)).astype(np.float32)  # ||w|| = 1.7: GP = 0.7² per patch
    state = training.TrainState(
        step=jnp.zeros((), jnp.int32), key=jax.random.key_data(jax.random.key(0)),
        g_params={"noise": {"shot": jnp.float32(0), "read": jnp.float32(0)}}, d_params={"w": jnp.asarray(w)},
        sn_state={}, g_opt=None, d_opt=optax.adam(cfg.lr, cfg.b1, cfg.b2).init({"w": w}))  # g_opt: unused by d_step
    batch = _toy_batch(b=2, t=1, seed=1)
    new_state, m = jax.jit(functools.partial(training.d_step, cfg))(state, batch)

    w64 = w.astype(np.float64)
    real = np.einsum("bhwc,hwc->b", batch["noisy"][:, 0].astype(np.float64), w64)
    fake = np.einsum("bhwc,hwc->b", batch["clean"][:, 0].astype(np.float64), w64)
    norm = np.linalg.norm(w64)
    gp = (norm - 1) ** 2
    np.testing.assert_allclose(m["d_real"], real.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["d_fake"], fake.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["gp"], gp, rtol=1e-5)
    np.testing.assert_allclose(m["d_loss"], -real.mean() + fake.mean() + 10.0 * gp, rtol=1e-5)
    # The first Adam step moves each weight by lr·g/(|g| + 1e-8) against the hand gradient g.
    grad = (-batch["noisy"][:, 0].mean(0) + batch["clean"][:, 0].mean(0)).astype(np.float64) \
        + 10.0 * 2 * (norm - 1) * w64 / norm
    step = np.asarray(new_state.d_params["w"], np.float64) - w64
    np.testing.assert_allclose(step, -cfg.lr * grad / (np.abs(grad) + 1e-8), rtol=1e-3, atol=1e-9)
    assert int(new_state.step) == 1


@pytest.mark.parametrize("condition", ["clean", "residual"])
def test_conditional_critic_matches_hand_computed_loss(monkeypatch, condition):
    """A linear critic on concat(clean, x): D = <clean, w_c> + <x, w_x>, with x the noisy patch or the
    residual. The penalty differentiates with respect to x only, so it is (|w_x| - 1)², whatever w_c is."""
    def linear_critic(params, sn_state, x, *, update_stats, sigmoid=False, dtype=None):
        return jnp.sum(x * params["w"], axis=(1, 2, 3)), sn_state

    monkeypatch.setattr(losses, "apply_discriminator", linear_critic)
    cfg = train_config(noiselist="shot_read", compat="starlight", network="noUnet",
                               discriminator_loss="real", critic_condition=condition, frames=1, crop_size=64)
    assert cfg.d_channels == 8
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 1.5, (64, 64, 8))
    w[..., 4:] *= 1.3 / np.linalg.norm(w[..., 4:])  # |w_x| = 1.3; |w_c| is about 60
    w = w.astype(np.float32)
    state = training.TrainState(
        step=jnp.zeros((), jnp.int32), key=jax.random.key_data(jax.random.key(0)),
        g_params={"noise": {"shot": jnp.float32(0), "read": jnp.float32(0)}}, d_params={"w": jnp.asarray(w)},
        sn_state={}, g_opt=None, d_opt=optax.adam(cfg.lr, cfg.b1, cfg.b2).init({"w": w}))
    batch = _toy_batch(b=2, t=1, seed=4)
    _, m = jax.jit(functools.partial(training.d_step, cfg))(state, batch)

    w64 = w.astype(np.float64)
    clean, noisy = batch["clean"][:, 0].astype(np.float64), batch["noisy"][:, 0].astype(np.float64)
    fake = clean  # shot = read = 0
    x_real, x_fake = (noisy - clean, fake - clean) if condition == "residual" else (noisy, fake)
    d = lambda x: (np.einsum("bhwc,hwc->b", clean, w64[..., :4]) + np.einsum("bhwc,hwc->b", x, w64[..., 4:]))  # noqa: E731
    np.testing.assert_allclose(m["d_real"], d(x_real).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["d_fake"], d(x_fake).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["gp"], (1.3 - 1) ** 2, rtol=1e-4)


def test_generator_learning_rate_decays_by_cosine_to_floor():
    """With decay_steps, Adam's step on a constant gradient (size lr_t) follows the cosine schedule of the
    generator's rates; the critic's rate stays constant."""
    cfg = train_config(noiselist="shot_read", network="noUnet", crop_size=64, frames=1,
                               physics_lr=1e-2, decay_steps=10, decay_floor=0.1)
    params = {"noise": {"shot": jnp.float32(0.0), "read": jnp.float32(0.0)}}
    g_tx, d_tx = training._optimizers(cfg, params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    opt, d_opt, sizes, d_sizes = g_tx.init(params), d_tx.init(params), [], []
    for _ in range(12):
        updates, opt = g_tx.update(grads, opt, params)
        sizes.append(-float(updates["noise"]["shot"]))
        d_updates, d_opt = d_tx.update(grads, d_opt, params)
        d_sizes.append(-float(d_updates["noise"]["shot"]))
    t = np.minimum(np.arange(12), 10)
    expected = 1e-2 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / 10)))
    np.testing.assert_allclose(sizes, expected, rtol=1e-4)
    np.testing.assert_allclose(d_sizes, cfg.lr, rtol=1e-4)


def test_nsgd_keeps_the_direction_of_the_physics_gradient():
    """A steady gradient (3, 4) on (shot, read): nsgd steps physics_lr along (0.6, 0.8), where Adam steps
    physics_lr along (1, 1) (each scalar normalised on its own)."""
    params = {"noise": {"shot": jnp.float32(0.0), "read": jnp.float32(0.0)}}
    grads = {"noise": {"shot": jnp.float32(3.0), "read": jnp.float32(4.0)}}
    steps = {}
    for name in ("nsgd", "adam"):
        cfg = train_config(noiselist="shot_read", network="noUnet", crop_size=64, frames=1,
                                   physics_lr=1e-2, physics_optimizer=name)
        g_tx, _ = training._optimizers(cfg, params)
        opt = g_tx.init(params)
        for _ in range(100):  # the EMA (0.9) of nsgd has settled after 100 steps: 0.9^100 ~ 3e-5
            updates, opt = g_tx.update(grads, opt, params)
        steps[name] = [-float(updates["noise"]["shot"]), -float(updates["noise"]["read"])]
    np.testing.assert_allclose(steps["nsgd"], [6e-3, 8e-3], rtol=1e-3)
    np.testing.assert_allclose(steps["adam"], [1e-2, 1e-2], rtol=1e-3)


def test_generator_steps_follow_warmup_and_n_critic():
    cfg = train_config(noiselist="shot_read", network="noUnet", crop_size=64, n_critic=2, critic_warmup=3)
    assert [s for s in range(10) if training.generator_steps_at(cfg, s)] == [3, 5, 7, 9]
    assert [s for s in range(4) if training.generator_steps_at(CFG, s)] == [0, 2]  # no warm-up: the original
    with pytest.raises(ValueError, match="critic_warmup"):
        dataclasses.replace(cfg, critic_warmup=-1)


def test_data_init_fits_the_variance_law_and_seeds_the_state():
    """data_init on y = x + sqrt(a x + b) ε recovers (a, b) (the fit's own accuracy is tested in
    test_baselines; 2·10⁵ pixels per channel give ~1 % here); create_train_state stores them as logs."""
    a, b = 4e-3, 2e-4
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.05, 0.9, (8, 128, 64, 4))
    noisy = clean + np.sqrt(a * clean + b) * rng.standard_normal(clean.shape)
    cfg = train_config(noiselist="shot_read_uniform", network="noUnet", crop_size=64, frames=1,
                               init_from_data=True)
    values = data_init(cfg, noisy, clean)
    assert set(values) == {"shot", "read"}
    np.testing.assert_allclose([values["shot"], values["read"]], [a, b], rtol=0.05)
    state = training.create_train_state(jax.random.key(0), cfg, init_values=values)
    np.testing.assert_allclose(np.exp(state.g_params["noise"]["shot"]), values["shot"], rtol=1e-6)
    np.testing.assert_allclose(np.exp(state.g_params["noise"]["read"]), values["read"], rtol=1e-6)
    # Noise-free pairs fit (0, 0), whose log is unusable: 1 % of the fixed initial values is the floor.
    from starlight_jax.noise import PHYSICS_INIT

    read_only = dataclasses.replace(cfg, noiselist="read")
    assert data_init(read_only, clean, clean) == {"read": 1e-2 * PHYSICS_INIT["read"]}
    # Signal-independent noise (as sRGB data often fit) starts with a shot term far below the fixed init.
    flat = clean + np.sqrt(b) * rng.standard_normal(clean.shape)
    fitted = data_init(cfg, flat, clean)
    assert fitted["shot"] < 0.1 * PHYSICS_INIT["shot"]
    np.testing.assert_allclose(fitted["read"], b, rtol=0.05)
    with pytest.raises(ValueError, match="init_from_data"):
        train_config(compat="starlight", init_from_data=True)
    # Per channel: each channel's own fit, as [C] arrays that seed [C] parameters.
    a_c, b_c = np.array([4e-3, 1e-3, 2e-3, 3e-3]), np.array([2e-4, 5e-5, 1e-4, 1.5e-4])
    noisy_c = clean + np.sqrt(a_c * clean + b_c) * rng.standard_normal(clean.shape)
    cfg_c = dataclasses.replace(cfg, per_channel=True)
    values_c = data_init(cfg_c, noisy_c, clean)
    np.testing.assert_allclose(values_c["shot"], a_c, rtol=0.1)
    np.testing.assert_allclose(values_c["read"], b_c, rtol=0.1)
    state_c = training.create_train_state(jax.random.key(0), cfg_c, init_values=values_c)
    np.testing.assert_allclose(np.exp(state_c.g_params["noise"]["read"]), values_c["read"], rtol=1e-6)
    with pytest.raises(ValueError, match="per_channel"):
        train_config(compat="starlight", per_channel=True)


def test_data_init_of_corr_recovers_the_residual_correlation():
    """Residuals made by a horizontal [1, 1] filter of white noise have lag-(0, 1) correlation 1/2 and none
    along H; the initial kernel's autocorrelation must say the same (32·64·64 pixels: ±0.02)."""
    rng = np.random.default_rng(1)
    white = rng.standard_normal((32, 64, 65, 3))
    residual = 0.01 * (white[:, :, 1:] + white[:, :, :-1]) / np.sqrt(2)
    clean = rng.uniform(0.2, 0.8, residual.shape)
    cfg = train_config(noiselist="read_corr", network="noUnet", crop_size=64, frames=1, channels=3,
                               init_from_data=True)
    values = data_init(cfg, clean + residual, clean)
    k = values["corr_kernel"]
    assert k.shape == (5, 5, 3)
    energy = np.sum(k**2, axis=(0, 1))
    np.testing.assert_allclose(np.sum(k[:, 1:] * k[:, :-1], axis=(0, 1)) / energy, 0.5, atol=0.02)
    np.testing.assert_allclose(np.sum(k[1:] * k[:-1], axis=(0, 1)) / energy, 0.0, atol=0.02)
    np.testing.assert_allclose(values["read"], 1e-4, rtol=0.05)


@pytest.fixture(scope="module")
def toy_run(one_device, initial_state):
    """Two critic steps of CFG on a separable toy burst from the initial state, compiled as the training
    loop compiles them: (batch, metrics per step, SN state after the first step, final step counter)."""
    dp = one_device
    d_step = dp.step(functools.partial(training.d_step, CFG), donate=False)
    batch = _toy_batch(b=1, t=2, seed=2)
    state, metrics = dp.put_state(initial_state), []
    for i in range(2):
        state, m = d_step(state, dp.put_batch(batch))
        metrics.append(dp.metrics(m))  # the critic's losses before this step's update
        if i == 0:
            sn_first = jax.device_get(state.sn_state)
    return batch, metrics, sn_first, int(jax.device_get(state.step))


def test_d_step_loss_matches_reference_from_pieces(toy_run, initial_state):
    """The real critic: the metrics equal D on the prepared patches with the once-advanced SN state, and
    the penalty at the interpolates of the burst's ε draws (one per patch)."""
    batch, metrics, sn_first, _ = toy_run

    @jax.jit
    def reference(state, batch):
        keys = training.burst_keys(state, 0, 1)
        gen_keys, eps_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        fake = training.generate_batch(CFG, state.g_params, gen_keys, batch)
        real_in, fake_in = training.prepare(CFG, batch["noisy"])[0], training.prepare(CFG, fake)[0]
        eps = jax.random.uniform(eps_keys[0], (2,))  # 2 patches (frames) in the burst
        _, sn = apply_discriminator(state.d_params, state.sn_state, real_in[:1], update_stats=True)
        d = lambda x: apply_discriminator(state.d_params, sn, x, update_stats=False)[0]  # noqa: E731
        return d(real_in).mean(), d(fake_in).mean(), training.gradient_penalty(d, real_in, fake_in, eps).mean(), sn

    d_real, d_fake, gp, sn = reference(initial_state, batch)
    m = metrics[0]
    np.testing.assert_allclose(m["d_real"], d_real, rtol=1e-5)
    np.testing.assert_allclose(m["d_fake"], d_fake, rtol=1e-5)
    np.testing.assert_allclose(m["gp"], gp, rtol=1e-5)
    np.testing.assert_allclose(m["d_loss"], -d_real + d_fake + CFG.lambda_gp * gp, rtol=1e-5)
    assert float(gp) > 0.01  # the penalty is active, so the comparison covers it
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), sn_first, sn)


# ------------------------------------------------------------------------------------------------------
# Gradient penalty
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 0.3, 2.5])
def test_gradient_penalty_of_linear_critic(scale):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 8, 2))
    w = jnp.asarray(scale * w / np.linalg.norm(w), jnp.float32)
    real, fake = (jnp.asarray(rng.uniform(size=(3, 8, 8, 2)), jnp.float32) for _ in range(2))
    eps = jnp.asarray(rng.uniform(size=3), jnp.float32)
    gp = training.gradient_penalty(lambda x: jnp.sum(x * w, axis=(1, 2, 3)), real, fake, eps)
    assert gp.shape == (3,)
    np.testing.assert_allclose(gp, np.full(3, (scale - 1) ** 2), atol=1e-6)


def test_gradient_penalty_interpolates_with_eps_on_real():
    """D(x) = ½||x||² has gradient x̂ = ε·real + (1-ε)·fake: the penalty sees where x̂ is."""
    rng = np.random.default_rng(4)
    real, fake = (jnp.asarray(rng.uniform(size=(4, 4, 4, 1)), jnp.float32) for _ in range(2))
    eps = jnp.asarray([0.0, 1.0, 0.25, 0.8], jnp.float32)
    gp = training.gradient_penalty(lambda x: 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3)), real, fake, eps)
    e = np.asarray(eps, np.float64)[:, None, None, None]
    xhat = e * np.asarray(real, np.float64) + (1 - e) * np.asarray(fake, np.float64)
    np.testing.assert_allclose(gp, (np.linalg.norm(xhat.reshape(4, -1), axis=1) - 1) ** 2, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Training dynamics and parallelism
# ------------------------------------------------------------------------------------------------------
def test_critic_steps_separate_bright_real_from_dark_fake(toy_run):
    _, metrics, _, step = toy_run
    first, last = metrics[0], metrics[-1]  # before and after one update
    # The critic's Wasserstein estimate: ~0 at init (0.004), 0.13 after one Adam update of the width-8
    # critic; an update of the wrong sign would lower it. (The penalty term, ~8.5 at λ = 10, barely moves
    # in one step, so d_loss itself is not the test.)
    gap = [m["d_real"] - m["d_fake"] for m in (first, last)]
    assert abs(gap[0]) < 0.02 and gap[1] > gap[0] + 0.1, gap
    assert step == len(metrics)


def _two_iterations(dp, d_step, g_step, host_state, batch):
    """Metrics of (d_step, g_step) twice from ``host_state``, the final state, and the number of
    compilations in the second iteration."""
    state, batch = dp.put_state(host_state), dp.put_batch(batch)
    out = []
    for _ in range(2):
        with _count_compiles() as compiles:
            state, d_m = d_step(state, batch)
            state, g_m = g_step(state, batch)
            out.append({**dp.metrics(d_m), **dp.metrics(g_m)})
    return out, dp.get_state(state), compiles[0]


def test_multi_device_losses_match_single_device(one_device):
    """A global batch of 4 one-frame bursts: one device, jit over 4 devices and pmap over 4 agree."""
    batch = _toy_batch(b=GLOBAL_BATCH, t=1, seed=6)
    cfg = PAR_CFG
    initial_state = jax.device_get(training.create_train_state(jax.random.key(cfg.seed), cfg))

    def run(dp):
        return _two_iterations(dp, dp.step(functools.partial(training.d_step, cfg)),
                               dp.step(functools.partial(training.g_step, cfg)), initial_state, batch)

    reference, ref_state, recompiles = run(one_device)
    assert recompiles == 0
    devices = jax.local_devices()
    assert len(devices) == 4, "tests/conftest.py sets 4 fake CPU devices"
    for mode in ("shard", "pmap"):
        out, state, recompiles = run(DataParallel(mode, devices))
        assert recompiles == 0, f"{mode}: the second iteration compiled the steps again"
        for it, (got, want) in enumerate(zip(out, reference)):
            assert got.keys() == want.keys() == {"d_loss", "d_real", "d_fake", "gp", "g_adv", "g_loss"}
            for k in want:
                np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6, err_msg=f"{mode} it {it} {k}")
        assert int(state.step) == 2
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                               state.g_params, ref_state.g_params)


# ------------------------------------------------------------------------------------------------------
# The training loop: exact resume, existing run folders, non-finite losses
# ------------------------------------------------------------------------------------------------------
def _run(workdir, steps, resume=False, max_seconds=None, log=lambda *_: None):
    run = train_loop.RunConfig(workdir=str(workdir), dataset="synthetic", dataset_options=(("frame_size", (64, 64)),),
                               steps=steps, eval_every=10_000, log_every=10_000, keep=3, devices=1, test_bursts=1,
                               progress=False, max_seconds=max_seconds)
    # A resume may lengthen the run (a half run continued to the full length).
    return train_loop.train_and_evaluate(CFG, run, resume=resume, log=log,
                                         allow_config_change=("steps",) if resume else ())


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    assert _run(workdir, 2 * K)["step"] == 2 * K
    return workdir


@pytest.fixture(scope="module")
def half_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("halves")
    assert _run(workdir, K)["step"] == K
    return workdir


def test_resume_is_bit_exact(straight_run, half_run, initial_state):
    assert _run(half_run, 2 * K, resume=True)["step"] == 2 * K
    want, want_loader, want_step = train_loop.restore_state(straight_run, initial_state)
    got, got_loader, got_step = train_loop.restore_state(half_run, initial_state)
    assert got_step == want_step == 2 * K
    assert got_loader == want_loader
    _tree_equal(got, want)
    # Not vacuous: training moved the critic and the generator away from their initial values.
    assert not np.array_equal(got.d_params["conv1"]["kernel"], initial_state.d_params["conv1"]["kernel"])
    assert not np.array_equal(got.g_params["noise"]["read"], initial_state.g_params["noise"]["read"])


def test_time_budget_stops_with_a_checkpoint_that_resumes_exactly(monkeypatch, tmp_path, straight_run, initial_state):
    # A fake clock that advances one second per reading: the budget of K + 0.5 s allows exactly K steps.
    ticks = iter(range(10_000))
    monkeypatch.setattr(train_loop, "time", types.SimpleNamespace(monotonic=lambda: float(next(ticks))))
    messages = []
    stopped = _run(tmp_path, 2 * K, max_seconds=K + 0.5, log=messages.append)
    assert stopped["step"] == K
    assert math.isfinite(stopped["test_kld_mean"])  # the stopped state was evaluated, not only saved
    assert any("time budget" in m and f"step {K} of {2 * K}" in m for m in messages), messages
    assert _run(tmp_path, 2 * K, resume=True)["step"] == 2 * K
    got, got_loader, _ = train_loop.restore_state(tmp_path, initial_state)
    want, want_loader, _ = train_loop.restore_state(straight_run, initial_state)
    assert got_loader == want_loader
    _tree_equal(got, want)


def test_the_initial_model_is_kept(straight_run, initial_state):
    """``init/`` holds step 0 (what the data init gave), so what training changed can be measured."""
    from starlight_jax.checkpoint import load_noise_model

    init, _, info = load_noise_model(straight_run, "init")
    assert info["step"] == 0
    _tree_equal(init.params, initial_state.g_params)
    trained, _, _ = load_noise_model(straight_run, "latest")
    assert not np.array_equal(trained.params["noise"]["read"], init.params["noise"]["read"])


def test_existing_checkpoints_without_resume_raise(straight_run):
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        _run(straight_run, 2 * K)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(monkeypatch, tmp_path, half_run, initial_state):
    """A corrupt sample (NaN) in training batch K makes the losses non-finite at step K."""
    original = BurstLoader.batch_at

    def batch_at(self, epoch, index, executor=None):
        batch = original(self, epoch, index, executor)
        if self.train and (epoch, index) == (0, K):
            batch["noisy"][0, 0, 0, 0, 0] = np.nan
        return batch

    monkeypatch.setattr(BurstLoader, "batch_at", batch_at)
    with pytest.raises(train_loop.NonFiniteLoss, match=rf"non-finite \[.*'d_loss'.*\] at step {K}:"):
        _run(tmp_path, 2 * K)
    # The checkpoint left behind is the state after the K good steps, with the loader right after them:
    # the same as a clean K-step run's, so --resume continues exactly.
    got, got_loader, got_step = train_loop.restore_state(tmp_path, initial_state)
    want, want_loader, _ = train_loop.restore_state(half_run, initial_state, step=K)
    assert got_step == K
    assert got_loader == want_loader
    _tree_equal(got, want)


# ------------------------------------------------------------------------------------------------------
# The CLI rejects bad flags before anything is loaded or compiled
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    return load_cli("train", "training")


@pytest.mark.parametrize("flags,message", [
    (["--noiselist", "shot_read_sparkle"], "--noiselist"),
    (["--crop_size", "96"], "--crop_size must be a positive multiple of 64"),
    (["--dataset", "pairs"], "--dataset pairs needs --data_dir"),
    (["--dataset", "pairs", "--data_dir", "{missing}"], "does not exist"),
    (["--n_critic", "0"], "--n_critic must be >= 1"),
    (["--critic_width", "-4"], "--critic_width must be >= 1"),
    (["--max_minutes", "0"], "--max_minutes must be > 0"),
])
def test_cli_bad_flags_exit_early(cli, monkeypatch, capsys, tmp_path, flags, message):
    import starlight_jax.data

    def must_not_run(*args, **kwargs):
        pytest.fail("bad flags reached data loading or training")

    monkeypatch.setattr(starlight_jax.data, "load_dataset", must_not_run)
    monkeypatch.setattr(train_loop, "train_and_evaluate", must_not_run)
    monkeypatch.setattr(training, "TrainConfig", must_not_run)
    flags = [f.format(missing=tmp_path / "missing") for f in flags]
    with pytest.raises(SystemExit) as exit_info, _count_compiles() as compiles:
        cli.main([*flags, "--save_path", str(tmp_path)])
    assert exit_info.value.code == 2
    assert compiles[0] == 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    if flags[0] == "--noiselist":
        assert "sparkle" in err  # names the bad token
    assert not any(tmp_path.iterdir())  # no run folder was made


def test_data_init_of_tone_matches_the_residual_level_and_mean_per_intensity():
    """Residuals with std 0.01·(1 + sin πx) (rises then falls, unlike any a·x + b) and mean 0.002·x: at every
    knot, gain² × the Poisson-Gaussian variance is the true variance and the offset the true mean, within 5
    standard errors of a least-squares fit in the hat basis (uniform x: normal matrix n·T with T tridiagonal,
    1/3 or 2/3 on the diagonal, 1/6 beside it; a squared Gaussian residual has relative variance 2, and the
    data's and the model sample's errors add)."""
    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 1, (64, 64, 64, 3))
    std, mean = (lambda x: 0.01 * (1 + np.sin(np.pi * x))), (lambda x: 0.002 * x)
    noisy = clean + mean(clean) + std(clean) * rng.standard_normal(clean.shape)
    cfg = train_config(noiselist="shot_read_tone", network="noUnet", crop_size=64, frames=1, channels=3)
    values = data_init(cfg, noisy, clean)
    k = values["tone_gain"].shape[0]
    knots = np.linspace(0, 1, k)[:, None]
    n_interval = clean[..., 0].size / (k - 1)
    tri = np.diag(np.r_[1 / 3, np.full(k - 2, 2 / 3), 1 / 3]) + np.diag(np.full(k - 1, 1 / 6), 1) \
        + np.diag(np.full(k - 1, 1 / 6), -1)
    unit_var = np.diag(np.linalg.inv(tri))[:, None] / n_interval  # variance of a knot value per unit noise variance
    ratio = values["tone_gain"] ** 2 * (values["shot"] * knots + values["read"]) / std(knots) ** 2
    assert np.all(np.abs(ratio - 1) < 5 * np.sqrt(2 * 2 * unit_var)), np.abs(ratio - 1).max()
    assert np.all(np.abs(values["tone_offset"] - mean(knots)) < 5 * std(knots) * np.sqrt(unit_var))
    state = training.create_train_state(jax.random.key(0), cfg, init_values=values)
    used = noise_lib.scales(state.g_params["noise"], cfg.generator.noise)
    np.testing.assert_allclose(used["tone_gain"], values["tone_gain"], rtol=1e-5)
    np.testing.assert_allclose(used["tone_offset"], values["tone_offset"], rtol=1e-5, atol=1e-9)


def test_tone_curves_are_fitted_on_tone_pairs_and_the_loop_passes_whole_images(monkeypatch):
    """``tone_pairs`` replaces the pairs the level curves are fitted on (the shot/read fit keeps its own):
    residuals of std 0.01 for the Poisson-Gaussian fit and of std 0.02 for the curves give gains of 2, to
    5 standard errors of a knot's variance ratio (see the test above: relative variance 2 + 2 over ~1/15 of
    64 x 64^2 pixels). The training loop hands `data_init` whole frames of one frame each for them."""
    rng = np.random.default_rng(4)
    clean = rng.uniform(0.05, 0.95, (64, 64, 64, 3))
    noisy = clean + 0.01 * rng.standard_normal(clean.shape)
    tone_noisy = clean + 0.02 * rng.standard_normal(clean.shape)
    cfg = train_config(noiselist="read_tone", network="noUnet", crop_size=64, frames=1, channels=3)
    values = data_init(cfg, noisy, clean, tone_pairs=(tone_noisy, clean))
    assert values["read"] == pytest.approx(1e-4, rel=0.02)  # from (noisy, clean), not the tone pairs
    rel_se = np.sqrt(4 / (clean[..., 0].size / 15))
    np.testing.assert_allclose(values["tone_gain"][1:-1], 2.0, rtol=5 * rel_se)

    seen = {}
    monkeypatch.setattr(train_loop, "data_init", lambda cfg, noisy, clean, **kw: seen.update(kw) or {})
    dataset = load_dataset("synthetic", frame_size=(128, 128), bursts_per_scene=1)
    cfg = train_config(noiselist="shot_read_tone", network="noUnet", crop_size=64, frames=2, channels=4)
    train_loop._data_init(cfg, dataset, global_batch=1)
    tone_noisy, tone_clean = seen["tone_pairs"]
    n_train = len(dataset.split("train"))
    assert tone_noisy.shape == tone_clean.shape == (n_train, 1, 128, 128, 4)
    assert seen["clipped"].shape[2:4] == (64, 64)  # the shot/read fit keeps the training crops


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_tone_keeps_the_tone_curves_and_updates_the_rest(freeze):
    cfg = train_config(noiselist="shot_read_tone", network="noUnet", crop_size=64, frames=1, channels=3,
                       freeze_tone=freeze)
    params = training.create_train_state(jax.random.key(0), cfg).g_params
    g_tx, _ = training._optimizers(cfg, params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = g_tx.update(grads, g_tx.init(params), params)
    moved = {k: bool(jnp.any(v != 0)) for k, v in updates["noise"].items()}
    assert moved["shot"] and moved["read"]
    assert moved["tone_gain"] is moved["tone_offset"] is (not freeze), moved
    with pytest.raises(ValueError, match="freeze_tone needs the tone component"):
        train_config(noiselist="shot_read", network="noUnet", crop_size=64, frames=1, freeze_tone=True)


def test_binned_level_term_weighs_each_intensity_bins_log_power_ratio_by_its_count():
    """Clean values 0.1 (3/4 of the pixels) and 0.7 (1/4), 2 bins: the fake residual has 4x the real power in
    image 0's dark pixels, 1x elsewhere, so 2.5x in the dark bin of the batch and 1x in the bright one: the
    term is 3/4 (log 2.5)^2; the one-bin term sees only the overall power ratio. A bin under ``min_count``
    pixels does not count. Split over two devices, each sees another ratio: only sums over both agree."""
    clean = np.full((2, 16, 16, 2), 0.1)
    clean[:, :, 12:] = 0.7
    real = np.where(np.random.default_rng(5).random(clean.shape) < 0.5, -0.01, 0.01)
    fake = np.where(clean < 0.5, 2.0, 1.0) * real
    fake[1] = real[1]
    args = [jnp.asarray(a, jnp.float32) for a in (fake, real)]
    binned = float(losses.level_term(*args, clean=jnp.asarray(clean, jnp.float32), bins=2))
    np.testing.assert_allclose(binned, 0.75 * np.log(2.5) ** 2, rtol=1e-5)
    one = float(losses.level_term(*args))
    np.testing.assert_allclose(one, np.log(0.75 * 2.5 + 0.25) ** 2, rtol=1e-5)
    # With 128 bright pixels below min_count, only the dark bin is left: (log 2.5)^2.
    only_dark = float(losses.level_term(*args, clean=jnp.asarray(clean, jnp.float32), bins=2, min_count=129))
    np.testing.assert_allclose(only_dark, np.log(2.5) ** 2, rtol=1e-5)
    # Split over 2 devices (one image each), the counts and powers are summed across them: the same term.
    split = [a.reshape(2, 1, 16, 16, 2) for a in (*args, jnp.asarray(clean, jnp.float32))]
    per_device = jax.pmap(lambda f, r, c: losses.level_term(f, r, "d", clean=c, bins=2), axis_name="d",
                          devices=jax.devices()[:2])(*split)
    np.testing.assert_allclose(np.asarray(per_device), binned, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the clean images"):
        losses.level_term(*args, bins=2)
    with pytest.raises(ValueError, match="level_bins must be an int >= 1"):
        train_config(noiselist="read", network="noUnet", crop_size=64, frames=1, level_bins=0)


def test_level_term_is_the_squared_log_power_ratio_per_channel_and_pulls_the_level_to_the_data():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((4, 32, 32, 2)) * np.array([0.01, 0.02])
    assert float(training.level_term(jnp.asarray(real), jnp.asarray(real))) == 0.0
    fake = real * np.array([2.0, 1.0])  # channel 0 at 4x the power: (log 4)^2 / 2 channels
    np.testing.assert_allclose(float(training.level_term(jnp.asarray(fake), jnp.asarray(real))),
                               np.log(4.0) ** 2 / 2, rtol=1e-5)
    # Through the generator: a read variance above the data's gets a positive gradient (descent lowers it).
    cfg = train_config(noiselist="read", network="noUnet", crop_size=64, frames=1, channels=2, level_weight=1.0)
    params = training.create_train_state(jax.random.key(0), cfg, init_values={"read": 4e-4}).g_params
    clean = jnp.full((2, 1, 64, 64, 2), 0.5)
    noisy = clean + 0.01 * jax.random.normal(jax.random.key(1), clean.shape)  # variance 1e-4
    keys = jax.random.split(jax.random.key(2), 2)

    def level(p):
        fake = training.generate_batch(cfg, p, keys, {"clean": clean})
        return training.level_term(fake - clean, noisy - clean)

    assert float(jax.grad(level)(params)["noise"]["read"]) > 0
    state = training.create_train_state(jax.random.key(0), cfg, init_values={"read": 4e-4})
    _, metrics = jax.jit(functools.partial(training.g_step, cfg))(state, {"clean": clean, "noisy": noisy})
    np.testing.assert_allclose(float(metrics["level"]), np.mean(np.log(4.0) ** 2), rtol=0.1)  # 4x the power
    np.testing.assert_allclose(float(metrics["g_loss"]), float(metrics["g_adv"]) + float(metrics["level"]), rtol=1e-5)


def test_structure_term_is_the_squared_correlation_error_and_enters_the_generator_loss():
    from starlight_jax.isp_fit import LAGS

    rng = np.random.default_rng(4)
    real = rng.standard_normal((8, 1, 32, 32, 2))
    assert float(training.structure_term(jnp.asarray(real), jnp.asarray(real))) == 0.0
    # Channel 1 = channel 0 mixed with fresh noise at correlation rho: only lag 0's two off-diagonal entries
    # differ (by rho, ± the sampling error), so the term is about 2 rho^2.
    rho = 0.6
    fake = real.copy()
    fake[..., 1] = rho * real[..., 0] + np.sqrt(1 - rho ** 2) * rng.standard_normal(real[..., 0].shape)
    n = real[..., 0].size
    got = float(training.structure_term(jnp.asarray(fake), jnp.asarray(real)))
    se = np.sqrt(len(LAGS) * 4 * 2) / np.sqrt(n)  # every entry carries a sampling error ~1/sqrt(n)
    assert abs(got - 2 * rho ** 2) < 5 * se * (2 * rho + se), got
    # Through g_step: the metric is reported and added to the loss.
    cfg = train_config(noiselist="read", network="noUnet", crop_size=64, frames=1, channels=2,
                               structure_weight=1.0)
    state = training.create_train_state(jax.random.key(0), cfg)
    clean = jnp.full((2, 1, 64, 64, 2), 0.5)
    noisy = clean + 0.01 * jax.random.normal(jax.random.key(1), clean.shape)
    _, metrics = jax.jit(functools.partial(training.g_step, cfg))(state, {"clean": clean, "noisy": noisy})
    assert float(metrics["structure"]) > 0
    np.testing.assert_allclose(float(metrics["g_loss"]), float(metrics["g_adv"]) + float(metrics["structure"]),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="structure_weight"):
        train_config(structure_weight=-1.0)


def test_critic_scale_multiplies_the_residual_the_critic_sees():
    cfg = train_config(noiselist="read", network="noUnet", crop_size=64, frames=1, channels=3,
                       critic_condition="residual")
    scaled = dataclasses.replace(cfg, critic_scale=50.0)
    clean = jnp.full((1, 1, 64, 64, 3), 0.5)
    noisy = clean + 0.01 * jax.random.normal(jax.random.key(1), clean.shape)
    x1, c1 = training.prepare(cfg, noisy, clean)
    x50, c50 = training.prepare(scaled, noisy, clean)
    np.testing.assert_allclose(np.asarray(x50), 50.0 * np.asarray(x1), rtol=1e-5, atol=2e-6)  # float32 rounding of noisy - clean
    np.testing.assert_array_equal(np.asarray(c50), np.asarray(c1))  # the clean condition is not scaled
    with pytest.raises(ValueError, match="critic_scale must be > 0"):
        dataclasses.replace(cfg, critic_scale=0.0)
    with pytest.raises(ValueError, match="critic_condition='residual'"):
        dataclasses.replace(cfg, critic_scale=2.0, critic_condition="clean")


def test_critic_scale_auto_is_one_over_the_training_residual_std():
    from starlight_jax import configs
    from starlight_jax.data.batches import load_batches

    dataset = load_dataset("synthetic", frame_size=(64, 64), bursts_per_scene=1)
    v = {**configs.cpu(), "critic_scale": "auto", "frames": 2}
    got = configs.resolve(v, dataset, devices=1, log=lambda *_: None)["critic_scale"]
    batches = load_batches(dataset, "train", crop_size=64, frames=2, seed=0, max_bursts=configs.SCALE_BURSTS)
    want = 1.0 / np.std(np.concatenate([b["noisy"] - b["clean"] for b in batches]))
    assert got == pytest.approx(want, rel=1e-6) and got > 1  # residuals are well below 1
    assert configs.resolve({**v, "critic_scale": "3"}, dataset, devices=1, log=lambda *_: None)["critic_scale"] == 3.0
    with pytest.raises(ValueError, match="--critic_scale must be"):
        configs.resolve({**v, "critic_scale": "x"}, dataset, devices=1, log=lambda *_: None)


def test_generator_adversarial_term_is_in_residual_units(monkeypatch):
    # A linear critic (the sum of its input) scores a residual scaled by s as s times the unscaled one: the
    # generator's adversarial term, divided by s, must not depend on s (nor then its weight against the
    # level term).
    monkeypatch.setattr(training, "critic", lambda cfg, d, sn, cond: (lambda x: jnp.sum(x, axis=(1, 2, 3))))
    cfg = train_config(noiselist="read", network="noUnet", crop_size=64, frames=1, channels=3,
                       critic_condition="residual", level_weight=0.0)
    state = training.create_train_state(jax.random.key(0), cfg)
    clean = jnp.full((2, 1, 64, 64, 3), 0.5)
    batch = {"clean": clean, "noisy": clean + 0.01 * jax.random.normal(jax.random.key(1), clean.shape)}
    adv = [float(training.g_step(dataclasses.replace(cfg, critic_scale=s), state, batch)[1]["g_adv"])
           for s in (1.0, 50.0)]
    assert adv[0] != 0.0
    np.testing.assert_allclose(adv[1], adv[0], rtol=1e-4)
