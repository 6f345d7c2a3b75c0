"""--precision int8: a full-integer LiteRT backbone with its own fingerprint (precision + calibration set),
converted once under EMBEDFLOW_HOME, never mixed with fp32 vectors; fp32 keeps today's fingerprint."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedflow import api, backbones, cache
from embedflow.backbones.calibration import CALIBRATION_NAME, calibration_id, calibration_images
from embedflow.errors import FingerprintMismatch, UsageError
from tests.conftest import SIZE, interrupting_factory

DEFAULT_SHA = "ae4e50beb0eca359853b053c48fbcf2401902451edfa03c0561853ed0d64228d"  # the ImageNet no-top file


def test_fp32_keeps_todays_id_and_int8_gets_its_own(monkeypatch):
    fingerprints = importlib.import_module("embedflow.backbones.fingerprint")
    monkeypatch.setattr(fingerprints, "weights_digest", lambda spec, path=None: DEFAULT_SHA)
    fp32 = backbones.fingerprint(backbones.get_spec("mobilenet_v2"))
    assert fp32["id"] == "249c58134fc94b4e"  # the default id before --precision existed (caches keep working)
    assert "precision" not in fp32 and backbones.get_spec("mobilenet_v2", precision="fp32") == backbones.get_spec()
    int8 = backbones.fingerprint(backbones.get_spec("mobilenet_v2", precision="int8"))
    assert int8["precision"] == "int8" and int8["calibration"] == calibration_id()
    assert int8["calibration"].startswith(CALIBRATION_NAME)
    assert int8["id"] != fp32["id"] and not backbones.same_backbone(int8, fp32)
    with pytest.raises(FingerprintMismatch, match=r"differs in: precision, calibration"):
        backbones.check_compatible(fp32, int8, "cache c.h5")
    assert backbones.spec_from_fingerprint(int8).precision == "int8"
    other_calibration = {**int8, "calibration": CALIBRATION_NAME + ":128:000000000000"}
    other_calibration["id"] = backbones.fingerprint_id(other_calibration)
    assert other_calibration["id"] != int8["id"]  # the calibration set is part of the identity


def test_precisions_are_case_insensitive():
    assert backbones.get_spec("mobilenet_v2", precision="INT8") == backbones.get_spec("mobilenet_v2", precision="int8")
    assert backbones.get_spec("mobilenet_v2", precision="FP32") == backbones.get_spec()


def test_bad_precisions_are_refused():
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        backbones.get_spec(precision="int4")
    with pytest.raises(UsageError, match="Keras application backbones only"):
        backbones.get_spec("hub:/nowhere", precision="int8")


def test_the_calibration_set_is_fixed_and_deterministic():
    a, b = calibration_images(SIZE, n=6), calibration_images(SIZE, n=6)
    assert a.shape == (6, SIZE, SIZE, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0 and a.max() == 255  # spans the uint8 range: the input quantization is the identity
    assert len({x.tobytes() for x in a}) == 6


def test_embed_int8_converts_once_keeps_its_own_cache_and_refuses_fp32_mixing(cli, dataset, weights_file,
                                                                             embedflow_home):
    cli("embed", dataset, "--cache", "c8.h5", "--precision", "int8")
    held8 = cache.load("c8.h5")
    assert held8.fingerprint["precision"] == "int8" and len(held8) == 18
    files = sorted((embedflow_home / "backbones").glob(f"*-{held8.fingerprint['id']}-int8-*.tflite"))
    assert len(files) == 1 and not list((embedflow_home / "backbones").glob(".*.tmp"))
    stamp = files[0].stat().st_mtime_ns
    cli("embed", dataset, "--cache", "c32.h5")
    held32 = cache.load("c32.h5")
    assert "precision" not in held32.fingerprint
    cos = (held8.embeddings * held32.embeddings).sum(1) / (
        np.linalg.norm(held8.embeddings, axis=1) * np.linalg.norm(held32.embeddings, axis=1))
    assert held8.keys == held32.keys and cos.mean() > 0.9, cos  # close to fp32, not equal to it
    assert not np.allclose(held8.embeddings, held32.embeddings)
    # mixing is refused with one line; a rerun without --precision follows the cache's precision
    result = cli("embed", dataset, "--cache", "c8.h5", "--precision", "fp32", expect=None)
    assert result.exit_code != 0 and "differs in: precision, calibration" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    cli("embed", dataset, "--cache", "c8.h5")
    cli("embed", dataset, "--cache", "c8.h5", "--precision", "INT8")  # any case: the same precision
    assert files[0].stat().st_mtime_ns == stamp  # converted once, reused
    with h5py.File("c8.h5") as f:
        assert f["embeddings"].shape == (18, held8.embeddings.shape[1])


def test_an_int8_model_predicts_with_int8_vectors(cli, dataset, weights_file):
    cli("embed", dataset, "--cache", "c8.h5", "--precision", "int8")
    cli("fit", "--cache", "c8.h5", "--head", "logreg", "--out", "m8")
    model = api.load_model("m8")
    assert model.fingerprint["precision"] == "int8"
    img = sorted(dataset.rglob("*.jpg"))[0]
    held = cache.load("c8.h5")
    row = held.keys.index(img.relative_to(dataset).as_posix())
    got = model.backbone_embedder()(np.stack([api_pixels(img)]))
    np.testing.assert_allclose(got[0], held.embeddings[row], rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match="LiteRT only"):
        backbones.make_embedder(backbones.spec_from_fingerprint(model.fingerprint), model.fingerprint, runtime="keras")
    # its export fuses the float32 backbone: said once on stderr and recorded in the export's manifest
    r = cli("export", "m8", "--out", "m8-tflite")
    assert "trained on int8 vectors; the export fuses the float32 backbone" in r.stderr, r.stderr
    exported = json.loads((Path("m8-tflite") / "manifest.json").read_text())
    assert exported["backbone_precision"] == {"fused": "fp32", "head_trained_on": "int8",
                                              "head_fingerprint_id": model.fingerprint["id"]}
    assert "precision" not in exported["fingerprint"] and "quantization" not in exported["fingerprint"]
    assert "int8" not in (Path("m8-tflite") / "README.md").read_text().split("## ")[0]  # the card's front part


def api_pixels(path):
    from embedflow.data import load_image

    return load_image(path, SIZE)


def test_the_embedder_takes_a_precision(weights_file, dataset):
    from embedflow import Embedder

    paths = [str(p) for p in sorted(dataset.rglob("*.jpg"))[:3]]
    e8 = Embedder(image_size=SIZE, weights=str(weights_file), precision="int8").fit(paths)
    e32 = Embedder(image_size=SIZE, weights=str(weights_file)).fit(paths)
    assert e8.fingerprint_["precision"] == "int8" and e8.fingerprint_["id"] != e32.fingerprint_["id"]
    v8, v32 = e8.transform(paths), e32.transform(paths)
    assert v8.shape == v32.shape and not np.allclose(v8, v32)


def test_evaluate_and_report_of_a_folder_keep_one_default_cache_per_backbone(cli, dataset, weights_file):
    """An fp32 and an int8 model evaluated on the same folder without --cache each get their own default
    cache (cache/NAME-HASH-ID.h5, ID from the backbone fingerprint): neither refuses the other's."""
    from embedflow.errors import FingerprintMismatch

    cli("embed", dataset, "--cache", "c8.h5", "--precision", "int8")
    cli("embed", dataset, "--cache", "c32.h5")
    cli("fit", "--cache", "c8.h5", "--head", "logreg", "--out", "m8")
    cli("fit", "--cache", "c32.h5", "--head", "logreg", "--out", "m32")
    cli("evaluate", "m32", dataset, "--quiet")
    cli("evaluate", "m8", dataset, "--quiet")
    cli("report", "m8", "--data", dataset, "--quiet")
    made = sorted(p.name for p in Path("cache").glob(f"{dataset.name}-*.h5"))
    assert len(made) == 2, made
    ids = {cache.read_meta(Path("cache") / name)["fingerprint"]["id"]: name for name in made}
    assert set(ids) == {api.load_model("m8").fingerprint["id"], api.load_model("m32").fingerprint["id"]}
    for fp_id, name in ids.items():
        assert name.endswith(f"-{fp_id[:8]}.h5")
    # a cache of the other backbone given on purpose: one line naming --cache, the only option evaluate has
    r = cli("evaluate", "m8", dataset, "--cache", Path("cache") / ids[api.load_model("m32").fingerprint["id"]],
            expect=FingerprintMismatch.exit_code)
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "--cache" in lines[0] and "--rebuild" not in lines[0], r.stderr


