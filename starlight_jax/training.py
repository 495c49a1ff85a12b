"""WGAN-GP training of the noise generator: config, train state, optimisers and the pure D and G steps.

The steps are assembled from `starlight_jax.losses` (the critic's input, the critic, the penalty and the
generator's extra terms); the run's starting values come from `starlight_jax.data_init`.

The steps are pure functions ``step(state, batch) -> (state, metrics)``. Randomness comes from
``fold_in(state.key, state.step)`` and then one key per burst of the *global* batch, so the draws (and the
losses) do not depend on how the batch is split across devices: one device, ``--parallel shard`` (jit over
a ``('data',)`` mesh) and ``--parallel pmap`` give the same numbers.

Differences from the original training loop (SPEC §5, §12), each documented where it is made:

* the critic step stops the gradient into the generator's output (§12.16: same result, less work);
* ``n_critic`` counts global steps, not the batch index within an epoch (§12.14; ``compat="starlight"``
  counts the batch index, as the original);
* the spectral-norm vectors advance once per critic step (§12.17; ``compat="starlight"``: on each D call,
  3 in the critic step and 1 in the generator step, as the original); they are state, not parameters;
* the fixed-pattern map is cropped at the clean crop's offset (§12.8; ``compat="starlight"``: at a random
  offset per call in training, as the original under DDP);
* the physical scalars may have their own learning rate (``physics_lr``), off under ``compat="starlight"``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from starlight_jax import patches as patches_lib
from starlight_jax import parallel
from starlight_jax.generator import PRECISIONS, GeneratorConfig, generate, init_generator
from starlight_jax.losses import (advance_spectral_norm, critic, critic_input, global_mean, gradient_penalty,
                                  level_term, prepare, structure_term)
from starlight_jax.models.discriminator import init_discriminator
from starlight_jax.noise import stored_value
from starlight_jax.noiselist import parse_noiselist

GENERATOR_LOSSES = ("none", "lpips", "lpips_vgg")
# What the critic sees besides the (transformed) noisy patch. 'none' is the original (unconditional) critic;
# 'clean' adds the clean patch on the channel axis (a conditional critic, as in pix2pix); 'residual' adds the
# clean patch and transforms the residual ``noisy - clean`` instead of the noisy patch.
CRITIC_CONDITIONS = ("none", "clean", "residual")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (CLI flags map one-to-one onto these fields).

    The defaults are the ``cpu`` preset of `starlight_jax.configs` resolved on the embedded synthetic
    dataset (128-px frames, one device): ``TrainConfig()`` is what ``experiments/train.py`` trains with no
    flags on a CPU. The dataset-dependent ones: ``quantize`` (the embedded sensor's step 1/D),
    ``channels`` 4, ``decay_steps`` (40 epochs of 36 bursts less the 200-step warm-up).
    """

    # The generator: noise components, compat mode and U-Net mode.
    noiselist: str = "shot_read_uniform_row1_rowt_fixed1_periodic"
    compat: str = "physics"
    network: str = "noUnet"
    unet_opts: str = "residualFalse_conv_tconv_selu"
    unet_widths: Optional[tuple[int, ...]] = None
    unet_skip: bool = False  # GeneratorConfig.unet_skip: the U-Net corrects the physical model's output
    per_channel: bool = False  # NoiseConfig.per_channel: one shot/read/... value per channel
    quantize: Optional[float] = 0.0063008002016256065  # GeneratorConfig.quantize: the data's quantisation step, or None
    # Discriminator input domain (real, fourier, mixed, complex, mean) and output sigmoid.
    discriminator_loss: str = "real"
    sigmoid: bool = False
    critic_condition: str = "residual"
    critic_width: int = 16  # conv1 channels of the critic (64: the original's)
    # The residual critic sees (noisy - clean) * critic_scale beside the clean patch. At 1 an sRGB residual
    # (std ~0.015) is a small perturbation of features dominated by the clean patch (0..1): the critic's
    # response to it is nearly linear, so it sees the mean of the noise but hardly its variance or
    # correlation. ~1/std of the data's residual (`configs`' "auto") puts both on one scale. The generator's
    # adversarial term is divided by it (`g_step`), so its weight against the other terms does not change.
    critic_scale: float = 1.0
    # Extra generator term: 'none' or 'lpips' (weight lpips_weight).
    generator_loss: str = "none"
    lpips_weight: float = 1.0
    # Weight of `level_term`, which holds the generator's residual power per channel to the real batch's
    # (0: the adversarial loss alone, as in the original).
    level_weight: float = 10.0
    # Intensity bins of the level term (1: the power per channel; more: per channel and clean-intensity bin,
    # which holds the training batch's noise level function). 16 tied 1 per scene on every structure metric
    # of the sRGB recipe (docs/srgb.md, session 8).
    level_bins: int = 1
    # Weight of `structure_term`, which holds the generated residual's lagged cross-channel correlations to
    # the real batch's (0: off; the sRGB recipe uses it with the isp component).
    structure_weight: float = 0.0
    # Keep the `tone` curves at their data-init values: the GAN refines the other parameters only. The
    # curves are a closed-form fit on every training pixel (~10 M per channel on PolyU), the critic sees 8
    # patches of 64² a step. On the sRGB pairs it tied training them, per scene, on every structure metric
    # (docs/srgb.md, session 8), so the recipe leaves it off.
    freeze_tone: bool = False
    # Adam for both players; physics_lr (if set) for the generator's physical scalars.
    lr: float = 2e-4
    b1: float = 0.5
    b2: float = 0.999
    physics_lr: Optional[float] = 2e-2
    # How the physical scalars step (with physics_lr): "adam", or "nsgd": the gradient of the whole group
    # normalised to unit norm, averaged over steps (EMA 0.9), a step of length physics_lr. Adam normalises
    # each scalar on its own, so a weak but persistent gradient (e.g. on the shot scale while the critic
    # mostly sees too little dark noise) moves as fast as a strong one; nsgd keeps the group's direction.
    physics_optimizer: str = "nsgd"
    # Cosine decay of the generator's learning rates to `decay_floor` of their value over this many
    # generator updates (None: constant). It damps the GAN's oscillation of the physical scalars about the
    # equilibrium, so the last checkpoint sits near it instead of on a random phase of the orbit.
    decay_steps: Optional[int] = 1240
    decay_floor: float = 0.05
    # Start the shot and read scales at a Poisson-Gaussian fit of the training pairs' noise level function
    # (physics only); the GAN then splits and refines it. Off: the fixed initial values of `noise.PHYSICS_INIT`.
    init_from_data: bool = True
    n_critic: int = 1
    # Critic steps before the first generator step: a freshly initialised critic's gradient points in an
    # arbitrary but persistent direction, which would drag a data-initialised generator away first.
    critic_warmup: int = 200
    lambda_gp: float = 10.0
    # Data shape: bursts per device, frames per burst, crop.
    batch_size: int = 1
    frames: int = 8
    crop_size: int = 64
    channels: int = 4
    seed: int = 0
    # Compute dtype of the U-Net and the critic: "float32", or "bfloat16" (mixed precision: parameters,
    # optimiser states, the physical noise, the spectral norms and the losses stay float32).
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.generator  # NoiseConfig and GeneratorConfig check their own options (noiselist, unet_skip, ...)
        patches_lib.discriminator_channels(self.discriminator_loss, self.channels)  # raises on bad mode
        if self.critic_condition not in CRITIC_CONDITIONS:
            raise ValueError(f"critic_condition must be one of {CRITIC_CONDITIONS}, got {self.critic_condition!r}")
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {self.generator_loss!r}")
        if self.crop_size < 64 or self.crop_size % 64:
            raise ValueError(f"crop_size must be a positive multiple of 64 (the discriminator's patch), "
                             f"got {self.crop_size}")
        if self.physics_optimizer not in ("adam", "nsgd"):
            raise ValueError(f"physics_optimizer must be 'adam' or 'nsgd', got {self.physics_optimizer!r}")
        if self.critic_warmup < 0:
            raise ValueError(f"critic_warmup must be >= 0, got {self.critic_warmup}")
        for name in ("batch_size", "frames", "n_critic", "critic_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1 or None, got {self.decay_steps}")
        if not 0 <= self.decay_floor <= 1:
            raise ValueError(f"decay_floor must be in [0, 1], got {self.decay_floor}")
        if not self.critic_scale > 0:
            raise ValueError(f"critic_scale must be > 0, got {self.critic_scale}")
        if self.critic_scale != 1.0 and self.critic_condition != "residual":
            raise ValueError(f"critic_scale {self.critic_scale} needs critic_condition='residual' (it scales the "
                             f"residual the critic sees), got {self.critic_condition!r}")
        if isinstance(self.level_bins, bool) or not isinstance(self.level_bins, int) or self.level_bins < 1:
            raise ValueError(f"level_bins must be an int >= 1, got {self.level_bins!r}")
        for name in ("level_weight", "structure_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or (self.physics_lr is not None and self.physics_lr <= 0):
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, physics_lr={self.physics_lr}")
        if self.compat == "starlight" and self.init_from_data:
            raise ValueError("init_from_data is not available under compat='starlight' (its shot/read scales are "
                             "not a variance law)")
        if self.compat == "starlight" and self.physics_lr is not None:
            raise ValueError("physics_lr is not available under compat='starlight' (one Adam for all of G)")
        if self.network != "noUnet" and self.crop_size % 16:
            raise ValueError(f"the U-Net needs crop_size divisible by 16, got {self.crop_size}")
        if self.freeze_tone and not self.generator.noise.tone:
            raise ValueError(f"freeze_tone needs the tone component in the noiselist, got {self.noiselist!r}")

    @property
    def generator(self) -> GeneratorConfig:
        noise = parse_noiselist(self.noiselist, compat=self.compat, channels=self.channels,
                                per_channel=self.per_channel)
        return GeneratorConfig(noise=noise, network=self.network, unet_opts=self.unet_opts,
                               unet_widths=self.unet_widths, unet_skip=self.unet_skip, quantize=self.quantize,
                               precision=self.precision)

    @property
    def shift_all(self) -> bool:
        return self.compat == "starlight"  # the original's fftshift over every axis (SPEC §12.10)

    @property
    def d_channels(self) -> int:
        extra = 0 if self.critic_condition == "none" else self.channels
        return patches_lib.discriminator_channels(self.discriminator_loss, self.channels) + extra


@struct.dataclass
class TrainState:
    """All that changes during training; a pytree, checkpointed as a whole."""

    step: jax.Array  # [] int32: completed critic steps
    key: jax.Array  # base PRNG key (raw uint32 data, so Orbax can store it)
    g_params: Any
    d_params: Any
    sn_state: Any  # spectral-norm u vectors (not trained)
    g_opt: Any
    d_opt: Any


def generator_steps_at(cfg: TrainConfig, step, batches_per_epoch: Optional[int] = None) -> bool:
    """Whether critic step ``step`` (0-based) is followed by a generator step.

    After the warm-up, every ``n_critic``-th step from the warm-up's end; under ``compat="starlight"`` the
    original's rule (SPEC §12.14): batch index within the epoch ``step % batches_per_epoch`` divisible by
    ``n_critic``, so every epoch starts with a generator step (``batches_per_epoch`` required).
    """
    if cfg.compat == "starlight":
        if batches_per_epoch is None:
            raise ValueError("compat='starlight' counts n_critic by the batch index: pass batches_per_epoch")
        return step >= cfg.critic_warmup and (step % batches_per_epoch) % cfg.n_critic == 0
    return step >= cfg.critic_warmup and (step - cfg.critic_warmup) % cfg.n_critic == 0


def _nsgd(lr):
    # An average (not a sum) of unit-norm directions, so that a steady gradient moves the group by `lr`.
    return optax.chain(optax.normalize_by_update_norm(scale_factor=1.0), optax.ema(decay=0.9, debias=False),
                       optax.scale_by_learning_rate(lr))


def _optimizers(cfg: TrainConfig, g_params):
    adam = lambda lr: optax.adam(lr, b1=cfg.b1, b2=cfg.b2)  # noqa: E731
    d_tx = adam(cfg.lr)

    def g_rate(lr):  # the generator's rates only decay: the critic must keep tracking the generator
        return optax.cosine_decay_schedule(lr, cfg.decay_steps, cfg.decay_floor) if cfg.decay_steps else lr

    # The fixed1 map is data (a measured dark frame), not a parameter; the tone curves under freeze_tone
    # keep their closed-form fit. Neither is ever updated.
    kept = {"fixed_pattern", *(("tone_gain", "tone_offset") if cfg.freeze_tone else ())}
    fixed = lambda p: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: any(getattr(k, "key", None) in kept for k in path), p)
    if cfg.physics_lr is None:
        g_tx = adam(g_rate(cfg.lr))
    else:
        labels = jax.tree_util.tree_map_with_path(
            lambda path, _: "physics" if getattr(path[0], "key", None) == "noise" else "net", g_params)
        physics_rate = g_rate(cfg.physics_lr)
        physics = adam(physics_rate) if cfg.physics_optimizer == "adam" else _nsgd(physics_rate)
        g_tx = optax.multi_transform({"physics": physics, "net": adam(g_rate(cfg.lr))}, labels)
    g_tx = optax.chain(optax.masked(optax.set_to_zero(), fixed), g_tx)
    return g_tx, d_tx


