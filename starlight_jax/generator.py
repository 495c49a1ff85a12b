"""The generator: physical noise, an optional U-Net, and the clip to [0, 1]; and `synthesize`.

A generator is a `NoiseModel`: a frozen `GeneratorConfig` (static) and one params pytree
``{"noise": {...}, "net": {...}}``. `generate(params, key, clean, cfg)` is the one pure function that the
training step and `synthesize` both call.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from starlight_jax import files, validation
from starlight_jax import noise as noise_lib
from starlight_jax.noiselist import DEFAULT_NOISELIST, NoiseConfig, parse_noiselist

NETWORKS = ("Unet", "Unet_cat", "Unet_first", "noUnet")
PATCH_MODES = ("patches_after", "patches_before")
PRECISIONS = ("float32", "bfloat16")  # compute dtypes of the networks (parameters are always float32)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Everything static about a generator.

    Attributes:
      noise: which physical components, in which compat mode (`parse_noiselist`).
      network: ``"Unet"`` (y ← Net(x + n)), ``"Unet_cat"`` (y ← Net([x, x + n]), clean channels first),
        ``"Unet_first"`` (x ← Net(x) before the noise) or ``"noUnet"``.
      unet_opts: the original's ``residual<X>_<down>_<up>_<act>`` string.
      unet_widths: optional encoder widths overriding the default (32, 64, 128, 256, 256), e.g. a
        narrower U-Net for CPU runs.
      patches: ``"patches_after"`` (default: the U-Net sees the whole crop; tiling for the critic comes
        later) or ``"patches_before"`` (the U-Net sees each 64×64 tile of a ``[..., T, H, W, C]`` burst on
        its own, as the original's ``split_into_patches``; the tiles are put back in place, so the output
        keeps the burst's shape and tiling it again gives the original's patches).
      unet_skip: ``"Unet"``/``"Unet_cat"`` only: y ← (x + n) + g ⊙ Net(·) with a per-channel gate ``g``
        (``params["gate"]``) that starts at 0, so training starts from the physical model and the U-Net
        learns a correction to it (the ReZero idea). Off by default, as in the original, whose U-Net must
        first learn to reproduce its input.
      quantize: the data's quantisation step (e.g. 1/255 for 8-bit files), or None (default: continuous
        output). The output is rounded to multiples of it before the clip, as the camera's ADC or the file
        format rounds the real images, with a straight-through gradient (that of the unrounded output).
        Otherwise every real residual lies on a lattice that no continuous sample does, and the critic
        can tell them apart by that alone.
      precision: ``"float32"`` (default) or ``"bfloat16"``: the U-Net's compute dtype (its parameters stay
        float32, the physical noise and everything after the U-Net are float32).
    """

    noise: NoiseConfig = dataclasses.field(default_factory=lambda: parse_noiselist(DEFAULT_NOISELIST))
    network: str = "noUnet"
    unet_opts: str = "residualFalse_conv_tconv_selu"
    unet_widths: Optional[tuple[int, ...]] = None
    patches: str = "patches_after"
    unet_skip: bool = False
    quantize: Optional[float] = None
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        if self.patches not in PATCH_MODES:
            raise ValueError(f"patches must be one of {PATCH_MODES}, got {self.patches!r}")
        if self.unet_skip and self.network not in ("Unet", "Unet_cat"):
            raise ValueError(f"unet_skip needs network 'Unet' or 'Unet_cat' (it adds the noisy image to the "
                             f"U-Net's output), got {self.network!r}")
        if self.quantize is not None and not (isinstance(self.quantize, (int, float)) and 0 < self.quantize < 1):
            raise ValueError(f"quantize must be a step in (0, 1) such as 1/255, or None; got {self.quantize!r}")
        if self.network != "noUnet":
            _unet(self)  # parses unet_opts now, so a bad string fails before anything is traced

    @property
    def channels(self) -> int:
        return self.noise.channels


