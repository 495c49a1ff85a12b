"""Figures of a noise model against real data (the original's ``viewnoise.py`` and notebook, SPEC §8).

Every ``plot_*`` function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
display needed); `write_figures` draws them all for a model and a dataset and saves PNGs.

**How images are shown** (`to_display`): three channels are picked and shown as R, G, B:

* 4 channels named R, G1, G2, B (packed RGGB Bayer: the synthetic data, SIDD raw): channels [0, 1, 3],
  i.e. R, G1, B. G1 alone, not (G1 + G2) / 2, so the green noise is shown at its true per-pixel level;
* 4 channels R, G, B, NIR (the Canon starlight data) and any other 4+ channels: channels [0, 1, 2];
* 3 channels as they are; 1 channel as grey.

Raw data (anything but sRGB) are divided by a white level (the 99.5th percentile of the *clean* image,
shared by every panel of a figure so brightness is comparable), clipped to [0, 1] and shown with gamma
1/2.2, as the original did (no colour matrix or white balance: raw colours look green). sRGB data are
shown as they are.
"""
from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from starlight_jax.data.batches import is_srgb
from starlight_jax.evaluation import samples as eval_samples
from starlight_jax.evaluation.parameters import baseline_parameters, learned_parameters, physical_parameters
from starlight_jax.evaluation.report import format_table, format_value, parameter_rows
from starlight_jax.evaluation.scoring import nlf_curves

COLORS = {"real": "black", "model": "tab:red", "gaussian": "tab:blue", "poisson_gaussian": "tab:green",
          "binned_gaussian": "tab:purple", "truth": "0.4"}
LABELS = {"real": "real", **eval_samples.LABELS}
GAMMA = 1 / 2.2


# ----------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------
def display_channels(channel_names: Sequence[str]) -> list[int]:
    """Indices of the channels shown as R, G, B (one index for grey); see the module docstring."""
    names = tuple(channel_names)
    if len(names) == 1:
        return [0]
    if len(names) == 3:
        return [0, 1, 2]
    if len(names) == 4 and names[1:3] == ("G1", "G2"):
        return [0, 1, 3]
    return [0, 1, 2]


def white_level(clean, channel_names: Sequence[str]) -> float:
    """The value shown as white: the 99.5th percentile of the displayed channels of ``clean``."""
    x = np.asarray(clean)[..., display_channels(channel_names)]
    return float(max(np.percentile(x, 99.5), 1e-6))


def to_display(x, channel_names: Sequence[str], *, raw: bool, white: float = 1.0) -> np.ndarray:
    """``[H, W, C]`` → ``[H, W, 3]`` (or ``[H, W]`` grey) float in [0, 1] for ``imshow``."""
    img = np.asarray(x, np.float64)[..., display_channels(channel_names)]
    if raw:
        img = np.clip(img / white, 0.0, 1.0) ** GAMMA
    img = np.clip(img, 0.0, 1.0)
    return img[..., 0] if img.shape[-1] == 1 else img


def _imshow(ax, img, title):
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------
def plot_images(clean, real, generated: dict, *, channel_names: Sequence[str], raw: bool, reference=None,
                title: str = "") -> Figure:
    """Clean, real noisy and each model's noisy frame side by side (``[H, W, C]`` each), and their noise.

    Row 1 shows the images. For raw data the black level, i.e. the per-channel mean of ``reference -
    clean`` (the dataset's fixed pattern, when known), is subtracted from every panel alike before the
    white level and gamma are applied, so a model that lacks that offset looks darker. Row 2 shows the
    noise, ``noisy - reference`` with its mean per channel removed (the mean is printed in the title),
    on one colour scale: ±3 standard deviations of the real noise map to black and white.
    """
    clean = np.asarray(clean, np.float64)
    reference = clean if reference is None else np.asarray(reference, np.float64)
    black = (reference - clean).mean(axis=(0, 1)) if raw else np.zeros(clean.shape[-1])
    white = white_level(clean, channel_names) if raw else 1.0
    panels = [("real noisy", np.asarray(real, np.float64))] + [
        (LABELS[k], np.asarray(v, np.float64)) for k, v in generated.items()]
    idx = display_channels(channel_names)
    noise = {name: img - reference for name, img in panels}
    scale = 3.0 * max(float(noise["real noisy"][..., idx].std()), 1e-12)
    n = len(panels) + 1
    fig = Figure(figsize=(3.1 * n, 6.9), layout="constrained")
    axes = fig.subplots(2, n)
    _imshow(axes[0, 0], to_display(clean, channel_names, raw=raw, white=white), "clean")
    axes[1, 0].set_axis_off()
    axes[1, 0].text(0.5, 0.5, f"row 2: noisy − {'(clean + fixed pattern)' if np.any(black) else 'clean'}\n"
                    f"per-channel mean removed\nscale ±{scale:.3g} (3σ of real)", ha="center", va="center",
                    fontsize=9, transform=axes[1, 0].transAxes)
    for col, (name, img) in enumerate(panels, start=1):
        _imshow(axes[0, col], to_display(img - black, channel_names, raw=raw, white=white), name)
        r = noise[name]
        shown = (r - r.mean(axis=(0, 1))) / (2 * scale) + 0.5
        mean = float(r[..., idx].mean())
        _imshow(axes[1, col], to_display(shown, channel_names, raw=False),
                f"{name.replace(' noisy', '')} noise\nmean {mean:+.3g}, std {r[..., idx].std():.3g}")
    shown = ", ".join(channel_names[i] for i in idx)
    how = f"; black {float(black.mean()):.3g} subtracted, white {white:.3g}, gamma 1/2.2" if raw else ""
    fig.suptitle(f"{title}\nshown as RGB: {shown}{how}", fontsize=10)
    return fig


