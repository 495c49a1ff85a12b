"""Tests of the Starlight .mat layouts (SPEC §7) on small fixtures written with scipy.io.savemat / h5py."""

import h5py
import numpy as np
import pytest
import scipy.io

from starlight_jax.data import PipelineConfig, load_dataset, make_loader

HW = (64, 128)  # small frames; the real ones are 640 x 1080


def _frames(rng, n, hw=HW, scale=0.5):
    return (rng.random((n, *hw, 4)) * scale).astype(np.float64)


def write_stills(root, names, n_frames=20, hw=HW, seed=0):
    d = root / "stillpairs_mat"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        m = {"noisy_list": _frames(rng, n_frames, hw), "gt_list": _frames(rng, 3, hw), "alpha": np.array([[0.8]])}
        scipy.io.savemat(d / f"{name}.mat", m)
        out[name] = m
    return out


def write_gray(root, n=18, seed=1):
    d = root / "graybackground_mat"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for s in ("0", "2"):
        frames = _frames(rng, n)
        for k in range(n):  # numbered 1..n: lexicographic order (1, 10, 11, ...) differs from numeric
            scipy.io.savemat(d / f"noisy{s}_iso3200_{k + 1}.mat", {"noisy": frames[k]})
        gt = _frames(rng, 1)[0]
        scipy.io.savemat(d / f"gt{s}_iso3200.mat", {"gt": gt, "alpha": np.array([[2.0]])})
        out[s] = (frames, gt)
    return out


def write_color(root, folders, n=17, seed=2):
    d = root / "colorbackground_mat"
    rng = np.random.default_rng(seed)
    out = {}
    for f in folders:
        (d / f).mkdir(parents=True)
        frames = np.round(rng.random((n, *HW, 4)) * 3000 + 2000)
        for k in range(n):
            scipy.io.savemat(d / f / f"sequence{f}_{k}.mat", {"gt_label": frames[k]})
        clean = np.round(rng.random((*HW, 4)) * 3000 + 2000)
        scipy.io.savemat(d / f / "clean.mat", {"gt_label": clean, "alpha": np.array([[1.5]])})
        out[f] = (frames, clean)
    return out


def test_stillpairs_sorted_split_and_values(tmp_path):
    truth = write_stills(tmp_path, ["c", "a", "d", "b"])
    ds = load_dataset("starlight", tmp_path, frame_shape=HW, n_train_stills=3)
    assert ds.channels == 4 and ds.channel_names == ("R", "G", "B", "NIR") and ds.frame_shape == HW
    assert ds.train.names == ("stillpairs/a", "stillpairs/b", "stillpairs/c") and ds.test.names == ("stillpairs/d",)
    assert ds.fixed_pattern is None
    rec = ds.train.read(1, 4, 16)
    t = truth["b"]
    assert rec["noisy"].shape == (16, *HW, 4) and rec["noisy"].dtype == np.float32 and rec["clean"].dtype == np.float32
    np.testing.assert_allclose(rec["noisy"], t["noisy_list"][4:20], rtol=1e-6)
    np.testing.assert_allclose(rec["clean"][7], t["gt_list"].mean(axis=0) / 0.8, rtol=1e-6)


def test_stillpairs_mat_v73_reads_a_window(tmp_path):
    d = tmp_path / "stillpairs_mat"
    d.mkdir()
    rng = np.random.default_rng(3)
    noisy, gt = _frames(rng, 18), _frames(rng, 2)
    with h5py.File(d / "x.mat", "w") as f:  # MATLAB v7.3 layout: axes reversed
        f["noisy_list"], f["gt_list"], f["alpha"] = noisy.T, gt.T, np.array([[0.5]])
    ds = load_dataset("starlight", tmp_path, frame_shape=HW)
    assert ds.train.info(0).num_frames == 18
    rec = ds.train.read(0, 2, 16)
    np.testing.assert_allclose(rec["noisy"], noisy[2:18], rtol=1e-6)
    np.testing.assert_allclose(rec["clean"][0], gt.mean(axis=0) / 0.5, rtol=1e-6)


def test_graybackground_sorted_by_frame_number(tmp_path):
    truth = write_gray(tmp_path)
    ds = load_dataset("starlight", tmp_path, frame_shape=HW)
    assert ds.train.names == ("graybackground/set0", "graybackground/set2") and len(ds.test) == 0
    frames, gt = truth["2"]
    rec = ds.train.read(1, 8, 3)
    np.testing.assert_allclose(rec["noisy"], frames[8:11], rtol=1e-6)  # files _9, _10, _11
    np.testing.assert_allclose(rec["clean"][0], gt / 2.0, rtol=1e-6)


