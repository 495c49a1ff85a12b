"""Tests of the batch pipeline: crops, windows, per-epoch shuffling, resume, prefetch, sharding."""

import dataclasses

import numpy as np
import pytest

from starlight_jax.data import (BurstLoader, BurstSource, Item, ItemInfo, PipelineConfig, crop_fixed_pattern,
                                load_dataset, make_loader, shard_batch)


def coded_source(n=7, frames=20, hw=(192, 256), fail_on=None):
    """Item i, frame t, pixel (r, c): clean channels = (i, t, r, c), noisy = clean + 0.5."""

    def make(i):
        def read(start, length):
            if i == fail_on:
                raise ValueError(f"item{i}: broken file")
            t, r, c = np.meshgrid(np.arange(start, start + length), np.arange(hw[0]), np.arange(hw[1]), indexing="ij")
            clean = np.stack([np.full_like(t, i), t, r, c], axis=-1).astype(np.float32)
            return {"clean": clean, "noisy": clean + np.float32(0.5)}

        return Item(ItemInfo(f"item{i}", frames, hw), read)

    return BurstSource([make(i) for i in range(n)], 4)


CFG = PipelineConfig(batch_size=2, crop_size=(64, 128), frames=4, seed=3)


def _items_of(batch):
    return [int(v) for v in batch["clean"][:, 0, 0, 0, 0]]


def test_crops_and_windows_are_consistent():
    loader = BurstLoader(coded_source(), CFG)
    for epoch in range(2):
        for index in range(loader.batches_per_epoch):
            b = loader.batch_at(epoch, index)
            assert b["clean"].shape == (2, 4, 64, 128, 4) and b["clean"].dtype == np.float32
            assert b["offset"].shape == (2, 2) and b["offset"].dtype == np.int32
            np.testing.assert_array_equal(b["noisy"], b["clean"] + 0.5)
            for k in range(2):
                r0, c0 = b["offset"][k]
                assert 0 <= r0 <= 192 - 64 and 0 <= c0 <= 256 - 128
                np.testing.assert_array_equal(b["clean"][k, 0, :, 0, 2], r0 + np.arange(64))
                np.testing.assert_array_equal(b["clean"][k, 0, 0, :, 3], c0 + np.arange(128))
                t = b["clean"][k, :, 0, 0, 1]
                np.testing.assert_array_equal(t, t[0] + np.arange(4))  # consecutive frames
                assert 0 <= t[0] <= 20 - 4


def test_shuffle_deterministic_per_epoch():
    src = coded_source()
    a, b = BurstLoader(src, CFG), BurstLoader(src, CFG)
    orders = [a.order(e) for e in range(4)]
    for e in range(4):
        np.testing.assert_array_equal(orders[e], b.order(e))
        assert sorted(orders[e]) == list(range(7))
        np.testing.assert_array_equal(a.batch_at(e, 1)["clean"], b.batch_at(e, 1)["clean"])
    assert len({tuple(o) for o in orders}) == 4  # a new order every epoch
    other = BurstLoader(src, PipelineConfig(batch_size=2, crop_size=(64, 128), frames=4, seed=4))
    assert not np.array_equal(other.order(0), orders[0])
    # Each epoch visits 3 full batches (7 // 2) = the first 6 items of its permutation.
    assert [i for k in range(3) for i in _items_of(a.batch_at(0, k))] == list(orders[0][:6])
    # Crops change across epochs too.
    assert not np.array_equal(a.batch_at(0, 0)["offset"], a.batch_at(1, 0)["offset"])


def test_resume_reproduces_batches():
    src = coded_source()
    with BurstLoader(src, CFG) as full:
        reference = [next(full) for _ in range(8)]  # crosses two epoch boundaries (3 batches per epoch)
        assert full.position == (2, 2)
    with BurstLoader(src, CFG) as first:
        for _ in range(4):
            next(first)
        state = first.state()
    assert state == {"epoch": 1, "index": 1, "seed": 3}
    with BurstLoader(src, CFG) as resumed:
        resumed.restore(state)
        for want in reference[4:]:
            got = next(resumed)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    with BurstLoader(src, CFG, start=(1, 1)) as started:
        np.testing.assert_array_equal(next(started)["offset"], reference[4]["offset"])
    with pytest.raises(ValueError, match="seed=3 but this loader has seed=4"):
        BurstLoader(src, PipelineConfig(batch_size=2, crop_size=(64, 128), frames=4, seed=4)).restore(state)
    with pytest.raises(ValueError, match="index must be in"):
        BurstLoader(src, CFG, start=(0, 3))


