"""The parameter contract: names, types, ranges, profiles and the environment override."""

import pytest

from atcourse.config import PARAMS, PROFILES, ConfigError, configure


def test_profile_defaults_fill_unset_values():
    cfg = configure("lab", verbose=False, epochs=None, lr=0.2)
    assert cfg.epochs == PROFILES["lab"]["epochs"]
    assert cfg.lr == 0.2
    assert cfg.source("epochs") == "profile" and cfg.source("lr") == "given"


def test_every_profile_defines_the_same_keys_and_they_are_valid():
    keys = set(PROFILES["smoke"])
    for name, values in PROFILES.items():
        assert set(values) == keys, name
        for key, value in values.items():
            PARAMS[key].check(key, value)


def test_unknown_parameter_names_close_match_and_lists_valid():
    with pytest.raises(ConfigError) as err:
        configure("smoke", verbose=False, epoch=3)
    msg = str(err.value)
    assert "'epoch'" in msg and "Did you mean 'epochs'" in msg and "batch_size" in msg


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"epochs": 2.5}, ["epochs", "int"]),
        ({"epochs": 0}, ["epochs", ">= 1"]),
        ({"alpha": 1.5}, ["alpha", "<= 1.0"]),
        ({"dataset": "mnist"}, ["dataset", "shapes", "cifar10", "folder:"]),
        ({"device": "tpu"}, ["device", "auto", "cuda"]),
        ({"seed": True}, ["seed", "bool"]),
        ({"schedule": "linear"}, ["schedule", "cosine", "step"]),
    ],
)
def test_bad_values_name_the_parameter_and_the_valid_choices(kwargs, words):
    with pytest.raises(ConfigError) as err:
        configure("smoke", verbose=False, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_unknown_profile_lists_profiles():
    with pytest.raises(ConfigError, match="smoke.*lab.*full"):
        configure("huge", verbose=False)


def test_int_is_accepted_for_float_and_list_for_tuple():
    cfg = configure("smoke", verbose=False, lr=1, milestones=[0.5, 0.75])
    assert isinstance(cfg.lr, float) and cfg.milestones == (0.5, 0.75)


def test_env_profile_overrides_notebook_and_is_reported(monkeypatch, capsys):
    monkeypatch.setenv("ATCOURSE_PROFILE", "smoke")
    cfg = configure("lab")
    assert cfg.profile == "smoke" and cfg.epochs == PROFILES["smoke"]["epochs"]
    out = capsys.readouterr().out
    assert "ATCOURSE_PROFILE" in out and "epochs" in out


def test_bad_env_profile_is_an_error(monkeypatch):
    monkeypatch.setenv("ATCOURSE_PROFILE", "fast")
    with pytest.raises(ConfigError, match="ATCOURSE_PROFILE"):
        configure("lab", verbose=False)


def test_env_teacher_profile_overrides_the_profile_and_is_reported(monkeypatch):
    monkeypatch.setenv("ATCOURSE_TEACHER_PROFILE", "smoke")
    cfg = configure("smoke", verbose=False, teacher_profile="lab")
    assert cfg.teacher_profile == "smoke"
    assert cfg.source("teacher_profile") == "ATCOURSE_TEACHER_PROFILE"
    monkeypatch.setenv("ATCOURSE_TEACHER_PROFILE", "tiny")
    with pytest.raises(ConfigError, match="teacher_profile"):
        configure("smoke", verbose=False)


def test_method_knobs_get_their_documented_defaults():
    cfg = configure("smoke", verbose=False, alpha=None, T=None, at_mode=None)
    assert (cfg.alpha, cfg.T, cfg.at_mode) == (0.9, 4.0, "code")


def test_config_is_read_only_and_replace_checks():
    cfg = configure("smoke", verbose=False)
    with pytest.raises(AttributeError):
        cfg.epochs = 5
    assert cfg.replace(epochs=5).epochs == 5
    with pytest.raises(ConfigError):
        cfg.replace(epochs=-1)
    with pytest.raises(AttributeError, match="unknown parameter"):
        _ = cfg.nonexistent
