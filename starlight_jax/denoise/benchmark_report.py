"""Output of the denoiser benchmark (`starlight_jax.denoise.benchmark.run_benchmark`): its table and figure."""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from starlight_jax.denoise.benchmark_config import LABELS, SHORT
from starlight_jax.evaluation.report import format_table


def results_table(result: dict) -> str:
    """The test set on the first line, then one row per method (and the noisy input).

    Columns: PSNR mean over seeds and its spread (max - min), SSIM likewise, the PSNR gap to (d) real
    pairs and to the noisy input (``tie`` when inside the spread, see `is_tie`), the methods it ties with,
    the final train L1 and the training seconds (all seeds).
    """
    s = result["setup"]
    seeds = s.get("seeds", [s.get("seed")])
    where = "test split" if s["test_splits"] == ["test"] else f"all pairs ({'+'.join(s['test_splits'])} splits)"
    train_dir, test_dir = s.get("data_dir"), s.get("test_data_dir") or s.get("data_dir")  # set by the CLI
    test_name = s["test_dataset"] + (f" {pathlib.Path(test_dir).name}" if test_dir else "")
    train_name = s["dataset"] + (f" {pathlib.Path(train_dir).name}" if train_dir else "")
    first = (f"test set: {test_name} {where}, {s['n_test_images']} images; denoisers trained on "
             f"{train_name} train split, {s['steps']} steps, {len(seeds)} seed(s) {seeds}; spread = max - min "
             f"over seeds; tie = |gap| <= the larger spread")

    def gap(v, tie):
        if v is None:
            return None
        return f"{v:+.3f}" + (" tie" if tie else "")

    header = ["trained on", "PSNR (dB)", "spread", "SSIM", "SSIM spread", "PSNR - (d)", "PSNR - noisy",
              "ties with", "train L1", "train s"]
    rows = [["noisy input (no denoising)", f"{result['noisy_input']['psnr']:.3f}", None,
             f"{result['noisy_input']['ssim']:.4f}", None, None, None, None, None, None]]
    for m, r in result["results"].items():
        ties = r.get("ties")
        dead = r.get("collapsed_seeds")
        label = r["label"] + (f" [collapsed: seed {', '.join(map(str, dead))}]" if dead else "")
        rows.append([label, f"{r['psnr']:.3f}", f"{r['psnr_spread']:.3f}", f"{r['ssim']:.4f}",
                     f"{r['ssim_spread']:.4f}", gap(r["psnr_gap_to_real"], r.get("tie_with_real")),
                     gap(r["psnr_gap_to_noisy"], r.get("tie_with_noisy")),
                     None if ties is None else (", ".join(SHORT[o] for o in ties) or "none"),
                     r["train_l1_final"], round(r["train_seconds"])])
    return first + "\n" + format_table(header, rows)


def plot_denoised(images: dict, result: dict, *, channel_names: Sequence[str], raw: bool, n: int = 2,
                  crop: int = 128):
    """Noisy, each method's output and clean side by side for ``n`` test images (rows).

    Each row shows a centred ``crop`` x ``crop`` window (the whole image if smaller), titled with that
    image's PSNR. Raw data use `starlight_jax.plots.to_display` with the clean image's white level.
    """
    from matplotlib.figure import Figure

    from starlight_jax import plots

    total = len(images["noisy"])
    picks = sorted({int(round(i)) for i in np.linspace(0, total - 1, min(n, total))})
    methods = list(images["denoised"])
    cols = ["noisy"] + methods + ["clean"]
    fig = Figure(figsize=(2.6 * len(cols), 2.8 * len(picks) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(picks), len(cols)))
    for r, i in enumerate(picks):
        clean = images["clean"][i]
        h, w = clean.shape[:2]
        ch, cw = min(crop, h), min(crop, w)
        top, left = (h - ch) // 2, (w - cw) // 2
        white = plots.white_level(clean, channel_names) if raw else 1.0
        for c, name in enumerate(cols):
            if name == "noisy":
                img, title = images["noisy"][i], f"noisy\n{result['noisy_input']['psnr_per_image'][i]:.2f} dB"
            elif name == "clean":
                img, title = clean, "clean"
            else:
                img = images["denoised"][name][i]  # the first seed's denoiser, and its scores
                title = f"{LABELS[name]}\n{result['results'][name]['per_seed'][0]['psnr_per_image'][i]:.2f} dB"
            shown = plots.to_display(img[top:top + ch, left:left + cw], channel_names, raw=raw, white=white)
            ax = axes[r, c]
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        axes[r, 0].text(-0.05, 0.5, images["names"][i], rotation=90, ha="right", va="center", fontsize=8,
                        transform=axes[r, 0].transAxes)
    s = result["setup"]
    how = "raw shown as R, G1, B with gamma 1/2.2" if raw else "sRGB as is"
    fig.suptitle(f"denoisers (seed {s['seeds'][0]}) trained {s['steps']} steps on {s['dataset']} crops {s['crop_size']}px; test: "
                 f"{s['test_dataset']} {s['test_splits']}; centre {crop}px crops; {how}", fontsize=9)
    return fig


__all__ = ["results_table", "plot_denoised"]