def plot_components(components: dict, *, channel_names: Sequence[str], title: str = "") -> Figure:
    """Each physical noise component (and their sum) of one frame, one row per component, one column per
    channel. Each row has its own colour scale, symmetric about the row's mean (a fixed pattern carries a
    large offset; its mean is printed and subtracted so that its structure stays visible)."""
    rows = dict(components)
    if len(rows) > 1:
        rows["sum"] = sum(np.asarray(v, np.float64) for v in components.values())
    c = len(channel_names)
    fig = Figure(figsize=(2.4 * c + 2.6, 2.3 * len(rows) + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), c, squeeze=False))
    for r, (name, value) in enumerate(rows.items()):
        value = np.asarray(value, np.float64)
        mean, std = float(value.mean()), float(value.std())
        shift = abs(mean) > 0.1 * std
        value = value - mean if shift else value
        lim = float(np.max(np.abs(value))) or 1.0
        for ch in range(c):
            im = axes[r, ch].imshow(value[..., ch], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            axes[r, ch].set_xticks([])
            axes[r, ch].set_yticks([])
            if r == 0:
                axes[r, ch].set_title(channel_names[ch], fontsize=10)
        label = f"{name}\nstd {std:.2g}" + (f"\nmean {mean:.3g}\n(subtracted)" if shift else "")
        axes[r, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center", labelpad=8)
        fig.colorbar(im, ax=list(axes[r]), shrink=0.9, format="%.2g")
    fig.suptitle(title or "noise components of one frame", fontsize=11)
    return fig


def plot_residual_histograms(samples: eval_samples.EvalSamples, *, channel_names: Sequence[str],
                             bins: int = 120, step: Optional[float] = None) -> Figure:
    """Histograms of residuals (noisy - reference) per channel: real vs every model, log y.

    ``step``: the data's quantisation step; the bins are then a whole number of steps wide and centred on
    its multiples (finer bins than the lattice would alternate between full and empty)."""
    res = {"real": samples.residual(samples.real)}
    res.update({k: samples.residual(v[0]) for k, v in samples.generated.items()})
    pooled = np.concatenate([v.ravel() for v in res.values()])
    lo, hi = np.percentile(pooled, [0.05, 99.95])
    pad = 0.05 * (hi - lo)
    if step:
        width = step * max(1, int(np.ceil((hi - lo + 2 * pad) / (bins * step))))
        edges = np.arange((np.floor((lo - pad) / step) - 0.5) * step, hi + pad + width, width)
    else:
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
    c = len(channel_names)
    fig = Figure(figsize=(3.6 * c, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, c, sharey=True))
    for ch, ax in enumerate(axes):
        for name, r in res.items():
            hist, _ = np.histogram(r[..., ch], bins=edges, density=True)
            ax.stairs(np.where(hist > 0, hist, np.nan), edges, color=COLORS[name], label=LABELS[name],
                      lw=2.0 if name == "real" else 1.3)
        ax.set_yscale("log")
        ax.set_title(channel_names[ch], fontsize=10)
        ax.set_xlabel("residual ([0, 1] units)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=9)
    fig.suptitle(_residual_title(samples, "residual histograms"), fontsize=11)
    return fig


def _residual_title(samples, what: str) -> str:
    ref = "clean + fixed pattern" if np.any(samples.offset_map) else "clean"
    n, t = samples.real.shape[:2]
    return f"{what}: noisy − ({ref}), {n} test bursts × {t} frames"


def plot_nlf(curves: dict, *, channel_names: Sequence[str], truth: Optional[dict] = None,
             min_count: int = 50) -> Figure:
    """Noise level functions (residual variance vs clean intensity), one panel per channel.

    Args:
      curves: `~starlight_jax.evaluation.scoring.nlf_curves` output (``"real"`` and one entry per model).
      channel_names: the dataset's channel names.
      truth: ``{"a": [C], "b": [C]}`` of the true law Var = a x + b, drawn dashed when given.
      min_count: bins with fewer pixels are not drawn.
    """
    c = len(channel_names)
    fig = Figure(figsize=(3.6 * c, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, c, sharey=True))
    for ch, ax in enumerate(axes):
        for name, nlf in curves.items():
            ok = nlf.counts[:, ch] >= min_count
            x, v = nlf.mean_intensity[ok, ch], nlf.variance[ok, ch]
            if name == "real":
                ax.plot(x, v, "o", ms=4, color=COLORS[name], label=LABELS[name], zorder=3)
            else:
                ax.plot(x, v, "-", color=COLORS[name], label=LABELS[name], lw=1.4)
        if truth is not None:
            xs = np.linspace(0, max(float(np.nanmax(curves["real"].mean_intensity[:, ch])), 1e-3), 50)
            ax.plot(xs, truth["a"][ch] * xs + truth["b"][ch], "--", color=COLORS["truth"], label="truth a·x + b")
        ax.set_title(channel_names[ch], fontsize=10)
        ax.set_xlabel("clean intensity")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    top = max(float(np.nanmax(line.get_ydata(), initial=0.0)) for ax in axes for line in ax.get_lines())
    axes[0].set_ylim(0, 1.05 * top if top > 0 else 1.0)
    axes[0].set_ylabel("residual variance")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=9)
    fig.suptitle("noise level functions (variance of the residual per clean-intensity bin)", fontsize=11)
    return fig


def plot_power_spectra(samples: eval_samples.EvalSamples) -> Figure:
    """Residual power spectra (mean over channels, log10): real and learned model as images, and the
    1-D profiles along each frequency axis for every model. Row/column noise shows as a line through the
    centre, periodic noise as off-centre peaks; the DC bin (the mean residual) is left out."""
    from starlight_jax.metrics.residual_stats import residual_power_spectrum

    ref = np.broadcast_to(samples.reference, samples.real.shape)
    spectra = {"real": residual_power_spectrum(samples.real, ref).mean(-1)}
    spectra.update({k: residual_power_spectrum(v[0], ref).mean(-1) for k, v in samples.generated.items()})
    h, w = spectra["real"].shape
    for s in spectra.values():
        s[h // 2, w // 2] = np.nan  # DC
    logs = {k: np.log10(np.maximum(v, 1e-30)) for k, v in spectra.items()}
    both = np.concatenate([logs["real"].ravel(), logs["model"].ravel()])
    vmin, vmax = np.nanpercentile(both, [1, 99.5])
    fig = Figure(figsize=(14, 3.9), layout="constrained")
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1.15, 1.15]})
    extent = (-0.5, 0.5, 0.5, -0.5)
    for ax, name in zip(axes[:2], ("real", "model")):
        im = ax.imshow(logs[name], vmin=vmin, vmax=vmax, cmap="magma", extent=extent, interpolation="nearest")
        ax.set_title(f"{LABELS[name]}: log10 power", fontsize=10)
        ax.set_xlabel("horizontal frequency (cycles/px)")
        ax.set_ylabel("vertical frequency")
    fig.colorbar(im, ax=list(axes[:2]), shrink=0.85)
    freqs_w = np.fft.fftshift(np.fft.fftfreq(w))
    freqs_h = np.fft.fftshift(np.fft.fftfreq(h))
    for ax, axis, freqs, what in ((axes[2], 0, freqs_w, "horizontal"), (axes[3], 1, freqs_h, "vertical")):
        for name, s in spectra.items():
            ax.plot(freqs, np.nanmean(s, axis=axis), color=COLORS[name], label=LABELS[name],
                    lw=2.0 if name == "real" else 1.2)
        ax.set_yscale("log")
        ax.set_xlabel(f"{what} frequency (cycles/px)")
        ax.set_title(f"mean power vs {what} frequency", fontsize=10)
        ax.grid(alpha=0.3)
    axes[2].set_ylabel("power")
    axes[3].legend(fontsize=8, loc="best")
    fig.suptitle(_residual_title(samples, "residual power spectra"), fontsize=11)
    return fig