def test_an_interrupted_int8_embed_resumes_as_int8_and_another_explicit_precision_is_refused(
        cli, dataset, weights_file, monkeypatch):
    """The journal records the precision: the same command without --precision resumes int8 (reusing the
    committed vectors); --precision fp32 on that journal is one line, exit 3 (a fingerprint mismatch)."""
    import embedflow.embedding.incremental as E
    from embedflow.embedding import embed_folder
    from embedflow.errors import Interrupted

    spec8 = backbones.get_spec("mobilenet_v2", SIZE, str(weights_file), "int8")
    monkeypatch.setattr(E, "COMMIT_ROWS", 4)  # commit after every batch
    with pytest.raises(Interrupted):
        embed_folder(dataset, Path("c8.h5"), spec=spec8, batch_size=4, workers=1,
                     embedder_factory=interrupting_factory(3))
    assert not Path("c8.h5").exists()
    journal = cache.Journal(Path("c8.h5"), backbones.fingerprint(spec8)["id"])
    assert len(journal.vectors_by_hash()) == 8
    r = cli("embed", dataset, "--cache", "c8.h5", "--precision", "fp32", expect=FingerprintMismatch.exit_code)
    assert len(r.stderr.strip().splitlines()) == 1 and "int8" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(journal.vectors_by_hash()) == 8  # nothing discarded
    r = cli("embed", dataset, "--cache", "c8.h5", "--json")
    assert cache.load("c8.h5").fingerprint["precision"] == "int8"
    import json

    summary = json.loads(r.stdout)
    assert (summary["resumed"], summary["reused"], summary["embedded"]) == (8, 0, 10), summary
    assert not journal.dir.exists()