def create_train_state(key, cfg: TrainConfig, *, fixed_pattern=None, init_values=None) -> TrainState:
    """Initial generator, discriminator, optimiser states and base key.

    ``init_values`` (e.g. from `starlight_jax.data_init.data_init`) replaces the initial values of the named
    physical scalars, given as used by the formulas (variances, not logs)."""
    g_key, d_key, base = jax.random.split(key, 3)
    model = init_generator(g_key, cfg.generator, fixed_pattern=fixed_pattern)
    if init_values:
        noise_cfg = cfg.generator.noise
        noise = {**model.params["noise"],
                 **{k: stored_value(k, v, noise_cfg) for k, v in init_values.items()}}
        model = model.replace(params={**model.params, "noise": noise})
    d_params, sn_state = init_discriminator(d_key, cfg.d_channels, sigmoid=cfg.sigmoid, width=cfg.critic_width)
    g_tx, d_tx = _optimizers(cfg, model.params)
    return TrainState(step=jnp.zeros((), jnp.int32), key=jax.random.key_data(base), g_params=model.params,
                      d_params=d_params, sn_state=sn_state, g_opt=g_tx.init(model.params),
                      d_opt=d_tx.init(d_params))


# ------------------------------------------------------------------------------------------------------
# Pieces of the steps
# ------------------------------------------------------------------------------------------------------
def burst_keys(state: TrainState, salt: int, global_batch: int, axis_name: Optional[str] = None):
    """This step's `parallel.burst_keys`: one key per burst of the global batch from
    ``fold_in(fold_in(key, step), salt)`` (``salt``: 0 in the critic step, 1 in the generator step)."""
    step_key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step), salt)
    return parallel.burst_keys(step_key, global_batch, axis_name)