def plot_table(header: list[str], rows: list[list], *, title: str = "") -> Figure:
    """A table as an image (cells formatted like `~starlight_jax.evaluation.report.format_table`)."""
    cells = [[format_value(c) for c in r] for r in rows]
    width = [max(len(str(header[i])), *(len(r[i]) for r in cells)) for i in range(len(header))]
    fig = Figure(figsize=(max(6.0, 0.095 * sum(width) + 1), 0.3 * (len(rows) + 1) + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="left", colLoc="left",
                     colWidths=[w / sum(width) for w in width])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.35)
    for (r, _), cell in table.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("0.9")
    if title:
        ax.set_title(title, fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------------
# Everything for one model
# ----------------------------------------------------------------------------------------------------
def write_figures(model, dataset, out_dir, *, crop_size: int, frames: int, train_crop: int,
                  seed: int = 0, max_bursts: Optional[int] = 8, burst: int = 0, frame: int = 0,
                  title: str = "", log=print) -> list[pathlib.Path]:
    """Draws every figure for ``model`` on ``dataset`` and saves them as PNGs in ``out_dir``.

    The baselines are fitted as in `starlight_jax.evaluation.evaluate_model` (train crop ``train_crop``); the figures
    use test bursts cropped to ``crop_size`` (larger crops make nicer pictures).

    Returns:
      The written paths: ``images.png``, ``components.png``, ``histograms.png``, ``nlf.png``,
      ``power_spectra.png``, ``parameters.png`` and ``parameters.md``.
    """
    from starlight_jax.noise import sample_components

    import jax

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eval_samples.check_channels(model, dataset)
    log(f"fitting the baselines on the train split ({train_crop} px crops) ...")
    baselines = eval_samples.fit_baselines(dataset, crop_size=train_crop, frames=frames, seed=seed)
    log(f"noising {max_bursts or 'all'} test bursts ({crop_size} px crops) ...")
    split = "test" if len(dataset.test) else "train"
    samples = eval_samples.draw_samples(model, dataset, baselines, crop_size=crop_size, frames=frames, seed=seed,
                                      max_bursts=max_bursts, n_samples=1, split=split)
    names = tuple(dataset.channel_names)
    raw = not is_srgb(dataset)
    if not 0 <= burst < samples.real.shape[0]:
        raise ValueError(f"burst {burst} is not one of the {samples.real.shape[0]} test bursts drawn")
    if not 0 <= frame < samples.real.shape[1]:
        raise ValueError(f"frame {frame} is not in [0, {samples.real.shape[1]})")
    paths = []

    def save(fig, name):
        path = out / name
        fig.savefig(path, dpi=110)
        paths.append(path)

    gen = {k: v[0, burst, frame] for k, v in samples.generated.items()}
    save(plot_images(samples.clean[burst, frame], samples.real[burst, frame], gen, channel_names=names, raw=raw,
                     reference=samples.reference[burst, frame] if samples.reference.shape[1] > 1 else
                     samples.reference[burst, 0],
                     title=f"{title}  test burst {samples.names[burst]!r}, frame {frame}".strip()), "images.png")

    cfg = model.config.noise
    offset = samples.offsets[burst] if (cfg.fixed or cfg.learned_fixed) else None
    comps = sample_components(jax.random.key(seed), model.params["noise"], samples.clean[burst, frame], cfg,
                              fixed_offset=offset)
    comps = {k: np.asarray(v) for k, v in comps.items()}
    save(plot_components(comps, channel_names=names,
                         title=f"learned noise components ({cfg.noiselist}, compat={cfg.compat}) of one frame"
                               + ("" if model.config.network == "noUnet" else "; before the U-Net")),
         "components.png")
    save(plot_residual_histograms(samples, channel_names=names, step=dataset.info.get("quantization_step")),
         "histograms.png")
    truth = None
    if dataset.truth is not None and baselines.fixed_pattern:
        truth = {"a": np.asarray(dataset.truth["shot"]), "b": np.asarray(dataset.truth["variance_law_b"])}
    save(plot_nlf(nlf_curves(samples), channel_names=names, truth=truth), "nlf.png")
    save(plot_power_spectra(samples), "power_spectra.png")

    result = {"learned_parameters": learned_parameters(model),
              "baselines": baseline_parameters(baselines, dataset.truth)}
    if dataset.truth is not None:
        result["physical_parameters"] = physical_parameters(model, dataset.truth)
    header, rows = parameter_rows(result)
    save(plot_table(header, rows, title=f"{title}: parameters (learned and fitted; truth when known)".strip(": ")),
         "parameters.png")
    md = out / "parameters.md"
    text = format_table(header, rows)
    md.write_text(f"# {title or 'noise model'}: parameters\n\n{text}\n")
    paths.append(md)
    log(text)
    return paths


# ----------------------------------------------------------------------------------------------------
# A user's image
# ----------------------------------------------------------------------------------------------------
def load_user_image(path, channels: int, channel_names: Sequence[str], *, pack_rggb: bool = False):
    """Reads an 8/16-bit image as float32 ``[H, W, channels]`` in [0, 1] for a ``channels``-channel model.

    ``pack_rggb`` turns an RGB image into packed RGGB raw ``[H/2, W/2, 4]`` (inverse sRGB curve, then an
    RGGB mosaic, as the synthetic dataset makes its clean frames) for 4-channel R, G1, G2, B models.

    Raises:
      ValueError: unreadable file, or a channel count that does not match the model (explained).
    """
    from starlight_jax.data.images import read_image, to_unit_float

    arr, bits = read_image(path)
    img = to_unit_float(arr, bits, path)
    if pack_rggb:
        if tuple(channel_names) != ("R", "G1", "G2", "B") or img.shape[-1] != 3:
            raise ValueError(f"--pack_rggb needs an RGB image and a model of packed RGGB raw (channels R, G1, G2, "
                             f"B); got a {img.shape[-1]}-channel image and model channels {tuple(channel_names)}")
        from starlight_jax.data.synthetic import mosaic_pack_rggb, srgb_to_linear

        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        img = mosaic_pack_rggb(srgb_to_linear(img[:h, :w].astype(np.float64))).astype(np.float32)
    if img.shape[-1] != channels:
        hint = ""
        if channels == 4 and img.shape[-1] == 3:
            hint = (" A 4-channel model works on packed raw frames (channels "
                    f"{', '.join(channel_names)}), which an RGB or grey PNG cannot hold"
                    + ("; pass --pack_rggb to mosaic an RGB image into packed RGGB first" if tuple(channel_names)
                       == ("R", "G1", "G2", "B") else "") + ", or use a model trained on 3-channel data.")
        raise ValueError(f"{path} has {img.shape[-1]} channel(s) but the model expects {channels} "
                         f"({', '.join(channel_names)}).{hint}")
    return img


def noise_user_image(key, model, image, *, channel_names: Sequence[str], raw: bool, gain=None):
    """The model's noise on ``image`` ``[H, W, C]`` (at ``gain`` times the model's analogue gain, see
    `synthesize`): returns ``(noisy, display)``.

    A model with a fixed pattern uses the map's top-left crop; a larger image is cropped to the map first.
    ``display`` is the noisy image rendered as in the figures (for packed raw), else the noisy image itself.
    """
    from starlight_jax.generator import synthesize

    cfg = model.config.noise
    offset = None
    if cfg.fixed or cfg.learned_fixed:
        fmap = model.params["noise"]["fixed_pattern" if cfg.fixed else "learned_fixed"]
        image = image[:fmap.shape[0], :fmap.shape[1]]
        offset = np.zeros(2, np.int32)
    noisy = np.asarray(synthesize(key, image.astype(np.float32), model, fixed_offset=offset, gain=gain))
    if len(channel_names) in (1, 3) and not raw:
        return noisy, noisy
    return noisy, to_display(noisy, channel_names, raw=raw, white=white_level(image, channel_names))


def save_png(path, img, bits: int = 8) -> None:
    """Saves ``[H, W]`` or ``[H, W, 3]`` floats in [0, 1] as a PNG: 16-bit for grey with ``bits=16``, else 8-bit
    (PIL writes no 16-bit RGB)."""
    from PIL import Image

    x = np.clip(np.asarray(img, np.float64), 0.0, 1.0)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if bits == 16 and x.ndim == 2:
        Image.fromarray(np.round(x * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.round(x * 255).astype(np.uint8)).save(path)
