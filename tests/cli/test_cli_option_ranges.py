"""Every numeric option is range-checked in one place (embedflow.options): a value outside its range is
exit 2 and one line naming the option and the range, before any work, from the CLI and the API alike."""

from __future__ import annotations

import math

import pytest

from embedflow import api
from embedflow.errors import UsageError

HUGE_INT = str(10**30)
FLOAT_BAD = ["0", "-1", "nan", "inf", "-inf", "1e300"]  # for options that must be finite and > 0
FRACTION_BAD = ["-0.1", "1", "nan", "inf", "5"]  # for options in [0, 1)

# (command and its arguments, option, bad values); values of the option's type (Typer rejects the others)
CASES = [
    (["fit"], "--C", FLOAT_BAD),
    (["fit"], "--seed", ["-1", str(2**32), HUGE_INT]),
    (["fit"], "--val-split", ["-0.1", "1", "nan", "inf"]),
    (["fit"], "--reject-rate", ["-0.1", "1", "nan", "inf"]),
    (["fit", "--head", "dense"], "--epochs", ["0", "-1", HUGE_INT]),
    (["fit", "--head", "knn"], "--k", ["0", "-1", HUGE_INT]),
    (["embed", "data"], "--batch-size", ["0", "-1", "1000000000"]),
    (["embed", "data"], "--workers", ["0", "-1", "1000000"]),
    (["embed", "data", "--engine", "ray"], "--workers", ["0", "-1", HUGE_INT]),
    (["finetune", "data"], "--epochs", ["-1", HUGE_INT]),
    (["finetune", "data"], "--fine-tune-epochs", ["-1", HUGE_INT]),
    (["finetune", "data"], "--unfreeze-top", ["-1", HUGE_INT]),
    (["finetune", "data"], "--learning-rate", FLOAT_BAD),
    (["finetune", "data"], "--fine-tune-learning-rate", FLOAT_BAD),
    (["finetune", "data"], "--label-smoothing", FRACTION_BAD),
    (["finetune", "data"], "--dropout", FRACTION_BAD),
    (["finetune", "data"], "--batch-size", ["0", "-1", "1000000000"]),
    (["finetune", "data"], "--average-from", ["-1", HUGE_INT]),
    (["finetune", "data"], "--patience", ["-1", HUGE_INT]),
    (["finetune", "data"], "--rotation", ["-0.1", "nan", "inf", "5"]),
    (["finetune", "data"], "--zoom", FRACTION_BAD),
    (["finetune", "data"], "--val-split", ["-0.1", "1", "nan", "inf"]),
    (["finetune", "data"], "--seed", ["-1", HUGE_INT]),
    (["predict", "models/none", "x.jpg"], "--top-k", ["0", "-1", HUGE_INT]),
    (["neighbors", "--key", "a/b.jpg"], "--k", ["0", "-1", HUGE_INT]),
    (["duplicates"], "--threshold", ["0", "-1", "nan", "inf", "1.5"]),
    (["audit"], "--top", ["-1", HUGE_INT]),
]


@pytest.mark.parametrize("command,option,bad", [pytest.param(c, o, b, id=f"{c[0]}{'-' + c[-1] if len(c) > 2 else ''}{o}")
                                                for c, o, b in CASES])
def test_out_of_range_option_is_one_line_exit_2(cli, command, option, bad):
    for value in bad:
        r = cli(*command, option, value, expect=2, tiny=False)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {option} must be "), (value, r.stderr)
        assert "Traceback" not in r.stderr and "got" in lines[0]


def test_image_size_out_of_range_is_one_line_exit_2(cli):
    for value in ("0", "-1", "1000000000"):
        r = cli("embed", "data", "--image-size", value, expect=2, tiny=False)
        assert r.stderr.startswith("error: --image-size must be between") and len(r.stderr.splitlines()) == 1


def test_api_raises_the_same_error_and_accepts_the_bounds(tmp_path):
    for call, message in ((lambda: api.fit_head(tmp_path / "none.h5", "logreg", C=math.nan), "--C must be a finite number > 0"),
                          (lambda: api.fit_head(tmp_path / "none.h5", "dense", learning_rate=-1.0), "--learning-rate must be"),
                          (lambda: api.fit_head(tmp_path / "none.h5", "logreg", seed=True), "--seed must be an integer"),
                          (lambda: api.finetune(tmp_path, params={"zoom": 5.0}), "--zoom must be a finite number >= 0 and < 1"),
                          (lambda: api.predict("models/none", [], top_k=0), "--top-k must be an integer >= 1"),
                          (lambda: api.duplicates(tmp_path / "none.h5", threshold=float("inf")), "--threshold must be")):
        with pytest.raises(UsageError, match=message) as e:
            call()
        assert e.value.exit_code == 2
    from embedflow import options

    options.check(C=1e6, seed=0, val_split=0.0, epochs=1, zoom=0.0, threshold=1.0, top=0, workers=1)  # in range


def test_integer_ranges_print_their_bounds_as_integers():
    """`--seed 4294967296` used to say `<= 4.29497e+09`."""
    with pytest.raises(UsageError) as e:
        api.fit_head("no-such-cache.h5", "logreg", seed=2**32)
    assert "an integer >= 0 and <= 4294967295, got 4294967296" in str(e.value) and "e+" not in str(e.value)


def test_finetune_unfreeze_from_an_unknown_layer_is_refused_before_decoding(cli, dataset, weights_file, monkeypatch):
    """A layer name is not a range, but the same rule holds: refused (exit 2, one line) before any image is
    decoded, and no empty --out folder is left."""
    import importlib

    finetune = importlib.import_module("embedflow.finetune")  # the module (embedflow.finetune is also the API function)

    def never(*args, **kwargs):
        raise AssertionError("images were decoded before --unfreeze-from was checked")

    monkeypatch.setattr(finetune, "decode_streamed", never)
    r = cli("finetune", dataset, "--out", "models/ft", "--unfreeze-from", "nosuchlayer", "--weights", weights_file,
            "--image-size", "96", "--quiet", expect=2)
    assert r.stderr.strip() == ("error: --unfreeze-from: the base has no layer 'nosuchlayer' "
                                "(e.g. block_13_expand, Conv_1)")
    assert not (dataset.parent / "models").exists()
