"""Device choice, seeding and the precision policy."""

import pytest
import torch

from atcourse import runtime


def test_auto_picks_an_available_device():
    dev = runtime.resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else dev.type
    assert dev.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_cuda_without_one_is_a_clear_error():
    with pytest.raises(RuntimeError, match="device='cuda'.*'auto' or 'cpu'"):
        runtime.resolve_device("cuda")


def test_unknown_device_lists_choices():
    with pytest.raises(ValueError, match="auto, cpu, cuda, mps"):
        runtime.resolve_device("gpu")


def test_seed_everything_makes_torch_repeatable():
    runtime.seed_everything(3)
    a = torch.randn(5)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)


def test_precision_policy_follows_what_the_cpu_reports(monkeypatch):
    # an AVX2-only laptop: bf16 would be emulated, so auto is fp32, and says why
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    cpu = runtime.precision_for("cpu")
    assert cpu.autocast_dtype is None and cpu.channels_last and cpu.name == "fp32"
    assert "no native bf16" in cpu.reason
    emulated = runtime.precision_for("cpu", "bf16")
    assert emulated.autocast_dtype is torch.bfloat16 and "emulated" in emulated.reason
    # a processor with AVX512_BF16 or AMX: auto is bf16 autocast
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: True)
    native = runtime.precision_for("cpu")
    assert native.autocast_dtype is torch.bfloat16 and "natively" in native.reason
    plain = runtime.precision_for("cpu", "fp32")
    assert plain.autocast_dtype is None and plain.reason == "asked for" and plain.channels_last
    assert not runtime.precision_for("cpu", "fp32", channels_last=False).channels_last
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        runtime.precision_for("cpu", "fp16")
    if torch.cuda.is_available():
        gpu = runtime.precision_for("cuda")
        assert gpu.autocast_dtype is torch.bfloat16 and gpu.channels_last


def test_native_bf16_is_read_from_torch(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not runtime.cpu_bf16_native()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runtime.cpu_bf16_native()


def test_env_report_has_versions_and_device(capsys):
    report = runtime.env_report("cpu")
    assert report["torch"] == torch.__version__ and report["device"] == "cpu"
    assert "data_root" in capsys.readouterr().out


@pytest.mark.parametrize("start_training", [True, False])
def test_eval_mode_switches_and_restores_even_on_error(start_training):
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    model.train(start_training)
    with runtime.eval_mode(model):
        assert not model.training and not model[0].training
    assert model.training is start_training
    with pytest.raises(RuntimeError), runtime.eval_mode(model):
        raise RuntimeError("boom")
    assert model.training is start_training and model[0].training is start_training
    with runtime.eval_mode(model.forward):  # not a module: left alone
        assert model.training is start_training
