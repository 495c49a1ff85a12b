"""Tests of the SIDD reader: name and metadata parsing (real files), CFA packing, fixtures, tfds builder."""

import importlib.util
import sys

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from starlight_jax.data import load_dataset
from starlight_jax.data.sidd import pack_bayer, parse_metadata, parse_scene_name

# Where each packed channel sits in the 2x2 mosaic, written out by hand for every Bayer pattern.
# G1 is the green on red's row, G2 the green on blue's row.
POSITIONS = {
    "RGGB": {"R": (0, 0), "G1": (0, 1), "G2": (1, 0), "B": (1, 1)},
    "BGGR": {"B": (0, 0), "G2": (0, 1), "G1": (1, 0), "R": (1, 1)},
    "GRBG": {"G1": (0, 0), "R": (0, 1), "B": (1, 0), "G2": (1, 1)},
    "GBRG": {"G2": (0, 0), "B": (0, 1), "R": (1, 0), "G1": (1, 1)},
}
_CODES = {"RGGB": [0, 1, 1, 2], "BGGR": [2, 1, 1, 0], "GRBG": [1, 0, 2, 1], "GBRG": [1, 2, 0, 1]}


def unpack(packed, cfa):
    """[H, W, 4] (R, G1, G2, B) -> [2H, 2W] mosaic with pattern ``cfa``."""
    h, w, _ = packed.shape
    out = np.zeros((2 * h, 2 * w), packed.dtype)
    for k, ch in enumerate(("R", "G1", "G2", "B")):
        r, c = POSITIONS[cfa][ch]
        out[r::2, c::2] = packed[..., k]
    return out


@pytest.mark.parametrize("cfa", sorted(POSITIONS))
def test_pack_bayer_puts_each_colour_in_its_channel(cfa):
    packed = np.broadcast_to(np.array([1.0, 2.0, 3.0, 4.0]), (3, 5, 4))
    mosaic = unpack(packed, cfa)
    np.testing.assert_array_equal(pack_bayer(mosaic, cfa), packed)
    rng = np.random.default_rng(0).random((6, 8, 4))
    np.testing.assert_array_equal(pack_bayer(unpack(rng, cfa), cfa), rng)
    # A wrong pattern puts other colours in the channels (so this test can fail).
    other = next(p for p in POSITIONS if p != cfa)
    assert not np.array_equal(pack_bayer(mosaic, other), packed)


def test_pack_bayer_errors():
    with pytest.raises(ValueError, match="unknown CFA"):
        pack_bayer(np.zeros((4, 4)), "RGBG")
    with pytest.raises(ValueError, match="even"):
        pack_bayer(np.zeros((5, 4)), "RGGB")


def test_parse_scene_name():
    d = parse_scene_name("0001_001_S6_00100_00060_3200_L")
    assert d == {"folder": "0001_001_S6_00100_00060_3200_L", "scene": "0001", "instance": "001", "camera": "S6",
                 "iso": 100, "shutter": 60, "illuminant": 3200, "brightness": "L"}
    assert parse_scene_name("0095_005_N6_00400_00200_3200_L__0095_METADATA_RAW_010.MAT")["iso"] == 400
    for bad in ("0001_001_S6_00100_00060_3200", "scene_001_S6_00100_00060_3200_L", "0001-001-S6"):
        with pytest.raises(ValueError, match="does not match"):
            parse_scene_name(bad)


@pytest.fixture
def real_metadata(shared_data):
    d = shared_data / "sidd_metadata"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    return d


def test_real_metadata(real_metadata):
    s6 = parse_metadata(real_metadata / "0001_001_S6_00100_00060_3200_L__0001_METADATA_RAW_010.MAT")
    assert s6["cfa"] == "GRBG" and s6["white_level"] == 1023 and s6["iso"] == 100 and s6["model"] == "SM-G925I"
    np.testing.assert_array_equal(s6["black_level"], np.zeros((2, 2)))
    n6 = parse_metadata(real_metadata / "0095_005_N6_00400_00200_3200_L__0095_METADATA_RAW_010.MAT")
    assert n6["cfa"] == "BGGR" and n6["white_level"] == 1023 and n6["iso"] == 400 and n6["model"] == "Nexus 6"
    np.testing.assert_array_equal(n6["black_level"], np.full((2, 2), 64.0))
    assert n6["noise_profile"].shape == (6,) and 0 < n6["noise_profile"][0] < 0.01
    ip = parse_metadata(real_metadata / "0093_004_IP_01250_00250_3200_L__0093_METADATA_RAW_010.MAT")
    assert ip["cfa"] is None and ip["black_level"] is None and ip["white_level"] is None and ip["model"] == "iPhone 7"
    for f in real_metadata.glob("*_METADATA_RAW_010.MAT"):
        assert parse_scene_name(f.name)["camera"] in ("S6", "IP", "N6")