@struct.dataclass
class NoiseModel:
    """A generator's config and parameters; a pytree, so it passes through `jax.jit` and `jax.grad`."""

    params: Any
    config: GeneratorConfig = struct.field(pytree_node=False)


def init_generator(key, config: GeneratorConfig, *, fixed_pattern=None) -> NoiseModel:
    """Initial parameters ``{"noise": ..., "net": ...}`` for ``config``.

    Args:
      key: PRNG key for the network's initialisation (unused for ``noUnet``).
      config: the generator configuration.
      fixed_pattern: optional ``[Hf, Wf, C]`` map for the ``fixed1`` component.
    """
    params = {"noise": noise_lib.init_params(config.noise, fixed_pattern=fixed_pattern)}
    if config.network != "noUnet":
        c = config.channels
        x = jnp.zeros((1, 64, 64, 2 * c if config.network == "Unet_cat" else c), jnp.float32)
        params["net"] = _unet(config).init(key, x, train=False)["params"]
    if config.unet_skip:
        params["gate"] = jnp.zeros((config.channels,), jnp.float32)
    return NoiseModel(params=params, config=config)


def _unet(config: GeneratorConfig):
    from starlight_jax.models.unet import UNet, parse_unet_opts  # the U-Net joins only when asked for

    unet_cfg = parse_unet_opts(config.unet_opts, compat=config.noise.compat)
    if config.unet_widths is not None:
        unet_cfg = dataclasses.replace(unet_cfg, widths=tuple(config.unet_widths))
    return UNet(out_channels=config.channels, config=unet_cfg, dtype=jnp.dtype(config.precision))


def generate(params, key, clean, config: GeneratorConfig, *, train: bool = False, fixed_offset=None):
    """One forward pass of the generator: ``clip(round?(Net?(x + noise)), 0, 1)``, shape of ``clean``.

    Args:
      params: ``{"noise": ..., "net": ...}``.
      key: PRNG key; split into a noise key and a dropout key.
      clean: ``[..., H, W, C]`` clean images.
      config: the generator configuration (static).
      train: dropout on when True. ``False`` is the default here; the original never switched it off,
        which ``train=True`` reproduces.
      fixed_offset: ``[2]`` crop offset of ``clean`` inside the fixed-pattern map (default: random).
    """
    noise_key, dropout_key = jax.random.split(key)
    if config.network != "noUnet":
        def net(x):
            return _unet(config).apply({"params": params["net"]}, x, train=train, rngs={"dropout": dropout_key})
    x = net(clean) if config.network == "Unet_first" else clean
    y = noise_lib.add_noise(noise_key, params["noise"], x, config.noise, fixed_offset=fixed_offset)
    if config.network in ("Unet", "Unet_cat"):
        net_in = y if config.network == "Unet" else jnp.concatenate([x, y], axis=-1)
        if config.patches == "patches_before":
            from starlight_jax import patches as patches_lib

            shape = net_in.shape if net_in.ndim >= 4 else (1, *net_in.shape)
            tiles = net(patches_lib.to_patches(net_in.reshape(shape)))
            out = patches_lib.from_patches(tiles, (*shape[:-1], tiles.shape[-1])).reshape(y.shape)
        else:
            out = net(net_in)
        y = y + params["gate"] * out if config.unet_skip else out
    if config.quantize is not None:  # round, then clip: a saturated pixel reads exactly 1
        y = quantize(y, config.quantize)
    return jnp.clip(y, 0.0, 1.0)


def quantize(y, step: float):
    """``y`` rounded to multiples of ``step``; the gradient is that of ``y`` (straight-through)."""
    return y + jax.lax.stop_gradient(jnp.round(y / step) * step - y)


