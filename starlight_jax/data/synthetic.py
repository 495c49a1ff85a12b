r"""Embedded default dataset: real natural images through a calibrated ground-truth sensor.

No download: the clean scenes are the natural photographs shipped inside the scikit-image wheel
(:data:`SCENES`; other ``skimage.data`` loaders download and are not used). Each is

1. scaled to [0, 1] and linearised with the inverse sRGB curve;
2. resized (in linear light, anti-aliased) and centre-cropped to the sensor size ``(2H, 2W)``;
3. given raw-like colour balance (divided by typical white-balance gains, red 2.15 and blue 1.7, the
   middle of the ranges sampled by Brooks et al., "Unprocessing images", CVPR 2019);
4. mosaicked with an RGGB colour filter array and packed to ``[H, W, 4]`` with channels
   ``(R, G1, G2, B)``: G1 shares a sensor row with R, G2 shares one with B;
5. scaled so its brightest sample equals ``exposure`` (default 0.55): this is ``clean``.

Noisy bursts of T frames (default 16) come from a ground-truth sensor that is richer than the learned
model. In digital numbers (DN), for every frame t, packed pixel (i, j) and channel c:

.. math::

   \mathrm{DN} = \mathrm{clip}_{[0, w]}\Big(\mathrm{round}\big(
       b_\mathrm{black} + p + \beta_c + f_c[j] + K\,\mathrm{Poisson}(x\,D/K)
       + \sigma_R\,\varepsilon + r_{t, \mathrm{row}(i, c)} + P_{t, c}[j]\big)\Big),
   \qquad \mathrm{noisy} = \mathrm{clip}_{[0, 1]}\big((\mathrm{DN} - b_\mathrm{black}) / D\big)

* ``K`` system gain (DN per electron); ``x`` the clean value; ``D = (white - black) / ratio`` DN per
  unit of the [0, 1] scale (ELD-style digital gain ``ratio``), so ``x = 1`` is ``D / K`` electrons;
* ``epsilon`` the read-noise variable, new per pixel: a standard Gaussian by default, with ``sigma_R`` from
  ELD's Gaussian calibration of this sensor (``g_scale``: 3.381 DN at K = 1); or, with
  ``SensorModel(read_noise="tukey")``, a Tukey-lambda variable (ELD's better-fitting, heavier-tailed model,
  ``G_scale``/``G_shape``: std 3.74 DN at K = 1). The default is Gaussian so that the learned model's
  ``read`` has an unambiguous true value; with Tukey data the best Gaussian in distribution is narrower
  than the variance (ELD's own two fits of the A7S2 differ by 18 % in variance: a GAN trained on the Tukey
  data recovered ELD's Gaussian value, 4.60e-4 vs 4.54e-4, not the variance 5.56e-4; docs/training_notes.md);
* ``r`` one Gaussian offset per *sensor* row and frame (R/G1 share even rows, G2/B odd rows);
* ``P`` a weak periodic column pattern of period 4 packed columns: ``A (u cos(pi j / 2) + v sin(pi j / 2))``
  with ``u, v ~ N(0, 1)`` new per frame and channel (zero mean, per-pixel std ``A``);
* ``p + beta_c + f_c[j]``: the offset that is the same in every frame. ``p`` is a pedestal of the black
  level deliberately kept in the data (as the Starlight data keep their sensor offset, SPEC §1) so that
  read noise is not clipped at 0; ``beta_c`` the per-channel black-level error; ``f_c[j]`` a column
  fixed pattern (one value per sensor column). Divided by D it is :attr:`BurstDataset.fixed_pattern`,
  the map the learned model's ``fixed1`` component adds;
* rounding to integer DN is the quantisation; the output is clipped to [0, 1] (saturation).

Numbers (:class:`SensorModel` defaults): the ELD calibration of a Sony A7S2 (Wei et al., "A physics-based
noise formation model for extreme low-light raw denoising", CVPR 2020, ``SonyA7S2_params.npy``), taken at
``K = 1`` DN/e- (inside its calibrated range ``Kmin = 0.0939`` .. ``Kmax = 6.011``), 14-bit black 512 /
white 16383, ``ratio = 100``. The column pattern and periodic amplitudes are not in that calibration and
are chosen (stated below).

**Ground truth in the learned model's terms** (``dataset.truth``; normalised [0, 1] units, ``[C]`` arrays
where per channel). With residual ``n = noisy - clean - fixed_pattern`` (away from clipping):

* ``shot`` a = K / D and ``read`` b = sigma_R^2 Var(epsilon) / D^2 of the law Var[n | x] = a x + b.
  ``read`` holds the read noise only: quantisation is its own term (``uniform``);
  ``read_with_quantisation`` = read + uniform^2 / 12 folds it in;
* ``variance_law_b``: every signal-independent term of one pixel's variance, read + uniform^2/12 + row^2
  + periodic^2, i.e. the intercept a plain a x + b fit of this data finds;
* ``column`` = 0 (no per-column offset that is new per frame is simulated);
* ``row`` = sigma_R / D, std of the per-row offset, new per frame (one sensor row feeds two channels, so
  R/G1 share one draw and G2/B another, where the learned ``row`` draws per channel);
* ``column_t`` = 0 (no per-column offset constant over one burst only: the column pattern is constant
  over *all* bursts, so it lives in ``fixed_pattern``); ``column_fpn`` = its std f / D;
* ``uniform`` q = 1 / D, the quantisation step;
* ``periodic`` = A / D, per-pixel std of the period-4 pattern; ``periodic_p`` = (p0, p1, p2) =
  (0, A/2, A/2) / D of the learned component in ``compat="physics"``, whose pattern is
  ``p0 alpha + 2 p1 beta cos(pi w/2) - 2 p2 gamma sin(pi w/2)``. (The original, ``compat="starlight"``,
  divides by sqrt(h w) and rectifies, SPEC §2.2: there p1 = p2 = A sqrt(h w) / (2 D) on an h x w crop);
* ``fixed_pattern`` ``[H, W, C]`` = (p + beta_c + f_c[j]) / D, constant along H (also ``dataset.fixed_pattern``).

Splits: scenes ``chelsea`` and ``gravel`` are the test split, the other nine the train split; each scene
gives ``bursts_per_scene`` independent bursts. Everything is deterministic in ``seed``: frame t of burst b
of scene s uses its own generator seeded by ``(seed, s, b, t)``, so reading a window of frames gives the
same values as slicing the whole burst. Simulating a 16-frame 256 x 256 burst costs ~0.3-0.5 s of one CPU
core (mostly the Poisson draws); ``cache=True`` keeps the frames as uint16 DN so later epochs are cheap.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

import numpy as np

from starlight_jax.data.base import BurstDataset, BurstSource, Item, ItemInfo

__all__ = ["SCENES", "TEST_SCENES", "SensorModel", "SyntheticConfig", "load_synthetic", "clean_scene",
           "simulate_frame", "simulate_frame_dn", "tukey_lambda_variance", "srgb_to_linear", "mosaic_pack_rggb"]

# Scene names. All ship inside the scikit-image 0.26 wheel (data/*.png, rocket.jpg); no download.
SCENES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle",
          "camera", "brick", "grass", "gravel", "moon")
_LOADERS = {"motorcycle": ("stereo_motorcycle", 0)}  # the left view; the right one is the same scene
TEST_SCENES = ("chelsea", "gravel")
CHANNEL_NAMES = ("R", "G1", "G2", "B")

# --- ELD Sony A7S2 calibration (SonyA7S2_params.npy, "Profile-1"), log-linear laws in log K ----------
_ELD_GAUSS_SCALE_LAW = (0.5407496124, 1.2182371213)               # log sigma_G  = slope * log K + bias
_ELD_TUKEY_SCALE_LAW = (0.46210495986526035, 0.5657147358616816)  # log sigma_TL = slope * log K + bias
_ELD_ROW_SCALE_LAW = (0.5275360468633209, -0.5917002648887661)    # log sigma_R  = slope * log K + bias
_ELD_TUKEY_LAMBDA = -0.08571429                                   # G_shape[8] (18 calibrated values)
_ELD_CHANNEL_BIAS = (2.071886, 2.009204, 2.3060765, 2.2433784)    # color_bias[8], DN, paired with G_shape[8]


def _log_linear(law: tuple[float, float], k: float) -> float:
    return math.exp(law[0] * math.log(k) + law[1])


@dataclasses.dataclass(frozen=True)
class SensorModel:
    """Ground-truth sensor, in DN. Defaults: ELD Sony A7S2 at K = 1 (see the module docstring)."""

    # System gain K, DN per photo-electron. ELD A7S2 calibrated range: Kmin 0.0939, Kmax 6.011.
    system_gain: float = 1.0
    # Read noise: "gaussian" with std read_scale_dn (ELD g_scale: exp(0.5407 log K + 1.2182) = 3.381 DN at
    # K = 1), or "tukey": Tukey-lambda of shape tukey_lambda (ELD G_shape[8]) and scale read_scale_dn (ELD
    # G_scale: exp(0.4621 log K + 0.5657) = 1.7607 at K = 1, std 3.74 DN); see eld_sony_a7s2.
    read_noise: str = "gaussian"
    tukey_lambda: float = _ELD_TUKEY_LAMBDA
    read_scale_dn: float = _log_linear(_ELD_GAUSS_SCALE_LAW, 1.0)
    # Row noise std in DN (= exp(0.5275 log K - 0.5917) = 0.5534 at K = 1), one value per sensor row.
    row_std_dn: float = _log_linear(_ELD_ROW_SCALE_LAW, 1.0)
    # 14-bit A7S2 black and white level (ELD).
    black_level: float = 512.0
    white_level: float = 16383.0
    # ELD-style digital gain: D = (white - black) / ratio DN map to 1.0 (D = 158.71 for ratio 100).
    ratio: float = 100.0
    # Per-channel black-level error beta_c in DN (ELD color_bias[8], R/G1/G2/B).
    channel_bias_dn: tuple[float, float, float, float] = _ELD_CHANNEL_BIAS
    # Extra black-level pedestal kept in the output, DN. Default 0: values below black clip at 0, as in
    # black-subtracted raw data and as the generator's own clip does; a pedestal (e.g. 32 DN = 8.6 read-noise
    # std) avoids that clipping but is an offset of 0.2 that only models with fixed1 can represent.
    pedestal_dn: float = 0.0
    # Column fixed-pattern std in DN, one value per sensor column, constant over all frames. Chosen (ELD
    # has no column term); of the order of the row noise so that it is visible after averaging.
    column_fpn_dn: float = 1.0
    # Weak periodic column pattern: per-pixel std A in DN and period along W in packed columns. Chosen.
    periodic_dn: float = 0.5
    periodic_period: int = 4

    @classmethod
    def eld_sony_a7s2(cls, system_gain: float, read_noise: str = "gaussian", **overrides) -> SensorModel:
        """The ELD A7S2 sensor at gain ``system_gain``: read and row scales from the calibrated laws of
        ``read_noise`` ("gaussian" or "tukey")."""
        if not 0.0939 <= system_gain <= 6.011:
            raise ValueError(f"system_gain={system_gain} is outside the ELD A7S2 calibrated range [0.0939, 6.011]")
        law = _ELD_TUKEY_SCALE_LAW if read_noise == "tukey" else _ELD_GAUSS_SCALE_LAW
        return cls(system_gain=system_gain, read_noise=read_noise, read_scale_dn=_log_linear(law, system_gain),
                   row_std_dn=_log_linear(_ELD_ROW_SCALE_LAW, system_gain), **overrides)

    def __post_init__(self):
        for f in ("system_gain", "ratio"):
            if not getattr(self, f) > 0:
                raise ValueError(f"SensorModel.{f} must be > 0, got {getattr(self, f)}")
        if self.read_noise not in ("gaussian", "tukey"):
            raise ValueError(f"SensorModel.read_noise must be 'gaussian' or 'tukey', got {self.read_noise!r}")
        if not self.tukey_lambda > -0.5:
            raise ValueError(f"SensorModel.tukey_lambda must be > -0.5 (finite variance), got {self.tukey_lambda}")
        if not self.white_level > self.black_level:
            raise ValueError(f"SensorModel.white_level {self.white_level} must exceed black_level {self.black_level}")
        if len(self.channel_bias_dn) != 4:
            raise ValueError(f"SensorModel.channel_bias_dn needs 4 values (R, G1, G2, B), got {self.channel_bias_dn}")

    @property
    def dn_per_unit(self) -> float:
        """D: how many DN above black map to 1.0."""
        return (self.white_level - self.black_level) / self.ratio


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Options of the synthetic dataset."""

    # (H, W) of one packed channel plane; the sensor is (2H, 2W). 256 x 256 keeps CPU training cheap.
    frame_size: tuple[int, int] = (256, 256)
    # Frames per burst (SPEC: 16).
    frames: int = 16
    # Independent noisy bursts per scene.
    bursts_per_scene: int = 4
    # Clean value of the brightest sample of each scene.
    exposure: float = 0.55
    # Seed of all noise and of the column fixed pattern.
    seed: int = 0
    # Scenes of the test split (the rest of SCENES are the train split).
    test_scenes: tuple[str, ...] = TEST_SCENES
    # Keep generated frames (as uint16 DN, 2 bytes per sample: 8.4 MB per 16-frame 256 x 256 burst, 370 MB
    # for the default 44 bursts) so later epochs skip the simulation. Exact: frames are deterministic.
    cache: bool = False
    sensor: SensorModel = SensorModel()

    def __post_init__(self):
        if len(self.frame_size) != 2 or min(self.frame_size) < 1:
            raise ValueError(f"frame_size must be (H, W) with H, W >= 1, got {self.frame_size}")
        if self.frames < 1 or self.bursts_per_scene < 1:
            raise ValueError(f"frames and bursts_per_scene must be >= 1, got {self.frames}, {self.bursts_per_scene}")
        if not 0 < self.exposure <= 1:
            raise ValueError(f"exposure must be in (0, 1], got {self.exposure}")
        unknown = set(self.test_scenes) - set(SCENES)
        if unknown:
            raise ValueError(f"unknown test_scenes {sorted(unknown)}; expected names from {SCENES}")