# --- fixtures in SIDD's formats -------------------------------------------------------------------------
def write_mat73(path, arr, key="x"):
    """MATLAB v7.3 file as MATLAB writes it: 512-byte user block, axes reversed in HDF5."""
    with h5py.File(path, "w", userblock_size=512) as f:
        d = f.create_dataset(key, data=np.asarray(arr, np.float64).T)
        d.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(128))


def write_metadata(path, cfa=None, black=None, white=None, iso=100):
    md = {"Make": "test", "Model": "fixture", "ISOSpeedRatings": np.array([[iso]], np.uint16),
          "CFAPlaneColor": np.array([[0, 1, 2]], np.uint8), "Width": np.array([[0]]), "Height": np.array([[0]])}
    tags = [(np.array([[37398]]), np.array([[0]]), np.array([[1, 0, 0, 0]]))]
    if cfa is not None:
        tags = [(np.array([[33421]]), np.array([[0]]), np.array([[2, 2]], np.uint8)),
                (np.array([[33422]]), np.array([[0]]), np.array([_CODES[cfa]], np.uint8))] + tags
    ut = np.empty((len(tags), 1), dtype=[("ID", "O"), ("Offset", "O"), ("Value", "O")])
    for i, t in enumerate(tags):
        ut[i, 0] = t
    md["UnknownTags"] = ut
    if black is not None:
        md["BlackLevel"] = np.full((1, 4), black, np.uint8)
        md["WhiteLevel"] = np.array([[white]], np.uint16)
    scipy.io.savemat(path, {"metadata": md})


