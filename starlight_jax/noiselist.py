"""`--noiselist` parsing: a string such as ``shot_read_uniform_row1_rowt_fixed1_periodic`` → `NoiseConfig`.

The original matched the list by substring tests, so order and separators did not matter and a typo
(``perodic``) silently dropped a component. Here the string is split on any non-alphanumeric separator,
any order still works, and an unknown token raises a `ValueError` listing the valid ones.
"""
from __future__ import annotations

import dataclasses
import re

COMPAT_MODES = ("physics", "starlight")
SHOT_SAMPLERS = ("gaussian", "poisson")

# token -> NoiseConfig field. ``row1`` is the original's name for what is really per-column noise
# (one value per column, constant along H: SPEC §12.6); ``column`` is the honest alias.
TOKENS = {
    "shot": "shot",
    "read": "read",
    "uniform": "uniform",
    "row1": "column",
    "column": "column",
    "rowt": "column_t",
    "columnt": "column_t",
    "row": "row",
    "fixed1": "fixed",
    "fixed": "fixed",
    "learnedfixed": "learned_fixed",
    "periodic": "periodic",
    "corr": "correlated",
    "tone": "tone",
    "isp": "isp",
}

# Canonical order and spelling used when a config is turned back into a string (the original's tokens).
_CANONICAL = (("shot", "shot"), ("read", "read"), ("uniform", "uniform"), ("column", "row1"),
              ("column_t", "rowt"), ("row", "row"), ("fixed", "fixed1"),
              ("learned_fixed", "learnedfixed"), ("periodic", "periodic"), ("correlated", "corr"),
              ("tone", "tone"), ("isp", "isp"))

DEFAULT_NOISELIST = "shot_read_uniform_row1_rowt_fixed1_periodic"