def tukey_lambda_variance(lam: float) -> float:
    """Variance of the standard Tukey-lambda distribution (finite for lam > -1/2)."""
    if abs(lam) < 1e-8:
        return math.pi**2 / 3.0  # the logistic limit
    return 2.0 / lam**2 * (1.0 / (1.0 + 2.0 * lam) - math.gamma(lam + 1.0) ** 2 / math.gamma(2.0 * lam + 2.0))


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve (IEC 61966-2-1) on values in [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def mosaic_pack_rggb(rgb: np.ndarray) -> np.ndarray:
    """Samples ``[2H, 2W, 3]`` linear RGB through an RGGB CFA and packs it to ``[H, W, 4]`` (R, G1, G2, B)."""
    return np.stack([rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1], rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]], axis=-1)


# White-balance gains divided out to get raw-like colour balance (Brooks et al. 2019 sample red gains in
# [1.9, 2.4] and blue gains in [1.5, 1.9]; these are the midpoints).
_INV_WB = np.array([1 / 2.15, 1.0, 1 / 1.7])


def clean_scene(name: str, frame_size: tuple[int, int], exposure: float) -> np.ndarray:
    """The clean packed raw ``[H, W, 4]`` float32 image of scene ``name`` (see the module docstring)."""
    import skimage.data
    import skimage.transform

    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; expected one of {SCENES}")
    loader, index = _LOADERS.get(name, (name, None))
    img = getattr(skimage.data, loader)()
    if index is not None:
        img = img[index]
    img = np.asarray(img, np.float64) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    lin = srgb_to_linear(img) * _INV_WB
    h2, w2 = 2 * frame_size[0], 2 * frame_size[1]
    scale = max(h2 / lin.shape[0], w2 / lin.shape[1])
    rh, rw = max(h2, round(lin.shape[0] * scale)), max(w2, round(lin.shape[1] * scale))
    lin = skimage.transform.resize(lin, (rh, rw, 3), order=1, anti_aliasing=scale < 1, preserve_range=True)
    top, left = (rh - h2) // 2, (rw - w2) // 2
    packed = mosaic_pack_rggb(lin[top:top + h2, left:left + w2])
    return (packed * (exposure / max(packed.max(), 1e-12))).astype(np.float32)