# ------------------------------------------------------------------------------------------------------
# Slim generator files: what `synthesize` ships with (no critic, no optimiser state). Here, not in
# `starlight_jax.checkpoint` (which re-exports them): the trained defaults below are read with them.
# ------------------------------------------------------------------------------------------------------
def save_generator(model: NoiseModel, folder, info: dict | None = None) -> pathlib.Path:
    """Writes ``generator.npz`` (params, flattened by key path) and ``generator.json`` (config + ``info``)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(model.params)[0]}
    np.savez_compressed(folder / "generator.npz", **flat)
    config = dataclasses.asdict(model.config)
    (folder / "generator.json").write_text(json.dumps({"config": config, "info": info or {}}, indent=2,
                                                      default=list))
    return folder


def without_sensor_maps(model: NoiseModel) -> NoiseModel:
    """The same model without its ``fixed1``/``learnedfixed`` maps and its output rounding, for use on
    images of any size and bit depth.

    A fixed-pattern map belongs to one sensor and one frame size, the quantisation step
    (`GeneratorConfig.quantize`) to one ADC or file format; the random components (shot, read, row, …) are
    what transfers to other images. Only valid for noise-only generators (``noUnet``): a U-Net trained with
    the map in its input would see a different input without it.
    """
    if model.config.network != "noUnet" and (model.config.noise.fixed or model.config.noise.learned_fixed):
        raise ValueError(f"cannot drop the fixed-pattern maps of a {model.config.network} generator: its U-Net "
                         f"was trained on noise that contained them")
    noise_cfg = dataclasses.replace(model.config.noise, fixed=False, learned_fixed=False)
    noise = {k: v for k, v in model.params["noise"].items() if k not in ("fixed_pattern", "learned_fixed")}
    return NoiseModel(params={**model.params, "noise": noise},
                      config=dataclasses.replace(model.config, noise=noise_cfg, quantize=None))


def load_generator(folder) -> NoiseModel:
    """Reads a folder written by `save_generator`.

    Raises:
      FileNotFoundError: a file missing; ValueError (naming the file and the key): invalid or truncated
        JSON or ``.npz``, unknown or refused config keys, or arrays whose names or shapes do not match the
        config (e.g. ``per_channel`` scalars where the config says shared ones).
    """
    folder = pathlib.Path(folder)
    json_file, npz_file = folder / "generator.json", folder / "generator.npz"
    if not json_file.is_file() or not npz_file.is_file():
        raise FileNotFoundError(f"{folder} holds no generator.json + generator.npz (see save_generator)")
    doc = files.read_json(json_file)
    if not isinstance(doc.get("config"), dict):
        raise ValueError(f"{json_file} has no 'config' object (keys: {sorted(doc)}); expected the file that "
                         f"experiments/export.py writes")
    config = dict(doc["config"])
    files.check_fields(GeneratorConfig, config, f"{json_file} key 'config'")
    if "noise" not in config:
        raise ValueError(f"{json_file} key 'config' has no 'noise' entry")
    noise = files.dataclass_from_dict(NoiseConfig, config.pop("noise"), f"{json_file} key 'config.noise'")
    if config.get("unet_widths") is not None:
        config["unet_widths"] = tuple(config["unet_widths"])
    gen_cfg = files.dataclass_from_dict(GeneratorConfig, {**config, "noise": noise}, f"{json_file} key 'config'")
    template = jax.eval_shape(lambda: init_generator(jax.random.key(0), gen_cfg).params)
    stored = files.read_npz(npz_file)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(p) for p, _ in paths]
    missing, unexpected = sorted(set(names) - set(stored)), sorted(set(stored) - set(names))
    if missing or unexpected:
        raise ValueError(f"{npz_file} does not match {json_file}: missing {missing}, unexpected {unexpected}")
    for name, (_, ref) in zip(names, paths):
        want, got = tuple(ref.shape), stored[name].shape
        if name.endswith(("['fixed_pattern']", "['learned_fixed']")):  # any frame size; rank and channels fixed
            ok = len(got) == 3 and got[-1] == gen_cfg.channels
            want = f"[Hf, Wf, {gen_cfg.channels}]"
        else:
            ok = got == want
        if not ok:
            raise ValueError(f"{npz_file} does not match {json_file}: {name} has shape {got}, expected {want} "
                             f"(noiselist {noise.noiselist!r}, channels {noise.channels}, "
                             f"per_channel {noise.per_channel})")
    params = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(stored[n]) for n in names])
    return NoiseModel(params=params, config=gen_cfg)


# The trained defaults that `synthesize(key, clean)` uses, by channel count (README: how they were made).
# Package data (pyproject's package-data), so that an installed package has them, not only a checkout.
# A registered folder may be absent (not shipped yet): that channel count then has none.
ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_DIRS = {4: ASSETS / "default", 3: ASSETS / "srgb"}
DEFAULT_MODEL_DIR = DEFAULT_MODEL_DIRS[4]


def trained_defaults() -> dict[int, pathlib.Path]:
    """``{channels: folder}`` of the registered default models present in this installation."""
    return {c: d for c, d in sorted(DEFAULT_MODEL_DIRS.items()) if (d / "generator.json").is_file()}


def _no_default_message(channels: int, compat: str, shape=None) -> Optional[str]:
    """Why there is no trained default for ``channels`` / ``compat``, or None when there is one."""
    if compat != "physics":
        return (f"there is no trained default model for compat={compat!r} (the shipped defaults are 'physics' "
                f"models); pass params (or a NoiseModel), or a noiselist to use its initial, untrained values")
    available = trained_defaults()
    if channels in available:
        return None
    msg = (f"there is no trained default model for {channels}-channel images (trained defaults exist for "
           f"{sorted(available) or 'no'} channels); pass params (or a NoiseModel), or a noiselist to use its "
           f"initial, untrained values")
    if shape is not None and len(shape) >= 3 and channels > 4 and shape[-3] <= 4:
        msg += (f". The shape {tuple(shape)} looks like channels-first (N, C, H, W): synthesize expects "
                f"channels last ([..., H, W, C]), e.g. jnp.moveaxis(clean, -3, -1)")
    return msg


@functools.lru_cache(maxsize=8)
def default_model(noiselist: Optional[str] = None, compat: str = "physics", channels: int = 4) -> NoiseModel:
    """The model `synthesize` uses when no params are given.

    With no noiselist: the trained default registered for ``channels`` in `DEFAULT_MODEL_DIRS` (4: packed
    raw, ``starlight_jax/assets/default``; 3: sRGB, ``starlight_jax/assets/srgb``). With a noiselist: that
    noiselist's initial (untrained) values. Models are built once per argument tuple.

    Raises:
      ValueError: no noiselist, and no trained default for ``channels`` (or a ``compat`` other than physics).
    """
    if noiselist is not None:
        return _initial_model(parse_noiselist(noiselist, compat=compat, channels=channels))
    msg = _no_default_message(channels, compat)
    if msg is not None:
        raise ValueError(msg)
    folder = DEFAULT_MODEL_DIRS[channels]
    model = load_generator(folder)
    if model.config.channels != channels:
        raise ValueError(f"{folder} is registered as the {channels}-channel default but holds a "
                         f"{model.config.channels}-channel model")
    return model


@functools.lru_cache(maxsize=8)
def _initial_model(cfg: NoiseConfig) -> NoiseModel:
    """A noise-only model at ``cfg``'s initial values, built once per config (it may hold a large map)."""
    return init_generator(jax.random.key(0), GeneratorConfig(noise=cfg))