def generate_batch(cfg: TrainConfig, g_params, keys, batch, *, train: bool = True):
    """The generator on every burst of ``batch`` with its own key and fixed-pattern offset."""
    gen_cfg = cfg.generator
    offsets = batch.get("offset") if (gen_cfg.noise.fixed or gen_cfg.noise.learned_fixed) else None
    if train and cfg.compat == "starlight":
        offsets = None  # the original's random offset per call, unrelated to the crop (SPEC §12.8)
    if offsets is None:
        return jax.vmap(lambda k, x: generate(g_params, k, x, gen_cfg, train=train))(keys, batch["clean"])
    return jax.vmap(lambda k, x, o: generate(g_params, k, x, gen_cfg, train=train, fixed_offset=o))(
        keys, batch["clean"], offsets)


# ------------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------------
def d_step(cfg: TrainConfig, state: TrainState, batch, axis_name: Optional[str] = None):
    """One critic update: ``-mean D(real) + mean D(fake) + λ·GP``. Returns ``(state, metrics)``."""
    global_batch = batch["clean"].shape[0] * (1 if axis_name is None else jax.lax.psum(1, axis_name))
    keys = burst_keys(state, 0, global_batch, axis_name)
    gen_keys, eps_keys = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k))(keys), 1, 0)
    fake = jax.lax.stop_gradient(generate_batch(cfg, state.g_params, gen_keys, batch))
    real_in, condition = prepare(cfg, batch["noisy"], batch["clean"])
    fake_in, _ = prepare(cfg, fake, batch["clean"])
    patches_per_burst = real_in.shape[0] // batch["clean"].shape[0]
    eps = jax.vmap(lambda k: jax.random.uniform(k, (patches_per_burst,)))(eps_keys).reshape(-1)
    first = critic_input(None if condition is None else condition[:1], real_in[:1])
    # The power iteration reads the weights only (no gradient): the states of successive calls can be
    # computed up front. One advance per step; the original advances on each of its 3 calls (§12.17).
    sn = [state.sn_state]
    for _ in range(3 if cfg.compat == "starlight" else 1):
        sn.append(advance_spectral_norm(cfg, state.d_params, sn[-1], first))
    sn_real, sn_fake, sn_gp = (sn[1], sn[2], sn[3]) if cfg.compat == "starlight" else (sn[1],) * 3
    sn_state = sn[-1]

    def loss_fn(d_params):
        d_real = global_mean(critic(cfg, d_params, sn_real, condition)(real_in), axis_name)
        d_fake = global_mean(critic(cfg, d_params, sn_fake, condition)(fake_in), axis_name)
        gp = global_mean(gradient_penalty(critic(cfg, d_params, sn_gp, condition), real_in, fake_in, eps), axis_name)
        loss = -d_real + d_fake + cfg.lambda_gp * gp
        return loss, dict(d_loss=loss, d_real=d_real, d_fake=d_fake, gp=gp)

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.d_params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
    _, d_tx = _optimizers(cfg, state.g_params)
    updates, d_opt = d_tx.update(grads, state.d_opt, state.d_params)
    state = state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt=d_opt, sn_state=sn_state,
                          step=state.step + 1)
    return state, metrics