def _tukey(rng: np.random.Generator, lam: float, shape) -> np.ndarray:
    # Keep u away from 0 and 1, where u**lam overflows for lam < 0; this trims tails below p = 1e-7.
    u = np.clip(rng.random(shape, dtype=np.float32), 1e-7, 1 - 1e-7)
    if abs(lam) < 1e-8:
        return np.log(u / (1 - u))
    lam32 = np.float32(lam)
    return (u**lam32 - (1 - u) ** lam32) / lam32


def column_pattern_dn(sensor: SensorModel, width: int, seed: int) -> np.ndarray:
    """Per packed column and channel ``[W, 4]`` constant offset in DN: pedestal + beta_c + column FPN."""
    rng = np.random.default_rng([seed, 0xF1])
    cols = rng.normal(0.0, sensor.column_fpn_dn, size=2 * width)  # one value per sensor column
    # RGGB: even sensor columns hold R (even rows) and G2 (odd rows), odd ones G1 and B.
    fpn = np.stack([cols[0::2], cols[1::2], cols[0::2], cols[1::2]], axis=-1)
    return sensor.pedestal_dn + np.asarray(sensor.channel_bias_dn) + fpn


def simulate_frame_dn(rng: np.random.Generator, clean: np.ndarray, sensor: SensorModel,
                      column_dn: np.ndarray) -> np.ndarray:
    """One raw frame ``[H, W, 4]`` in integer DN (uint16) from ``clean`` ``[H, W, 4]`` (module formula)."""
    h, w, c = clean.shape
    d, k = sensor.dn_per_unit, sensor.system_gain
    dn = rng.poisson(clean.astype(np.float64) * (d / k)).astype(np.float32) * np.float32(k)
    if sensor.read_noise == "tukey":
        dn += np.float32(sensor.read_scale_dn) * _tukey(rng, sensor.tukey_lambda, (h, w, c))
    else:
        dn += np.float32(sensor.read_scale_dn) * rng.standard_normal((h, w, c), dtype=np.float32)
    rows = rng.normal(0.0, sensor.row_std_dn, size=2 * h).astype(np.float32)  # one per sensor row
    dn += np.stack([rows[0::2], rows[0::2], rows[1::2], rows[1::2]], axis=-1)[:, None, :]
    phase = 2 * np.pi * np.arange(w) / sensor.periodic_period
    u, v = rng.standard_normal((2, c))
    dn += (sensor.periodic_dn * (np.cos(phase)[:, None] * u + np.sin(phase)[:, None] * v)).astype(np.float32)
    dn += (sensor.black_level + column_dn).astype(np.float32)
    return np.clip(np.round(dn), 0.0, sensor.white_level).astype(np.uint16)


