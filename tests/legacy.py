"""`TrainConfig` with the field defaults it had before they became the ``cpu`` preset (starlight_jax/configs.py).

Tests written against those defaults (a Fourier unconditional critic of width 64, no warm-up, no decay, no
level term, no data init, no quantisation, n_critic 5, ...) build their configurations with
`train_config`, so that they keep testing what they were written to test.
"""
from starlight_jax import training

OLD_DEFAULTS = dict(network="Unet", quantize=None, discriminator_loss="fourier", critic_condition="none",
                    critic_width=64, level_weight=0.0, physics_lr=None, physics_optimizer="adam", decay_steps=None,
                    init_from_data=False, n_critic=5, critic_warmup=0, frames=16, crop_size=256)


def train_config(**fields) -> training.TrainConfig:
    """``TrainConfig(**fields)`` with `OLD_DEFAULTS` for the fields not given."""
    return training.TrainConfig(**{**OLD_DEFAULTS, **fields})