def test_colorbackground_split_alpha_and_fixed_pattern(tmp_path):
    truth = write_color(tmp_path, ["f1", "f2", "f3", "f4"])
    pattern = np.round(np.random.default_rng(4).random((*HW, 4)) * 4000)
    scipy.io.savemat(tmp_path / "fixed_pattern_noise.mat", {"mean_pattern": pattern})
    ds = load_dataset("starlight", tmp_path, frame_shape=HW)
    assert ds.test.names == ("colorbackground/f1", "colorbackground/f4")
    assert ds.train.names == ("colorbackground/f2", "colorbackground/f3")  # f3 (second-to-last) is kept
    np.testing.assert_allclose(ds.fixed_pattern, pattern / 2**16, rtol=1e-6)
    assert ds.fixed_pattern.dtype == np.float32
    frames, clean = truth["f2"]
    rec = ds.train.read(0, 1, 16)
    np.testing.assert_allclose(rec["noisy"], frames[1:17] / 2**16, rtol=1e-6)
    np.testing.assert_allclose(rec["clean"][0], clean * 1.5 / 2**16, rtol=1e-6)  # original: multiplies
    div = load_dataset("starlight", tmp_path, frame_shape=HW, colorbackground_alpha="divide")
    np.testing.assert_allclose(div.train.read(0, 0, 1)["clean"][0], clean / 1.5 / 2**16, rtol=1e-6)


def test_all_layouts_together_and_pipeline(tmp_path):
    write_stills(tmp_path, ["s1", "s2"])
    write_gray(tmp_path)
    write_color(tmp_path, ["f1", "f2", "f3"])
    ds = load_dataset("starlight", tmp_path, frame_shape=HW, n_train_stills=1)
    assert len(ds.train) == 1 + 2 + 1 and len(ds.test) == 1 + 2
    batch = next(make_loader(ds, "train", PipelineConfig(batch_size=2, crop_size=64, frames=16)))
    assert batch["clean"].shape == (2, 16, 64, 64, 4) and batch["offset"].dtype == np.int32
    assert np.all(batch["offset"][:, 0] == 0) and np.all((0 <= batch["offset"][:, 1]) & (batch["offset"][:, 1] <= 64))


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("starlight", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds none of"):
        load_dataset("starlight", tmp_path)
    write_stills(tmp_path / "ok", ["a"], n_frames=10)
    with pytest.raises(FileNotFoundError, match="graybackground"):
        load_dataset("starlight", tmp_path / "ok", layouts=["graybackground"], frame_shape=HW)
    with pytest.raises(ValueError, match="unknown layout"):
        load_dataset("starlight", tmp_path / "ok", layouts=["stills"])
    with pytest.raises(ValueError, match=r"a\.mat: key 'noisy_list' holds 64x128 frames; expected 640x1080"):
        load_dataset("starlight", tmp_path / "ok")  # default frame_shape is the Canon's
    ds = load_dataset("starlight", tmp_path / "ok", frame_shape=HW)
    with pytest.raises(ValueError, match="'stillpairs/a' has 10 frame\\(s\\), fewer than the needed frames=16"):
        make_loader(ds, "train", PipelineConfig(crop_size=64, frames=16))
    with pytest.raises(ValueError, match="smaller than the crop 128x128"):
        make_loader(ds, "train", PipelineConfig(crop_size=128, frames=4))

    bad = tmp_path / "badkeys" / "stillpairs_mat"
    bad.mkdir(parents=True)
    scipy.io.savemat(bad / "x.mat", {"noisy": np.zeros((2, *HW, 4)), "alpha": 1.0})
    with pytest.raises(ValueError, match=r"x\.mat: missing key\(s\) \['noisy_list', 'gt_list'\]"):
        load_dataset("starlight", tmp_path / "badkeys", frame_shape=HW)
    (bad / "x.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"x\.mat: unreadable"):
        load_dataset("starlight", tmp_path / "badkeys", frame_shape=HW)

    dn = tmp_path / "dn" / "stillpairs_mat"
    dn.mkdir(parents=True)
    scipy.io.savemat(dn / "x.mat", {"noisy_list": np.full((4, *HW, 4), 2048.0), "gt_list": np.zeros((1, *HW, 4)),
                                    "alpha": 1.0})
    with pytest.raises(ValueError, match=r"x\.mat: key 'noisy_list' spans .* expected normalised"):
        load_dataset("starlight", tmp_path / "dn", frame_shape=HW).train[0]

    write_color(tmp_path / "norm", ["f1"], n=2)
    seq = tmp_path / "norm" / "colorbackground_mat" / "f1" / "sequencef1_0.mat"
    scipy.io.savemat(seq, {"gt_label": np.full((*HW, 4), 0.03)})
    with pytest.raises(ValueError, match=r"sequencef1_0\.mat: .*look already normalised"):
        load_dataset("starlight", tmp_path / "norm", frame_shape=HW).train[0]

    write_gray(tmp_path / "gray")
    (tmp_path / "gray" / "graybackground_mat" / "gt2_iso3200.mat").unlink()
    with pytest.raises(FileNotFoundError, match="capture set 2 needs exactly one gt2"):
        load_dataset("starlight", tmp_path / "gray", frame_shape=HW)

    write_stills(tmp_path / "fp", ["a"])
    scipy.io.savemat(tmp_path / "fp" / "fixed_pattern_noise.mat", {"mean_pattern": np.zeros((32, 32, 4))})
    with pytest.raises(ValueError, match="mean_pattern' holds 32x32 frames; expected 64x128"):
        load_dataset("starlight", tmp_path / "fp", frame_shape=HW)
    scipy.io.savemat(tmp_path / "fp" / "fixed_pattern_noise.mat", {"pattern": np.zeros((*HW, 4))})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['mean_pattern'\]"):
        load_dataset("starlight", tmp_path / "fp", frame_shape=HW)