def g_step(cfg: TrainConfig, state: TrainState, batch, lpips_params=None, axis_name: Optional[str] = None):
    """One generator update: ``-mean D(fake) [+ w·LPIPS(fake, real)] [+ w·level_term] [+ w·structure_term]``.
    Returns
    ``(state, metrics)``.

    ``lpips_params`` (from `starlight_jax.perceptual.load_perceptual`) is an argument of the step, not a
    constant baked into the compiled program; it is required when ``cfg.generator_loss == "lpips"``.
    """
    global_batch = batch["clean"].shape[0] * (1 if axis_name is None else jax.lax.psum(1, axis_name))
    keys = burst_keys(state, 1, global_batch, axis_name)
    real_in, condition = prepare(cfg, batch["noisy"], batch["clean"])
    sn_state = state.sn_state
    if cfg.compat == "starlight":  # the original's 4th power iteration of the iteration, in G's D call
        sn_state = advance_spectral_norm(
            cfg, state.d_params, sn_state, critic_input(None if condition is None else condition[:1], real_in[:1]))
    lpips_apply = None
    if cfg.generator_loss != "none":
        lpips_apply = _perceptual_apply(cfg.generator_loss)
        if lpips_params is None:
            raise ValueError(f"generator_loss={cfg.generator_loss!r} needs lpips_params (load_perceptual)")

    def loss_fn(g_params):
        fake = generate_batch(cfg, g_params, keys, batch)
        fake_in, _ = prepare(cfg, fake, batch["clean"])
        scores = critic(cfg, state.d_params, sn_state, condition)(fake_in)
        # In the residual's own units (the Wasserstein distance is 1-homogeneous): the scale lets the critic
        # see the noise, and does not reweigh the adversarial term against the level and structure terms.
        adv = -global_mean(scores, axis_name) / cfg.critic_scale
        loss, metrics = adv, dict(g_adv=adv)
        if cfg.level_weight:
            term = level_term(fake - batch["clean"], batch["noisy"] - batch["clean"], axis_name,
                              clean=batch["clean"], bins=cfg.level_bins)
            loss = loss + cfg.level_weight * term
            metrics["level"] = term
        if cfg.structure_weight:
            term = structure_term(fake - batch["clean"], batch["noisy"] - batch["clean"], axis_name)
            loss = loss + cfg.structure_weight * term
            metrics["structure"] = term
        if lpips_apply is not None:
            from starlight_jax.perceptual import lpips_term

            term = global_mean(lpips_term(lpips_apply, lpips_params, fake_in, real_in), axis_name)
            loss = loss + cfg.lpips_weight * term
            metrics["lpips"] = term
        metrics["g_loss"] = loss
        return loss, metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.g_params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
    g_tx, _ = _optimizers(cfg, state.g_params)
    updates, g_opt = g_tx.update(grads, state.g_opt, state.g_params)
    return state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt=g_opt,
                         sn_state=sn_state), metrics


@functools.lru_cache(maxsize=4)
def _perceptual_apply(name: str):
    from starlight_jax.perceptual import load_perceptual

    return load_perceptual(name)[0]


def eval_step(cfg: TrainConfig, g_params, key, batch):
    """Generated noisy bursts for a test batch with a fixed key (dropout off): ``[B, T, H, W, C]``."""
    keys = jax.random.split(key, batch["clean"].shape[0])
    return generate_batch(cfg, g_params, keys, batch, train=False)
