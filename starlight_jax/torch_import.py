"""Loading the original PyTorch checkpoints (SPEC §2.1, §3, §4.3) into starlight-jax pytrees.

Generator (`load_torch_checkpoint`): the state dict of ``NoiseGenerator2d3d_distributed_ablation``, as
saved by the original training script (``generatorcheckpoint*.pt``, ``bestgenerator*.pt``), with or without
the DDP ``module.`` prefix. The keys it understands:

===================================  ==========================  ===========================================
torch key                            starlight-jax leaf          layout change
===================================  ==========================  ===========================================
``shot_noise``                       ``noise/shot``              scalar
``read_noise``                       ``noise/read``              scalar
``uniform_noise``                    ``noise/uniform``           scalar
``row_noise``                        ``noise/column``            scalar (``row1`` is per-column noise)
``row_noise_temp``                   ``noise/column_t``          scalar
``periodic_params``                  ``noise/periodic``          ``[3]``
``fixednoiset`` (``learnedfixed``)   ``noise/learned_fixed``     ``(1, C, H, W)`` → ``[H, W, C]``
``net.<block>.conv{1,2}.weight``     ``net/<block>/conv{1,2}/kernel``  ``(O, I, 3, 3)`` → ``[3, 3, I, O]``
``net.<block>.conv{1,2}.bias``       ``net/<block>/conv{1,2}/bias``    ``[O]``
``net.down{i}.weight``               ``net/down{i}/kernel``      depthwise ``(C, 1, 2, 2)`` → ``[2, 2, C]``
``net.up{i}.weight``                 ``net/up{i}/kernel``        depthwise transposed ``(C, 1, 2, 2)`` → ``[2, 2, C]``
``net.down{i}.bias``, ``net.up{i}.bias``  ``.../bias``           ``[C]``
===================================  ==========================  ===========================================

``<block>`` is ``conv1`` … ``conv9`` or ``convres``: the original ``models/modules.py`` ConvBlock holds its
two 3×3 convs as ``conv1`` and ``conv2`` (its dropout/activation modules have no weights, and the default
options build no norm layers), so a block's first kernel is ``net.conv1.conv1.weight``. The set of
``net.*`` keys expected is derived from the U-Net that ``config`` builds (e.g. ``maxpool`` has no
``down{i}`` weights, ``Unet_cat`` has 8 input channels).

Generator scalars of components that ``config`` does not enable are ignored (some versions save every
scalar); any other extra key, or any missing one, is a `ValueError` naming them.

Discriminator (`load_torch_discriminator`): ``DiscriminatorS2d`` / ``DiscriminatorS2d_sig`` with the
original custom spectral norm (``conv1.module.weight_bar``, ``.weight_u``, ``.weight_v``, ``.bias`` …
``fc.module.*``), torch's ``spectral_norm`` (``conv1.weight_orig``, ``.weight_u``, ``.weight_v``) or
torch's parametrizations (``conv1.parametrizations.weight.original``, ``.parametrizations.weight.0._u``,
``._v``); layers may also be named ``convs.0`` … ``convs.4``.

``torch`` is needed only to read ``.pt`` files. A mapping of NumPy arrays (or torch tensors), or an ``.npz``
file, works without it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from starlight_jax import noise as noise_lib
from starlight_jax.generator import GeneratorConfig, NoiseModel, init_generator

# torch scalar key -> our noise-param key.
NOISE_KEYS = {
    "shot_noise": "shot",
    "read_noise": "read",
    "uniform_noise": "uniform",
    "row_noise": "column",
    "row_noise_temp": "column_t",
    "periodic_params": "periodic",
    "fixednoiset": "learned_fixed",
}
# Of those, keys that may be present for a component our config leaves off (the scalars: some versions
# save all of them). A trained ``fixednoiset`` map is never dropped silently.
_IGNORABLE = frozenset(NOISE_KEYS) - {"fixednoiset"}
# Our noise params that no original state dict holds.
_NO_COUNTERPART = {"row": "true per-row noise is a starlight-jax addition (the original's 'row1' is "
                          "per-column; drop the 'row' token)"}

_DDP_PREFIX = "module."
_MAX_LISTED = 20


# ------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------
def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def read_state_dict(path_or_state_dict) -> dict[str, np.ndarray]:
    """A state dict as ``{key: np.ndarray}``, with the DDP ``module.`` prefix removed.

    Args:
      path_or_state_dict: a mapping of arrays/tensors, an ``.npz`` file, or a ``.pt`` file (needs torch).

    Raises:
      FileNotFoundError: for a path that does not exist.
      ImportError: for a ``.pt`` file when torch is not installed.
      ValueError: when the file does not hold a mapping of arrays.
    """
    if isinstance(path_or_state_dict, Mapping):
        raw = path_or_state_dict
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint file at {path!r}")
        if path.endswith(".npz"):
            with np.load(path) as data:
                raw = {k: data[k] for k in data.files}
        else:
            try:
                import torch
            except ImportError as err:
                raise ImportError(
                    f"reading the PyTorch checkpoint {path!r} needs torch: pip install torch (or "
                    "pip install 'starlight-jax[torch]'); alternatively pass a dict of NumPy arrays or an "
                    ".npz file") from err
            raw = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(raw, Mapping):
                raise ValueError(f"{path!r} holds a {type(raw).__name__}, expected a state dict "
                                 "(a mapping of parameter names to tensors)")
    else:
        raise ValueError("expected a state dict (mapping of names to arrays) or a checkpoint path, got "
                         f"{type(path_or_state_dict).__name__}")
    out = {}
    for key, value in raw.items():
        key = str(key)
        out[key[len(_DDP_PREFIX):] if key.startswith(_DDP_PREFIX) else key] = _to_numpy(value)
    if len(out) != len(raw):
        raise ValueError("the state dict has the same key with and without the DDP 'module.' prefix")
    return out


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{keys[:_MAX_LISTED]}{more}"


def _check_keys(what: str, present, expected, ignorable=frozenset(), hints: Mapping[str, str] | None = None):
    missing = set(expected) - set(present)
    unexpected = set(present) - set(expected) - set(ignorable)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s) {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s) {_names(unexpected)}")
        notes = "".join(f"; {hint}" for prefix, hint in (hints or {}).items()
                        if any(k == prefix or (prefix.endswith(".") and k.startswith(prefix))
                               for k in missing | unexpected))
        raise ValueError(f"{what} does not match: " + ", ".join(parts) + notes)


def _convert(key: str, value: np.ndarray, torch_shape: tuple, fn: Callable[[np.ndarray], np.ndarray]):
    if value.shape != tuple(torch_shape):
        raise ValueError(f"state-dict entry {key!r} has shape {value.shape}, expected {tuple(torch_shape)}")
    return jnp.asarray(fn(value.astype(np.float32)))


# ------------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------------
def _net_layout(net_shapes) -> dict[str, tuple[tuple, tuple, Callable]]:
    """torch key → (our path, torch shape, torch→ours conversion) for every U-Net leaf."""
    layout = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(net_shapes)[0]:
        names = [p.key for p in path]
        *modules, leaf_name = names
        shape = tuple(leaf.shape)
        if leaf_name == "bias":
            torch_name, torch_shape, fn = "bias", shape, lambda w: w
        elif leaf_name == "kernel" and len(shape) == 4:  # [kh, kw, I, O] <- (O, I, kh, kw)
            torch_name, torch_shape = "weight", (shape[3], shape[2], shape[0], shape[1])
            fn = lambda w: np.transpose(w, (2, 3, 1, 0))  # noqa: E731
        elif leaf_name == "kernel" and len(shape) == 3:  # depthwise [2, 2, C] <- (C, 1, 2, 2)
            torch_name, torch_shape = "weight", (shape[2], 1, shape[0], shape[1])
            fn = lambda w: np.transpose(w[:, 0], (1, 2, 0))  # noqa: E731
        else:
            raise ValueError(f"no torch layout known for U-Net leaf {'/'.join(names)} of shape {shape} "
                             "(the original's effective U-Net has convs only, SPEC §3.2)")
        layout[".".join(["net", *modules, torch_name])] = (("net", *names), torch_shape, fn)
    return layout


def _set(tree: dict, path: tuple, value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def load_torch_checkpoint(path_or_state_dict, config: GeneratorConfig, *, fixed_pattern=None) -> NoiseModel:
    """Loads the original generator's state dict into a `NoiseModel` (see the module docstring for keys).

    Args:
      path_or_state_dict: a ``.pt`` file (needs torch), an ``.npz`` file, or a mapping of names to
        NumPy arrays / torch tensors; keys may carry the DDP ``module.`` prefix.
      config: the generator to build. Must use ``compat="starlight"`` (its noiselist, network and
        ``unet_opts`` should be those of the original run, e.g. from its ``args.txt``).
      fixed_pattern: the ``[Hf, Wf, C]`` map for ``fixed1`` (the original's
        ``data/fixed_pattern_noise.mat`` ``mean_pattern / 2**16``, transposed to H, W, C). It is not part
        of the state dict; without it the map is zeros.

    Returns:
      A `NoiseModel` with ``config`` and params ``{"noise": ..., "net": ...}``.

    Raises:
      ValueError: for ``compat != "starlight"``, missing or unexpected keys (naming them), or a shape
        that does not match ``config``.
      ImportError: for a ``.pt`` file without torch.

    .. note:: The original never switched dropout off; call `generate` with ``train=True`` to reproduce
       its outputs, ``train=False`` for a deterministic U-Net.
    """
    if not isinstance(config, GeneratorConfig):
        raise ValueError(f"config must be a GeneratorConfig, got {type(config).__name__}")
    if config.noise.compat != "starlight":
        raise ValueError(
            f"load_torch_checkpoint needs config.noise.compat='starlight', got {config.noise.compat!r}: the "
            "original's scalars are used as stored (std a*x + b, one-sided uniform, rectified periodic), "
            "while compat='physics' stores logarithms and uses other formulas, so the values would mean "
            "something else. Build the config with parse_noiselist(..., compat='starlight').")
    for name, why in _NO_COUNTERPART.items():
        if getattr(config.noise, name):
            raise ValueError(f"config enables noise component {name!r}, which no original checkpoint "
                             f"holds: {why}")
    fixed_shape = (*config.noise.fixed_shape, config.channels)
    if config.noise.fixed and fixed_pattern is not None and np.shape(fixed_pattern) != fixed_shape:
        raise ValueError(f"fixed_pattern must have shape [Hf, Wf, C] = {fixed_shape} (NoiseConfig.fixed_shape, "
                         f"channels), got {np.shape(fixed_pattern)}")
    state = read_state_dict(path_or_state_dict)

    noise_params = noise_lib.init_params(config.noise, fixed_pattern=fixed_pattern)
    to_torch = {ours: theirs for theirs, ours in NOISE_KEYS.items()}
    layout = {}
    for ours, value in noise_params.items():
        if ours == "fixed_pattern":
            continue  # data, not a parameter: from the argument
        shape = tuple(value.shape)
        if ours == "learned_fixed":  # [H, W, C] <- (1, C, H, W)
            layout[to_torch[ours]] = (("noise", ours), (1, shape[2], shape[0], shape[1]),
                                      lambda w: np.transpose(w[0], (1, 2, 0)))
        else:
            layout[to_torch[ours]] = (("noise", ours), shape, lambda w: w)
    if config.network != "noUnet":
        shapes = jax.eval_shape(lambda: init_generator(jax.random.key(0), config).params["net"])
        layout.update(_net_layout(shapes))

    hints = {"fixednoiset": "'fixednoiset' is a learned fixed-pattern map (1, C, H, W): it exists only when "
                            "the noiselist has 'learnedfixed'"}
    if config.network == "noUnet":
        hints["net."] = "net.* keys: the checkpoint has a U-Net; set GeneratorConfig.network"
    _check_keys("generator state dict", state, layout, ignorable=_IGNORABLE, hints=hints)

    params = {"noise": {"fixed_pattern": noise_params["fixed_pattern"]} if "fixed_pattern" in noise_params
              else {}}
    for key, (path, torch_shape, fn) in layout.items():
        value = state[key]
        if key == "fixednoiset" and value.shape != torch_shape:
            raise ValueError(
                f"state-dict entry 'fixednoiset' has shape {value.shape}, expected {torch_shape}: give the "
                f"map's size as parse_noiselist(..., fixed_shape=(H, W), channels=C)")
        if value.size == 1 and len(torch_shape) == 0:
            value = value.reshape(())  # a scalar saved as [1]
        _set(params, path, _convert(key, value, torch_shape, fn))
    return NoiseModel(params=params, config=config)


# ------------------------------------------------------------------------------------------------------
# Discriminator
# ------------------------------------------------------------------------------------------------------
_D_KEY = re.compile(
    r"^(?P<layer>conv[1-5]|convs\.[0-4]|fc)\.(?:module\.)?"
    r"(?P<role>weight_bar|weight_orig|weight_u|weight_v|bias|"
    r"parametrizations\.weight\.original|parametrizations\.weight\.0\._u|parametrizations\.weight\.0\._v)$")
_ROLES = {"weight_bar": "weight", "weight_orig": "weight", "parametrizations.weight.original": "weight",
          "weight_u": "u", "parametrizations.weight.0._u": "u",
          "weight_v": "v", "parametrizations.weight.0._v": "v", "bias": "bias"}


def _d_layer(name: str) -> str:
    if name == "fc":
        return "linear"
    if name.startswith("convs."):
        return f"conv{int(name.split('.')[1]) + 1}"
    return name


def load_torch_discriminator(path_or_state_dict, channels: int) -> tuple[Any, Any]:
    """Loads ``DiscriminatorS2d[_sig]`` weights and spectral-norm vectors: ``(params, sn_state)``.

    Each layer needs its raw weight (``weight_bar`` / ``weight_orig`` / ``parametrizations.weight.original``),
    its bias and its ``u`` vector (``weight_u`` / ``parametrizations.weight.0._u``); ``v`` is accepted and
    dropped, since every forward recomputes it from ``u``. Conv weights become ``weight.permute(2, 3, 1, 0)``,
    the linear weight ``weight.T`` (the critic flattens in NCHW order, like the original).

    Args:
      path_or_state_dict: a ``.pt`` / ``.npz`` file or a mapping of arrays; the DDP ``module.`` prefix is
        removed.
      channels: the discriminator's input channels (4, or 8 for the mean/complex/mixed inputs).

    Returns:
      ``(params, sn_state)`` for `starlight_jax.models.apply_discriminator` (the ``sigmoid`` flag is an
      argument there: the state dicts of ``DiscriminatorS2d`` and ``DiscriminatorS2d_sig`` are the same).

    Raises:
      ValueError: for missing, unexpected or duplicated keys (naming them) or shapes that do not match
        ``channels``.

    .. note:: With the original's (or torch ``spectral_norm``'s) vectors, the next forward pass gives
       exactly the original's ``W / sigma``. torch's parametrizations iterate in the other order (``u``
       from ``v`` first), so their next ``sigma`` agrees only up to one half power-iteration step
       (exactly once the iteration has converged).
    """
    from starlight_jax.models import discriminator as disc_lib  # Flax joins only when asked for

    state = read_state_dict(path_or_state_dict)
    shapes = jax.eval_shape(lambda: disc_lib.init_discriminator(jax.random.key(0), channels))
    param_shapes, sn_shapes = shapes

    found: dict[tuple[str, str], str] = {}
    unexpected = []
    for key in state:
        m = _D_KEY.match(key)
        if m is None:
            unexpected.append(key)
            continue
        slot = (_d_layer(m["layer"]), _ROLES[m["role"]])
        if slot in found:
            raise ValueError(f"state-dict keys {found[slot]!r} and {key!r} both give {slot[0]}'s {slot[1]}")
        found[slot] = key
    required = {(layer, role) for layer in disc_lib.LAYERS for role in ("weight", "bias", "u")}
    missing = [f"{layer}.{role}" for layer, role in sorted(required - set(found))]
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + (
            [f"unexpected key(s) {_names(unexpected)}"] if unexpected else [])
        raise ValueError("discriminator state dict does not match DiscriminatorS2d (layers conv1..conv5, fc; "
                         "weight_bar/weight_u/weight_v/bias per layer): " + ", ".join(parts))

    params, sn_state = {}, {}
    for layer in disc_lib.LAYERS:
        kernel_shape = tuple(param_shapes[layer]["kernel"].shape)
        if len(kernel_shape) == 4:  # [kh, kw, I, O] <- (O, I, kh, kw)
            torch_shape = (kernel_shape[3], kernel_shape[2], kernel_shape[0], kernel_shape[1])
            fn = lambda w: np.transpose(w, (2, 3, 1, 0))  # noqa: E731
        else:  # linear [F, O] <- (O, F)
            torch_shape, fn = kernel_shape[::-1], np.transpose
        key = found[(layer, "weight")]
        params[layer] = {"kernel": _convert(key, state[key], torch_shape, fn)}
        key = found[(layer, "bias")]
        params[layer]["bias"] = _convert(key, state[key], param_shapes[layer]["bias"].shape, lambda w: w)
        key = found[(layer, "u")]
        sn_state[layer] = {"u": _convert(key, state[key], sn_shapes[layer]["u"].shape, lambda w: w)}
    return params, sn_state
