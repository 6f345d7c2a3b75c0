"""The numbers README.md (and docs/performance.md's tables) state are those of the committed result files
and tests they name: benchmarks/check_readme.py, run here as CI runs it, and shown to catch a change."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from .conftest import ROOT


def checker():
    spec = importlib.util.spec_from_file_location("check_readme", ROOT / "benchmarks" / "check_readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def docs(module) -> dict[str, str]:
    names = {claim.doc for claim in module.CLAIMS} | {"README.md"}  # every document a claim is about
    return {name: module.normalise((ROOT / name).read_text()) for name in names}


def test_every_readme_number_matches_its_result_file():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_readme.py")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0 problem(s)" in done.stdout


def test_a_number_edited_in_the_readme_is_caught():
    module = checker()
    text = docs(module)
    assert module.check(text) == []
    edited = {**text, "README.md": text["README.md"].replace("88.3% mean over six", "90.6% mean over six")}
    assert any("passage not found" in p and "88.3%" in p for p in module.check(edited))


def test_a_result_file_that_disagrees_is_caught():
    module = checker()
    text = docs(module)
    claim = next(c for c in module.CLAIMS if "88.3%" in c.values)
    wrong = module.Claim(claim.doc, claim.text, claim.source, {"88.3%": lambda: "87.0%"})
    assert module.check(text, [wrong]) == [f"README.md: '{claim.text[:60]}': says '88.3%', {claim.source} gives '87.0%'"]


def test_a_new_unbacked_number_is_caught():
    module = checker()
    text = docs(module)
    added = {**text, "README.md": text["README.md"] + "\nEmbedding 10,000 images takes 95 s.\n"}
    assert [p for p in module.check(added) if "'95 s' has no claim" in p]


def test_a_claim_whose_source_is_not_named_beside_it_is_caught():
    module = checker()
    text = docs(module)
    claim = next(c for c in module.CLAIMS if c.text.startswith("9 pairs score above it"))
    hidden = {**text, "README.md": text["README.md"].replace("flowers-dev (`benchmarks/results/readme_numbers.json`): 9 pairs",
                                                               "flowers-dev: 9 pairs")}
    assert any("is not named next to it" in p for p in module.check(hidden, [claim]))