def test_test_split_is_fixed():
    src = coded_source(n=4)
    loader = BurstLoader(src, CFG, train=False, num_epochs=1)
    batches = list(loader)
    assert len(batches) == 2 and loader.position == (1, 0)
    assert [i for b in batches for i in _items_of(b)] == [0, 1, 2, 3]
    for b in batches:
        np.testing.assert_array_equal(b["offset"], [[10, 10], [10, 10]])
        np.testing.assert_array_equal(b["clean"][0, :, 0, 0, 1], np.arange(4))  # frames [0, T)
    np.testing.assert_array_equal(BurstLoader(src, CFG, train=False).batch_at(5, 1)["clean"], batches[1]["clean"])
    # A frame too small for the (10, 10) offset gets the largest offset that fits.
    tight = BurstLoader(coded_source(n=2, hw=(70, 130)), CFG, train=False)
    np.testing.assert_array_equal(tight.batch_at(0, 0)["offset"], [[6, 2], [6, 2]])


def test_errors_and_prefetch_error_propagation():
    with pytest.raises(ValueError, match="multiples of 64"):
        PipelineConfig(crop_size=100)
    with pytest.raises(ValueError, match="batch_size"):
        PipelineConfig(batch_size=0)
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        BurstLoader(coded_source(), PipelineConfig(batch_size=8, crop_size=64, frames=4))
    with pytest.raises(ValueError, match="'item0' has frames of 192x256, smaller than the crop 256x256"):
        BurstLoader(coded_source(), PipelineConfig(crop_size=256, frames=4))
    with pytest.raises(ValueError, match="'item0' has 20 frame\\(s\\), fewer than the needed frames=32"):
        BurstLoader(coded_source(), PipelineConfig(crop_size=64, frames=32))
    loader = BurstLoader(coded_source(n=4, fail_on=2), PipelineConfig(batch_size=1, crop_size=64, frames=2),
                         train=False)
    next(loader), next(loader)
    with pytest.raises(ValueError, match="item2: broken file"):
        next(loader)
    assert loader.position == (0, 2)  # the failed batch was not consumed


def test_fixed_pattern_crop_lines_up_with_synthetic_noise():
    ds = load_dataset("synthetic", frame_size=(128, 192), bursts_per_scene=1, frames=4, seed=1)
    cfg = PipelineConfig(batch_size=2, crop_size=64, frames=4, seed=0, num_threads=1)
    loader = make_loader(ds, "train", cfg)
    batches = [loader.batch_at(0, k) for k in range(loader.batches_per_epoch)]  # 8 crops: one crop's
    # statistic swings by +-30 % with the few per-frame periodic draws it holds
    res = np.concatenate([b["noisy"] - b["clean"] for b in batches])
    offsets = np.concatenate([b["offset"] for b in batches])
    fp = crop_fixed_pattern(ds.fixed_pattern, offsets, (64, 64))[:, None]
    col = (res - fp).mean(axis=(1, 2))  # [8, w, C]: column means over frames and rows
    # Their noise: the pixel noise over 4 x 64 samples and the per-frame periodic pattern (a column
    # pattern too) over 4 frames; E|N(0, s)| = 0.8 s.
    floor = 0.8 * np.sqrt((res - fp).var() / (4 * 64) + ds.truth["periodic"][0] ** 2 / 4)
    assert np.abs(col).mean() < 1.35 * floor
    # With a wrong offset (one column off, inwards) the column pattern (std 1 DN = 0.0063) no longer cancels.
    step = np.where(offsets[:, 1:] < 192 - 64, [0, 1], [0, -1])
    shifted = crop_fixed_pattern(ds.fixed_pattern, offsets + step, (64, 64))[:, None]
    assert np.abs((res - shifted).mean(axis=(1, 2))).mean() > 2.5 * floor
    test = make_loader(ds, "test", cfg)
    assert next(test)["offset"].tolist() == [[10, 10], [10, 10]]


def test_shard_batch_over_cpu_devices():
    import jax

    if jax.device_count() < 2:
        pytest.skip("needs several (fake CPU) devices; conftest sets 4")
    n = jax.device_count()
    batch = BurstLoader(coded_source(n=8), PipelineConfig(batch_size=n, crop_size=64, frames=2)).batch_at(0, 0)
    out = shard_batch(batch)
    for k, v in batch.items():
        assert out[k].shape == v.shape and len(out[k].sharding.device_set) == n
        np.testing.assert_array_equal(np.asarray(out[k]), v)
    assert out["clean"].addressable_shards[1].data.shape[0] == 1
    with pytest.raises(ValueError, match=f"B=3 rows, not divisible by the {n} local device"):
        shard_batch({"x": np.zeros((3, 2))})