def make_scene(root, folder, cfa, *, units="normalized", shape=(8, 12), seed=0, srgb=True, meta_cfa=True):
    """Writes one scene instance; returns the packed float truth {"noisy", "clean"} ([H/2, W/2, 4])."""
    d = root / folder
    d.mkdir(parents=True)
    sid = folder[:4]
    rng = np.random.default_rng(seed)
    truth = {}
    for kind in ("NOISY", "GT"):
        packed = rng.random((shape[0] // 2, shape[1] // 2, 4))
        if units == "dn":  # black 64, white 1023, stored as DN
            write_mat73(d / f"{sid}_{kind}_RAW_010.MAT", unpack(np.round(64 + packed * 959), cfa))
            packed = np.round(64 + packed * 959)
            packed = (packed - 64) / 959
        else:
            write_mat73(d / f"{sid}_{kind}_RAW_010.MAT", unpack(packed, cfa))
        truth["noisy" if kind == "NOISY" else "clean"] = packed
        if srgb:
            rgb = rng.integers(0, 256, (shape[0], shape[1], 3)).astype(np.uint8)
            Image.fromarray(rgb).save(d / f"{sid}_{kind}_SRGB_010.PNG")
    write_metadata(d / f"{sid}_METADATA_RAW_010.MAT", cfa if meta_cfa else None,
                   black=64 if units == "dn" else 0, white=1023, iso=int(folder.split("_")[3]))
    return truth


@pytest.fixture
def sidd_dir(tmp_path):
    root = tmp_path / "SIDD_Small" / "Data"
    truth = {"0001_001_S6_00100_00060_3200_L": make_scene(root, "0001_001_S6_00100_00060_3200_L", "GRBG"),
             "0003_001_GP_00800_00350_5500_N": make_scene(root, "0003_001_GP_00800_00350_5500_N", "RGGB", seed=2),
             "0005_002_N6_00400_00200_3200_H": make_scene(root, "0005_002_N6_00400_00200_3200_H", "BGGR",
                                                          units="dn", seed=1)}
    return tmp_path / "SIDD_Small", truth


def test_sidd_raw_reader(sidd_dir):
    root, truth = sidd_dir
    ds = load_dataset("sidd", root)
    assert ds.channels == 4 and ds.channel_names == ("R", "G1", "G2", "B") and ds.frame_shape == (4, 6)
    assert ds.train.names == ("0001_001_S6_00100_00060_3200_L", "0003_001_GP_00800_00350_5500_N")
    assert ds.test.names == ("0005_002_N6_00400_00200_3200_H",)  # scene 5 % 5 == 0
    for split in (ds.train, ds.test):
        for i in range(len(split)):
            rec = split[i]
            t = truth[rec["name"]]
            assert rec["noisy"].shape == (1, 4, 6, 4) and rec["noisy"].dtype == np.float32
            np.testing.assert_allclose(rec["noisy"][0], t["noisy"], atol=1e-6)
            np.testing.assert_allclose(rec["clean"][0], t["clean"], atol=1e-6)
    rec = ds.test[0]
    assert rec["camera"] == "N6" and rec["iso"] == 400 and rec["cfa"] == "BGGR" and rec["raw_units"] == "dn"
    assert ds.train[0]["raw_units"] == "normalized" and ds.train[0]["cfa"] == "GRBG"


def test_sidd_srgb_reader(sidd_dir):
    root, _ = sidd_dir
    ds = load_dataset("sidd", root, variant="srgb")
    assert ds.channels == 3 and ds.frame_shape == (8, 12)
    rec = ds.train[1]
    assert rec["noisy"].shape == (1, 8, 12, 3) and rec["camera"] == "GP" and rec["iso"] == 800
    assert rec["noisy"].max() <= 1.0 and np.all(np.abs(rec["noisy"] * 255 - np.round(rec["noisy"] * 255)) < 1e-4)


def test_sidd_errors(tmp_path, sidd_dir):
    root, _ = sidd_dir
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("sidd", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no SIDD"):
        load_dataset("sidd", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="capture 011"):
        load_dataset("sidd", root, captures=("010", "011"))
    with pytest.raises(ValueError, match="variant"):
        load_dataset("sidd", root, variant="rgb")
    gt = next(root.rglob("0003_GT_RAW_010.MAT"))
    gt.unlink()
    with pytest.raises(FileNotFoundError, match=r"0003_NOISY_RAW_010\.MAT has no partner .*0003_GT_RAW_010\.MAT"):
        load_dataset("sidd", root)
    write_mat73(gt, np.zeros((8, 12)), key="y")
    with pytest.raises(ValueError, match=r"0003_GT_RAW_010\.MAT: no key 'x'"):
        load_dataset("sidd", root)
    gt.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"0003_GT_RAW_010\.MAT: unreadable"):
        load_dataset("sidd", root)


def test_sidd_missing_cfa_needs_override(tmp_path):
    truth = make_scene(tmp_path, "0010_001_IP_01250_00250_3200_L", "GBRG", meta_cfa=False, srgb=False)
    ds = load_dataset("sidd", tmp_path)
    with pytest.raises(ValueError, match=r"0010_METADATA_RAW_010\.MAT: metadata has no CFA pattern"):
        ds.test[0]
    rec = load_dataset("sidd", tmp_path, cfa="GBRG").test[0]
    np.testing.assert_allclose(rec["noisy"][0], truth["noisy"], atol=1e-6)


def test_sidd_tfds_builder_without_tensorflow(tmp_path, sidd_dir):
    pytest.importorskip("tensorflow_datasets", reason="the optional [tfds] extra is not installed")
    root, truth = sidd_dir
    files = load_dataset("sidd", root)
    ds = load_dataset("sidd", root, backend="tfds", tfds_data_dir=str(tmp_path / "tfds"))
    assert ds.train.names == files.train.names and ds.test.names == files.test.names
    assert ds.frame_shape == files.frame_shape and ds.channels == 4
    for a, b in ((ds.train, files.train), (ds.test, files.test)):
        for i in range(len(a)):
            ra, rb = a[i], b[i]
            np.testing.assert_array_equal(ra["noisy"], rb["noisy"])
            np.testing.assert_array_equal(ra["clean"], rb["clean"])
            assert ra["camera"] == rb["camera"] and ra["iso"] == rb["iso"] and ra["cfa"] == rb["cfa"]
    # Reading back without the SIDD files: the prepared array_record data suffice.
    from starlight_jax.data import sidd_tfds

    again = sidd_tfds.load_sidd_tfds(None, variant="raw", tfds_data_dir=str(tmp_path / "tfds"))
    np.testing.assert_array_equal(again.train[1]["noisy"], files.train[1]["noisy"])
    with pytest.raises(FileNotFoundError, match="not prepared"):
        sidd_tfds.load_sidd_tfds(None, variant="srgb", tfds_data_dir=str(tmp_path / "tfds"))
    srgb = load_dataset("sidd", root, variant="srgb", backend="tfds", tfds_data_dir=str(tmp_path / "tfds"))
    np.testing.assert_array_equal(srgb.test[0]["noisy"], load_dataset("sidd", root, variant="srgb").test[0]["noisy"])
    with pytest.raises(ValueError, match=r"\['captures'\] cannot be changed with backend='tfds'"):
        load_dataset("sidd", root, backend="tfds", captures=("010", "011"), tfds_data_dir=str(tmp_path / "tfds"))
    if importlib.util.find_spec("tensorflow") is None:  # then all of the above ran without TensorFlow
        assert "tensorflow" not in sys.modules


def test_sidd_tfds_backend_without_tensorflow_datasets_names_the_install(tmp_path, monkeypatch):
    # tensorflow-datasets is optional: the files backend needs nothing of it, the tfds one says what to install.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import tensorflow_datasets` fail
    monkeypatch.delitem(sys.modules, "starlight_jax.data.sidd_tfds", raising=False)
    monkeypatch.delattr(sys.modules["starlight_jax.data"], "sidd_tfds", raising=False)  # as if never imported
    with pytest.raises(ModuleNotFoundError, match=r"backend 'tfds' needs tensorflow-datasets .*pip install "
                                                  r"tensorflow-datasets"):
        load_dataset("sidd", tmp_path, backend="tfds", tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="unknown SIDD backend 'tf'"):
        load_dataset("sidd", tmp_path, backend="tf")
