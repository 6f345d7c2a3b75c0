"""What a notebook user sees: progress from the API's default reporter, warnings through `warnings`,
silence when asked, and figures written without touching matplotlib's backend or pyplot's figures."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from embedflow import api, progress
from embedflow.progress import EmbedflowWarning, ListReporter, ProgressReporter, WarningsReporter, as_reporter

from ..conftest import ROOT, SIZE, make_dataset


def test_auto_resolves_once_per_call(monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: True)
    assert isinstance(as_reporter("auto"), ProgressReporter)
    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert type(as_reporter("auto")) is WarningsReporter
    assert as_reporter(None) is progress.SILENT
    mine = ListReporter()
    assert as_reporter(mine) is mine
    with pytest.raises(TypeError, match="reporter"):
        as_reporter("loud")


def embed_with_a_bad_file(tmp_path, weights_file, reporter):
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "limes" / "broken.jpg").write_bytes(b"not an image")
    return api.embed_folder(data, tmp_path / "c.h5", image_size=SIZE, weights=str(weights_file), reporter=reporter)


def test_the_default_shows_progress_on_a_terminal_and_warns_through_warnings(tmp_path, weights_file, monkeypatch,
                                                                            capsys):
    monkeypatch.setattr(progress, "interactive", lambda: True)
    with pytest.warns(EmbedflowWarning, match="skipped limes/broken.jpg: not an image file"):
        summary = embed_with_a_bad_file(tmp_path, weights_file, "auto")
    assert summary.embedded == 9
    err = capsys.readouterr().err
    assert "embedding" in err and "/10" in err  # the tqdm bar on stderr (9 images and the bad file)


def test_the_default_is_quiet_in_a_pipe_but_still_warns(tmp_path, weights_file, monkeypatch, capsys):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    with pytest.warns(EmbedflowWarning, match="broken.jpg"):
        embed_with_a_bad_file(tmp_path, weights_file, "auto")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_reporter_none_is_silent(tmp_path, weights_file, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the call
        summary = embed_with_a_bad_file(tmp_path, weights_file, None)
    assert len(summary.failed) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_interactive_means_a_kernel_or_a_terminal(monkeypatch):
    class Kernel:
        config = {"IPKernelApp": {}}

    class IPythonModule:
        @staticmethod
        def get_ipython():
            return Kernel()

    monkeypatch.setitem(sys.modules, "IPython", IPythonModule)
    assert progress.interactive()
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setattr(sys, "stderr", open(__file__))  # a file: not a terminal
    assert not progress.interactive()


PLOT_IN_A_NOTEBOOK = r"""
import sys
import matplotlib
matplotlib.use("svg")  # a backend the user chose (as %matplotlib inline chooses its own)
import matplotlib.pyplot as plt
import numpy as np
plt.figure()  # the user's own open figure
from pathlib import Path
from embedflow.reports import classification_report, plot_confusion, write_report
plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], Path(sys.argv[1]) / "confusion.png", "title")
report = classification_report([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1], ["a", "b"])
write_report(report, Path(sys.argv[1]) / "report", "a report")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert plt.get_fignums() == [1], plt.get_fignums()
print("unchanged")
"""


def test_writing_figures_leaves_matplotlib_as_the_user_set_it(tmp_path):
    r = subprocess.run([sys.executable, "-c", PLOT_IN_A_NOTEBOOK, str(tmp_path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stderr[-2000:]
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "report").glob("*.png"))


def test_fitting_with_a_report_leaves_matplotlib_as_the_user_set_it(cli, tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    backend = matplotlib.get_backend()
    before = plt.get_fignums()
    model = api.fit_head(head="logreg")
    model.save(tmp_path / "models" / "logreg")
    assert (tmp_path / "models" / "logreg" / "confusion.png").is_file()
    assert matplotlib.get_backend() == backend and plt.get_fignums() == before
    assert np.isfinite(model.report_["accuracy"])
