"""Config schema: defaults, and errors that name the field and the allowed values."""

import copy

import pytest
import yaml

from teachfit.schema import ConfigError, load_yaml

from teachfit.workflow.config import validate_config


@pytest.fixture()
def base_config(repo_root):
    with open(repo_root / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_default_config_validates_and_fills_defaults(base_config):
    cfg = validate_config(copy.deepcopy(base_config))
    assert cfg["sft"]["lora"]["r"] == 8
    assert cfg["generators"]["smol_greedy"]["temperature"] == 0.0
    assert cfg["models"]["smollm2"]["backend"] == "transformers"
    assert cfg["teacher"]["car"]["reward_offset"] == 0.0


def test_paper_overlay_validates(repo_root, base_config):
    from snakemake.utils import update_config

    paper = load_yaml(repo_root / "config" / "paper.yaml")
    update_config(base_config, paper)
    cfg = validate_config(base_config)
    assert len(cfg["teacher"]["generators"]) == 20
    assert len(cfg["teacher"]["bases"]) == 5
    # CPU-sized defaults must not leak into the paper overlay
    assert cfg["eval"]["limit"] is None
    assert cfg["ifs"]["prompts"]["limit"] is None and cfg["ifs"]["objecqa"]["limit"] is None
    assert cfg["evolver"]["scenarios"]["auto_evol"]["evolvers"] is None
    assert cfg["evolver"]["selection"]["evolvers"] is None


def test_unknown_model_source_names_field_and_allowed(base_config):
    base_config["models"]["smollm2"]["source"] = "ftp"
    with pytest.raises(ConfigError) as err:
        validate_config(base_config)
    msg = str(err.value)
    assert "models.smollm2.source" in msg
    assert "'pypi_gguf'" in msg and "'hub'" in msg


def test_unknown_key_is_rejected(base_config):
    base_config["sft"]["learning_rat"] = 1e-4
    with pytest.raises(ConfigError, match=r"config\.sft: unknown key\(s\) \['learning_rat'\]"):
        validate_config(base_config)


def test_empty_generator_list(base_config):
    base_config["teacher"]["generators"] = []
    with pytest.raises(ConfigError, match=r"teacher\.generators: must not be empty"):
        validate_config(base_config)


def test_wrong_type(base_config):
    base_config["teacher"]["car"]["beta"] = "large"
    with pytest.raises(ConfigError, match=r"teacher\.car\.beta: expected number"):
        validate_config(base_config)


def test_dangling_model_reference(base_config):
    base_config["generators"]["smol_greedy"]["model"] = "gpt5"
    with pytest.raises(ConfigError, match=r"generators\.smol_greedy\.model: unknown model 'gpt5'"):
        validate_config(base_config)


def test_alias_with_slash_rejected(base_config):
    base_config["models"]["Qwen/Qwen2"] = {"source": "hub", "hf_id": "Qwen/Qwen2"}
    with pytest.raises(ConfigError, match="models"):
        validate_config(base_config)


def test_best_of_n_needs_samples(base_config):
    base_config["generators"]["smol_greedy"]["select"] = "best"
    with pytest.raises(ConfigError, match=r"select='best' needs n >= 2"):
        validate_config(base_config)


def test_duplicate_yaml_keys_rejected(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("models:\n  a: {source: random}\n  a: {source: hub}\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_yaml(p)


def test_non_utf8_config_rejected(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"seed: 1\nname: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_yaml(p)


def test_scenario_evolvers_must_be_configured_evolvers(base_config):
    base_config["evolver"]["scenarios"]["auto_evol"]["evolvers"] = ["gpt5"]
    with pytest.raises(ConfigError, match=r"evolver\.scenarios\.auto_evol\.evolvers: \['gpt5'\] not in"):
        validate_config(base_config)


def test_final_and_selected_needs_ifs_checkpoints(base_config):
    cfg = copy.deepcopy(base_config)
    cfg["eval"]["checkpoints"] = "final_and_selected"
    cfg["ifs"]["checkpoints"] = False
    with pytest.raises(ConfigError, match="config.eval.checkpoints: final_and_selected .* ifs.checkpoints"):
        validate_config(cfg)


@pytest.mark.parametrize(("which", "teacher_runs", "evolver_runs"),
                         [("all", True, True), ("teacher", True, False), ("evolver", False, True)])
def test_ifs_runs_chooses_the_runs_with_ifs_curves(base_config, which, teacher_runs, evolver_runs):
    """ifs.runs: which training runs get IFS curves (and so an evaluated IFS-selected checkpoint
    under eval.checkpoints final_and_selected); the others evaluate their final checkpoint only."""
    from teachfit.workflow.plan import build_plan

    cfg = copy.deepcopy(base_config)
    cfg["ifs"]["runs"] = which
    validate_config(cfg)
    plan = build_plan(cfg)
    evolved = set(plan.evolved_datasets())
    teacher = [r for r in plan.runs if r.dataset not in evolved]
    evolver = [r for r in plan.runs if r.dataset in evolved]
    assert teacher and evolver
    assert {plan.has_ifs_curve(r) for r in teacher} == {teacher_runs}
    assert {plan.has_ifs_curve(r) for r in evolver} == {evolver_runs}
    assert set(plan.ifs_runs()) == {r for r in plan.runs if plan.has_ifs_curve(r)}
