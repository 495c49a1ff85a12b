"""Tests of the image reader (8/16-bit PNG, JPEG, TIFF) and the folder-of-pairs source."""

import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from starlight_jax.data import load_dataset
from starlight_jax.data.images import decode_png, probe_image, read_image


def write_png(path, arr, filters=(0,)):
    """PNG writer for tests: 8/16-bit grey/RGB, row filter types cycling through ``filters``."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    depth = 16 if arr.dtype == np.uint16 else 8
    bpp = c * depth // 8
    x = (arr.astype(">u2") if depth == 16 else arr.astype(np.uint8)).reshape(h, w * c).view(np.uint8)
    x = x.reshape(h, w, bpp).astype(np.int32)
    a = np.zeros_like(x); a[:, 1:] = x[:, :-1]
    b = np.zeros_like(x); b[1:] = x[:-1]
    cc = np.zeros_like(x); cc[1:, 1:] = x[:-1, :-1]
    pa, pb, pc = np.abs(b - cc), np.abs(a - cc), np.abs(a + b - 2 * cc)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
    preds = [0 * x, a, b, (a + b) >> 1, paeth]
    rows = []
    for i in range(h):
        f = filters[i % len(filters)]
        rows.append(bytes([f]) + (((x[i] - preds[f][i]) & 255).astype(np.uint8)).tobytes())

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ctype = {1: 0, 3: 2}[c]
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def _rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_decoder_all_filters(tmp_path, dtype, channels):
    shape = (13, 11, channels) if channels == 3 else (13, 11)
    img = _rand(shape, dtype)
    img[4:9, 2:7] = img[4, 2]  # flat areas exercise the predictors differently from noise
    p = tmp_path / "f.png"
    write_png(p, img, filters=(0, 1, 2, 3, 4))
    out, bits = read_image(p)
    assert bits == (16 if dtype == np.uint16 else 8) and out.dtype == dtype
    np.testing.assert_array_equal(out, img.reshape(13, 11, channels))


def test_png_decoder_matches_pillow(tmp_path):
    img = np.clip(np.cumsum(_rand((40, 50, 3), np.uint8) // 32, axis=1), 0, 255).astype(np.uint8)
    p = tmp_path / "pil.png"
    Image.fromarray(img).save(p, optimize=True)  # Pillow picks its own (adaptive) filters
    np.testing.assert_array_equal(decode_png(p.read_bytes()), img)


def test_16bit_rgb_png_keeps_low_byte(tmp_path):
    """Pillow would open this as 8-bit RGB (dropping the low byte); the reader must not."""
    img = np.full((4, 4, 3), 257 * 100 + 37, np.uint16)
    write_png(tmp_path / "a.png", img)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGB"  # documents why the own decoder exists
    out, bits = read_image(tmp_path / "a.png")
    assert bits == 16 and np.all(out == 257 * 100 + 37)


def _make_pairs(root, n=6, shape=(64, 64, 3), fmt="png8", seed=0):
    (root / "noisy").mkdir(parents=True)
    (root / "clean").mkdir()
    rng = np.random.default_rng(seed)
    expect = {}
    for i in range(n):
        name = f"img_{i:02d}"
        for kind in ("noisy", "clean"):
            if fmt in ("png8", "jpg", "tif8"):
                a = rng.integers(0, 256, size=shape).astype(np.uint8)
            else:
                a = rng.integers(0, 65536, size=shape).astype(np.uint16)
            arr2 = a[..., 0] if shape[2] == 1 else a
            if fmt in ("png8", "png16"):
                fname = name + ".png"
                write_png(root / kind / fname, arr2)
            elif fmt == "jpg":
                fname = name + ".jpg"
                Image.fromarray(arr2).save(root / kind / fname, quality=95)
                a = np.asarray(Image.open(root / kind / fname)).reshape(shape)
            else:
                fname = name + ".tif"
                tifffile.imwrite(root / kind / fname, arr2)
            expect[(kind, fname)] = a.astype(np.float64) / np.iinfo(a.dtype).max
    return expect


@pytest.mark.parametrize("fmt,channels", [("png8", 3), ("png16", 3), ("png16", 1), ("jpg", 3), ("tif8", 1),
                                          ("tif16", 3)])
def test_pairs_formats(tmp_path, fmt, channels):
    expect = _make_pairs(tmp_path, shape=(64, 64, channels), fmt=fmt)
    ds = load_dataset("pairs", tmp_path)
    assert ds.channels == channels and ds.frame_shape == (64, 64) and ds.fixed_pattern is None
    assert len(ds.train) == 5 and len(ds.test) == 1 and ds.test.names[0].startswith("img_04")  # 5th sorted
    rec = ds.train[0]
    for kind in ("noisy", "clean"):
        assert rec[kind].shape == (1, 64, 64, channels) and rec[kind].dtype == np.float32
        np.testing.assert_allclose(rec[kind][0], expect[(kind, rec["name"])], atol=1e-6)
    step = ds.info["quantization_step"]
    assert step == pytest.approx(1 / (255 if fmt in ("png8", "jpg", "tif8") else 65535))
    np.testing.assert_allclose(rec["noisy"] / step, np.round(rec["noisy"] / step), atol=1e-3)  # on the lattice


# 64²·3 bytes = 12 KiB per file, 3 reads of one pair: 1024 MB keeps both files (2 decodes), 0 keeps none
# (6), 0.02 MB (20 KiB) keeps the first file read (noisy) but not the second (1 + 3 decodes).
@pytest.mark.parametrize("cache_mb,decodes", [(1024, 2), (0, 6), (0.02, 4)])
def test_pairs_decode_each_file_once_within_the_cache_budget(tmp_path, monkeypatch, cache_mb, decodes):
    import starlight_jax.data.pairs as pairs_mod

    _make_pairs(tmp_path, shape=(64, 64, 3), fmt="png8")
    calls = []
    real_read = pairs_mod.read_image
    monkeypatch.setattr(pairs_mod, "read_image", lambda path: calls.append(path) or real_read(path))
    ds = pairs_mod.load_pairs(tmp_path, cache_mb=cache_mb)
    first = ds.train[0]
    first["noisy"][...] = -1.0  # a reader's copy: mutating it must not reach the cache
    again = [ds.train[0] for _ in range(2)]
    assert len(calls) == decodes
    for rec in again:
        np.testing.assert_array_equal(rec["clean"], first["clean"])
        assert rec["noisy"].min() >= 0.0


def test_pairs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("pairs", tmp_path / "nope")
    (tmp_path / "e" / "noisy").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="clean"):
        load_dataset("pairs", tmp_path / "e")
    (tmp_path / "e" / "clean").mkdir()
    with pytest.raises(FileNotFoundError, match="hold no images"):
        load_dataset("pairs", tmp_path / "e")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("pairs")

    def fresh(name, **kw):
        root = tmp_path / name
        _make_pairs(root, n=3, **kw)
        return root

    root = fresh("missing")
    (root / "clean" / "img_01.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"noisy/img_01\.png has no partner"):
        load_dataset("pairs", root)
    root = fresh("missing2")
    (root / "noisy" / "img_02.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"clean/img_02\.png has no partner"):
        load_dataset("pairs", root)
    root = fresh("size")
    write_png(root / "clean" / "img_00.png", np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"size mismatch: .*img_00\.png"):
        load_dataset("pairs", root)
    root = fresh("depth")
    write_png(root / "clean" / "img_01.png", np.zeros((64, 64, 3), np.uint16))
    with pytest.raises(ValueError, match=r"bit-depth mismatch: .*noisy/img_01\.png is 8-bit .*16-bit"):
        load_dataset("pairs", root)
    root = fresh("grey")
    write_png(root / "noisy" / "img_02.png", np.zeros((64, 64), np.uint8))
    write_png(root / "clean" / "img_02.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="channel-count mismatch"):
        load_dataset("pairs", root)
    root = fresh("broken")
    (root / "noisy" / "img_00.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"img_00\.png: not a PNG"):
        load_dataset("pairs", root)
    root = fresh("truncated")
    data = (root / "noisy" / "img_00.png").read_bytes()
    (root / "noisy" / "img_00.png").write_bytes(data[:60])  # header intact, pixels cut
    ds = load_dataset("pairs", root)
    with pytest.raises(ValueError, match=r"img_00\.png"):
        ds.train[0]


def test_max_value_override(tmp_path):
    root = tmp_path / "p12"
    _make_pairs(root, n=2, fmt="png16")
    with pytest.raises(ValueError, match="expected \\[0, 1\\]"):
        load_dataset("pairs", root, max_value=4095).train[0]  # 16-bit data are not 12-bit


@pytest.mark.parametrize("name,n", [("nam", 25), ("polyu", 50), ("sidd", 12)])
def test_real_srgb_pairs(shared_data, name, n):
    root = shared_data / "srgb_pairs" / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    ds = load_dataset("pairs", root)
    assert len(ds.train) + len(ds.test) == n and ds.channels == 3
    rec = ds.test[0]
    assert rec["noisy"].dtype == np.float32 and rec["noisy"].shape[0] == 1
    assert 0.0 <= rec["noisy"].min() and rec["noisy"].max() <= 1.0
    assert probe_image(root / "noisy" / rec["name"]).bits == 8
    # The README measures residual sigma of 3.6 (Nam), 4 (PolyU) and 20 (SIDD) DN of 8 bit.
    sigma = float(np.std(rec["noisy"] - rec["clean"])) * 255
    assert 1.0 < sigma < 40.0
