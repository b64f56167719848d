"""The one precision policy (genstudio.precision) and the trainer's use of it."""
import json

import pytest
import torch

from genstudio import precision as policy
from genstudio.precision import Precision, autocast, resolve_precision


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch):
    """Each test decides the CPU's bf16 support itself; `_auto` caches its answer per process."""
    monkeypatch.delenv("GENSTUDIO_CPU_BF16", raising=False)
    policy._auto.cache_clear()
    yield
    policy._auto.cache_clear()


def _probes(monkeypatch, amx, avx512_bf16, cpuinfo_flags):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(policy, "_cpuinfo_flags", lambda: cpuinfo_flags)


@pytest.mark.parametrize("forced, expected", [("1", "bf16"), ("0", "fp32"), ("yes", "bf16"), ("false", "fp32")])
def test_env_override_decides_auto_on_cpu(monkeypatch, forced, expected):
    _probes(monkeypatch, amx=expected == "fp32", avx512_bf16=False, cpuinfo_flags=set())  # the override wins
    monkeypatch.setenv("GENSTUDIO_CPU_BF16", forced)
    p = resolve_precision("cpu")
    assert p.name == expected and "GENSTUDIO_CPU_BF16" in p.reason


def test_native_bf16_cpu_gets_bf16_autocast(monkeypatch):
    _probes(monkeypatch, amx=False, avx512_bf16=True, cpuinfo_flags=set())
    p = resolve_precision("cpu", "auto")
    assert p == Precision("bf16", p.reason) and "AVX-512 BF16" in p.reason
    assert p.dtype is torch.bfloat16 and p.accelerate_name == "bf16"
    with autocast("cpu", p):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_emulated_bf16_cpu_gets_fp32(monkeypatch):
    _probes(monkeypatch, amx=False, avx512_bf16=False, cpuinfo_flags={"avx2", "fma"})
    p = resolve_precision("cpu")
    assert p.name == "fp32" and "emulated" in p.reason
    assert p.dtype is None and p.accelerate_name == "no"
    with autocast("cpu", p):  # fp32 is no autocast at all
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_cpuinfo_answers_when_torch_cannot(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", None, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", None, raising=False)
    monkeypatch.setattr(policy, "_cpuinfo_flags", lambda: {"avx512f", "amx_bf16"})
    assert resolve_precision("cpu").name == "bf16"


def test_unsure_detection_measures_once_and_caches(monkeypatch, tmp_path):
    monkeypatch.setattr(policy, "cpu_bf16_native", lambda: (None, "unsure"))
    monkeypatch.setenv("GENSTUDIO_CACHE", str(tmp_path))
    calls = []

    def fake_ratio(*args, **kwargs):
        calls.append(1)
        return 0.02  # bf16 at 2% of fp32: emulated

    monkeypatch.setattr(policy, "matmul_speed_ratio", fake_ratio)
    p = resolve_precision("cpu")
    assert p.name == "fp32" and "measured" in p.reason and calls == [1]
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert list(cached.values()) == [0.02]
    policy._auto.cache_clear()  # a new process: the verdict comes from the file, not a new measurement
    assert resolve_precision("cpu").name == "fp32" and calls == [1]


def test_measured_fast_bf16_picks_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(policy, "cpu_bf16_native", lambda: (None, "unsure"))
    monkeypatch.setenv("GENSTUDIO_CACHE", str(tmp_path))
    monkeypatch.setattr(policy, "matmul_speed_ratio", lambda *a, **k: 3.5)
    assert resolve_precision("cpu").name == "bf16"


def test_fp16_on_cpu_is_refused_clearly():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("mps", "fp16")


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="unknown precision 'fp8'.*auto, fp32, bf16, fp16"):
        resolve_precision("cpu", "fp8")


def test_explicit_precisions_are_honoured(monkeypatch):
    _probes(monkeypatch, amx=False, avx512_bf16=False, cpuinfo_flags={"avx2"})
    assert resolve_precision("cpu", "fp32").name == "fp32"
    forced = resolve_precision("cpu", "BF16")
    assert forced.name == "bf16" and "slower" in forced.reason  # emulated: honoured, with a warning
    assert resolve_precision("mps").name == "fp32"


# ---------------------------------------------------------------- the trainer

def test_trainer_picks_fp32_where_bf16_is_emulated(monkeypatch, tmp_path, capsys):
    from accelerate.state import AcceleratorState
    from genstudio.train import TrainConfig, train
    from toy_recipe import toy_recipe
    assert TrainConfig().mixed_precision == "auto"
    monkeypatch.setenv("GENSTUDIO_CPU_BF16", "0")
    summary = train(toy_recipe(tmp_path, steps=2, ema_decay=None))
    assert summary["precision"] == "fp32" and "GENSTUDIO_CPU_BF16=0" in summary["precision_reason"]
    assert AcceleratorState().mixed_precision == "no"
    assert json.loads((tmp_path / "summary.json").read_text())["precision"] == "fp32"
    assert capsys.readouterr().out.count("precision: fp32") == 1


def test_trainer_precision_names(monkeypatch, tmp_path):
    from genstudio.train import train, train_precision
    monkeypatch.setenv("GENSTUDIO_CPU_BF16", "1")
    assert train_precision("auto", "cpu").name == "bf16"
    assert train_precision("no", "cpu").name == "fp32"  # old configs
    assert train_precision(None, "cpu").name == "bf16"
    with pytest.raises(ValueError, match="mixed_precision='half' is unknown"):
        train_precision("half", "cpu")
    from toy_recipe import toy_recipe
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        train(toy_recipe(tmp_path, steps=1, mixed_precision="fp16", cpu=True))


def test_cli_train_rejects_a_bad_precision_before_building_the_recipe():
    from typer.testing import CliRunner
    from genstudio import cli
    r = CliRunner().invoke(cli.app, ["train", "no-such-recipe", "--precision", "fp8"])
    assert r.exit_code != 0 and "fp8" in r.output and "unknown recipe" not in str(r.exception)
    if not torch.cuda.is_available():
        r = CliRunner().invoke(cli.app, ["train", "no-such-recipe", "--precision", "fp16"])
        assert r.exit_code != 0 and "CUDA" in r.output


def test_autoregressive_decoding_stays_fp32_on_a_cpu_even_with_native_bf16(monkeypatch):
    _probes(monkeypatch, amx=True, avx512_bf16=True, cpuinfo_flags=set())
    assert resolve_precision("cpu", "auto", "compute").name == "bf16"
    decode = resolve_precision("cpu", "auto", "decode")
    assert decode.name == "fp32" and "decoding" in decode.reason
    assert resolve_precision("cpu", "bf16", "decode").name == "bf16"  # asked for: honoured
    with pytest.raises(ValueError, match="unknown workload"):
        resolve_precision("cpu", "auto", "training")


def test_pipelines_declare_their_workload():
    from genstudio.pipeline import pipeline_classes
    workloads = {task: cls.workload for task, cls in pipeline_classes().items()}
    assert workloads["svg"] == workloads["mesh"] == "decode"
    assert workloads["inpaint"] == workloads["video"] == "compute"
