import dataclasses

import pytest

from starlight_jax.noiselist import DEFAULT_NOISELIST, TOKENS, NoiseConfig, parse_noiselist


def test_default_noiselist():
    cfg = parse_noiselist(DEFAULT_NOISELIST)
    assert (cfg.shot, cfg.read, cfg.uniform, cfg.column, cfg.column_t, cfg.fixed, cfg.periodic) == (True,) * 7
    assert not cfg.row and not cfg.learned_fixed
    assert cfg.noiselist == DEFAULT_NOISELIST
    assert cfg.components == ("shot_read", "uniform", "column", "column_t", "fixed", "periodic")


@pytest.mark.parametrize("text", ["periodic-uniform,shot read", "READ+shot__uniform_periodic", " shot_read_uniform_periodic "])
def test_any_order_and_separator(text):
    assert parse_noiselist(text) == parse_noiselist("shot_read_uniform_periodic")


def test_aliases_name_what_the_components_are():
    assert parse_noiselist("column") == parse_noiselist("row1")
    assert parse_noiselist("columnt") == parse_noiselist("rowt")
    assert parse_noiselist("row").row and not parse_noiselist("row").column


@pytest.mark.parametrize("bad", ["shot_read_perodic", "shot_read_row2", "shotread"])
def test_unknown_token_lists_valid_ones(bad):
    with pytest.raises(ValueError) as err:
        parse_noiselist(bad)
    assert "unknown token" in str(err.value)
    for token in TOKENS:
        assert token in str(err.value)


def test_empty_and_bad_options():
    with pytest.raises(ValueError, match="empty"):
        parse_noiselist("__")
    with pytest.raises(ValueError, match="compat"):
        parse_noiselist("shot", compat="pytorch")
    with pytest.raises(ValueError, match="shot_sampler"):
        parse_noiselist("shot_read", shot_sampler="binomial")
    with pytest.raises(ValueError, match="compat='physics'"):
        parse_noiselist("shot_read", compat="starlight", shot_sampler="poisson")


def test_config_is_frozen_and_hashable():
    cfg = parse_noiselist("shot_read")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shot = False
    assert hash(cfg) == hash(parse_noiselist("read_shot"))
    assert isinstance(parse_noiselist(cfg), NoiseConfig)


def test_shot_without_read_under_starlight_adds_nothing():
    assert parse_noiselist("shot", compat="starlight").components == ()
    assert parse_noiselist("shot", compat="physics").components == ("shot",)
