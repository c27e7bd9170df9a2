"""Bad input fuzz: every bad config or seed file ends in a clear error before any job
(``ConfigError`` / ``DataError`` naming the field or file) or in a counted drop.

Configs are the default config + ``tests/configs/tiny.yaml`` merged like Snakemake merges
``--configfile`` overlays (``merge``), or with one section replaced (``set``); then
``teachfit.workflow.config.validate_config`` (schema, non-finite numbers, cross-references, stage
settings). YAML files go through ``teachfit.schema.load_yaml``. Seed files go through
``teachfit.seeds.load_seeds_with_counts``.

Config cases (ConfigError; the message contains):

==========================  ========================================================  ===================================================================
case                        input                                                     message
==========================  ========================================================  ===================================================================
wrong_type_number           sft.learning_rate: high                                   config.sft.learning_rate: expected number, got str ('high')
wrong_type_bool_for_int     sft.max_steps: true                                       config.sft.max_steps: expected integer, got bool (True)
wrong_type_str_for_list     teacher.generators: t_greedy                              config.teacher.generators: expected array, got str ('t_greedy')
null_section                sft: null                                                 config.sft: expected object, got NoneType (None)
quoted_number               generators.t_greedy.temperature: '1.0'                    config.generators.t_greedy.temperature: expected number, got str
list_item_type              eval.tasks: [tf_ifeval, 3]                                config.eval.tasks.1: expected string, got int (3)
unknown_top_key             foo: 1                                                    config.<top level>: unknown key(s) ['foo']; allowed keys: analysis,
unknown_nested_key          generators.t_greedy.temprature: 0.5                       config.generators.t_greedy: unknown key(s) ['temprature']
enum                        teacher.reward.type: magic                                config.teacher.reward.type: 'magic' is not allowed; allowed values:
empty_list                  teacher.generators: []                                    config.teacher.generators: must not be empty
empty_models (set)          models: {}                                                config.models: must not be empty
empty_eval_tasks            eval.tasks: []                                            config.eval.tasks: must not be empty
missing_required            models.tiny_x: {arch: llama}                              config.models.tiny_x: 'source' is a required property
int_alias                   models: {123: ...}                                        config.models: expected string, got int (123)
bad_alias                   models: {'bad name': ...}                                 config.models: 'bad name' does not match
seedset_path_and_hub        seedsets.tiny: {path, hf_dataset}                         config.seedsets.tiny: set exactly one of ['path', 'hf_dataset']
below_minimum               generation.shard_size: 0                                  config.generation.shard_size: 0 is less than the minimum of 1
nan                         sft.learning_rate: .nan                                   config.sft.learning_rate: must be a finite number, got nan
inf                         teacher.car.beta: .inf                                    config.teacher.car.beta: must be a finite number, got inf
unknown_model_ref           generators.t_new.model: nobody                            config.generators.t_new.model: unknown model 'nobody'
unknown_generator_ref       teacher.generators: [t_greedy, t_gone]                    config.teacher.generators[1]: unknown generator 't_gone'
duplicate_list_entry        teacher.generators: [t_greedy, t_greedy]                  config.teacher.generators: duplicate generator names
wrong_model_kind            teacher.bases: [tiny_enc]                                 config.teacher.bases[0]: model 'tiny_enc' is kind 'encoder'
judge_is_encoder            teacher.reward.model: tiny_enc                            config.teacher.reward.model: model 'tiny_enc' is kind 'encoder'
greedy_n_samples            generators.t_x: {n: 3, temperature: 0}                    config.generators.t_x: n=3 samples with temperature 0
sft_max_steps_zero          sft.max_steps: 0                                          config.sft: sft.max_steps: must be -1 (use epochs) or > 0, got 0
sft_dropout_one             sft.lora.lora_dropout: 1.0                                config.sft.lora.lora_dropout: 1.0 is greater than or equal to the
sft_empty_target_modules    sft.lora.target_modules: []                               config.sft: sft.lora.target_modules: must be 'all-linear' or a non-
==========================  ========================================================  ===================================================================

YAML file cases (``load_yaml``; ConfigError naming the file):

==========================  ========================================================  ===================================================================
duplicate_model_name        models: {a: ..., a: ...}                                  <file>:3: duplicate key 'a' (first at line 2); names must be unique
duplicate_nested_key        sft: {learning_rate: 1, learning_rate: 2}                 <file>:1: duplicate key 'learning_rate'
non_utf8                    latin-1 byte 0xe9                                         <file>: not valid UTF-8 (byte 13)
syntax_error                models: [a                                                <file>: YAML syntax error: ... line 1
python_tag                  !!python/object:os.system                                 <file>: YAML syntax error: could not determine a constructor
tab_indent                  tab-indented mapping                                      <file>: YAML syntax error
==========================  ========================================================  ===================================================================

Seed file cases (DataError naming the file, or a counted drop):

==========================  ========================================================  ===================================================================
non_utf8                    JSONL with byte 0xe9                                      <file>: not valid UTF-8 text (byte 20)
dict_not_list               JSON {"instruction": ...}                                 <file>: expected a JSON list of objects
list_of_strings             JSON ["a", "b"]                                           <file>: expected a JSON list of objects
line_not_object             JSONL line [1, 2]                                         <file>:1: expected a JSON object, got list
truncated_jsonl             JSONL cut inside a string                                 <file>:2: malformed JSON line
empty_json                  empty .json                                               <file>: malformed JSON at line 1
empty_jsonl                 empty .jsonl                                              <file>: no usable instructions in field 'instruction'
missing_field               {"prompt": ...}                                           <file>: record 0 has no field 'instruction'
wrong_field_config          instruction_field=question, records have 'instruction'    <file>: record 0 has no field 'question'
number_instruction          {"instruction": 5}                                        <file>: record 0: field 'instruction' must be a string, got int
nan_instruction             [{"instruction": NaN}]                                    <file>: record 0: field 'instruction' must be a string, got float
list_instruction            {"instruction": ["a"]}                                    <file>: record 0: field 'instruction' must be a string, got list
dict_input                  {"input": {"x": 1}}                                       <file>: record 1: field 'input' must be a string, got dict
bool_output                 {"output": true}                                          <file>: record 0: field 'output' must be a string, got bool
lone_surrogate              JSON "\\ud800"                                             <file>: record 0: field 'instruction' is not valid Unicode text
unsupported_type            .csv                                                      <file>: unsupported file type '.csv'
corrupt_parquet             truncated .parquet                                        <file>: not a readable Parquet file (truncated or corrupt?)
int_column_parquet          Parquet instruction column of ints                        <file>: record 0: field 'instruction' must be a string, got int
null_instruction            {"instruction": null}                                     dropped, counted as empty
whitespace_instruction      {"instruction": "  \\n\\t"}                                 dropped, counted as empty
duplicate_instruction       the same instruction twice                                dropped, counted as duplicate
one_mb_instruction          a 1 MB instruction                                        dropped, counted as too_long (> teachfit.seeds.MAX_CHARS characters)
bom                         UTF-8 with a byte-order mark                              accepted (the BOM is dropped)
==========================  ========================================================  ===================================================================

Through Snakemake: a duplicate model name, a NaN learning rate and an encoder as judge model
make ``snakemake -n`` exit non-zero with the message in its output (Snakemake 9 prints parse
errors on stdout) before any job is planned; a bad
seed file makes the first job (``prepare_seeds``) fail with the DataError in its log.
Not fixable here: a non-UTF-8 ``--configfile`` is read by Snakemake itself before the
workflow's code runs, so it ends in Snakemake's own ``UnicodeDecodeError`` (no file name).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from workflow_utils import ROOT, copy_workflow, snakemake

from teachfit.schema import ConfigError, load_yaml

from teachfit.workflow.config import validate_config
from teachfit.io import DataError
from teachfit.seeds import MAX_CHARS, load_seeds_with_counts

# --------------------------------------------------------------------------- configs


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    from snakemake.utils import update_config

    cfg = load_yaml(ROOT / "config" / "config.yaml")
    update_config(cfg, load_yaml(ROOT / "tests" / "configs" / "tiny.yaml"))
    return cfg


def test_base_config_is_valid(base):
    validate_config(copy.deepcopy(base))


CONFIG_CASES = [
    ("wrong_type_number", "sft: {learning_rate: high}", "config.sft.learning_rate: expected number, got str ('high')"),
    ("wrong_type_bool_for_int", "sft: {max_steps: true}", "config.sft.max_steps: expected integer, got bool (True)"),
    ("wrong_type_str_for_list", "teacher: {generators: t_greedy}",
     "config.teacher.generators: expected array, got str ('t_greedy')"),
    ("null_section", "sft: null", "config.sft: expected object, got NoneType (None)"),
    ("quoted_number", "generators: {t_greedy: {model: tiny_inst, temperature: '1.0'}}",
     "config.generators.t_greedy.temperature: expected number, got str ('1.0')"),
    ("list_item_type", "eval: {tasks: [tf_ifeval, 3]}", "config.eval.tasks.1: expected string, got int (3)"),
    ("unknown_top_key", "foo: 1", "config.<top level>: unknown key(s) ['foo']; allowed keys: analysis,"),
    ("unknown_nested_key", "generators: {t_greedy: {temprature: 0.5}}",
     "config.generators.t_greedy: unknown key(s) ['temprature']; allowed keys:"),
    ("enum", "teacher: {reward: {type: magic}}",
     "config.teacher.reward.type: 'magic' is not allowed; allowed values: 'judge', 'classifier'"),
    ("empty_list", "teacher: {generators: []}", "config.teacher.generators: must not be empty"),
    ("empty_models", ("set", "models", {}), "config.models: must not be empty"),
    ("empty_eval_tasks", "eval: {tasks: []}", "config.eval.tasks: must not be empty"),
    ("missing_required", "models: {tiny_x: {arch: llama}}", "config.models.tiny_x: 'source' is a required property"),
    ("int_alias", "models: {123: {source: random}}", "config.models: expected string, got int (123)"),
    ("bad_alias", "models: {'bad name': {source: random}}", "config.models: 'bad name' does not match"),
    ("seedset_path_and_hub", "seedsets: {tiny: {hf_dataset: tatsu-lab/alpaca}}",
     "config.seedsets.tiny: set exactly one of ['path', 'hf_dataset']; got ['path', 'hf_dataset']"),
    ("below_minimum", "generation: {shard_size: 0}", "config.generation.shard_size: 0 is less than the minimum of 1"),
    ("nan", "sft: {learning_rate: .nan}", "config.sft.learning_rate: must be a finite number, got nan"),
    ("inf", "teacher: {car: {beta: .inf}}", "config.teacher.car.beta: must be a finite number, got inf"),
    ("unknown_model_ref", "generators: {t_new: {model: nobody}}",
     "config.generators.t_new.model: unknown model 'nobody'; defined models: gemma270m, minilm, smollm2, tiny_base,"),
    ("unknown_generator_ref", "teacher: {generators: [t_greedy, t_gone]}",
     "config.teacher.generators[1]: unknown generator 't_gone'"),
    ("duplicate_list_entry", "teacher: {generators: [t_greedy, t_greedy]}",
     "config.teacher.generators: duplicate generator names"),
    ("wrong_model_kind", "teacher: {bases: [tiny_enc]}",
     "config.teacher.bases[0]: model 'tiny_enc' is kind 'encoder'; need one of ['base', 'instruct']"),
    ("judge_is_encoder", "teacher: {reward: {model: tiny_enc}}",
     "config.teacher.reward.model: model 'tiny_enc' is kind 'encoder'; need one of ['instruct', 'base']"),
    ("greedy_n_samples", "generators: {t_x: {model: tiny_inst, n: 3}}",
     "config.generators.t_x: n=3 samples with temperature 0 would be identical"),
    ("sft_max_steps_zero", "sft: {max_steps: 0}", "config.sft: sft.max_steps: must be -1 (use epochs) or > 0, got 0"),
    ("sft_dropout_one", "sft: {lora: {lora_dropout: 1.0}}",
     "config.sft.lora.lora_dropout: 1.0 is greater than or equal to the maximum of 1"),
    ("sft_empty_target_modules", "sft: {lora: {target_modules: []}}",
     "config.sft: sft.lora.target_modules: must be 'all-linear' or a non-empty list"),
]


@pytest.mark.parametrize(("case", "change", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_a_config_error_naming_the_field(base, case, change, message):
    from snakemake.utils import update_config

    cfg = copy.deepcopy(base)
    if isinstance(change, tuple):
        _, key, value = change
        cfg[key] = value
    else:
        update_config(cfg, yaml.safe_load(change))
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)


YAML_CASES = [
    ("duplicate_model_name", b"models:\n  a: {source: random}\n  a: {source: hub}\n",
     ":3: duplicate key 'a' (first at line 2); names must be unique"),
    ("duplicate_nested_key", b"sft: {learning_rate: 1, learning_rate: 2}\n", ":1: duplicate key 'learning_rate'"),
    ("non_utf8", b"seed: 1\n# caf\xe9\n", ": not valid UTF-8 (byte 13)"),
    ("syntax_error", b"models: [a\n", ": YAML syntax error:"),
    ("python_tag", b"seed: !!python/object/apply:os.system [ls]\n",
     ": YAML syntax error: could not determine a constructor"),
    ("tab_indent", b"sft:\n\tlearning_rate: 1\n", ": YAML syntax error:"),
]


@pytest.mark.parametrize(("case", "content", "message"), YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_bad_yaml_file_is_a_config_error_naming_the_file(tmp_path, case, content, message):
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert f"{path}{message}" in str(err.value)


# --------------------------------------------------------------------------- seed files


def _jsonl(*records: Any) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def _parquet_bytes(tmp_path: Path, df: pl.DataFrame) -> bytes:
    p = tmp_path / "_src.parquet"
    df.write_parquet(p)
    data = p.read_bytes()
    p.unlink()
    return data


SEED_ERRORS = [
    ("non_utf8", "s.jsonl", b'{"instruction": "caf\xe9"}\n', "not valid UTF-8 text (byte 20)"),
    ("dict_not_list", "s.json", json.dumps({"instruction": "a"}).encode(), "expected a JSON list of objects"),
    ("list_of_strings", "s.json", b'["a", "b"]', "expected a JSON list of objects"),
    ("line_not_object", "s.jsonl", b"[1, 2]\n", ":1: expected a JSON object, got list"),
    ("truncated_jsonl", "s.jsonl", b'{"instruction": "a"}\n{"instruction": "b', ":2: malformed JSON line"),
    ("empty_json", "s.json", b"", "malformed JSON at line 1"),
    ("empty_jsonl", "s.jsonl", b"", "no usable instructions in field 'instruction' (0 records"),
    ("missing_field", "s.jsonl", _jsonl({"prompt": "a"}), "record 0 has no field 'instruction' (fields: ['prompt'])"),
    ("number_instruction", "s.jsonl", _jsonl({"instruction": 5}),
     "record 0: field 'instruction' must be a string, got int"),
    ("nan_instruction", "s.json", b'[{"instruction": NaN}]', "record 0: field 'instruction' must be a string, got float"),
    ("list_instruction", "s.jsonl", _jsonl({"instruction": ["a"]}),
     "record 0: field 'instruction' must be a string, got list"),
    ("dict_input", "s.jsonl", _jsonl({"instruction": "a"}, {"instruction": "b", "input": {"x": 1}}),
     "record 1: field 'input' must be a string, got dict"),
    ("bool_output", "s.jsonl", _jsonl({"instruction": "a", "output": True}),
     "record 0: field 'output' must be a string, got bool"),
    ("lone_surrogate", "s.json", b'[{"instruction": "bad \\ud800 text"}]',
     "record 0: field 'instruction' is not valid Unicode text (surrogates not allowed at character 4)"),
    ("unsupported_type", "s.csv", b"instruction\na\n", "unsupported file type '.csv'"),
    ("corrupt_parquet", "s.parquet", "truncated-parquet", "not a readable Parquet file (truncated or corrupt?)"),
    ("int_column_parquet", "s.parquet", "int-parquet", "record 0: field 'instruction' must be a string, got int"),
]


@pytest.mark.parametrize(("case", "name", "content", "message"), SEED_ERRORS, ids=[c[0] for c in SEED_ERRORS])
def test_bad_seed_file_is_a_data_error_naming_the_file(tmp_path, case, name, content, message):
    if content == "truncated-parquet":
        content = _parquet_bytes(tmp_path, pl.DataFrame({"instruction": ["a"] * 20}))[:60]
    elif content == "int-parquet":
        content = _parquet_bytes(tmp_path, pl.DataFrame({"instruction": [1, 2]}))
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_seeds_with_counts(path, "fz")
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_seed_instruction_field_that_no_record_has(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(_jsonl({"instruction": "a"}))
    with pytest.raises(DataError, match=r"record 0 has no field 'question' \(fields: \['instruction'\]\)"):
        load_seeds_with_counts(path, "fz", instruction_field="question")


SEED_DROPS = [
    ("null_instruction", [{"instruction": None}], {"empty": 1}),
    ("whitespace_instruction", [{"instruction": "  \n\t"}], {"empty": 1}),
    ("duplicate_instruction", [{"instruction": "same"}, {"instruction": "same"}], {"duplicate": 1}),
    ("duplicate_after_input", [{"instruction": "q", "input": "x"}, {"instruction": "q", "input": " x "}],
     {"duplicate": 1}),
    ("one_mb_instruction", [{"instruction": "x" * 1_000_000}], {"too_long": 1}),
]


@pytest.mark.parametrize(("case", "records", "dropped"), SEED_DROPS, ids=[c[0] for c in SEED_DROPS])
def test_bad_seed_record_is_dropped_and_counted(tmp_path, case, records, dropped):
    path = tmp_path / "s.jsonl"
    good = [{"instruction": "keep me"}]
    path.write_bytes(_jsonl(*good, *records))
    df, counts = load_seeds_with_counts(path, "fz")
    expected = {"read": 1 + len(records), "kept": 1 + len(records) - sum(dropped.values()),
                "empty": 0, "duplicate": 0, "over_limit": 0, "too_long": 0, "skipped": 0, **dropped}
    assert counts.as_dict() == expected
    assert df.height == expected["kept"]
    assert all(len(t) <= MAX_CHARS for t in df["instruction"].to_list())


def test_only_bad_records_is_an_error_with_the_counts(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(_jsonl({"instruction": None}, {"instruction": "y" * (MAX_CHARS + 1)}))
    with pytest.raises(DataError, match=r"no usable instructions .*1 empty, 0 duplicate, 1 longer than 32000"):
        load_seeds_with_counts(path, "fz")


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl({"instruction": "a"}))
    df, counts = load_seeds_with_counts(path, "fz")
    assert df["instruction"].to_list() == ["a"] and counts.kept == 1


# --------------------------------------------------------------------------- through Snakemake


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("fuzz_wf"))


SNAKEMAKE_CASES = [
    ("duplicate_model_name",
     "models:\n  tiny_inst: {source: random}\n  tiny_inst: {source: random, arch: gemma3}\n",
     "bad.yaml:3: duplicate key 'tiny_inst' (first at line 2); names must be unique"),
    ("nan_learning_rate", "sft: {learning_rate: .nan}\n", "config.sft.learning_rate: must be a finite number, got nan"),
    ("judge_is_encoder", "teacher: {reward: {model: tiny_enc}}\n",
     "config.teacher.reward.model: model 'tiny_enc' is kind 'encoder'"),
]


@pytest.mark.parametrize(("case", "overlay", "message"), SNAKEMAKE_CASES, ids=[c[0] for c in SNAKEMAKE_CASES])
def test_bad_config_stops_snakemake_before_any_job(wf, tmp_path, case, overlay, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay)
    proc = snakemake(wf, "-n", "--configfile", "tests/configs/tiny.yaml", str(bad), check=False, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr  # snakemake 9 prints parse errors on stdout
    assert "Job stats" not in proc.stdout + proc.stderr
    assert not (wf / "results").exists()


def test_bad_seed_file_fails_the_first_job_with_the_file_named(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    seeds = tmp_path / "bad_seeds.jsonl"
    seeds.write_bytes(_jsonl({"instruction": "fine"}, {"instruction": 42}))
    overlay = tmp_path / "bad_seeds.yaml"
    overlay.write_text(f"seedsets: {{tiny: {{path: {seeds}}}}}\n")
    proc = snakemake(wf, "results/instructions/tiny.parquet", "--configfile", "tests/configs/tiny.yaml",
                     str(overlay), check=False, timeout=300)
    assert proc.returncode != 0
    assert "Error in rule prepare_seeds" in proc.stdout + proc.stderr
    log = (wf / "results" / "logs" / "prepare_seeds" / "tiny.log").read_text()
    assert f"DataError: {seeds}: record 1: field 'instruction' must be a string, got int" in log
    assert not (wf / "results" / "instructions" / "tiny.parquet").exists()
