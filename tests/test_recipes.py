"""The recipe contract: typed options (coercion, unknown keys), the recorded recipe name and
`genstudio export` (round trip, dtype, atomic write, no silent overwrite). Tiny, offline."""
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import torch

from genstudio.train import parse_config, train
from toy_recipe import ToyModel

# (recipe, misspelt key, the key it should suggest)
TYPOS = [("tokenizer", "codebok_size", "codebook_size"), ("starvector", "max_token", "max_tokens"),
         ("put", "mask_ratoi", "mask_ratio"), ("vdt", "frame", "frames"), ("meshanything", "vq_warmpu", "vq_warmup"),
         ("image-dit", "prest", "preset"), ("image-vae", "kl_wieght", "kl_weight"), ("glyph-classifier", "chanels", "channels")]


@pytest.mark.parametrize("name,typo,closest", TYPOS)
def test_every_recipe_rejects_an_unknown_key_and_lists_the_valid_ones(name, typo, closest):
    from genstudio.train import load_recipe
    with pytest.raises(ValueError) as info:
        load_recipe(name)({typo: 1, "steps": 1})
    msg = str(info.value)
    assert f"unknown {name} option '{typo}'" in msg and f"did you mean '{closest}'" in msg
    assert closest in msg.split("Valid keys:")[1] and "output_dir" in msg and "\n" not in msg


@dataclass
class Options:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    label: str = "a"
    pair: tuple[float, float] = (0.1, 0.2)
    names: tuple[str, ...] = ()
    weights: Optional[dict[str, float]] = None
    extra: dict = field(default_factory=dict)
    limit: Optional[int] = None
    mode: Literal["x", "y"] = "x"


def test_values_from_the_command_line_and_json_take_the_field_types():
    cli = {"count": "3", "rate": "1e-3", "flag": "true", "label": 7, "pair": "0.2,0.9", "names": "a, b",
           "weights": '{"p": 2}', "extra": {"k": [1]}, "limit": "none", "mode": "y", "betas": [0.8, 0.9],
           "grad_clip": "null", "ema_decay": "0.99", "steps": 20.0}
    cfg, o = parse_config(cli, Options, recipe="demo")
    assert (o.count, o.rate, o.flag, o.label, o.pair, o.names) == (3, 1e-3, True, "7", (0.2, 0.9), ("a", "b"))
    assert (o.weights, o.extra, o.limit, o.mode) == ({"p": 2.0}, {"k": [1]}, None, "y")
    assert isinstance(o.weights["p"], float)
    assert (cfg.betas, cfg.grad_clip, cfg.ema_decay, cfg.steps) == ((0.8, 0.9), None, 0.99, 20)
    cfg, o = parse_config({"flag": 0, "pair": [1, 2], "limit": 4}, Options, steps=7)
    assert (o.flag, o.pair, o.limit, cfg.steps) == (False, (1.0, 2.0), 4, 7)
    assert o.count == Options.count and cfg.lr == 3e-4  # defaults kept


@pytest.mark.parametrize("key,value,expected", [
    ("count", "three", "expected int"), ("count", 2.5, "expected int"), ("count", True, "expected int"),
    ("flag", "maybe", "expected bool"), ("pair", [1, 2, 3], "expected 2 values"), ("mode", "z", "one of 'x', 'y'"),
    ("extra", "{not json", "JSON object"), ("rate", None, "got None"), ("steps", "many", "expected int")])
def test_a_value_of_the_wrong_type_is_a_clear_error(key, value, expected):
    with pytest.raises(ValueError, match=f"demo option '{key}': .*{expected}"):
        parse_config({key: value}, Options, recipe="demo")


def test_several_unknown_keys_are_all_named():
    with pytest.raises(ValueError, match=r"unknown demo options 'cuont' \(did you mean 'count'\?\), 'zzz'"):
        parse_config({"cuont": 1, "zzz": 2}, Options, recipe="demo")


def test_the_cli_turns_an_unknown_key_into_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "genstudio.cli", "train", "vdt", "--set", "typo=1",
                        "--output-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown vdt option 'typo'" in lines[0] and "frames" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


# ---- the run record and export ----

@pytest.fixture
def toy_run(tmp_path, monkeypatch):
    """A toy run trained for a few steps; `genstudio.export` finds the toy's exporter."""
    import genstudio.export
    import toy_recipe
    monkeypatch.setattr(genstudio.export, "find_exporter",
                        lambda name: toy_recipe.export if name == "toy" else pytest.fail(name))
    run = tmp_path / "run"
    train(toy_recipe.toy_recipe(run, steps=6, mixed_precision="no", ema_decay=0.9))
    return run


