"""Reference noise models printed next to the learned model in every evaluation.

All are fitted in closed form from clean/noisy pairs and sample with an explicit
key, so they go through the same metrics as the GAN generator:

* :class:`GaussianBaseline`: homoscedastic, :math:`y = x + \\sigma_c \\varepsilon`.
* :class:`PoissonGaussianBaseline`: heteroscedastic (the usual camera noise level
  function), :math:`y = x + \\sqrt{a_c x + b_c}\\, \\varepsilon`.
* :class:`BinnedGaussianBaseline`: a free-form noise level function,
  :math:`y = x + \\mu_c(x) + \\sigma_c(x)\\, \\varepsilon`, with the residual mean and std tabulated in
  intensity bins: no law to fit, so it is the strongest per-pixel *white* model (any error left is
  structure: spatial or cross-channel correlation).

with :math:`\\varepsilon \\sim \\mathcal N(0, 1)` per pixel and channel, and the
result clipped to [0, 1] like the generator's output. The models are NamedTuples,
hence pytrees: they can be passed through ``jax.jit`` as arguments.

.. note::
   Real noisy data are clipped to [0, 1] as well, which shrinks the residuals of
   very dark and very bright pixels; the fits do not model that censoring, so
   data with many saturated pixels bias the fitted noise low there.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax.generator import quantize
from starlight_jax.metrics.residual_stats import noise_level_function, residual
from starlight_jax.validation import check_array


def _check_clean(clean, channels: int) -> jax.Array:
    """Static checks only (``clean`` may be a tracer)."""
    return check_array("clean", jnp.asarray(clean), min_rank=3, channels=channels, unit=True, values=False)


class GaussianBaseline(NamedTuple):
    """Homoscedastic Gaussian noise with one standard deviation per channel."""
    sigma: jax.Array  # [C] float32 standard deviation per channel

    def sample(self, key: jax.Array, clean) -> jax.Array:
        """Noisy image :math:`\\mathrm{clip}(x + \\sigma_c \\varepsilon, 0, 1)`.

        Args:
          key: a PRNG key.
          clean: [..., H, W, C] float clean image in [0, 1].

        Returns:
          [..., H, W, C] noisy image with the dtype of ``clean``. Jittable.
        """
        return sample_baseline(self, key, clean)

    def to_dict(self) -> dict:
        """JSON-serialisable parameters."""
        return {"model": "gaussian", "sigma": [float(s) for s in np.asarray(self.sigma)]}

    @classmethod
    def from_dict(cls, d: dict) -> "GaussianBaseline":
        """Inverse of :meth:`to_dict`."""
        return cls(jnp.asarray(d["sigma"], jnp.float32))


class PoissonGaussianBaseline(NamedTuple):
    """Heteroscedastic noise with variance :math:`a_c x + b_c` per channel."""
    a: jax.Array  # [C] float32 signal-dependent (shot) slope, >= 0
    b: jax.Array  # [C] float32 signal-independent (read) variance, >= 0

    def sample(self, key: jax.Array, clean) -> jax.Array:
        """Noisy image :math:`\\mathrm{clip}(x + \\sqrt{\\max(a_c x + b_c, 0)}\\, \\varepsilon, 0, 1)`.

        Args:
          key: a PRNG key.
          clean: [..., H, W, C] float clean image in [0, 1].

        Returns:
          [..., H, W, C] noisy image with the dtype of ``clean``. Jittable.
        """
        return sample_baseline(self, key, clean)

    def to_dict(self) -> dict:
        """JSON-serialisable parameters."""
        return {"model": "poisson_gaussian", "a": [float(v) for v in np.asarray(self.a)],
                "b": [float(v) for v in np.asarray(self.b)]}

    @classmethod
    def from_dict(cls, d: dict) -> "PoissonGaussianBaseline":
        """Inverse of :meth:`to_dict`."""
        return cls(jnp.asarray(d["a"], jnp.float32), jnp.asarray(d["b"], jnp.float32))


def _interp_table(table: jax.Array, clean: jax.Array) -> jax.Array:
    """Linear interpolation of ``table`` [K, C] (values at bin centres (k + 1/2) / K) at ``clean`` [..., C];
    constant beyond the first and last centres."""
    k = table.shape[0]
    t = jnp.clip(clean * k - 0.5, 0.0, k - 1.0)  # position in units of bin centres
    i0 = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, max(k - 2, 0))
    i1 = jnp.minimum(i0 + 1, k - 1)
    f = t - i0
    ch = jnp.arange(table.shape[1])
    return table[i0, ch] * (1.0 - f) + table[i1, ch] * f


class BinnedGaussianBaseline(NamedTuple):
    """Gaussian noise whose mean and std per channel follow the clean intensity, tabulated in K bins.

    The tables hold the values at the bin centres :math:`(k + 1/2) / K` of K equal bins on [0, 1];
    between centres they are interpolated linearly, beyond the first and last centre held constant.
    """
    mu: jax.Array  # [K, C] float32 residual mean at the bin centres
    sigma: jax.Array  # [K, C] float32 residual std at the bin centres, >= 0

    def mean_std(self, clean) -> tuple[jax.Array, jax.Array]:
        """``(mu(x), sigma(x))`` ``[..., H, W, C]`` at the clean values (interpolated). Jittable."""
        clean = _check_clean(clean, self.sigma.shape[-1])
        return (_interp_table(self.mu.astype(clean.dtype), clean),
                _interp_table(self.sigma.astype(clean.dtype), clean))

    def sample(self, key: jax.Array, clean) -> jax.Array:
        """Noisy image :math:`\\mathrm{clip}(x + \\mu_c(x) + \\sigma_c(x) \\varepsilon, 0, 1)`.

        Args:
          key: a PRNG key.
          clean: [..., H, W, C] float clean image in [0, 1].

        Returns:
          [..., H, W, C] noisy image with the dtype of ``clean``. Jittable.
        """
        return sample_baseline(self, key, clean)

    def to_dict(self) -> dict:
        """JSON-serialisable parameters (``[K][C]`` lists)."""
        return {"model": "binned_gaussian", "n_bins": int(self.mu.shape[0]),
                "mu": np.asarray(self.mu, np.float64).tolist(), "sigma": np.asarray(self.sigma, np.float64).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "BinnedGaussianBaseline":
        """Inverse of :meth:`to_dict`."""
        return cls(jnp.asarray(d["mu"], jnp.float32), jnp.asarray(d["sigma"], jnp.float32))


def baseline_std(baseline, clean) -> jax.Array:
    """Per-pixel noise std of a baseline on ``clean`` ``[..., H, W, C]``."""
    if isinstance(baseline, GaussianBaseline):
        return jnp.broadcast_to(baseline.sigma.astype(clean.dtype), clean.shape)
    if isinstance(baseline, BinnedGaussianBaseline):
        return baseline.mean_std(clean)[1]
    a, b = baseline.a.astype(clean.dtype), baseline.b.astype(clean.dtype)
    # max(., 0) guards clean values slightly below 0; a, b >= 0 otherwise.
    return jnp.sqrt(jnp.maximum(a * clean + b, 0.0))


def baseline_mean(baseline, clean) -> jax.Array:
    """Per-pixel noise mean of a baseline on ``clean`` (0 but for `BinnedGaussianBaseline`)."""
    if isinstance(baseline, BinnedGaussianBaseline):
        return baseline.mean_std(clean)[0]
    return jnp.zeros_like(clean)


def sample_baseline(baseline, key: jax.Array, clean, offset_map=None, step: Optional[float] = None) -> jax.Array:
    """A baseline's noisy image, the one sampler of every caller (``.sample``, evaluation, the denoiser's pairs).

    :math:`\\mathrm{clip}(x + o + \\mu(x) + \\sigma(x) \\varepsilon, 0, 1)`, rounded to multiples of ``step``
    before the clip when given (as a model that rounds its output is).

    Args:
      baseline: a `GaussianBaseline`, `PoissonGaussianBaseline` or `BinnedGaussianBaseline`.
      key: a PRNG key.
      clean: [..., H, W, C] float clean image in [0, 1].
      offset_map: optional map broadcasting to ``clean`` (a dataset's fixed pattern at the crop), added.
      step: optional quantisation step.

    Returns:
      [..., H, W, C] noisy image with the dtype of ``clean``. Jittable.
    """
    channels = (baseline.a if isinstance(baseline, PoissonGaussianBaseline) else baseline.sigma).shape[-1]
    clean = _check_clean(clean, channels)
    eps = jax.random.normal(key, clean.shape, clean.dtype)
    base = clean if offset_map is None else clean + offset_map
    noisy = base + baseline_mean(baseline, clean) + baseline_std(baseline, clean) * eps
    return jnp.clip(noisy if step is None else quantize(noisy, step), 0.0, 1.0)


def fit_gaussian(noisy, clean) -> GaussianBaseline:
    """Fits :class:`GaussianBaseline` by maximum likelihood, per channel.

    For the zero-mean model :math:`n = y - x \\sim \\mathcal N(0, \\sigma_c^2)` the
    ML estimate over all :math:`N` pixels of channel c is

    .. math::

       \\hat\\sigma_c = \\sqrt{\\tfrac{1}{N} \\sum_i n_{i,c}^2},

    with standard error :math:`\\approx \\sigma_c / \\sqrt{2N}`. A non-zero mean
    residual is folded into :math:`\\hat\\sigma_c` (the model cannot shift).

    Args:
      noisy: [..., H, W, C] float noisy images.
      clean: [..., H, W, C] float clean images.

    Returns:
      The fitted :class:`GaussianBaseline`.

    Raises:
      ValueError: on shape/dtype mismatch or non-finite values.
    """
    res = residual(noisy, clean)
    sigma = np.sqrt(np.mean(res.reshape(-1, res.shape[-1]) ** 2, axis=0))
    return GaussianBaseline(jnp.asarray(sigma, jnp.float32))


def _fit_line_nonneg(x: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares ``v ~ a x + b`` subject to ``a, b >= 0``.

    With two parameters the constrained optimum is either the unconstrained one
    (if feasible) or lies on a face ``a = 0`` / ``b = 0`` / the origin, so all
    candidates are evaluated and the feasible one with the least weighted SSE wins.
    """
    sw, swx, swxx = w.sum(), (w * x).sum(), (w * x * x).sum()
    swv, swxv = (w * v).sum(), (w * x * v).sum()
    candidates = [(0.0, 0.0), (0.0, max(swv / sw, 0.0))]
    if swxx > 0:
        candidates.append((max(swxv / swxx, 0.0), 0.0))
    det = sw * swxx - swx ** 2
    if det > 0:
        a = (sw * swxv - swx * swv) / det
        b = (swxx * swv - swx * swxv) / det
        if a >= 0 and b >= 0:
            return float(a), float(b)
    sse = [np.sum(w * (v - a * x - b) ** 2) for a, b in candidates]
    a, b = candidates[int(np.argmin(sse))]
    return float(a), float(b)


def fit_poisson_gaussian(noisy, clean, *, n_bins: int = 32, min_count: int = 16,
                         n_iter: int = 3) -> PoissonGaussianBaseline:
    """Fits :class:`PoissonGaussianBaseline` to the binned noise level function.

    Per channel, :func:`~starlight_jax.metrics.noise_level_function` gives bin
    variances :math:`\\hat v_k` at mean clean intensities :math:`\\bar x_k` from
    :math:`N_k` pixels. A line is fitted by weighted least squares,

    .. math::

       (\\hat a, \\hat b) = \\arg\\min_{a, b \\ge 0} \\sum_k w_k
         (\\hat v_k - a \\bar x_k - b)^2, \\qquad
       w_k = \\frac{N_k - 1}{2\\, \\tilde v_k^2},

    the inverse variance of a Gaussian sample variance. :math:`\\tilde v_k` is the
    previous fit's prediction (iteratively reweighted, ``n_iter`` rounds, starting
    from :math:`\\tilde v_k = 1`), floored at 1e-12. The non-negativity constraint
    is solved exactly (not by clamping the unconstrained solution).

    Args:
      noisy: [..., H, W, C] float noisy images.
      clean: [..., H, W, C] float clean images in [0, 1].
      n_bins: intensity bins on [0, 1].
      min_count: bins with fewer pixels than this are ignored.
      n_iter: reweighting rounds (1 = weights :math:`N_k - 1` only).

    Returns:
      The fitted :class:`PoissonGaussianBaseline`.

    Raises:
      ValueError: on shape/dtype mismatch, non-finite values, bad ``n_bins``,
        ``min_count`` or ``n_iter``, or a channel with fewer than two usable bins.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 2:
        raise ValueError(f"min_count must be an int >= 2; got {min_count!r}.")
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive int; got {n_iter!r}.")
    nlf = noise_level_function(noisy, clean, n_bins=n_bins)
    a_out, b_out = [], []
    for c in range(nlf.variance.shape[1]):
        use = nlf.counts[:, c] >= min_count
        if use.sum() < 2:
            raise ValueError(
                f"clean must cover at least two intensity bins with >= min_count={min_count} pixels "
                f"in channel {c}; got {int(use.sum())} (use fewer n_bins or more data).")
        x, v = nlf.mean_intensity[use, c], nlf.variance[use, c]
        dof = nlf.counts[use, c] - 1.0
        pred = np.ones_like(v)
        for _ in range(n_iter):
            a, b = _fit_line_nonneg(x, v, dof / (2.0 * np.maximum(pred, 1e-12) ** 2))
            pred = a * x + b
        a_out.append(a)
        b_out.append(b)
    return PoissonGaussianBaseline(jnp.asarray(a_out, jnp.float32), jnp.asarray(b_out, jnp.float32))


def fit_poisson_gaussian_censored(noisy, clean, *, clipped=None, margin: Optional[float] = 3.0,
                                  **kwargs) -> PoissonGaussianBaseline:
    r"""`fit_poisson_gaussian`, redone away from the clipping when the data are clipped.

    Real data are clipped to [0, 1]; black-level-subtracted raw data therefore lose the negative half of
    the noise of dark pixels, which biases a plain noise-level-function fit (``a`` high, ``b`` low: by
    +20 % and -30 % on the synthetic data without pedestal). When over 0.01 % of the ``clipped`` values
    (default ``noisy``) sit at 0 or 1, the fit is redone on the pixels whose clean value x satisfies
    :math:`k\sigma(x) \le x \le 1 - k\sigma(1)` with :math:`\sigma(x)^2 = a x + b` of the first fit and
    ``k = margin`` (3: under 0.2 % of such a pixel's noise is clipped). If too few pixels remain, the first
    fit is kept.

    Args:
      noisy, clean: as for `fit_poisson_gaussian`.
      clipped: the values to test for clipping when ``noisy`` is not them (e.g. ``noisy`` minus a fixed
        pattern, whose sum with it was clipped); default ``noisy``.
      margin: k above; None fits every pixel.
      **kwargs: passed to `fit_poisson_gaussian`.
    """
    fit = fit_poisson_gaussian(noisy, clean, **kwargs)
    raw = np.asarray(noisy if clipped is None else clipped)
    if margin is None or np.mean((raw <= 0.0) | (raw >= 1.0)) <= 1e-4:
        return fit
    k2 = float(margin) ** 2
    a, b = np.asarray(fit.a, np.float64), np.asarray(fit.b, np.float64)
    lo = (k2 * a + np.sqrt((k2 * a) ** 2 + 4 * k2 * b)) / 2  # solves x = k sigma(x)
    hi = 1.0 - np.sqrt(k2 * (a + b))
    clean = np.asarray(clean)
    keep = (clean >= lo) & (clean <= hi)
    try:  # clean values outside [0, 1] are left out of the noise level function's bins
        return fit_poisson_gaussian(noisy, np.where(keep, clean, -1.0).astype(np.float32), **kwargs)
    except ValueError:
        return fit


def fit_binned_gaussian(noisy, clean, *, n_bins: int = 16, min_count: int = 16) -> BinnedGaussianBaseline:
    """Fits :class:`BinnedGaussianBaseline`: the residual mean and std per clean-intensity bin and channel.

    Pixels are binned by their clean value as in `~starlight_jax.metrics.noise_level_function` (``n_bins``
    equal bins on [0, 1]; clean values outside are left out). Bin k of channel c gets the sample mean
    :math:`\\hat\\mu_{k,c}` of the residuals :math:`y - x` (standard error :math:`\\sigma / \\sqrt{N}`) and
    their std about it, :math:`\\hat\\sigma_{k,c}` (ddof 1; standard error :math:`\\approx \\sigma /
    \\sqrt{2N}` for Gaussian noise), taken as the values at the bin centre. A bin with fewer than
    ``min_count`` pixels gets both values interpolated linearly (in bin index) from the nearest usable bins
    of its channel, or the nearest one's beyond the first or last.

    The fit sees the real data as they are, clipped and quantised: :math:`\\hat\\mu` takes up the bias
    of clipping near 0 and 1, and sampling clips again, so saturated bins are slightly over-corrected.

    Args:
      noisy: [..., H, W, C] float noisy images.
      clean: [..., H, W, C] float clean images in [0, 1].
      n_bins: intensity bins K.
      min_count: the fewest pixels a bin needs to be fitted from its own data.

    Returns:
      The fitted :class:`BinnedGaussianBaseline`.

    Raises:
      ValueError: on shape/dtype mismatch, non-finite values, bad ``n_bins`` or ``min_count``, or a channel
        without a usable bin.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 2:
        raise ValueError(f"min_count must be an int >= 2; got {min_count!r}.")
    nlf = noise_level_function(noisy, clean, n_bins=n_bins)  # validates the inputs and n_bins
    res = residual(noisy, clean)
    c = res.shape[-1]
    x = np.asarray(clean, np.float64).reshape(-1, c)
    res = res.reshape(-1, c)
    edges = np.linspace(0.0, 1.0, n_bins + 1)  # the noise level function's bins
    b = np.searchsorted(edges, x, side="right") - 1
    b[x == 1.0] = n_bins - 1
    valid = (b >= 0) & (b < n_bins)
    flat = (b * c + np.arange(c))[valid]
    sums = np.bincount(flat, weights=res[valid], minlength=n_bins * c).reshape(n_bins, c)
    counts = nlf.counts
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    std = np.sqrt(nlf.variance)
    idx = np.arange(n_bins)
    mu_out, sigma_out = np.empty((n_bins, c)), np.empty((n_bins, c))
    for ch in range(c):
        use = counts[:, ch] >= min_count
        if not use.any():
            raise ValueError(f"clean must put at least {min_count} pixels (min_count) in one intensity bin of "
                             f"channel {ch}; got at most {int(counts[:, ch].max())} (use fewer n_bins or more data).")
        mu_out[:, ch] = np.interp(idx, idx[use], mean[use, ch])
        sigma_out[:, ch] = np.interp(idx, idx[use], std[use, ch])
    return BinnedGaussianBaseline(jnp.asarray(mu_out, jnp.float32), jnp.asarray(sigma_out, jnp.float32))
