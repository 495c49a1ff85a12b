"""Loading the original PyTorch state dicts (SPEC §2.1, §3, §4.3): torch_import.

The state dicts are built here in NumPy with the original's keys and PyTorch layouts, so no torch is
needed. One extra test runs the PyTorch peer (../shared/peers) in peer-venv, when that exists.
"""
import json
import os
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import starlight_jax as sj
from starlight_jax.models import TINY_WIDTHS, apply_discriminator, init_discriminator
from starlight_jax.models.unet import Downsample, UNet, Upsample, parse_unet_opts

REPO = pathlib.Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"
PEER_PYTHON = REPO / "peer-venv" / "bin" / "python"

NOISELIST = "shot_read_uniform_row1_rowt_periodic"
SCALARS = {"shot": "shot_noise", "read": "read_noise", "uniform": "uniform_noise", "column": "row_noise",
           "column_t": "row_noise_temp", "periodic": "periodic_params"}


def config(noiselist=NOISELIST, compat="starlight", network="Unet", widths=TINY_WIDTHS, **noise_kw):
    noise = sj.parse_noiselist(noiselist, compat=compat, **noise_kw)
    return sj.GeneratorConfig(noise=noise, network=network, unet_widths=widths)


def random_like(shapes, seed=0):
    """Random float32 NumPy leaves shaped like ``shapes`` (no init compiles), so any layout mix-up shows."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def random_model(cfg, seed=0):
    """A generator whose every leaf is random."""
    shapes = jax.eval_shape(lambda: sj.init_generator(jax.random.key(0), cfg).params)
    return sj.NoiseModel(params=random_like(shapes, seed), config=cfg)


def torch_generator_state(params, prefix=""):
    """Our params in the original's state-dict keys and PyTorch layouts."""
    sd = {}
    for ours, theirs in SCALARS.items():
        if ours in params["noise"]:
            sd[prefix + theirs] = np.asarray(params["noise"][ours])
    if "learned_fixed" in params["noise"]:  # [H, W, C] -> (1, C, H, W)
        sd[prefix + "fixednoiset"] = np.transpose(np.asarray(params["noise"]["learned_fixed"]), (2, 0, 1))[None]
    for path, leaf in jax.tree_util.tree_flatten_with_path(params.get("net", {}))[0]:
        *modules, name = [p.key for p in path]
        a = np.asarray(leaf)
        if name == "kernel":  # conv [kh, kw, I, O] -> (O, I, kh, kw); depthwise [2, 2, C] -> (C, 1, 2, 2)
            a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.transpose(2, 0, 1)[:, None]
        sd[prefix + ".".join(["net", *modules, "weight" if name == "kernel" else "bias"])] = a
    return sd


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.shape(x) == np.shape(y) and np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------------
def test_state_dict_keys_match_the_original_for_the_full_unet():
    """Full default widths: the key set and PyTorch shapes the loader expects (SPEC §2.1, §3.3)."""
    cfg = config(widths=None)
    shapes = jax.eval_shape(lambda: sj.init_generator(jax.random.key(0), cfg).params)
    sd = torch_generator_state(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    assert sd["net.conv1.conv1.weight"].shape == (32, 4, 3, 3)
    assert sd["net.conv6.conv1.weight"].shape == (128, 512, 3, 3)
    assert sd["net.down1.weight"].shape == (32, 1, 2, 2) and sd["net.up1.weight"].shape == (256, 1, 2, 2)
    assert sd["net.convres.conv2.weight"].shape == (4, 4, 3, 3)
    assert sum(v.size for k, v in sd.items() if k.startswith("net.")) == 3_328_384
    model = sj.load_torch_checkpoint(sd, cfg)
    assert jax.tree_util.tree_structure(model.params) == jax.tree_util.tree_structure(shapes)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_round_trip_reproduces_every_weight(prefix):
    cfg = config()
    model = random_model(cfg)
    loaded = sj.load_torch_checkpoint(torch_generator_state(model.params, prefix), cfg)
    assert isinstance(loaded, sj.NoiseModel) and loaded.config == cfg
    assert_trees_equal(loaded.params, model.params)


def test_learned_fixed_map_and_npz_file(tmp_path):
    cfg = config(NOISELIST + "_learnedfixed", network="Unet_cat", fixed_shape=(24, 40))
    model = random_model(cfg, seed=3)
    sd = torch_generator_state(model.params)
    assert sd["fixednoiset"].shape == (1, 4, 24, 40)
    np.savez(tmp_path / "gen.npz", **sd)
    loaded = sj.load_torch_checkpoint(tmp_path / "gen.npz", cfg)
    assert_trees_equal(loaded.params, model.params)


def test_noise_only_generator_and_ignored_scalars_of_disabled_components():
    cfg = config("shot_uniform_row1", network="noUnet")  # starlight: shot without read adds nothing
    sd = {"shot_noise": np.float32(0.3), "read_noise": np.float32(0.01), "uniform_noise": np.float32(0.05),
          "row_noise": np.float32(-0.001), "row_noise_temp": np.float32(0.002),
          "periodic_params": np.array([0.1, 0.2, 0.3], np.float32)}
    params = sj.load_torch_checkpoint(sd, cfg).params
    assert set(params) == {"noise"} and set(params["noise"]) == {"uniform", "column"}
    assert float(params["noise"]["column"]) == np.float32(-0.001)


def test_fixed_pattern_comes_from_the_argument():
    cfg = config("shot_read_fixed1", network="noUnet", fixed_shape=(8, 8))
    sd = {"shot_noise": np.float32(0.2), "read_noise": np.float32(0.02)}
    fixed = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    params = sj.load_torch_checkpoint(sd, cfg, fixed_pattern=fixed).params
    np.testing.assert_array_equal(np.asarray(params["noise"]["fixed_pattern"]), fixed)
    with pytest.raises(ValueError, match=r"fixed_pattern must have shape \[Hf, Wf, C\] = \(8, 8, 4\)"):
        sj.load_torch_checkpoint(sd, cfg, fixed_pattern=fixed[:4])


def test_missing_and_unexpected_keys_are_named():
    cfg = config()
    sd = torch_generator_state(random_model(cfg).params)
    del sd["net.conv3.conv1.weight"], sd["periodic_params"]
    sd["net.conv10.conv1.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    with pytest.raises(ValueError) as err:
        sj.load_torch_checkpoint(sd, cfg)
    msg = str(err.value)
    assert "missing" in msg and "net.conv3.conv1.weight" in msg and "periodic_params" in msg
    assert "unexpected" in msg and "net.conv10.conv1.weight" in msg


def test_unet_keys_for_a_noise_only_config_and_learned_map_without_learnedfixed_fail():
    sd = torch_generator_state(random_model(config()).params)
    with pytest.raises(ValueError, match="unexpected.*net.conv1.conv1.weight.*GeneratorConfig.network"):
        sj.load_torch_checkpoint(sd, config(network="noUnet"))
    sd["fixednoiset"] = np.zeros((1, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="fixednoiset.*learnedfixed"):
        sj.load_torch_checkpoint(sd, config())


def test_wrong_shapes_fail_naming_the_key():
    cfg = config()
    sd = torch_generator_state(random_model(cfg).params)
    sd["net.down2.weight"] = np.zeros((8, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match=r"'net.down2.weight' has shape \(8, 2, 2, 1\), expected \(8, 1, 2, 2\)"):
        sj.load_torch_checkpoint(sd, cfg)
    cfg = config(NOISELIST + "_learnedfixed", network="noUnet", fixed_shape=(24, 40))
    sd = torch_generator_state(random_model(cfg).params)
    sd["fixednoiset"] = np.zeros((1, 4, 640, 1080), np.float32)
    with pytest.raises(ValueError, match="fixed_shape"):
        sj.load_torch_checkpoint(sd, cfg)


def test_physics_compat_and_row_component_are_rejected():
    cfg = config(compat="physics")
    with pytest.raises(ValueError, match="compat='starlight'"):
        sj.load_torch_checkpoint({}, cfg)
    with pytest.raises(ValueError, match="'row'"):
        sj.load_torch_checkpoint({}, config(NOISELIST + "_row"))


def test_pt_file_without_torch_says_pip_install(tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here")
    except ImportError:
        pass
    path = tmp_path / "gen.pt"
    path.write_bytes(b"not read")
    with pytest.raises(ImportError, match="pip install torch"):
        sj.load_torch_checkpoint(path, config())
    with pytest.raises(FileNotFoundError):
        sj.load_torch_checkpoint(tmp_path / "absent.pt", config())


def _np_conv(x, w, b, stride=1, pad=1):
    """PyTorch Conv2d semantics in NumPy: x (C, H, W), w (O, C, kh, kw) -> (O, H', W')."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    o, _, kh, kw = w.shape
    h_out, w_out = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((o, h_out, w_out), np.float64)
    for a in range(kh):
        for c in range(kw):
            window = x[:, a:a + stride * h_out:stride, c:c + stride * w_out:stride]
            out += np.einsum("chw,oc->ohw", window, w[:, :, a, c])
    return out + b[:, None, None]


def test_loaded_layers_compute_what_pytorch_layers_compute():
    """Semantics, not just a round trip: 3x3 conv, depthwise 2x2 conv and transposed conv, torch style."""
    sd = torch_generator_state(random_model(config(), seed=7).params)
    net = sj.load_torch_checkpoint(sd, config()).params["net"]
    rng = np.random.default_rng(0)

    x = rng.uniform(size=(4, 8, 8)).astype(np.float32)  # one CHW image
    # ConvBlock's convs are plain 3x3, padding-1 nn.Conv layers named conv1 / conv2.
    c = sd["net.conv1.conv1.weight"].shape[0]
    got = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1))).apply({"params": net["conv1"]["conv1"]},
                                                             jnp.asarray(x.transpose(1, 2, 0))[None])[0]
    want = _np_conv(x, sd["net.conv1.conv1.weight"], sd["net.conv1.conv1.bias"])
    np.testing.assert_allclose(np.asarray(got).transpose(2, 0, 1), want, atol=1e-4)

    c = sd["net.down1.weight"].shape[0]
    y = rng.uniform(size=(c, 8, 8)).astype(np.float32)
    got = Downsample("conv").apply({"params": net["down1"]}, jnp.asarray(y.transpose(1, 2, 0))[None])[0]
    want = np.stack([_np_conv(y[i:i + 1], sd["net.down1.weight"][i:i + 1], sd["net.down1.bias"][i:i + 1],
                              stride=2, pad=0)[0] for i in range(c)])  # groups = C
    np.testing.assert_allclose(np.asarray(got).transpose(2, 0, 1), want, atol=1e-5)

    c = sd["net.up1.weight"].shape[0]
    y = rng.uniform(size=(c, 8, 8)).astype(np.float32)
    got = Upsample("tconv").apply({"params": net["up1"]}, jnp.asarray(y.transpose(1, 2, 0))[None])[0]
    want = np.zeros((c, 16, 16))  # ConvTranspose2d(k=2, s=2, groups=C): out[2i+a, 2j+b] = x[i, j] w[a, b] + b
    for a in range(2):
        for b in range(2):
            want[:, a::2, b::2] = y * sd["net.up1.weight"][:, 0, a, b][:, None, None]
    want += sd["net.up1.bias"][:, None, None]
    np.testing.assert_allclose(np.asarray(got).transpose(2, 0, 1), want, atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Discriminator
# ------------------------------------------------------------------------------------------------------
def torch_discriminator_state(params, sn_state, naming="original", prefix=""):
    """Our discriminator in the original's (or torch parametrizations') state-dict naming."""
    rng = np.random.default_rng(0)
    sd = {}
    for i, layer in enumerate(("conv1", "conv2", "conv3", "conv4", "conv5", "linear")):
        k = np.asarray(params[layer]["kernel"])
        w = k.transpose(3, 2, 0, 1) if k.ndim == 4 else k.T
        v = rng.normal(size=w[0].size).astype(np.float32)
        if naming == "original":
            base = prefix + ("fc" if layer == "linear" else layer) + ".module."
            names = dict(weight=base + "weight_bar", u=base + "weight_u", v=base + "weight_v", bias=base + "bias")
        else:
            base = prefix + ("fc" if layer == "linear" else f"convs.{i}") + "."
            names = dict(weight=base + "parametrizations.weight.original", u=base + "parametrizations.weight.0._u",
                         v=base + "parametrizations.weight.0._v", bias=base + "bias")
        sd.update({names["weight"]: w, names["u"]: np.asarray(sn_state[layer]["u"]), names["v"]: v / np.linalg.norm(v),
                   names["bias"]: np.asarray(params[layer]["bias"])})
    return sd


@pytest.mark.parametrize("naming,prefix", [("original", ""), ("original", "module."), ("parametrizations", "")])
def test_discriminator_round_trip(naming, prefix):
    params, sn_state = random_like(jax.eval_shape(lambda: init_discriminator(jax.random.key(5), 4)))
    sd = torch_discriminator_state(params, sn_state, naming, prefix)
    got_params, got_state = sj.load_torch_discriminator(sd, 4)
    assert_trees_equal(got_params, params)
    assert_trees_equal(got_state, sn_state)


def test_discriminator_errors_name_keys_and_shapes():
    params, sn_state = random_like(jax.eval_shape(lambda: init_discriminator(jax.random.key(5), 4)))
    sd = torch_discriminator_state(params, sn_state)
    del sd["conv3.module.weight_u"]
    sd["conv6.module.weight_bar"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing \['conv3.u'\].*unexpected.*conv6.module.weight_bar"):
        sj.load_torch_discriminator(sd, 4)
    with pytest.raises(ValueError, match="conv1.module.weight_bar' has shape"):
        sj.load_torch_discriminator(torch_discriminator_state(params, sn_state), 8)


# ------------------------------------------------------------------------------------------------------
# Against the PyTorch peer (skipped without peer-venv)
# ------------------------------------------------------------------------------------------------------
PEER_SNIPPET = r"""
import json, sys
import numpy as np, torch
import torch.nn.functional as F
sys.path.insert(0, PEERS)
from torch_starlight import NoiseGenerator, DiscriminatorS2d
torch.manual_seed(0)
torch.set_num_threads(1)
G = NoiseGenerator("shot_read_uniform_row1_rowt_periodic", unet_mode="Unet")
with torch.no_grad():
    G.shot_noise.fill_(0.123); G.row_noise.fill_(-0.004); G.periodic_params.copy_(torch.tensor([0.3, 0.4, 0.5]))
    for p in G.net.parameters():  # move off the near-identity init so every weight matters
        p.add_(0.05 * torch.randn_like(p))
G.net.eval()
x = torch.rand(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    y = G.net(x)
sd = {"module." + k: v.numpy() for k, v in G.state_dict().items()}  # as saved under DDP
np.savez(OUT + "/gen.npz", **sd)

# Discriminator: the peer's weights re-keyed to the original's SpectralNorm naming, scored with the
# original's forward (one power iteration from u, sigma = u^T W v, W / sigma).
D = DiscriminatorS2d(4)
layers = [("conv%d" % (i + 1), m) for i, m in enumerate(D.convs)] + [("fc", D.fc)]
dsd, z = {}, torch.rand(3, 4, 64, 64, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    h = z
    for name, m in layers:
        w = m.parametrizations.weight.original
        u = F.normalize(torch.randn(w.shape[0], generator=torch.Generator().manual_seed(3)), dim=0)
        dsd.update({name + ".module.weight_bar": w.numpy(), name + ".module.weight_u": u.numpy(),
                    name + ".module.bias": m.bias.numpy()})
        wm = w.reshape(w.shape[0], -1)
        v = wm.t() @ u; v = v / (v.norm() + 1e-12)
        u = wm @ v; u = u / (u.norm() + 1e-12)
        ws = w / (u @ wm @ v)
        if name == "fc":
            h = F.linear(h.flatten(1), ws, m.bias)
        else:
            h = F.leaky_relu(F.conv2d(h, ws, m.bias, stride=m.stride, padding=m.padding), 0.1)
np.savez(OUT + "/disc.npz", **dsd)
np.savez(OUT + "/io.npz", x=x.numpy(), y=y.numpy(), z=z.numpy(), score=h[:, 0].numpy())
print(json.dumps({"ok": True}))
"""


@pytest.mark.skipif(not (PEER_PYTHON.exists() and PEERS.is_dir()),
                    reason=f"needs the PyTorch peer ({PEERS}) and its venv ({PEER_PYTHON})")
def test_matches_the_pytorch_peer(tmp_path):
    snippet = f"PEERS = {str(PEERS)!r}\nOUT = {str(tmp_path)!r}\n" + PEER_SNIPPET
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([str(PEER_PYTHON), "-c", snippet], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"]
    io = np.load(tmp_path / "io.npz")

    cfg = config(widths=None)
    model = sj.load_torch_checkpoint(tmp_path / "gen.npz", cfg)
    assert float(model.params["noise"]["shot"]) == np.float32(0.123)
    assert float(model.params["noise"]["column"]) == np.float32(-0.004)
    net = UNet(out_channels=4, config=parse_unet_opts(cfg.unet_opts, compat="starlight"))
    y = net.apply({"params": model.params["net"]}, jnp.asarray(io["x"].transpose(0, 2, 3, 1)), train=False)
    np.testing.assert_allclose(np.asarray(y).transpose(0, 3, 1, 2), io["y"], atol=1e-4, rtol=1e-4)

    params, sn_state = sj.load_torch_discriminator(tmp_path / "disc.npz", 4)
    scores, _ = apply_discriminator(params, sn_state, jnp.asarray(io["z"].transpose(0, 2, 3, 1)), update_stats=False)
    np.testing.assert_allclose(np.asarray(scores), io["score"], atol=1e-4, rtol=1e-4)
