"""The spectral-norm patch critic ``DiscriminatorS2d`` of SPEC §4.1, in Flax linen.

Input: a batch of NHWC patches ``[..., 64, 64, C]``; output: one score per patch ``[...]``.

Spectral normalisation (SPEC §4.3): every layer keeps its raw kernel ``W`` in ``params`` and its
left singular-vector estimate ``u`` ([out], PyTorch's ``weight_u``) in the non-trainable collection
:data:`SN_COLLECTION`. Each call runs one power iteration from ``u`` without gradient, computes
``sigma = u^T W v`` with the gradient flowing through ``W``, and uses ``W / sigma``; ``W / sigma`` is
never written back. The state advances only when the caller asks (``update_stats=True``): thread it
through the train state like batch-norm statistics. ``flax.linen.SpectralNorm`` is not used because its
``init`` stores ``W / sigma`` as the kernel.

.. note::
   The original stores ``u`` and ``v`` as (gradient-free) Parameters and advances them on every forward,
   four times per training iteration (SPEC §12.17). Call :func:`apply_discriminator` with
   ``update_stats=True`` on every D call to replicate that, or once per step to fix it. ``v`` is not
   stored because the next power iteration recomputes it from ``u``.

Torch weight porting: a conv kernel is ``weight.permute(2, 3, 1, 0)``; the linear layer sees the conv5
features flattened in NCHW order ``(1024, 4, 4)``, exactly like the original, so its kernel is
``weight.T``; ``weight_u`` maps to ``sn_state[layer]['u']`` (``weight_v`` is not needed).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PATCH_SIZE = 64
# Non-trainable collection holding the spectral-norm state (flax's convention for mutable statistics).
SN_COLLECTION = "batch_stats"
LEAKY_SLOPE = 0.1
SN_EPS = 1e-12

WIDTH = 64  # conv1's channels in the original; the others are 2×, 4×, 8×, 16× this
# (name, out channels as a multiple of the width, kernel, stride); every conv pads 1 pixel on each side.
_CONVS = (
    ("conv1", 1, 3, 1),
    ("conv2", 2, 4, 2),
    ("conv3", 4, 4, 2),
    ("conv4", 8, 4, 2),
    ("conv5", 16, 3, 2),
)
LAYERS = tuple(name for name, *_ in _CONVS) + ("linear",)


def _uniform(bound: float):
    """U(-bound, bound): PyTorch's default init (kaiming-uniform a=sqrt(5)) for weights and biases."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x / (jnp.linalg.norm(x) + SN_EPS)  # the original's normalisation, eps outside the norm