def _weights(folder):
    from safetensors.torch import load_file
    files = list(folder.glob("*.safetensors"))
    assert len(files) == 1, files
    return load_file(files[0])


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("fp32", torch.float32)])
def test_export_round_trip(toy_run, tmp_path, dtype, torch_dtype):
    from genstudio.export import export_run
    record = json.loads((toy_run / "train_config.json").read_text())
    assert record["recipe"] == "toy" and record["steps"] == 6
    out = export_run(toy_run, tmp_path / "ckpt" / "toy", dtype=dtype)
    trained = ToyModel.from_pretrained(toy_run / "final").state_dict()
    exported = ToyModel.from_pretrained(out, torch_dtype=torch_dtype).state_dict()
    stored = _weights(out)
    assert set(stored) == set(trained) == set(exported)
    for k in trained:
        assert stored[k].dtype == exported[k].dtype == torch_dtype
        assert torch.equal(stored[k], trained[k].to(torch_dtype)) and torch.equal(exported[k], stored[k])
    assert not list(out.rglob("*.bin")) and json.loads((out / "train_config.json").read_text())["recipe"] == "toy"
    assert "final" not in json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy"]  # no temp folder left


def test_export_refuses_to_overwrite_unless_asked(toy_run, tmp_path):
    from genstudio.export import export_run
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "README.md").write_text("model card")
    (target / "stale.safetensors").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(toy_run, target)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "stale.safetensors"]  # untouched
    export_run(toy_run, target, overwrite=True)
    assert (target / "README.md").read_text() == "model card"  # the card survives a re-export
    assert not (target / "stale.safetensors").exists() and (target / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_overwrite_never_replaces_the_run_or_a_folder_holding_it(toy_run, tmp_path):
    from genstudio.export import export_run
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for target in (tmp_path, toy_run.parent, toy_run, toy_run / "final"):
        with pytest.raises(ValueError, match="run"):
            export_run(toy_run, target, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        export_run(toy_run, other, overwrite=True)
    assert (other / "todo.txt").read_text() == "keep me"
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.parent != other and p != other)
    assert after == before  # nothing deleted, no temp folder left


def test_a_failing_export_leaves_nothing_behind(toy_run, tmp_path, monkeypatch):
    import genstudio.export

    def broken(run_dir, to, dtype):
        (to / "half.safetensors").write_text("partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(genstudio.export, "find_exporter", lambda name: broken)
    with pytest.raises(RuntimeError, match="disk full"):
        genstudio.export.export_run(toy_run, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_export_errors_name_the_problem(toy_run, tmp_path):
    from genstudio.export import export_run
    with pytest.raises(ValueError, match="fp16, bf16, fp32"):
        export_run(toy_run, tmp_path / "a", dtype="int8")
    with pytest.raises(FileNotFoundError, match="no train_config.json"):
        export_run(tmp_path, tmp_path / "b")
    with pytest.raises(ValueError, match="takes no option vqvae"):
        export_run(toy_run, tmp_path / "c", vqvae="x")
    record = json.loads((toy_run / "train_config.json").read_text())
    (toy_run / "train_config.json").write_text(json.dumps({**record, "recipe": None}))
    with pytest.raises(ValueError, match="--recipe"):
        export_run(toy_run, tmp_path / "d")
    assert export_run(toy_run, tmp_path / "e", recipe="toy").exists()


def test_cli_export_of_a_tokenizer_run(tmp_path):
    """The real entry point: a run folder as the trainer leaves it, exported through the CLI."""
    from genstudio.tokenizer import TOKENIZER_CONFIGS, VQTokenizer
    run = tmp_path / "run"
    torch.manual_seed(0)
    VQTokenizer(**TOKENIZER_CONFIGS["tiny"]).save_pretrained(run / "final")
    (run / "train_config.json").write_text(json.dumps({"recipe": "tokenizer", "steps": 1, "options": {}}))
    cli = [sys.executable, "-m", "genstudio.cli", "export", str(run), "--to", str(tmp_path / "tok"), "--dtype", "fp16"]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    trained = VQTokenizer.from_pretrained(run / "final").state_dict()
    exported = VQTokenizer.from_pretrained(tmp_path / "tok", torch_dtype=torch.float16).state_dict()
    assert all(torch.equal(exported[k], v.to(torch.float16)) for k, v in trained.items() if v.is_floating_point())
    r = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "--overwrite" in r.stderr and "Traceback" not in r.stderr


def _tiny_vdt():
    from pipelines.video.vdt import VDT, VDT_CONFIGS
    return VDT, VDT(sample_size=16, num_frames=4, **VDT_CONFIGS["tiny"])


def _tiny_meshanything():
    from pipelines.mesh.meshanything import MeshAnythingModel, meshanything_config
    return MeshAnythingModel, MeshAnythingModel(meshanything_config("tiny"))


@pytest.mark.parametrize("recipe,build", [("vdt", _tiny_vdt), ("meshanything", _tiny_meshanything)])
def test_single_model_exporters_cast_the_final_weights(tmp_path, recipe, build):
    from genstudio.export import export_run
    torch.manual_seed(0)
    cls, model = build()
    model.save_pretrained(tmp_path / "run" / "final")
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"recipe": recipe, "options": {}}))
    out = export_run(tmp_path / "run", tmp_path / "ckpt", dtype="fp16")
    trained = model.state_dict()
    stored = _weights(out)
    assert set(stored) <= set(trained) and stored
    assert all(torch.equal(v, trained[k].to(torch.float16)) for k, v in stored.items() if v.is_floating_point())
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert isinstance(cls.from_pretrained(out), cls)
