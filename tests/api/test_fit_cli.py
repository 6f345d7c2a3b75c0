"""fit through the CLI on the in-memory API: a parameter the head does not take is one line and exit 2;
the typed results of evaluate and predict are exactly the CLI's JSON and files."""

from __future__ import annotations

import json

from ..conftest import make_dataset


def test_a_head_parameter_it_does_not_take_is_one_line_and_exit_2(cli, tmp_path):
    cli("embed", make_dataset(tmp_path / "data", per_class=6), "--quiet")
    for args, wrong in ((["--head", "svm", "--epochs", "5"], "'epochs'"), (["--head", "dense", "--C", "1"], "'C'"),
                        (["--head", "logreg", "--k", "3"], "'k'")):
        r = cli("fit", *args, expect=2)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "takes no parameter" in lines[0] and wrong in lines[0], r.stderr
        assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "models").exists()


def test_typed_results_are_the_cli_json_and_files(cli, tmp_path):
    from embedflow import evaluate, load_model, predict

    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    cli("fit", "--head", "logreg", "--quiet")
    on_cli = json.loads(cli("evaluate", "models/logreg", data, "--json").stdout)
    written = json.loads((tmp_path / "models" / "logreg" / "eval-report.json").read_text())
    assert on_cli == written
    model = load_model("models/logreg")
    result = evaluate(model, data)
    assert result.to_dict() == {**on_cli, "model": "models/logreg"}
    assert result.to_dict()["model"] == str(model.path)
    image = str(data / "apples" / "apples_000.jpg")
    assert predict("models/logreg", [image], top_k=2).to_dict() == json.loads(
        cli("predict", "models/logreg", image, "--top-k", "2", "--json").stdout)


def test_fit_says_the_training_time_apart_from_the_report_page(cli, tmp_path):
    """At 100 classes report.html's audit (5 out-of-fold logistic regressions) and map took two thirds of
    `fit`'s wall time: the line says both, the JSON has fit_seconds (the manifest's) and seconds."""
    import re

    cli("embed", make_dataset(tmp_path / "data", per_class=6), "--quiet")
    text = cli("fit", "--head", "logreg", "--out", "models/a").stdout
    m = re.search(r"\(logreg, \d+ train / \d+ validation, trained in ([0-9.]+)s, ([0-9.]+)s in all with report\.html\)",
                  text)
    assert m and float(m.group(1)) <= float(m.group(2)), text
    out = json.loads(cli("fit", "--head", "logreg", "--out", "models/b", "--json").stdout)
    manifest = json.loads((tmp_path / "models" / "b" / "manifest.json").read_text())
    assert out["fit_seconds"] == manifest["fit_seconds"] and 0 < out["fit_seconds"] <= out["seconds"]