def power_iteration(matrix: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One power-iteration step for the largest singular value, without gradient.

    Args:
      matrix: [fan_in, out], the kernel with its output axis last (the transpose of torch's (out, -1)).
      u: [out], the current left singular-vector estimate.

    Returns:
      ``(u_new [out], v [fan_in])`` with ``v = normalise(W^T u)`` and ``u_new = normalise(W v)``.
    """
    matrix = jax.lax.stop_gradient(matrix)
    v = _l2_normalize(matrix @ u)
    u_new = _l2_normalize(matrix.T @ v)
    return u_new, v


# How a fresh ``u`` is normalised. `init_discriminator`'s compiled init stores the raw draw (the identity)
# and normalises it afterwards, op by op, as an uncompiled init does: compiled, the norm fuses and rounds
# otherwise, and the start vectors (so every training run) would move in their last bits.
_U_INIT = [_l2_normalize]


def _spectral_normalize(module: nn.Module, kernel: jax.Array, update_stats: bool) -> jax.Array:
    """``kernel / sigma`` with sigma from one power iteration; keeps ``u`` in :data:`SN_COLLECTION`."""
    matrix = kernel.reshape(-1, kernel.shape[-1])
    u_var = module.variable(
        SN_COLLECTION, "u",
        lambda: _U_INIT[0](jax.random.normal(module.make_rng("params"), (kernel.shape[-1],))))
    u, v = power_iteration(matrix, u_var.value)
    sigma = v @ matrix @ u  # u, v are constants here: the gradient flows through W only, as in the original
    if update_stats and not module.is_initializing():
        u_var.value = u
    return kernel / sigma


def conv_as_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The critic's convolution (1-pixel zero padding) as one matmul of the patches' windows (im2col).

    Equal to ``lax.conv_general_dilated`` to float rounding. On XLA's CPU backend the gradients of strided
    convolutions are convolutions with a dilated input or kernel, which it runs ~10x slower than plain
    ones; the gradient penalty's double backward consists of little else (benchmarks/README.md). Written
    as strided slices, a concatenation and a matmul, every derivative is slices, pads and matmuls.

    Args:
      x: [N, H, W, C].
      kernel: [k, k, C, O].
      stride: square stride.

    Returns:
      [N, (H + 2 - k) // stride + 1, (W + 2 - k) // stride + 1, O].
    """
    k = kernel.shape[0]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    # Window offsets (i, j) outermost, channels innermost: the row order of the HWIO kernel reshaped.
    cols = jnp.concatenate([xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
                            for i in range(k) for j in range(k)], axis=-1)
    return cols @ kernel.reshape(-1, kernel.shape[-1])


def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    if jax.default_backend() == "cpu":
        return conv_as_matmul(x, kernel, stride)
    # Elsewhere (cuDNN) the native convolution and its gradients are fast (the GPU rows of the benchmarks).
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class SNConv(nn.Module):
    """Spectral-norm 2-D conv with symmetric 1-pixel zero padding and PyTorch-like init.

    Attributes:
      features: output channels.
      kernel_size: square kernel side.
      stride: square stride.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dtype: Any = jnp.float32  # compute dtype (the kernel and its spectral norm stay float32)

    @nn.compact
    def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
        """x: [N, H, W, C] → [N, H', W', features]."""
        k = self.kernel_size
        bound = 1.0 / math.sqrt(k * k * x.shape[-1])
        kernel = self.param("kernel", _uniform(bound), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", _uniform(bound), (self.features,))
        kernel = _spectral_normalize(self, kernel, update_stats)
        x = x.astype(self.dtype)
        y = _conv(x, kernel.astype(self.dtype), self.stride)
        return y + bias.astype(self.dtype)


class SNDense(nn.Module):
    """Spectral-norm linear layer with PyTorch-like init.

    Attributes:
      features: output features.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
        """x: [N, F] → [N, features]."""
        bound = 1.0 / math.sqrt(x.shape[-1])
        kernel = self.param("kernel", _uniform(bound), (x.shape[-1], self.features))
        bias = self.param("bias", _uniform(bound), (self.features,))
        kernel = _spectral_normalize(self, kernel, update_stats).astype(self.dtype)
        return x.astype(self.dtype) @ kernel + bias.astype(self.dtype)


class Discriminator(nn.Module):
    """``DiscriminatorS2d`` (``sigmoid=False``) or ``DiscriminatorS2d_sig`` (``sigmoid=True``).

    Five spectral-norm convs (C→64 k3s1, →128 k4s2, →256 k4s2, →512 k4s2, →1024 k3s2), each followed
    by LeakyReLU(0.1), then flatten in NCHW order and a spectral-norm Linear(1024·(P/16)² → 1).

    Attributes:
      sigmoid: squash scores into (0, 1). The released script used it, the pretrained model evidently did
        not (SPEC §12.11), so the default is the plain WGAN critic.
      patch_size: side of the square input patches (64 in the original, 16·1024 = 16384 linear inputs).
      width: channels of conv1 (64 in the original); conv2..conv5 have 2, 4, 8 and 16 times as many. A
        narrower critic (16) costs 1/16 of the FLOPs, which is what makes CPU training practical.
      dtype: compute dtype of the layers (e.g. bfloat16); weights, spectral norms and scores stay float32.
    """

    sigmoid: bool = False
    patch_size: int = PATCH_SIZE
    width: int = WIDTH
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, update_stats: bool) -> jax.Array:
        """Scores patches.

        Args:
          x: [..., P, P, C] patches, ``P = patch_size``.
          update_stats: store the advanced power-iteration state; needs ``mutable=[SN_COLLECTION]``.

        Returns:
          [...] scores, one per patch.

        Raises:
          ValueError: if the patches are not ``patch_size`` × ``patch_size``.
        """
        if x.ndim < 3 or x.shape[-3:-1] != (self.patch_size, self.patch_size):
            raise ValueError(
                f"Discriminator expects patches of shape [..., {self.patch_size}, {self.patch_size}, C], got "
                f"patch shape {x.shape[-3:-1]} (x shape {x.shape}).")
        lead = x.shape[:-3]
        y = x.reshape(-1, *x.shape[-3:])
        for name, multiple, k, stride in _CONVS:
            y = SNConv(multiple * self.width, k, stride, dtype=self.dtype, name=name)(y, update_stats=update_stats)
            y = nn.leaky_relu(y, LEAKY_SLOPE)
        # NCHW flattening, as torch's x.view(N, -1), so the linear weight ports without a permutation.
        y = jnp.transpose(y, (0, 3, 1, 2)).reshape(y.shape[0], -1)
        y = SNDense(1, dtype=self.dtype, name="linear")(y, update_stats=update_stats)[:, 0].astype(jnp.float32)
        if self.sigmoid:
            y = nn.sigmoid(y)
        return y.reshape(lead)


def init_discriminator(key: jax.Array, channels: int, *, sigmoid: bool = False,
                       patch_size: int = PATCH_SIZE, width: int = WIDTH) -> tuple[Any, Any]:
    """Creates discriminator weights and spectral-norm state.

    Args:
      key: PRNG key for the weights and the initial ``u`` vectors.
      channels: input channels C (see ``patches.discriminator_channels``).
      sigmoid: see :class:`Discriminator`; only recorded here to mirror :func:`apply_discriminator`.
      patch_size: side of the square input patches.
      width: see :class:`Discriminator`.

    Returns:
      ``(params, sn_state)``: trainable weights, and the ``u``/``sigma`` state of :data:`SN_COLLECTION`.
    """
    if channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}.")
    if patch_size < 16 or patch_size % 16:
        raise ValueError(
            f"patch_size must be a positive multiple of 16 (four stride-2 convs), got {patch_size!r}.")
    if width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}.")
    variables = _init(key, channels=channels, sigmoid=sigmoid, patch_size=patch_size, width=width)
    return variables["params"], jax.tree_util.tree_map(_l2_normalize, variables[SN_COLLECTION])