def dn_to_unit(dn: np.ndarray, sensor: SensorModel) -> np.ndarray:
    """``clip((DN - black) / D, 0, 1)`` as float32."""
    x = (dn.astype(np.float32) - np.float32(sensor.black_level)) / np.float32(sensor.dn_per_unit)
    return np.clip(x, 0.0, 1.0)


def simulate_frame(rng: np.random.Generator, clean: np.ndarray, sensor: SensorModel,
                   column_dn: np.ndarray) -> np.ndarray:
    """One noisy frame ``[H, W, 4]`` float32 in [0, 1] from ``clean`` ``[H, W, 4]`` (module formula)."""
    return dn_to_unit(simulate_frame_dn(rng, clean, sensor, column_dn), sensor)


def ground_truth(sensor: SensorModel, column_dn: np.ndarray, frame_size: tuple[int, int]) -> dict[str, Any]:
    """The ``truth`` dict (see the module docstring) for ``sensor`` and its column offsets."""
    d = sensor.dn_per_unit
    ones = np.ones(4)
    unit_variance = tukey_lambda_variance(sensor.tukey_lambda) if sensor.read_noise == "tukey" else 1.0
    read = sensor.read_scale_dn**2 * unit_variance / d**2
    q = 1.0 / d
    row, periodic = sensor.row_std_dn / d, sensor.periodic_dn / d
    fixed = np.broadcast_to((column_dn / d).astype(np.float32)[None], (*frame_size, 4)).copy()
    return {
        "shot": ones * sensor.system_gain / d,
        "read": ones * read,
        "read_with_quantisation": ones * (read + q**2 / 12),
        "variance_law_b": ones * (read + q**2 / 12 + row**2 + periodic**2),
        "column": ones * 0.0,
        "row": ones * row,
        "column_t": ones * 0.0,
        "column_fpn": ones * sensor.column_fpn_dn / d,
        "uniform": ones * q,
        "periodic": ones * periodic,
        "periodic_p": np.tile([0.0, periodic / 2, periodic / 2], (4, 1)),  # [C, 3]
        "periodic_period": sensor.periodic_period,
        "fixed_pattern": fixed,
        "dn_per_unit": d,
        "sensor": dataclasses.asdict(sensor),
    }