@functools.lru_cache(maxsize=32)
def _param_shapes(cfg: NoiseConfig) -> dict:
    return jax.eval_shape(lambda: noise_lib.init_params(cfg))


def _resolve(params, noiselist, compat, channels, shape=None) -> NoiseModel:
    """Turns the ``params`` argument of `synthesize` into a `NoiseModel` (``shape``: the clean image's, for
    the error message)."""
    if isinstance(params, NoiseModel):
        if noiselist is not None or compat is not None:
            raise ValueError("noiselist/compat must not be given together with a NoiseModel: the model "
                             "carries its own config")
        return params
    compat = "physics" if compat is None else compat
    if params is None:
        if isinstance(noiselist, NoiseConfig):
            return _initial_model(noiselist)
        if noiselist is None and (msg := _no_default_message(channels, compat, shape)) is not None:
            raise ValueError(msg)
        return default_model(noiselist, compat, channels)
    noiselist = DEFAULT_NOISELIST if noiselist is None else noiselist
    config = GeneratorConfig(noise=parse_noiselist(noiselist, compat=compat, channels=channels))
    return NoiseModel(params={"noise": params}, config=config)


def synthesize(key, clean, params=None, *, noiselist=None, compat: Optional[str] = None,
               fixed_offset=None, train: bool = False, gain=None):
    """Adds learned camera noise to clean images: ``clip(clean + noise [→ U-Net], 0, 1)``.

    Jittable, `jax.vmap`-able over images and keys, and differentiable in ``params``.

    Args:
      key: a PRNG key (`jax.random.key`); the same key gives the same noise.
      clean: ``[..., H, W, C]`` float images in [0, 1]; for a burst ``[..., T, H, W, C]``. Channels are the
        last axis. float16 / bfloat16 images are computed in float32 and cast back.
      params: ``None``, a dict of noise parameters (`starlight_jax.init_params`), or a full `NoiseModel`
        (config + params, U-Net included). ``None`` without ``noiselist``: the trained default model for
        the image's channel count (`DEFAULT_MODEL_DIRS`: 4 → ``starlight_jax/assets/default``, packed
        raw; 3 → ``starlight_jax/assets/srgb``, sRGB, trained on PolyU); ``None`` with a ``noiselist``: that
        noiselist's initial, untrained values.
      noiselist: a `--noiselist` string or `NoiseConfig` (default
        ``shot_read_uniform_row1_rowt_fixed1_periodic``); not with a `NoiseModel`.
      compat: ``"physics"`` (default) or ``"starlight"`` (the original's behaviour).
      fixed_offset: ``[2]`` (row, column) of the crop inside the fixed-pattern map; default random.
      train: dropout of the U-Net on (the original always had it on).
      gain: optional analogue-gain factor relative to the model's (e.g. 2 for twice the ISO): shot
        variance × gain, read variance × gain², row/column std × gain (`noise.with_gain`). A model
        reproduces the ISO it was trained at; this is how to reach a noisier (or cleaner) camera setting.

    Returns:
      The noisy images, same shape and dtype as ``clean``.

    Raises:
      ValueError: for a clean image that is not a finite float array ``[..., H, W, C]`` with the
        model's channel count, or (outside `jax.jit`, where the values are known) has values outside
        [0, 1] by more than `validation.RANGE_TOLERANCE` (e.g. 0-255 data); no params and no noiselist
        for a channel count without a trained default; params that do not match the noiselist, or a
        fixed-pattern map smaller than the image.
    """
    clean = validation.check_image("clean", clean)
    channels = clean.shape[-1]
    if isinstance(params, NoiseModel):
        channels = params.config.channels
    elif params is not None and isinstance(noiselist, NoiseConfig):
        channels = noiselist.channels
    model = _resolve(params, noiselist, compat, channels, clean.shape)
    cfg = model.config
    validation.check_channels("clean", clean.shape, cfg.channels)
    height, width = clean.shape[-3], clean.shape[-2]
    validation.check_noise_params(model.params["noise"], cfg.noise, _param_shapes(cfg.noise), height, width)
    validation.check_offset(fixed_offset, cfg.noise, model.params["noise"], height, width)
    # Half precision: the FFTs of some components exist in float32 and up only, and noise scales of 1e-4
    # are near float16's resolution anyway.
    dtype = clean.dtype
    compute = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype
    params = model.params
    if gain is not None:
        if validation.is_concrete(gain) and not (np.ndim(gain) == 0 and float(gain) > 0):
            raise ValueError(f"gain must be a positive scalar (e.g. 2.0 for twice the ISO), got {gain!r}")
        params = {**params, "noise": noise_lib.with_gain(params["noise"], cfg.noise, gain)}
    out = generate(params, key, clean.astype(compute), cfg, train=train, fixed_offset=fixed_offset)
    return out.astype(dtype)
