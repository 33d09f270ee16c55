"""Config parsing: typed values, defaults, round trip through a ConfigRecord, clear errors."""

import pytest

from fedsafe_plugin.config import ConfigError, FedSafeConfig, describe_keys, valid_keys


def test_defaults_and_ignores_other_keys():
    cfg = FedSafeConfig.from_run_config({"num-server-rounds": 3, "lr": 0.1})
    assert cfg == FedSafeConfig()
    assert cfg.sanitize.enabled and not cfg.privacy.enabled and cfg.secagg.mode == "none"


def test_typed_values_and_auto():
    cfg = FedSafeConfig.from_run_config({
        "fedsafe.privacy.epsilon": 2,  # TOML int for a float key
        "fedsafe.privacy.noise-multiplier": 1.1,
        "fedsafe.sanitize.threshold": "auto",
        "fedsafe.secagg.mode": "secagg+",
        "fedsafe.secagg.bits": 12,
    })
    assert cfg.privacy.epsilon == 2.0 and isinstance(cfg.privacy.epsilon, float)
    assert cfg.privacy.noise_multiplier == 1.1
    assert cfg.sanitize.threshold is None
    assert (cfg.secagg.mode, cfg.secagg.bits) == ("secagg+", 12)


def test_round_trip_through_config_record():
    cfg = FedSafeConfig.from_run_config({"fedsafe.privacy.enabled": True, "fedsafe.sanitize.action": "drop"})
    record = cfg.to_config_record()
    assert FedSafeConfig.from_config_record(dict(record)) == cfg
    assert set(record) == set(valid_keys())


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"fedsafe.privacy.epsilom": 1.0}, "unknown key 'fedsafe.privacy.epsilom'; valid keys are: fedsafe.sanitize.enabled"),
        ({"fedsafe.privacy.epsilon": 0}, "fedsafe.privacy.epsilon: 0.0 is out of range (must be > 0)"),
        ({"fedsafe.privacy.epsilon": -1.5}, "fedsafe.privacy.epsilon"),
        ({"fedsafe.privacy.delta": 1.0}, "fedsafe.privacy.delta: 1.0 is out of range (must be in (0, 1))"),
        ({"fedsafe.privacy.epsilon": "eight"}, "fedsafe.privacy.epsilon: expected a number"),
        ({"fedsafe.privacy.epsilon": float("nan")}, "fedsafe.privacy.epsilon: expected a finite number"),
        ({"fedsafe.sanitize.enabled": "yes"}, "fedsafe.sanitize.enabled: expected true or false"),
        ({"fedsafe.privacy.rounds": 2.5}, "fedsafe.privacy.rounds: expected an integer"),
        ({"fedsafe.privacy.rounds": True}, "fedsafe.privacy.rounds: expected an integer"),
        ({"fedsafe.secagg.mode": "paillier"}, "fedsafe.secagg.mode: 'paillier' is not one of none, secagg+, ckks"),
        ({"fedsafe.secagg.bits": 40}, "fedsafe.secagg.bits: 40 is out of range (must be in [2, 24])"),
        ({"fedsafe.client-dp.mode": "server"}, "fedsafe.client-dp.num-sampled-clients: must be set"),
        ({"fedsafe.sanitize.seed": 2**70}, "fedsafe.sanitize.seed: 1180591620717411303424 does not fit in a 64-bit integer"),
        ({"fedsafe.privacy.noise-multiplier": 0}, "fedsafe.privacy.noise-multiplier: 0.0 is out of range (must be > 0"),
        ({"fedsafe.client-dp.mode": "client", "fedsafe.client-dp.num-sampled-clients": 4, "fedsafe.client-dp.max-epsilon": 3.0},
         "fedsafe.client-dp.max-epsilon: a cap needs Flower's accountant"),
    ],
)
def test_bad_config_names_the_key(values, needle):
    with pytest.raises(ConfigError) as err:
        FedSafeConfig.from_run_config(values)
    assert needle in str(err.value)


def test_run_config_must_be_a_mapping():
    with pytest.raises(ConfigError, match="expected a run config mapping"):
        FedSafeConfig.from_run_config(None)


def test_describe_keys_covers_every_key():
    rows = describe_keys()
    assert [r[0] for r in rows] == valid_keys()
    assert all(r[2] for r in rows)
