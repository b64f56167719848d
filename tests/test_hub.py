import pytest

from genstudio.hub import CheckpointNotFound, available, resolve


def test_resolves_local_path_and_shipped_name(tmp_path, monkeypatch, tiny_tokenizer_dir):
    assert resolve(tiny_tokenizer_dir) == tiny_tokenizer_dir
    monkeypatch.setenv("GENSTUDIO_CHECKPOINTS", str(tiny_tokenizer_dir.parent))
    assert resolve("tokenizer-tiny") == tiny_tokenizer_dir
    assert "tokenizer-tiny" in available()


def test_offline_hub_id_error_lists_available(monkeypatch, tiny_tokenizer_dir):
    monkeypatch.setenv("GENSTUDIO_CHECKPOINTS", str(tiny_tokenizer_dir.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFound, match="offline.*tokenizer-tiny"):
        resolve("someone/not-cached-model")


def test_unknown_name_and_bad_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSTUDIO_CHECKPOINTS", str(tmp_path / "none"))
    with pytest.raises(CheckpointNotFound, match="No shipped checkpoints"):
        resolve("no-such-name")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFound, match="config.json"):
        resolve(tmp_path / "empty")
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text("{}")
    (pickle_only / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointNotFound, match="safetensors"):
        resolve(pickle_only)


def test_shipped_checkpoints_have_model_cards():
    from genstudio.hub import checkpoints_dir
    for name in available():
        d = checkpoints_dir() / name
        card = (d / "README.md")
        assert card.exists(), f"{name} has no model card"
        text = card.read_text().lower()
        for word in ("data", "licen", "steps"):
            assert word in text, f"{name}'s model card does not mention {word}"
        assert list(d.rglob("*.safetensors")) and not list(d.rglob("*.bin"))  # multi-part: in subfolders
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        assert size <= 30_000_000, f"{name} is {size / 1e6:.1f} MB: each shipped checkpoint stays <= 30 MB"
    assert "put-photos-S" in available()  # a multi-part checkpoint (vqvae/ + transformer/) is listed