class _Scenes:
    """Clean scenes, built on first use and kept (11 x H x W x 4 float32); thread-safe."""

    def __init__(self, config: SyntheticConfig):
        self._config, self._cache, self._lock = config, {}, threading.Lock()

    def __call__(self, name: str) -> np.ndarray:
        with self._lock:
            if name not in self._cache:
                self._cache[name] = clean_scene(name, self._config.frame_size, self._config.exposure)
            return self._cache[name]

    def __getstate__(self):  # a loader worker process builds its own scenes
        return self._config

    def __setstate__(self, config):
        self.__init__(config)


def load_synthetic(config: SyntheticConfig | None = None, **overrides) -> BurstDataset:
    """Builds the synthetic dataset (nothing is downloaded; frames are generated when read).

    Args:
      config: the options; keyword ``overrides`` replace its fields (``seed=3``, ``frame_size=(128, 128)``).

    Returns:
      A :class:`BurstDataset` with 4 channels (R, G1, G2, B), ``fixed_pattern`` and ``truth``.
    """
    config = dataclasses.replace(config or SyntheticConfig(), **overrides)
    column_dn = column_pattern_dn(config.sensor, config.frame_size[1], config.seed)
    scenes = _Scenes(config)
    cache = {} if config.cache else None

    def make_item(scene: str, burst: int) -> Item:
        s = SCENES.index(scene)

        def frame_dn(t: int) -> np.ndarray:
            key = (s, burst, t)
            hit = cache.get(key) if cache is not None else None
            if hit is None:
                hit = simulate_frame_dn(np.random.default_rng([config.seed, *key]), scenes(scene), config.sensor,
                                        column_dn)
                if cache is not None:
                    cache[key] = hit  # a dict store is atomic; a duplicate computation would be identical
            return hit

        def read(start: int, length: int) -> dict[str, Any]:
            clean = scenes(scene)
            noisy = dn_to_unit(np.stack([frame_dn(t) for t in range(start, start + length)]), config.sensor)
            return {"clean": np.broadcast_to(clean, noisy.shape).copy(), "noisy": noisy,
                    "scene": scene, "burst": burst}

        info = ItemInfo(f"{scene}/burst{burst}", config.frames, tuple(config.frame_size))
        return Item(info, read)

    def split(names) -> BurstSource:
        return BurstSource([make_item(n, b) for n in names for b in range(config.bursts_per_scene)], 4)

    train = [n for n in SCENES if n not in config.test_scenes]
    test = [n for n in SCENES if n in config.test_scenes]
    truth = ground_truth(config.sensor, column_dn, tuple(config.frame_size))
    truth["fixed_pattern"].setflags(write=False)  # shared by the dataset and truth: keep it intact
    return BurstDataset(
        name="synthetic", train=split(train), test=split(test), channels=4, channel_names=CHANNEL_NAMES,
        frame_shape=tuple(config.frame_size), fixed_pattern=truth["fixed_pattern"], truth=truth,
        info={"split_rule": f"test = scenes {list(config.test_scenes)}, train = the other scenes of SCENES; "
                            f"{config.bursts_per_scene} bursts per scene",
              "value_scale": "(DN - black) / D, clipped to [0, 1]; keeps a black pedestal (in fixed_pattern)",
              "config": config, "quantization_step": float(np.ravel(truth["uniform"])[0])})