# Size of one channel plane of the Canon RGB+NIR sensor (SPEC §1); the fixed-pattern map's default size.
CANON_FRAME = (640, 1080)


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Which physical components are on and how they behave. Build it with `parse_noiselist`.

    Attributes:
      shot: signal-dependent noise (with ``read``: the shot+read term).
      read: signal-independent Gaussian read noise.
      uniform: quantisation noise.
      column: per-column offsets, new per frame and channel (the original's ``row1``).
      column_t: per-column offsets shared by the channels; per frame under ``compat="starlight"``,
        shared by every frame of a burst under ``compat="physics"`` (the original's ``rowt``).
      row: per-row offsets, new per frame and channel (physics only in spirit; allowed in both modes).
      fixed: the fixed-pattern map (``fixed1``), not learnable.
      learned_fixed: a learnable fixed-pattern map (``learnedfixed``).
      periodic: a 4-pixel-period column pattern (SPEC §2.2).
      correlated: the per-pixel noise (shot/read) is convolved with a learnable 5×5 kernel per channel,
        normalised so that each pixel keeps its variance (token ``corr``; physics only; not in the
        original). Demosaicking, denoising and compression correlate sRGB noise between neighbours; a
        critic that sees the residual tells white noise from it at once.
      tone: the noise is shaped by the camera's tone curve (token ``tone``; physics only; not in the
        original). A processed (sRGB) image is T(linear signal + noise), so to first order its noise is
        T'(·)·n plus a small offset: the noise level first rises and then falls with the clean intensity,
        which no Poisson-Gaussian law a·x + b can follow (Nam's red std goes 3.4 → 5.7 → 1.8 DN from black
        to white). The sum of the other components is multiplied by a learnable per-channel gain of the
        clean intensity and a learnable offset of it is added (both piecewise linear over
        `noise.TONE_KNOTS` knots, starting at gain 1 and offset 0; see `noise.tone_curve`).
      isp: the shot/read noise is made on a raw Bayer mosaic estimate of the clean sRGB image and
        developed by a small learnable camera pipeline — demosaicking, a 3×3 colour matrix, luma/chroma
        smoothing, a tone curve (token ``isp``; physics only, 3 channels; not in the original; see
        `starlight_jax.isp`). Real sRGB noise is correlated in space and across channels and its level
        rises and falls with the intensity; this makes all three come out of the physics.
      compat: ``"physics"`` (default, fixes SPEC §12 items 3–7 and 9) or ``"starlight"`` (the original).
      shot_sampler: ``"gaussian"`` (differentiable, default) or ``"poisson"`` (exact Poisson counts at
        gain ``a``; physics only; not differentiable in ``a``).
      channels: number of image channels C.
      per_channel: one value per channel (shape ``[C]``) for each of shot, read, uniform, column, column_t
        and row, instead of one shared by the channels (physics only). A raw sensor's channels share its
        gain and read noise, so the default shares them; after demosaicking, white balance and a tone curve
        (sRGB) the channels' noise levels differ (Nam's green is ~30 % quieter than its red and blue).
      fixed_shape: (H, W) of the full-frame fixed-pattern map that crops are taken from.
    """

    shot: bool = False
    read: bool = False
    uniform: bool = False
    column: bool = False
    column_t: bool = False
    row: bool = False
    fixed: bool = False
    learned_fixed: bool = False
    periodic: bool = False
    correlated: bool = False
    tone: bool = False
    isp: bool = False
    compat: str = "physics"
    shot_sampler: str = "gaussian"
    channels: int = 4
    fixed_shape: tuple[int, int] = CANON_FRAME
    per_channel: bool = False

    def __post_init__(self):
        if self.compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        if self.shot_sampler not in SHOT_SAMPLERS:
            raise ValueError(f"shot_sampler must be one of {SHOT_SAMPLERS}, got {self.shot_sampler!r}")
        if self.shot_sampler == "poisson" and self.compat == "starlight":
            raise ValueError("shot_sampler='poisson' needs compat='physics': the original's shot term is "
                             "a Gaussian with std a*x + b")
        if self.correlated and self.compat == "starlight":
            raise ValueError("the 'corr' component needs compat='physics' (the original has no such component)")
        if self.correlated and not (self.shot or self.read):
            raise ValueError("the 'corr' component correlates the shot/read noise: add 'shot' or 'read'")
        if self.tone and self.compat == "starlight":
            raise ValueError("the 'tone' component needs compat='physics' (the original has no such component)")
        if self.tone and len(self.components) == 1:
            raise ValueError("the 'tone' component shapes the other components' noise: add at least one, "
                             "e.g. 'shot_read_tone'")
        if self.isp:
            if self.compat == "starlight":
                raise ValueError("the 'isp' component needs compat='physics' (the original has no such component)")
            if not (self.shot or self.read):
                raise ValueError("the 'isp' component develops the raw shot/read noise: add 'shot' and/or 'read', "
                                 "e.g. 'shot_read_isp'")
            if self.correlated:
                raise ValueError("'isp' and 'corr' both correlate the shot/read noise: use one of them")
            if self.channels != 3:
                raise ValueError(f"the 'isp' component renders an RGB image from an RGGB mosaic: it needs 3 "
                                 f"channels, got {self.channels}")
        if self.per_channel and self.compat == "starlight":
            raise ValueError("per_channel needs compat='physics': the original shares its scalars across channels")
        if not (isinstance(self.channels, int) and self.channels >= 1):
            raise ValueError(f"channels must be a positive int, got {self.channels!r}")
        if len(self.fixed_shape) != 2 or min(self.fixed_shape) < 1:
            raise ValueError(f"fixed_shape must be (H, W) with positive sizes, got {self.fixed_shape!r}")
        object.__setattr__(self, "fixed_shape", tuple(int(s) for s in self.fixed_shape))

    @property
    def starlight(self) -> bool:
        return self.compat == "starlight"

    @property
    def noiselist(self) -> str:
        """The canonical noiselist string (the original's token names)."""
        return "_".join(tok for field, tok in _CANONICAL if getattr(self, field))

    @property
    def components(self) -> tuple[str, ...]:
        """Names of the additive components that contribute noise, in evaluation order."""
        names = []
        if self.isp:  # the shot/read noise, made on the mosaic and developed
            names.append("isp")
        elif self.shot and self.read:
            names.append("shot_read")
        elif self.shot and not self.starlight:
            names.append("shot")
        elif self.read:
            names.append("read")
        # compat "starlight": shot without read adds nothing (SPEC §2.1), faithfully.
        for field in ("uniform", "column", "column_t", "row", "fixed", "learned_fixed", "periodic"):
            if getattr(self, field):
                names.append(field)
        if self.tone:  # the gain scales the components above; its offset is one more additive term
            names.append("tone_offset")
        return tuple(names)


def parse_noiselist(noiselist: str | NoiseConfig, compat: str = "physics", **options) -> NoiseConfig:
    """Parses a `--noiselist` string into a frozen `NoiseConfig`.

    Args:
      noiselist: tokens such as ``"shot_read_uniform_row1_rowt_fixed1_periodic"`` in any order, separated
        by any non-alphanumeric characters (``_``, ``-``, ``,``, ``+``, spaces). An existing
        `NoiseConfig` is returned unchanged (after applying ``options``).
      compat: ``"physics"`` or ``"starlight"``.
      **options: other `NoiseConfig` fields (``channels``, ``shot_sampler``, ``fixed_shape``,
        ``per_channel``).

    Returns:
      The `NoiseConfig`.

    Raises:
      ValueError: for an unknown token (naming it and listing the valid ones) or an empty list.
    """
    if isinstance(noiselist, NoiseConfig):
        return dataclasses.replace(noiselist, **options) if options else noiselist
    if not isinstance(noiselist, str):
        raise ValueError(f"noiselist must be a string such as {DEFAULT_NOISELIST!r}, got {noiselist!r}")
    tokens = [t for t in re.split(r"[^0-9A-Za-z]+", noiselist.strip().lower()) if t]
    unknown = [t for t in tokens if t not in TOKENS]
    if unknown:
        raise ValueError(f"noiselist {noiselist!r}: unknown token(s) {unknown}; valid tokens are "
                         f"{sorted(TOKENS)} (any order, any separator)")
    if not tokens:
        raise ValueError(f"noiselist is empty; give tokens from {sorted(TOKENS)}, e.g. {DEFAULT_NOISELIST!r}")
    return NoiseConfig(**{TOKENS[t]: True for t in tokens}, compat=compat, **options)