def test_epoch_orders_are_fresh_and_reproducible():
    src = coded_source(n=9)
    orders = {seed: [BurstLoader(src, dataclasses.replace(CFG, seed=seed)).order(e) for e in range(6)]
              for seed in (3, 4)}
    again = BurstLoader(src, CFG)
    for e, order in enumerate(orders[3]):
        np.testing.assert_array_equal(order, again.order(e))  # a fresh loader: the same orders
    assert len({tuple(o) for o in orders[3]}) == 6  # a new order every epoch
    # grain folds the epoch into the shuffle's seed; the config's seed is hashed first, so seed 4 is not
    # seed 3 one epoch later.
    assert not any(np.array_equal(orders[4][e], orders[3][e + 1]) for e in range(5))
    same = BurstLoader(src, dataclasses.replace(CFG, reshuffle=False))
    assert all(np.array_equal(same.order(e), orders[3][0]) for e in range(6))
    # Iteration follows the orders: 4 full batches (9 // 2) per epoch, the 9th item is left out.
    with BurstLoader(src, CFG, num_epochs=2) as loader:
        seen = [i for b in loader for i in _items_of(b)]
    assert seen == [*orders[3][0][:8], *orders[3][1][:8]]


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_union_is_the_one_process_batch(count):
    src = coded_source(n=9)
    cfg = dataclasses.replace(CFG, batch_size=4)
    whole = BurstLoader(src, cfg, process_index=0, process_count=1)
    shards = [BurstLoader(src, cfg, process_index=p, process_count=count) for p in range(count)]
    for epoch, index in [(0, 0), (0, 1), (3, 1)]:
        want = whole.batch_at(epoch, index)
        parts = [s.batch_at(epoch, index) for s in shards]
        assert all(p["clean"].shape[0] == 4 // count for p in parts)
        for k in want:  # process p holds rows [p B/P, (p+1) B/P) of the global batch
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), want[k])
        np.testing.assert_array_equal(shards[0].batch_at(epoch, index, process=count - 1)["clean"],
                                      parts[-1]["clean"])
    # Iterating a shard yields its rows of the global batches, in order.
    with BurstLoader(src, cfg, process_index=1, process_count=count, start=(1, 1)) as it:
        got = [next(it) for _ in range(2)]
    for g, (epoch, index) in zip(got, [(1, 1), (2, 0)]):
        np.testing.assert_array_equal(g["noisy"], whole.batch_at(epoch, index)["noisy"][4 // count:2 * 4 // count])


def test_shard_options_are_checked_and_default_to_jax():
    import jax

    loader = BurstLoader(coded_source(), CFG)
    assert (loader.process_index, loader.process_count) == (jax.process_index(), jax.process_count())
    with pytest.raises(ValueError, match="batch_size=2 is not divisible by process_count=4"):
        BurstLoader(coded_source(), CFG, process_index=0, process_count=4)
    with pytest.raises(ValueError, match=r"process_index=2 must be in \[0, process_count=2\)"):
        BurstLoader(coded_source(), CFG, process_index=2, process_count=2)
    unread = lambda start, length: pytest.fail("nothing is read before the first batch")  # noqa: E731
    mixed = BurstSource([Item(ItemInfo(name, t, (64, 128)), unread) for name, t in [("a", 20), ("b", 20), ("c", 8)]], 4)
    with pytest.raises(ValueError, match=r"different lengths \('a' has 20, 'c' has 8 frames\)"):
        BurstLoader(mixed, dataclasses.replace(CFG, frames=None))
    BurstLoader(mixed, dataclasses.replace(CFG, frames=None, batch_size=1))  # B 1: nothing is stacked


def test_state_through_orbax_resumes_mid_epoch_on_each_process(tmp_path):
    """The position saved beside a train state (as the training loop does) restores, on each of 2
    processes, the rows of the batches an uninterrupted loader goes on with."""
    from starlight_jax.checkpoint import checkpoint_managers, restore_state, save_checkpoint

    src = coded_source(n=9)
    cfg = dataclasses.replace(CFG, batch_size=4)
    with BurstLoader(src, cfg, process_index=0, process_count=1) as straight:
        reference = [next(straight) for _ in range(5)]  # 2 batches per epoch: crosses two epoch ends
    with BurstLoader(src, cfg, process_index=0, process_count=1) as first:
        for _ in range(3):
            next(first)
        latest, _ = checkpoint_managers(tmp_path, keep=1, with_best=False)
        save_checkpoint(latest, 3, {"w": np.arange(3.0)}, first.state())
    _, saved, step = restore_state(tmp_path, {"w": np.zeros(3)})
    assert step == 3 and saved == {"epoch": 1, "index": 1, "seed": 3}
    for p in range(2):
        with BurstLoader(src, cfg, process_index=p, process_count=2) as resumed:
            resumed.restore(saved)
            for want in reference[3:]:
                got = next(resumed)
                for k in want:
                    np.testing.assert_array_equal(got[k], want[k][2 * p:2 * p + 2])
