"""teachfit.workflow.paths: the one path grammar that rules, input functions and targets share."""

import inspect
import re

import pytest
from snakemake.io import regex_from_filepattern

from teachfit.workflow import paths
from teachfit.workflow.plan import Run

ARTIFACTS = [name for name, _ in paths.grammar()]


def _values(fn, value=lambda p: f"v_{p}"):
    return [value(p.name) for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]


@pytest.mark.parametrize("name", ARTIFACTS)
def test_pattern_parses_back_what_the_function_builds(name):
    """A rule's pattern (the function on wildcard placeholders) matches the concrete path an input
    function or a target builds with the same function, and Snakemake reads the same values back."""
    fn = getattr(paths, name)
    pattern = fn(*_values(fn, lambda p: f"{{{p}}}"))
    concrete = fn(*_values(fn))
    match = re.match(regex_from_filepattern(pattern), concrete)
    assert match, (pattern, concrete)
    assert match.groupdict() == {p: f"v_{p}" for p in re.findall(r"{(\w+)}", pattern)}


@pytest.mark.parametrize("name", ARTIFACTS)
def test_every_path_is_results_stage_then_wildcard_dirs(name):
    fn = getattr(paths, name)
    path = fn(*_values(fn))
    stage, *rest = path.split("/")[1:]
    assert path.startswith("results/") and rest, path
    assert re.fullmatch(r"[a-z_]+", stage), path
    assert "//" not in path and not path.endswith("/")


def test_run_stem_is_the_runs_path_and_its_pattern():
    run = Run("d", "g", "s", "b")
    assert run.path == paths.run_stem("d", "g", "s", "b")
    assert re.match(regex_from_filepattern(paths.sft(paths.RUN)), paths.sft(run.path)).groupdict() == {
        "dataset": "d", "generator": "g", "selection": "s", "base": "b"}


def test_sibling_suffixes_share_the_stem():
    run = paths.run_stem("d", "g", "s", "b")
    assert paths.winrate("bm", run, ".answers.parquet").removesuffix(".answers.parquet") == \
        paths.winrate("bm", run, ".json").removesuffix(".json")
    assert paths.evolved_round("s", "e", "sc", 2, ".drops.json") == \
        paths.evolved_round("s", "e", "sc", 2).removesuffix(".parquet") + ".drops.json"
    assert paths.ifs_answers(paths.ifs_run_target(run)).startswith("results/ifs/answers/runs/")
    assert paths.ifs_scores(paths.ifs_model_target("m")) == "results/ifs/scores/models/m.parquet"


def test_grammar_covers_every_artifact_function():
    skip = {"grammar", "run_stem", "ifs_model_target", "ifs_run_target"}
    public = [n for n, f in vars(paths).items()
              if inspect.isfunction(f) and f.__module__ == paths.__name__ and not n.startswith("_")]
    assert sorted(ARTIFACTS) == sorted(set(public) - skip)
    assert len({p for _, p in paths.grammar()}) == len(ARTIFACTS)  # no two artifacts share a pattern


def test_snakefile_comment_and_docs_list_the_grammar(repo_root):
    """The Snakefile's top comment and docs/dag.md show every pattern of :func:`paths.grammar`."""
    header = (repo_root / "Snakefile").read_text().split("\n\n")[0]
    listed = set(re.findall(r"^#   (results/\S+)", header, flags=re.M))
    expected = {p for _, p in paths.grammar()}
    assert listed == expected, (listed ^ expected)
    docs = (repo_root / "docs" / "dag.md").read_text()
    for name, pattern in paths.grammar():
        assert re.search(rf"`{re.escape(name)}\(.*`{re.escape(pattern)}`", docs), (name, pattern)