def test_the_throughput_benchmark_never_overwrites_the_fp32_result_by_default():
    """benchmarks/embed_throughput.py measures fp32 and int8 in one run: its default output is a new
    embed_throughput-int8-<UTC time>.json, never the fp32-era embed_throughput.json the README cites."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("embed_throughput", ROOT / "benchmarks" / "embed_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.default_out()
    assert out.parent == ROOT / "benchmarks" / "results" and out.name != "embed_throughput.json"
    assert out.name.startswith("embed_throughput-int8-") and out.suffix == ".json" and not out.exists()


def test_predict_says_when_the_cache_it_was_given_is_of_another_backbone(cli, dataset, weights_file):
    """predict --cache C with C of another fingerprint (here fp32 for an int8 model): one warning naming what
    differs, then the images are embedded with the model's own backbone (the predictions are unchanged)."""
    cli("embed", dataset, "--cache", "c8.h5", "--precision", "int8")
    cli("embed", dataset, "--cache", "c32.h5")
    cli("fit", "--cache", "c8.h5", "--head", "logreg", "--out", "m8", "--quiet")
    img = sorted(dataset.rglob("*.jpg"))[0]
    same = cli("predict", "m8", img, "--cache", "c8.h5", "--json")
    assert "warning" not in same.stderr, same.stderr
    other = cli("predict", "m8", img, "--cache", "c32.h5", "--json")
    warnings = [line for line in other.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "c32.h5" in warnings[0] and "precision" in warnings[0], other.stderr
    assert "embedded" in warnings[0] or "embedding" in warnings[0], warnings[0]
    assert json.loads(other.stdout)["predictions"] == json.loads(same.stdout)["predictions"]
    missing = cli("predict", "m8", img, "--cache", "nowhere.h5", "--json")
    assert len([line for line in missing.stderr.splitlines() if "nowhere.h5" in line]) == 1, missing.stderr


def test_embed_json_and_summary_carry_the_precision(cli, dataset):
    out8 = json.loads(cli("embed", dataset, "--cache", "c8.h5", "--precision", "int8", "--json").stdout)
    out32 = json.loads(cli("embed", dataset, "--cache", "c32.h5", "--json").stdout)
    assert (out8["precision"], out32["precision"]) == ("int8", "fp32")
    again = json.loads(cli("embed", dataset, "--cache", "c8.h5", "--json").stdout)  # kept from the cache
    assert again["precision"] == "int8"


def test_int8_has_its_own_default_cache_and_commands_find_it(cli, dataset, weights_file):
    """Without --cache: fp32 writes cache/embeddings.h5, int8 cache/embeddings-int8.h5 (each backbone's
    default name plus -int8); predict of an int8 model finds the int8 one, fit/info take the fp32 default."""
    r8 = json.loads(cli("embed", dataset, "--precision", "int8", "--json").stdout)
    assert r8["cache_path"] == str(Path("cache") / "embeddings-int8.h5") and not Path("cache/embeddings.h5").exists()
    assert json.loads(cli("info", "--json").stdout)["fingerprint"]["precision"] == "int8"  # the only cache
    r32 = json.loads(cli("embed", dataset, "--json").stdout)
    assert r32["cache_path"] == str(Path("cache") / "embeddings.h5") and r32["precision"] == "fp32"
    again = json.loads(cli("embed", dataset, "--precision", "int8", "--json").stdout)
    assert again["embedded"] == 0 and again["kept"] == 18  # the same int8 cache, not a mix with fp32
    cli("fit", "--cache", "cache/embeddings-int8.h5", "--head", "logreg", "--out", "m8", "--quiet")
    assert api.predict("m8", [str(sorted(dataset.rglob("*.jpg"))[0])], reporter=None).predictions
    assert api._cache_for_model(api.load_model("m8")) == Path("cache/embeddings-int8.h5")
    spec = backbones.get_spec("efficientnet_b0", precision="int8")
    assert api.default_cache_for(spec) == Path("cache/embeddings-efficientnet_b0-int8.h5")
    assert api.default_cache_for(backbones.get_spec()) == Path("cache/embeddings.h5")


def test_vectors_resumed_from_a_journal_are_counted_as_resumed(cli, dataset, weights_file, monkeypatch):
    import embedflow.embedding.incremental as E
    from embedflow.embedding import embed_folder
    from embedflow.errors import Interrupted

    spec = backbones.get_spec("mobilenet_v2", SIZE, str(weights_file))
    monkeypatch.setattr(E, "COMMIT_ROWS", 4)
    with pytest.raises(Interrupted):
        embed_folder(dataset, Path("c.h5"), spec=spec, batch_size=4, workers=1, embedder_factory=interrupting_factory(3))
    text = cli("embed", dataset, "--cache", "c.h5").stdout
    assert "embedded 10, kept 0, reused 0, resumed 8, removed 0" in text, text
    cli("embed", dataset, "--cache", "c.h5", "--rebuild", "--quiet")
    summary = json.loads(cli("embed", dataset, "--cache", "c.h5", "--json").stdout)
    assert (summary["resumed"], summary["reused"], summary["kept"]) == (0, 0, 18)


def test_the_first_run_says_the_conversion_time_apart_from_the_embedding_rate(cli, dataset, tmp_path, monkeypatch):
    """The one-time conversion is not counted in the rate: `in Xs, Ys of it converting the backbone once (N
    img/s embedding)`; --json has conversion_seconds (0 once the converted file is kept)."""
    import re

    monkeypatch.setenv("EMBEDFLOW_HOME", str(tmp_path / "fresh-home"))
    text = cli("embed", dataset, "--cache", "c8.h5", "--precision", "int8").stdout
    found = re.search(r"in ([\d.]+)s, ([\d.]+)s of it converting the backbone once \((\d+) img/s embedding\)", text)
    assert found and "img/s overall" not in text, text
    total, conversion, rate = float(found[1]), float(found[2]), int(found[3])
    # shown to 0.1 s: 18 tiny images can embed in under 0.05 s, so the two may print equal
    assert 0 < conversion <= total and rate > 0
    if total - conversion >= 1:
        assert rate == pytest.approx(18 / (total - conversion), rel=0.5)
    again = json.loads(cli("embed", dataset, "--cache", "c8b.h5", "--precision", "int8", "--json").stdout)
    assert again["conversion_seconds"] == 0 and again["embedded"] == 18


def test_a_refused_runtime_leaves_no_cache_folder_and_no_lock(cli, dataset, tmp_path):
    """A fresh tester's `embed --precision int8 --runtime keras` was refused (exit 2) after it had made
    cache/ and cache/embeddings-int8.h5.lock: the runtime is checked before anything is written."""
    r = cli("embed", dataset, "--precision", "int8", "--runtime", "keras", expect=2)
    assert "LiteRT only" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "cache").exists()