# Compiled once per shape: run op by op, the init's ~150 small ops (random draws, power-iteration vectors,
# each compiled on its own) took longer than the training step's compilation.
@functools.partial(jax.jit, static_argnames=("channels", "sigmoid", "patch_size", "width"))
def _init(key, *, channels, sigmoid, patch_size, width):
    model = Discriminator(sigmoid=sigmoid, patch_size=patch_size, width=width)
    _U_INIT[0] = lambda u: u  # raw draws, normalised by the caller (see _U_INIT); only while tracing
    try:
        return model.init(key, jnp.zeros((1, patch_size, patch_size, channels), jnp.float32), update_stats=False)
    finally:
        _U_INIT[0] = _l2_normalize


def apply_discriminator(params: Any, sn_state: Any, x: jax.Array, *, update_stats: bool,
                        sigmoid: bool = False, patch_size: int = PATCH_SIZE, dtype=jnp.float32) -> tuple[jax.Array, Any]:
    """Scores patches: ``D(params, state, x) -> (scores, new_state)``.

    The scores of different patches are independent, so ``jax.grad(lambda x: apply(...)[0].sum())(x)``
    gives every sample's input gradient at once (the WGAN-GP penalty).

    Args:
      params: trainable weights from :func:`init_discriminator`.
      sn_state: spectral-norm state from :func:`init_discriminator` or a previous call.
      x: [..., P, P, C] patches.
      update_stats: return the state advanced by one power iteration; otherwise ``sn_state`` unchanged.
        A Python bool (static under ``jit``).
      sigmoid: see :class:`Discriminator`.
      patch_size: side of the square input patches.
      dtype: compute dtype (`Discriminator.dtype`); the scores are float32.

    Returns:
      ``(scores [...], new_sn_state)``.
    """
    # The width is read off the weights, so callers need not carry it.
    model = Discriminator(sigmoid=sigmoid, patch_size=patch_size, width=params["conv1"]["kernel"].shape[-1],
                          dtype=dtype)
    variables = {"params": params, SN_COLLECTION: sn_state}
    if update_stats:
        scores, updates = model.apply(variables, x, update_stats=True, mutable=[SN_COLLECTION])
        return scores, updates[SN_COLLECTION]
    return model.apply(variables, x, update_stats=False), sn_state


def normalized_kernels(params: Any, sn_state: Any) -> dict[str, tuple[jax.Array, jax.Array]]:
    """The ``(W / sigma, sigma)`` pairs a forward pass with this state uses, per layer.

    Repeats the forward's single power iteration from the stored ``u`` (without storing it), for tests and
    diagnostics: the largest singular value of each ``W / sigma`` tends to 1 as the state is updated.

    Args:
      params: trainable weights.
      sn_state: spectral-norm state.

    Returns:
      ``{layer: (normalized kernel with the stored kernel's shape, sigma scalar)}`` for
      ``conv1`` … ``conv5`` and ``linear``.
    """
    out = {}
    for name in LAYERS:
        kernel = params[name]["kernel"]
        matrix = kernel.reshape(-1, kernel.shape[-1])
        u, v = power_iteration(matrix, sn_state[name]["u"])
        sigma = v @ matrix @ u
        out[name] = (kernel / sigma, sigma)
    return out
