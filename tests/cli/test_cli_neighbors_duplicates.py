"""`embedflow neighbors`, `duplicates` and `fit --head knn` end to end on a synthetic folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..conftest import make_dataset, make_image


def test_cli_neighbors_of_images_keys_and_a_sheet(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    query = data / "limes" / "limes_000.jpg"
    out = json.loads(cli("neighbors", query, "--k", "4", "--json").stdout)
    [res] = out["results"]
    keys = [n["key"] for n in res["neighbors"]]
    assert len(keys) == 4 and "limes/limes_000.jpg" not in keys  # read from the cache, not its own neighbour
    assert [n["label"] for n in res["neighbors"]].count("limes") >= 3
    assert all(a["score"] >= b["score"] for a, b in zip(res["neighbors"], res["neighbors"][1:]))
    by_key = json.loads(cli("neighbors", "--key", "limes/limes_000.jpg", "--k", "4", "--json").stdout)
    assert by_key["results"][0]["neighbors"] == res["neighbors"]
    new = make_image(tmp_path / "new" / "plum.png", (90, 50, 160), seed=999)  # not in the cache: embedded now
    text = cli("neighbors", new, "--k", "3", "--sheet", "sheet.png").stdout
    assert text.splitlines()[0] == str(new) and text.count("plums") >= 2
    assert Path("sheet.png").read_bytes()[:4] == b"\x89PNG"
    r = cli("neighbors", "--key", "limes/nope.jpg", expect=2)
    assert "no image with key 'limes/nope.jpg'" in r.stderr and "\n" not in r.stderr.strip()


def test_cli_duplicates_flags_a_copy_filed_under_another_class(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=5)
    shutil.copy(data / "apples" / "apples_001.png", data / "plums" / "copied.png")
    cli("embed", data, "--quiet")
    out = json.loads(cli("duplicates", "--json").stdout)
    flagged = [g for g in out["groups"] if g["cross_class"]]
    assert len(flagged) == 1 and flagged[0]["min_score"] == 1.0
    assert {m["key"] for m in flagged[0]["members"]} == {"apples/apples_001.png", "plums/copied.png"}
    assert "CROSS-CLASS group of 2" in cli("duplicates").stdout


def test_cli_index_follows_embed(cli, tmp_path):
    pytest.importorskip("faiss")
    data = make_dataset(tmp_path / "data", per_class=5)
    cli("embed", data, "--quiet")
    cli("neighbors", "--key", "apples/apples_000.jpg", "--index", "--quiet")
    sidecar = Path("cache/embeddings.h5.faiss.json")
    assert json.loads(sidecar.read_text())["count"] == 15
    copy = data / "limes" / "twin.png"
    shutil.copy(data / "apples" / "apples_001.png", copy)
    cli("embed", data, "--quiet")
    out = json.loads(cli("neighbors", "--key", "apples/apples_001.png", "--index", "--k", "1", "--include-self",
                         "--json").stdout)
    assert json.loads(sidecar.read_text())["count"] == 16
    assert out["method"] == "index" and out["results"][0]["neighbors"][0]["score"] == 1.0


def test_cli_fit_knn_head(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    cli("embed", data, "--quiet")
    out = json.loads(cli("fit", "--head", "knn", "--k", "3", "--json").stdout)
    manifest = json.loads((Path(out["model_dir"]) / "manifest.json").read_text())
    assert out["model_dir"] == str(Path("models/knn")) and manifest["head"] == "knn"
    assert manifest["hyperparameters"]["k"] == 3 and manifest["head_file"] == "head.joblib"
    assert out["report"]["accuracy"] >= 0.8
    pred = json.loads(cli("predict", "models/knn", data / "plums" / "plums_005.JPEG", "--json").stdout)
    assert pred["predictions"][0]["top"][0]["label"] == "plums"
