"""Training a denoiser on clean/noisy pairs: pure jitted steps, noise sources and the loop.

* `train_step(state, batch, key, noise_params=None, *, config, noise_fn=None, axis_name=None)`: one Adam
  step on the L1 loss :math:`\\operatorname{mean} |D_\\theta(y) - x|`. ``batch`` holds ``"clean"``
  ``[B, T, h, w, C]`` (or ``[N, h, w, C]``) and either ``"noisy"`` (real pairs) or, when ``noise_fn`` is
  given, the noisy images are synthesised inside the step from ``clean`` with ``key`` (one key per burst
  of the global batch) and ``"offset"`` ``[B, 2]`` (where each crop sits in the full frame, for fixed
  patterns). Synthesis on the device keeps the step one compiled program under data parallelism.
* `eval_step(params, noisy, *, config)`: the denoised images, clipped to [0, 1].
* `NoiseSource` + `learned_source` / `baseline_source`: the pairs of issue #8: a trained `NoiseModel`,
  a fitted Gaussian, Poisson-Gaussian or binned Gaussian baseline; ``None`` means the real noisy images.
* `train_denoiser(...)`: the Python loop (batches from a `BurstLoader`, `DataParallel` placement,
  step keys ``fold_in(key, step)``, non-finite check, loss log).

.. note::
   **Fixed pattern.** When the data carry an additive fixed pattern (`BurstDataset.fixed_pattern`, the
   mean dark frame), every synthetic source adds the same map cropped at the batch's offset: the
   baselines because they are fitted to ``noisy - clean - fixed_pattern`` (as in
   `starlight_jax.evaluation`), a learned model without ``fixed1``/``learnedfixed`` because it cannot make
   that offset. A learned model with such a component uses its own map at the offset instead.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from starlight_jax.baselines import sample_baseline
from starlight_jax.denoise.model import DenoiserConfig, apply_denoiser, denoise, init_denoiser
from starlight_jax.noise import crop_map
from starlight_jax.parallel import burst_keys

SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class DenoiseTrainConfig:
    """Optimiser settings of a denoiser (the model itself is a `DenoiserConfig`).

    Attributes:
      lr: Adam (peak) learning rate.
      b1: Adam beta1.
      b2: Adam beta2.
      grad_clip: global gradient-norm clip (None: off).
      schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"``: a linear warm-up from 0 over
        ``warmup_steps``, then a cosine decay to 0 at ``decay_steps``. Decaying to 0 ends training at a
        minimum rather than wherever Adam's last noisy steps left it, so denoisers trained with different
        seeds agree far better (`starlight_jax.denoise.benchmark` relies on it to call ties).
      warmup_steps: steps of linear warm-up (``"cosine"`` only).
      decay_steps: the step at which the cosine reaches 0 (warm-up included); None: `train_denoiser` sets
        it to its ``steps``.
    """

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: Optional[float] = 1.0
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: Optional[int] = None

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.decay_steps is not None and (isinstance(self.decay_steps, bool) or not isinstance(
                self.decay_steps, int) or self.decay_steps <= self.warmup_steps):
            raise ValueError(f"decay_steps must be an int > warmup_steps ({self.warmup_steps}) or None, "
                             f"got {self.decay_steps!r}")

    def learning_rate(self):
        """The learning rate: a float, or an optax schedule of the step."""
        if self.schedule == "constant":
            return self.lr
        if self.decay_steps is None:
            raise ValueError("schedule 'cosine' needs decay_steps (train_denoiser sets it to its steps)")
        return optax.warmup_cosine_decay_schedule(0.0 if self.warmup_steps else self.lr, self.lr,
                                                  self.warmup_steps, self.decay_steps, end_value=0.0)

    def optimizer(self) -> optax.GradientTransformation:
        adam = optax.adam(self.learning_rate(), b1=self.b1, b2=self.b2)
        return adam if self.grad_clip is None else optax.chain(optax.clip_by_global_norm(self.grad_clip), adam)


@struct.dataclass
class DenoiserState:
    """What changes during training; a pytree."""

    step: jax.Array  # [] int32, completed steps
    params: Any
    opt_state: Any


def create_train_state(key, model: DenoiserConfig, train: DenoiseTrainConfig) -> DenoiserState:
    """Initial params (from ``key``) and Adam state."""
    params = init_denoiser(key, model)
    return DenoiserState(step=jnp.zeros((), jnp.int32), params=params, opt_state=train.optimizer().init(params))


# ------------------------------------------------------------------------------------------------------
# Noise sources
# ------------------------------------------------------------------------------------------------------
NoiseFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


class NoiseSource(NamedTuple):
    """``fn(params, key, clean [T, h, w, C], offset [2]) -> noisy [T, h, w, C]`` (pure) and its params."""

    name: str
    fn: NoiseFn
    params: Any


def _check_map(fixed_pattern, channels: int):
    if fixed_pattern is None:
        return None
    fp = jnp.asarray(fixed_pattern, jnp.float32)
    if fp.ndim != 3 or fp.shape[-1] != channels:
        raise ValueError(f"fixed_pattern must be [Hf, Wf, {channels}], got {fp.shape}")
    return fp


def _learned_noise(params, key, clean, offset, *, config, own_offset: bool):
    from starlight_jax.generator import generate

    y = generate(params["model"], key, clean, config, train=False, fixed_offset=offset if own_offset else None)
    if params["fixed_pattern"] is not None:
        y = jnp.clip(y + crop_map(params["fixed_pattern"], offset, *clean.shape[-3:-1]), 0.0, 1.0)
    return y


def learned_source(model, fixed_pattern=None) -> NoiseSource:
    """The learned generator (``train=False``) as a `NoiseSource`.

    Args:
      model: a `NoiseModel` (`starlight_jax.checkpoint.load_noise_model`).
      fixed_pattern: ``[Hf, Wf, C]`` map added at the crop offset (see the module note); ignored (not
        added twice) when the model has its own ``fixed1``/``learnedfixed`` map.
    """
    noise = model.config.noise
    own = bool(noise.fixed or noise.learned_fixed)
    fp = None if own else _check_map(fixed_pattern, model.config.channels)
    fn = functools.partial(_learned_noise, config=model.config, own_offset=own)
    return NoiseSource("model", fn, {"model": model.params, "fixed_pattern": fp})


def _baseline_noise(params, key, clean, offset):
    fmap = params["fixed_pattern"]
    crop = None if fmap is None else crop_map(fmap, offset, *clean.shape[-3:-1])
    return sample_baseline(params["baseline"], key, clean, crop)


def baseline_source(name: str, baseline, fixed_pattern=None) -> NoiseSource:
    """A fitted `GaussianBaseline` / `PoissonGaussianBaseline` / `BinnedGaussianBaseline` as a `NoiseSource`.

    ``clip(clean + fixed_pattern + mean(clean) + std(clean) * eps, 0, 1)`` (the mean is 0 but for the
    binned Gaussian); without ``fixed_pattern`` this is exactly ``baseline.sample(key, clean)``.
    """
    channels = (baseline.sigma if hasattr(baseline, "sigma") else baseline.a).shape[-1]
    return NoiseSource(name, _baseline_noise, {"baseline": baseline,
                                               "fixed_pattern": _check_map(fixed_pattern, channels)})


# ------------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------------
def make_noisy(batch: dict, key, noise_params=None, *, noise_fn: Optional[NoiseFn] = None,
               axis_name: Optional[str] = None):
    """The noisy side of ``batch``: ``batch["noisy"]``, or ``noise_fn`` on every burst of ``batch["clean"]``.

    Args:
      batch: ``{"clean": [B, T, h, w, C], "noisy"?: same, "offset"?: [B, 2]}`` (this device's part).
      key: the step key; burst b of the global batch uses ``split(key, B_global)[b]``.
      noise_params: the source's params.
      noise_fn: a `NoiseSource.fn`, or None for the real noisy images.
      axis_name: the pmap axis, if any.
    """
    clean = batch["clean"]
    if noise_fn is None:
        if "noisy" not in batch:
            raise ValueError("batch has no 'noisy' images and no noise_fn was given to synthesise them")
        return batch["noisy"]
    if clean.ndim != 5:
        raise ValueError(f"synthesising pairs needs bursts clean [B, T, h, w, C]; got shape {clean.shape}")
    n_local = clean.shape[0]
    global_batch = n_local if axis_name is None else n_local * jax.lax.psum(1, axis_name)
    offsets = batch.get("offset")
    if offsets is None:
        offsets = jnp.zeros((n_local, 2), jnp.int32)
    keys = burst_keys(key, global_batch, axis_name)
    return jax.vmap(lambda k, x, o: noise_fn(noise_params, k, x, o))(keys, clean, offsets)


def train_step(state: DenoiserState, batch: dict, key, noise_params=None, *, config: DenoiserConfig,
               train_config: DenoiseTrainConfig = DenoiseTrainConfig(), noise_fn: Optional[NoiseFn] = None,
               axis_name: Optional[str] = None):
    """One Adam step on the L1 loss between the denoised and the clean images.

    Args:
      state: the `DenoiserState`.
      batch: ``{"clean", "noisy"?: [B, T, h, w, C] or [N, h, w, C], "offset"?: [B, 2]}``.
      key: the step's PRNG key (used only when ``noise_fn`` synthesises the noisy images).
      noise_params: params of ``noise_fn``.
      config: the denoiser (static).
      train_config: the optimiser (static).
      noise_fn: None for real pairs, else a `NoiseSource.fn` (static).
      axis_name: the pmap axis name; None under jit (sharded or not).

    Returns:
      ``(new_state, {"loss": L1, "psnr_in": mean PSNR of the noisy inputs, "l1_in": L1 of the noisy inputs
      (the loss of the identity, which a denoiser that collapsed to it scores)})``.
    """
    from starlight_jax.metrics import psnr

    clean = batch["clean"]
    noisy = jax.lax.stop_gradient(make_noisy(batch, key, noise_params, noise_fn=noise_fn, axis_name=axis_name))

    def loss_fn(params):
        return jnp.mean(jnp.abs(apply_denoiser(params, noisy, config) - clean))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    psnr_in = jnp.mean(psnr(noisy, clean))
    l1_in = jnp.mean(jnp.abs(noisy - clean))
    if axis_name is not None:
        loss, grads, psnr_in, l1_in = jax.lax.pmean((loss, grads, psnr_in, l1_in), axis_name)
    updates, opt_state = train_config.optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "psnr_in": psnr_in, "l1_in": l1_in}


@functools.partial(jax.jit, static_argnames=("config",))
def eval_step(params, noisy, *, config: DenoiserConfig):
    """Denoised ``noisy`` ``[..., H, W, C]``, clipped to [0, 1] (`model.denoise`, jitted)."""
    return denoise(params, noisy, config)


def denoise_images(params, images, config: DenoiserConfig, *, chunk: int = 8) -> np.ndarray:
    """`eval_step` over ``images`` ``[N, H, W, C]`` (numpy) in chunks of ``chunk`` images."""
    images = np.asarray(images, np.float32)
    out = [np.asarray(eval_step(params, jnp.asarray(images[i:i + chunk]), config=config))
           for i in range(0, len(images), chunk)]
    return np.concatenate(out) if out else images


# ------------------------------------------------------------------------------------------------------
# Loop
# ------------------------------------------------------------------------------------------------------
class NonFiniteLoss(RuntimeError):
    pass


def train_denoiser(batches, steps: int, *, config: DenoiserConfig,
                   train_config: DenoiseTrainConfig = DenoiseTrainConfig(), source: Optional[NoiseSource] = None,
                   seed: int = 0, parallel=None, log_every: int = 0, log=print, name: str = ""):
    """Trains a denoiser for ``steps`` steps; returns ``(params, history)``.

    Initialisation uses ``split(key(seed))[0]`` and step s uses ``fold_in(split(key(seed))[1], s)``, so
    two runs with the same seed and batches start from the same weights and draw the same keys whatever
    the source.

    Args:
      batches: an iterator of host batches ``{"clean", "noisy", "offset"}`` (e.g. a `BurstLoader`).
      steps: number of steps.
      config: the denoiser.
      train_config: the optimiser.
      source: a `NoiseSource` for synthetic pairs; None trains on the batches' real noisy images.
      seed: init and step-key seed.
      parallel: a `starlight_jax.parallel.DataParallel` (default: ``"shard"`` over all local devices).
      log_every: print the running loss every N steps (0: never).
      log: where to print.
      name: label in log lines and errors.

    Returns:
      ``params`` (on the host) and ``{"loss": [per-step L1], "psnr_in": [...], "l1_in": [...], "seconds": float}``.

    Raises:
      NonFiniteLoss: the loss became NaN/inf, naming the step.
    """
    from starlight_jax.parallel import DataParallel

    if isinstance(steps, bool) or int(steps) < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    dp = parallel or DataParallel("shard")
    if train_config.schedule != "constant" and train_config.decay_steps is None:
        train_config = dataclasses.replace(train_config, decay_steps=int(steps))
    init_key, step_key = jax.random.split(jax.random.key(seed))
    state = dp.put_state(create_train_state(init_key, config, train_config))
    fn = functools.partial(train_step, config=config, train_config=train_config,
                           noise_fn=None if source is None else source.fn)
    step_fn = dp.step(fn, replicated_args=2)
    noise_params = None if source is None else source.params
    history = {"loss": [], "psnr_in": [], "l1_in": []}
    t0 = time.time()
    pending = []
    for s in range(int(steps)):
        batch = dp.put_batch(next(batches))
        state, metrics = step_fn(state, batch, jax.random.fold_in(step_key, s), noise_params)
        pending.append(metrics)
        log_now = bool(log_every) and ((s + 1) % log_every == 0 or s == steps - 1)
        if len(pending) >= 10 or s == steps - 1 or log_now:  # fetch a few at once: fewer host syncs
            for m in pending:
                m = dp.metrics(m)
                history["loss"].append(m["loss"])
                history["psnr_in"].append(m["psnr_in"])
                history["l1_in"].append(m["l1_in"])
            pending = []
            if not math.isfinite(history["loss"][-1]):
                raise NonFiniteLoss(f"{name}: non-finite L1 loss at step {len(history['loss']) - 1}")
        if log_now:
            recent = history["loss"][-log_every:]
            log(f"[{name}] step {s + 1}/{steps}: L1 {np.mean(recent):.5f}, input PSNR "
                f"{np.mean(history['psnr_in'][-log_every:]):.2f} dB ({time.time() - t0:.0f} s)")
    params = jax.device_get(dp.get_state(state).params)
    history["seconds"] = time.time() - t0
    return params, history
