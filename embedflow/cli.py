"""The `embedflow` command: parses options, calls embedflow.api, prints results. No logic lives here.

Exit codes: 0 success (skipped files are summarised as warnings), 1 unexpected error, 2 usage or
dataset error, 3 fingerprint mismatch, 4 cache error (missing, unreadable, locked), 5 model error
(missing, incomplete, tampered) or an output that cannot be written (another process writes the same model
folder, a read-only folder, a full or failing disk), 6 backbone weights unavailable, 7 files skipped under --strict,
130 interrupted (progress kept; rerun to resume).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .__about__ import __version__
from .heads.defaults import DEFAULTS as HEAD_DEFAULTS, SVM_RBF_MAX_CLASSES, default_C_text  # no scikit-learn import: --help stays instant

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help text is plain: [a|b] choices and embedflow[s3] keep their brackets
                  help="Transfer learning on image folders: embed once into an HDF5 cache, then fit heads, "
                       "evaluate, predict.")

CacheOpt = typer.Option(None, "--cache", "-c", help="HDF5 embedding cache (default: cache/embeddings.h5, else the "
                                                   "only cache/embeddings-*.h5).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar or info lines (warnings still go to stderr).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
TrustOpt = typer.Option(False, "--trust", help="Load a model folder this installation did not write (its manifest "
                        "is not signed with your key): its files can run code; only for sources you trust.")
RuntimeOpt = typer.Option("auto", "--runtime", metavar="[auto|litert|keras]", help="Backbone runtime: auto (LiteRT on CPU, Keras on GPU), litert, keras.")


class CliReporter:
    """Progress bar on a terminal (images, images/s, ETA); plain lines otherwise; nothing with --quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.warnings = 0
        self.skip_warnings = 0  # "skipped KEY: reason" lines
        self._progress = None
        self._task = None

    @functools.cached_property
    def console(self):
        from rich.console import Console  # only when something is printed: a quiet rerun starts faster

        return Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)  # never break a path across lines

    def warn(self, message: str) -> None:
        self.warnings += 1
        self.skip_warnings += message.startswith("skipped ")
        self.console.print(f"warning: {message}", markup=False, style="yellow", soft_wrap=True)

    def start(self, description: str, total: int) -> None:
        if self.quiet or not sys.stderr.isatty() or not self.console.is_terminal:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)
            speed = self._progress.tasks[0].speed
            self._progress.update(self._task, rate=f"{speed:.0f} img/s" if speed else "")

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def handle_errors(fn):
    """Turn EmbedflowError into one line on stderr and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import EmbedflowError

        try:
            return fn(*args, **kwargs)
        except EmbedflowError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: every file and folder it writes is replaced whole, so each is the previous "
                       "one or the complete new one; run the same command again", err=True)
            raise typer.Exit(130) from None

    return wrapper


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def print_training(model_dir, n_train: int, n_val: int, seconds: float, report: dict | None, what: str, extra: dict,
                   quiet: bool, as_json: bool) -> None:
    """The result of fit or finetune: JSON, or the validation report and where the model went. seconds: the
    whole command's wall time; extra["fit_seconds"] (fit): the training alone (split fit, validation,
    refit), as the manifest records it; the rest is mostly report.html's audit and map."""
    from .reports import format_report

    if as_json:
        emit_json({"model_dir": str(model_dir), "n_train": n_train, "n_val": n_val, "seconds": seconds,
                   **extra, "report": report})
        return
    if report and not quiet:
        typer.echo(format_report(report))
    timing = (f"trained in {extra['fit_seconds']:.1f}s, {seconds:.1f}s in all with report.html"
              if extra.get("fit_seconds") is not None else f"{seconds:.1f}s")
    typer.echo(f"wrote {model_dir} ({what}, {n_train} train / {n_val} validation, {timing})")


def warn_skipped(rep, n: int, message: str, strict: bool) -> None:
    """One warning for n skipped files (embed, evaluate); under --strict they are exit 7."""
    from .errors import StrictModeError

    rep.warn(message)
    if strict:
        raise StrictModeError(f"{n} file(s) were skipped and --strict is set")


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Show the version and exit.")):
    if version:
        typer.echo(f"embedflow {__version__}")
        raise typer.Exit()


@app.command()
@handle_errors
def embed(
    folder: str = typer.Argument(..., help="Folder with one subfolder per class (or train/ val/ test/ of them, or "
                                 "unlabelled images); or an object-store prefix: s3://bucket/prefix/, gs://, az://, "
                                 "memory://, file:// (pip install 'embedflow[s3]' for s3://)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV of path,label rows (paths relative to FOLDER): "
                                          "the labels of the images below FOLDER."),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="The images carry no labels (every image below FOLDER): "
                                    "for neighbors, duplicates and predict; fit refuses such a cache."),
    cache: Optional[Path] = typer.Option(None, "--cache", "-c", help="HDF5 embedding cache (default: cache/embeddings.h5 "
                                         "for the default backbone, cache/embeddings-BACKBONE.h5 for others; "
                                         "--precision int8 adds -int8: cache/embeddings-int8.h5)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="mobilenet_v2 (default), mobilenet_v2:ALPHA:SIZE, "
                                           "efficientnet_b0, resnet50, mobilenet_v3_small/large, or hub:URL_OR_PATH "
                                           "(see `embedflow backbones`)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size in pixels (96..224; default 224)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Backbone weights file (default: Keras' ImageNet weights)."),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="[fp32|int8]", help="fp32, or int8: a full-integer LiteRT backbone "
                                            "(faster on a CPU; its own cache fingerprint). Default: the existing "
                                            "cache's, else fp32."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Replace a cache made with another backbone/weights/size/precision."),
    rehash: bool = typer.Option(False, "--rehash", help="Read and hash every file, even those whose size, mtime, "
                                "ctime and inode are unchanged since they were hashed."),
    runtime: str = RuntimeOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per inference call "
                                             "(default: 4 on LiteRT, 64 on Keras, 16 per Ray task)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel decode+inference workers: threads, or Ray actors with --engine ray (default: CPU count)."),
    engine: str = typer.Option("local", "--engine", metavar="[local|ray]", help="local, or ray (pip install 'embedflow[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto, ray://host:10001 (default: start a local one)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero (7) when any file was skipped, or an image-like "
                                "file, a class or a folder was left out (then before embedding anything)."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Embed every image of FOLDER into the cache (only new or changed files are computed)."""
    from . import api
    from .errors import UsageError

    if labels is not None and unlabelled:
        raise UsageError("--labels and --unlabelled contradict each other: give one of them")
    rep = CliReporter(quiet or as_json)
    s = api.embed_folder(folder, cache, backbone=backbone, image_size=image_size, weights=weights, precision=precision,
                         rebuild=rebuild, runtime=runtime,
                         batch_size=batch_size, workers=workers, engine=engine, address=address, rehash=rehash,
                         labels=labels, unlabelled=True if unlabelled else None, strict=strict, reporter=rep)
    if as_json:
        emit_json(s.to_dict())
    elif not quiet:
        what = (f"{s.total} unlabelled images" if s.layout == "unlabelled" else f"{s.total} images in {len(s.classes)} classes"
                + ("".join(f", {n} {split}" for split, n in s.split_counts.items()) if s.split_counts else ""))
        resumed = f", resumed {s.resumed}" if s.resumed else ""
        typer.echo(f"{s.cache_path}: {what}; embedded {s.embedded}, "
                   f"kept {s.kept}, reused {s.reused}{resumed}, removed {s.removed}, skipped {len(s.skipped)} "
                   f"{embed_timing(s)}")
    if s.skipped:
        if s.failed and not rep.skip_warnings:
            for key, reason in s.failed[:20]:  # failures remembered from an earlier run were not printed one by one
                rep.warn(f"skipped {key}: {reason}")
        left_out = len(s.skipped) - len(s.failed)
        if not left_out:
            message = f"{len(s.failed)} file(s) skipped; `embedflow info --cache {s.cache_path}` lists them"
        else:
            undecoded = (f"{len(s.failed)} not decoded (`embedflow info --cache {s.cache_path}` lists them), "
                         if s.failed else "")
            message = (f"{len(s.skipped)} file(s) skipped: {undecoded}{left_out} left out by discovery (the warnings "
                       "above say why; `embed --json` lists them as skipped)")
        warn_skipped(rep, len(s.skipped), message, strict)


def embed_timing(s) -> str:
    """`in 12.7s (175 img/s overall)`; a run that converted the backbone says that time apart and rates the
    embedding without it: `in 52.3s, 40.1s of it converting the backbone once (182 img/s embedding)`."""
    if not s.conversion_seconds:
        return f"in {s.seconds:.1f}s" + (f" ({s.embedded / s.seconds:.0f} img/s overall)" if s.embedded else "")
    embedding = max(s.seconds - s.conversion_seconds, 1e-3)
    rate = f" ({s.embedded / embedding:.0f} img/s embedding)" if s.embedded else ""
    return f"in {s.seconds:.1f}s, {s.conversion_seconds:.1f}s of it converting the backbone once{rate}"


@app.command()
@handle_errors
def fit(
    cache: Optional[Path] = CacheOpt,
    head: str = typer.Option("logreg", "--head", metavar="[logreg|svm|dense|knn]", help="logreg, svm, dense or knn."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Model folder (default: models/HEAD)."),
    val_split: float = typer.Option(0.2, "--val-split", help="Fraction held out for validation (0 for none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of the head."),
    class_weight: Optional[str] = typer.Option(None, "--class-weight", metavar="[balanced]", help="'balanced' to reweight classes."),
    c: Optional[float] = typer.Option(None, "--C", help=f"Inverse regularisation (logreg, svm). Default: {default_C_text()}."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Maximum epochs (dense {HEAD_DEFAULTS['dense']['epochs']}; "
                                         "early stopping ends most runs sooner)."),
    k: Optional[int] = typer.Option(None, "--k", help=f"Neighbours that vote (knn; default {HEAD_DEFAULTS['knn']['k']})."),
    kernel: Optional[str] = typer.Option(None, "--kernel", metavar="[auto|rbf|linear]", help=f"svm: auto (default: RBF up to {SVM_RBF_MAX_CLASSES} "
                                         "classes, linear above), rbf or linear."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="After validating, train the saved head on all vectors."),
    reject_rate: float = typer.Option(0.05, "--reject-rate", help="Share of validation images the unknown-input "
                                      "rule may reject (it is calibrated to that false-rejection rate)."),
    reject: bool = typer.Option(True, "--reject/--no-reject", help="Learn the unknown-input rule (needs a validation split)."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Train a classifier head on the cached vectors and write a model folder with its report."""
    import time

    from . import api

    head, kernel = head.lower(), kernel.lower() if kernel is not None else None  # SVM is svm, RBF is rbf
    params = {name: value for name, value in (("C", c), ("epochs", epochs), ("k", k), ("kernel", kernel))
              if value is not None}
    rep = CliReporter(quiet or as_json)
    t0 = time.perf_counter()
    clf = api.fit_head(cache, head, val_split=val_split, seed=seed, class_weight=class_weight, refit=refit,
                       reject_rate=reject_rate if reject else None, out=out or api.DEFAULT_MODELS / head,
                       reporter=rep, **params)
    model_dir = clf.path
    chosen = {k: v for k, v in (clf.manifest.get("hyperparameters") or {}).items() if k in ("kernel", "calibration")}
    print_training(model_dir, clf.n_train, clf.n_val, time.perf_counter() - t0, clf.report_,
                   f"{head}: {chosen['kernel']} kernel, {chosen.get('calibration', 'calibrated')} probabilities"
                   if "kernel" in chosen else head, {"head": head, **chosen, "fit_seconds": clf.manifest.get("fit_seconds")},
                   quiet, as_json)


@app.command()
@handle_errors
def evaluate(
    model: Path = typer.Argument(..., help="Model folder (fit, finetune or export) or a .tflite file."),
    data: Path = typer.Argument(..., help="Labelled folder (one subfolder per class) or an embedding cache."),
    cache: Optional[Path] = typer.Option(None, "--cache", "-c", help="Cache for the folder's vectors (default: cache/NAME-HASH-ID.h5, ID from the model's backbone)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write eval-report.json etc. (default: the model folder)."),
    runtime: str = RuntimeOpt,
    split: Optional[str] = typer.Option(None, "--split", metavar="[train|val|test|all]", help="Data of train/ val/ test/ folders: score train, val, "
                                        "test or all (default: test when there is a test/ folder, else all)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero (7) when any image could not be used."),
    trust: bool = TrustOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Score a model on a held-out labelled folder or cache; writes the same report as fit."""
    from . import api
    from .fsio import check_writable_folder
    from .reports import format_report

    rep = CliReporter(quiet or as_json)
    out_dir = out or (model if model.is_dir() else model.parent)
    if out is None and model.exists() and (why := check_writable_folder(out_dir)) is not None:
        rep.warn(f"{out_dir} cannot be written ({why.strerror or why}): the report is shown, not saved; "
                 "pass --out DIR to keep it")
        out_dir = None
    report = api.evaluate(model, data, cache_path=cache, out=out_dir, runtime=runtime, split=split, trust=trust,
                          reporter=rep).to_dict()
    if as_json:
        emit_json(report)
    else:
        typer.echo(format_report(report))
        if out_dir is not None:
            typer.echo(f"wrote {Path(out_dir) / 'eval-report.json'}")
    skipped = report.get("skipped") or []
    if skipped:
        where = f"; `embedflow info --cache {report['cache']}` lists them" if report.get("cache") else ""
        warn_skipped(rep, len(skipped), f"{len(skipped)} file(s) skipped, not part of this evaluation{where}", strict)


@app.command()
@handle_errors
def report(
    model: Path = typer.Argument(..., help="Model folder (fit, finetune or export) or a .tflite file."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Labelled folder to score (one subfolder per class)."),
    cache: Optional[Path] = typer.Option(None, "--cache", "-c", help="Cache to score (with --data: the cache for the folder's vectors)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The .html file (default: in the model folder)."),
    runtime: str = RuntimeOpt,
    trust: bool = TrustOpt,
    quiet: bool = QuietOpt,
):
    """Write one self-contained HTML report page (offline: images inline, no network) for a model."""
    from . import api

    rep = CliReporter(quiet)
    path = api.report(model, data, cache_path=cache, out=out, runtime=runtime, trust=trust, reporter=rep)
    typer.echo(f"wrote {path}")


@app.command()
@handle_errors
def predict(
    model: Path = typer.Argument(..., help="Model folder (fit, finetune or export) or a .tflite file."),
    inputs: List[str] = typer.Argument(..., help="Image files and/or folders, or object URLs/prefixes (s3://...)."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many labels to show per image."),
    cache: Optional[Path] = typer.Option(None, "--cache", "-c", help="Reuse vectors of images already in this cache "
                                         "(default: one in cache/ made with the model's backbone)."),
    runtime: str = RuntimeOpt,
    fmt: str = typer.Option("text", "--format", "-f", metavar="[text|tsv|csv|jsonl]", help="Output: text (path, then label probability pairs), "
                            "tsv or csv (a header row, then one row per image: path,label_1,probability_1,...), "
                            "jsonl (one JSON object per image)."),
    reject: bool = typer.Option(True, "--reject/--no-reject", help="Report images unlike the training data as "
                                "unknown (heads fitted with a validation split; --no-reject: always a label)."),
    trust: bool = TrustOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Label images with a trained model (top-k labels with probabilities; `unknown` for images unlike its training data)."""
    from . import api
    from .errors import UsageError

    if fmt not in PREDICT_FORMATS:
        raise UsageError(f"unknown --format '{fmt}': use {', '.join(PREDICT_FORMATS)}")
    if as_json and fmt != "text":
        raise UsageError("--json and --format both choose the output: give one of them")
    rep = CliReporter(quiet or as_json or fmt != "text")
    result = api.predict(model, [str(p) for p in inputs], top_k=top_k, cache_path=cache or "auto", runtime=runtime,
                         reject=reject, trust=trust, reporter=rep).to_dict()
    if as_json:
        emit_json(result)
    else:
        typer.echo(format_predictions(result, fmt), nl=False)
    for f in result["failed"]:
        rep.warn(f"skipped {f['path']}: {f['reason']}")
    if not result["predictions"]:
        raise typer.Exit(1)


PREDICT_FORMATS = ("text", "tsv", "csv", "jsonl")


def format_predictions(result: dict, fmt: str) -> str:
    """predict's result ({"predictions": [{"path", "top": [{"label", "probability"}]}]}) as text, tsv, csv or
    jsonl, every line ending in a newline.

    text: `path<TAB>label probability  label probability ...` (probabilities to 3 decimals), as it always was.
    tsv/csv: a header row `path,label_1,probability_1,...,label_K,probability_K`, then one row per image
    (probabilities to 6 decimals), quoted by the csv module where a field holds the delimiter, a quote or a
    line break, so a spreadsheet or csv.reader reads every path back exactly. jsonl: one object per image,
    `{"path": ..., "top": [{"label": ..., "probability": ...}, ...]}`, the entries of `--json`'s predictions.
    With an unknown-input rule (the result has "rejection"): text puts `unknown SCORE` (3 decimals) before the
    labels of an image it rejects; tsv/csv end each row with `unknown` (1/0) and `unknown_score`; jsonl
    objects carry "unknown" and "unknown_score".
    """
    import csv
    import io

    rows = result["predictions"]
    rejecting = "rejection" in result
    if fmt == "text":
        return "".join(p["path"] + "\t" + (f"unknown {p['unknown_score']:.3f}  " if p.get("unknown") else "")
                       + "  ".join(f"{t['label']} {t['probability']:.3f}" for t in p["top"]) + "\n" for p in rows)
    if fmt == "jsonl":
        extra = ("unknown", "unknown_score") if rejecting else ()
        return "".join(json.dumps({"path": p["path"], "top": p["top"], **{x: p[x] for x in extra}}) + "\n"
                       for p in rows)
    k = max((len(p["top"]) for p in rows), default=0)
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writerow(["path", *(f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "probability")),
                     *(["unknown", "unknown_score"] if rejecting else [])])
    for p in rows:
        cells = [value for t in p["top"] for value in (t["label"], f"{t['probability']:.6f}")]
        tail = [int(p["unknown"]), f"{p['unknown_score']:.6f}"] if rejecting else []
        writer.writerow([p["path"], *cells, *[""] * (2 * k - len(cells)), *tail])
    return out.getvalue()


MethodOpt = typer.Option(None, "--exact/--index",
                         help="Force exact search / the approximate faiss index (default: the index from 50,000 vectors on).")


@app.command()
@handle_errors
def neighbors(
    images: Optional[List[str]] = typer.Argument(None, help="Query image files and/or folders, or object URLs/prefixes (s3://...)."),
    key: Optional[List[str]] = typer.Option(None, "--key", help="A cached image (its key, e.g. roses/123.jpg) as a query; repeatable."),
    k: int = typer.Option(5, "--k", "-k", help="Neighbours per query."),
    cache: Optional[Path] = CacheOpt,
    include_self: bool = typer.Option(False, "--include-self", help="Also return the query's own cached row(s), at 1.0."),
    exact: Optional[bool] = MethodOpt,
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a contact sheet PNG of queries and neighbours."),
    runtime: str = RuntimeOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """The most similar cached images (cosine similarity) for query images or cached keys."""
    from . import api

    rep = CliReporter(quiet or as_json)
    method = "auto" if exact is None else ("exact" if exact else "index")
    result = api.neighbors([str(p) for p in images or []], keys=key or None, k=k, cache_path=cache,
                           include_self=include_self, method=method, sheet=sheet, runtime=runtime, reporter=rep)
    if as_json:
        emit_json(result.to_dict())
    else:
        for r in result.results:
            typer.echo(r.query)
            for n in r.neighbors:
                typer.echo(f"  {round(n.score, 6):.4f}  {n.label or '-'}\t{n.key}")
        if result.sheet:
            typer.echo(f"wrote {result.sheet}")
    for f in result.failed:
        rep.warn(f"skipped {f['path']}: {f['reason']}")
    if not result.results:
        raise typer.Exit(1)


@app.command()
@handle_errors
def duplicates(
    cache: Optional[Path] = CacheOpt,
    threshold: float = typer.Option(0.92, "--threshold", "-t", help="Cosine similarity from which two images are near-duplicates."),
    exact: Optional[bool] = MethodOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Groups of near-duplicate images in the cache; groups mixing labels (likely label noise) come first."""
    from . import api

    rep = CliReporter(quiet or as_json)
    method = "auto" if exact is None else ("exact" if exact else "index")
    result = api.duplicates(cache, threshold=threshold, method=method, reporter=rep)
    if as_json:
        emit_json(result.to_dict())
        return
    for g in result.groups:
        flag = "CROSS-CLASS " if g.cross_class else ""
        typer.echo(f"{flag}group of {g.size} (min similarity {round(g.min_score, 6):.4f}): {', '.join(g.labels)}")
        for m in g.members:
            typer.echo(f"  {m.label or '-'}\t{m.key}")
    typer.echo(f"{result.n_groups} group(s) of near-duplicates ({result.n_images_in_groups} images) at "
               f"threshold {threshold}, {result.n_cross_class} with mixed labels")


@app.command()
@handle_errors
def info(cache: Optional[Path] = CacheOpt, as_json: bool = JsonOpt):
    """What a cache holds: backbone fingerprint, classes and counts, skipped files."""
    from . import api
    from .backbones import describe
    from .errors import CacheDamaged

    try:
        i = api.info(cache)
    except CacheDamaged as e:  # say what is wrong: one line per problem (stdout), then the one error line
        if as_json:
            emit_json({"path": e.path, "problems": e.problems})
        else:
            typer.echo(f"cache      {e.path}: damaged, {len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}")
            for p in e.problems:
                rows = f": {p['count']} row{'s' if p['count'] != 1 else ''}" if "count" in p else ""
                keys = f", e.g. {', '.join(p['keys'])}" if p.get("keys") else ""
                typer.echo(f"problem    {p['problem']}{rows}{keys}")
        raise
    if as_json:
        emit_json(i.to_dict())
        return
    typer.echo(f"cache      {i.path} ({i.size_bytes / 1e6:.1f} MB, schema {i.schema_version})")
    typer.echo(f"source     {i.root}")
    typer.echo(f"backbone   {describe(i.fingerprint)}")
    typer.echo(f"vectors    {i.count} x {i.dim} float32   updated {i.updated_utc}")
    typer.echo("classes    " + ", ".join(f"{c} ({n})" for c, n in i.per_class.items()))
    if i.pending_journal_chunks:
        typer.echo(f"pending    {i.pending_journal_chunks} journal chunk(s) of an interrupted run: rerun embed to finish")
    typer.echo(f"skipped    {i.failed} file(s)")
    for f in i.failed_files:
        typer.echo(f"  {f['key']}: {f['reason']}")


@app.command()
@handle_errors
def finetune(
    folder: Path = typer.Argument(..., help="Folder with one subfolder per class."),
    out: Path = typer.Option(Path("models/finetuned"), "--out", "-o", help="Model folder to write."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Stage 1 epochs: the head on the frozen base (default 10)."),
    fine_tune_epochs: Optional[int] = typer.Option(None, "--fine-tune-epochs", help="Stage 2 epochs: top of the base + head (default 12)."),
    unfreeze_top: Optional[int] = typer.Option(None, "--unfreeze-top", help="Layers of the base trained in stage 2 (default 100 of MobileNetV2's 155)."),
    unfreeze_from: Optional[str] = typer.Option(None, "--unfreeze-from", help="Or: name of the first base layer trained in stage 2 (e.g. block_13_expand)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="Stage 1 Adam learning rate (default 1e-3)."),
    fine_tune_learning_rate: Optional[float] = typer.Option(None, "--fine-tune-learning-rate", help="Stage 2 Adam learning rate (default 1e-4)."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Label smoothing (default 0.1)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Dropout before the softmax layer (default 0.5)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step (default 32)."),
    average_from: Optional[int] = typer.Option(None, "--average-from", help="Average the weights of stage 2 epochs from this one on (default 4; 0 = off: early stopping instead)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience on validation loss when weights are not averaged (default 3; 0 = off)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flip, rotation and zoom in stage 2."),
    rotation: Optional[float] = typer.Option(None, "--rotation", help="Random rotation, fraction of a full turn (default 0.2)."),
    zoom: Optional[float] = typer.Option(None, "--zoom", help="Random zoom fraction (default 0.2)."),
    val_split: float = typer.Option(0.2, "--val-split", help="Fraction held out for validation (same split as fit)."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="After validating, train a fresh model on all images "
                               "for the chosen epoch counts and save it (about twice the time)."),
    flip_tta: bool = typer.Option(True, "--flip-tta/--no-flip-tta", help="Save a model that averages its predictions "
                                  "for the image and its mirror image (twice the inference time)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of training."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size in pixels (96..224; default 224)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Starting backbone weights file (default: Keras' ImageNet weights)."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Fine-tune the backbone with a softmax head end to end on images (bypasses the cache)."""
    from . import api

    params = {"epochs": epochs, "fine_tune_epochs": fine_tune_epochs, "unfreeze_top": unfreeze_top,
              "unfreeze_from": unfreeze_from,
              "learning_rate": learning_rate, "fine_tune_learning_rate": fine_tune_learning_rate,
              "label_smoothing": label_smoothing, "dropout": dropout, "batch_size": batch_size,
              "average_from": average_from, "patience": patience, "augment": augment, "rotation": rotation,
              "zoom": zoom, "refit": refit, "flip_tta": flip_tta}
    rep = CliReporter(quiet or as_json)
    r = api.finetune(folder, out, image_size=image_size, weights=weights, val_split=val_split, seed=seed,
                     params=params, reporter=rep)
    print_training(r.model_dir, r.n_train, r.n_val, r.seconds, r.report, "fine-tuned", {"epoch_seconds": r.epoch_seconds},
                   quiet, as_json)


@app.command()
@handle_errors
def export(
    model: Path = typer.Argument(..., help="A fine-tuned model folder, or a logreg/dense head from `embedflow fit`."),
    fmt: str = typer.Option("tflite", "--format", "-f", metavar="[tflite|keras]", help="tflite, or keras (fuse a cached head with its backbone)."),
    quantize: str = typer.Option("none", "--quantize", metavar="[none|dynamic|float16|int8]", help="TFLite: none, dynamic, float16 or int8."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (default: MODEL-tflite[-QUANT] or MODEL-fused)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Where the training images are now (default: as recorded)."),
    cache: Optional[Path] = typer.Option(None, "--cache", "-c", help="The cache a head was fitted on (default: as recorded)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero (7) when the export's top-1 agreement with its "
                                "source is below the parity threshold (it is still written, with \"ok\": false)."),
    trust: bool = TrustOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Export a model to TFLite (optionally quantized) or a fused Keras model, checking parity on the
    validation images."""
    from . import api

    rep = CliReporter(quiet or as_json)
    r = api.export(model, fmt, quantize, out, data=data, cache_path=cache, strict=strict, trust=trust, reporter=rep)
    if as_json:
        emit_json({"out_dir": str(r.out_dir), "model_file": str(r.model_file), "format": r.fmt,
                   "quantize": r.quantize, "parity": r.parity, "seconds": r.seconds})
        return
    for what, p in r.parity.items():
        if what == "note":
            typer.echo(f"note: {p}")
        elif what == "calibration_images":
            typer.echo(f"int8 calibration: {p} training images")
        elif isinstance(p, dict):
            typer.echo(f"parity ({what}): top-1 agreement {p['top1_agreement']:.2%} with the source on {p['n']} "
                       f"validation images; accuracy {p['accuracy']:.2%} (source {p['source_accuracy']:.2%})")
    typer.echo(f"wrote {r.model_file} and {r.out_dir / 'labels.txt'} ({r.seconds:.0f}s)")


@app.command()
@handle_errors
def explain(
    model: Path = typer.Argument(..., help="A fine-tuned or fused model folder."),
    images: List[Path] = typer.Argument(..., help="Image files and/or folders."),
    out: Path = typer.Option(Path("gradcam"), "--out", "-o", help="Folder for the overlays and grid.png."),
    trust: bool = TrustOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Grad-CAM heatmaps over images: where the model looked for its top class."""
    from . import api

    rep = CliReporter(quiet or as_json)
    r = api.explain(model, [str(p) for p in images], out, trust=trust, reporter=rep)
    if as_json:
        emit_json(r)
    else:
        for e in r["explanations"]:
            typer.echo(f"{e['path']}\t{e['label']} {e['probability']:.3f}\t{e['overlay']}")
        if r["grid"]:
            typer.echo(f"grid: {r['grid']}")
    for f in r["failed"]:
        rep.warn(f"skipped {f['path']}: {f['reason']}")
    if not r["explanations"]:
        raise typer.Exit(1)


@app.command("backbones")
@handle_errors
def backbones_(as_json: bool = JsonOpt):
    """The backbones `embed --backbone` accepts: dims, input sizes, preprocessing, weights on this machine,
    the --precision values each takes."""
    from . import api

    rows = api.list_backbones()
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"{'backbone':<24} {'dim':>5} {'input':>5}  {'weights':<9} {'fine-tune':<9} {'precisions':<10} "
               "preprocessing")
    for r in rows:
        dim = r["output_dim"] if isinstance(r["output_dim"], int) else "*"
        size = r["input_size"] if isinstance(r["input_size"], int) else "*"
        local = {True: "local", False: "missing", None: "-"}[r["available"]]
        typer.echo(f"{r['backbone']:<24} {dim:>5} {size:>5}  {local:<9} {'yes' if r['fine_tunable'] else 'no':<9} "
                   f"{','.join(r['precisions']):<10} {r['preprocessing']}")
        if r["available"] is False:
            typer.echo(f"{'':<24} weights: {r['weights_file']} (Keras downloads it from {r['weights_origin']})")
        if r.get("available_variants"):
            typer.echo(f"{'':<24} local: {', '.join(r['available_variants'])}")
    variants, hub = rows[-2], rows[-1]
    typer.echo(f"* mobilenet_v2:ALPHA:SIZE: {variants['image_sizes']}; dim {variants['output_dim']}")
    typer.echo(f"* hub:URL_OR_PATH: a TF2 SavedModel feature vector (TF Hub URL or folder); input {hub['input_size']}")



@app.command()
@handle_errors
def audit(
    cache: Optional[Path] = CacheOpt,
    against: Optional[Path] = typer.Option(None, "--against", help="A second cache (same backbone), e.g. the test set: "
                                                                 "list its images with a near-copy in this cache."),
    top: int = typer.Option(10, "--top", "-n", help="Entries of each list printed (and label issues on the sheet)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for audit.json, audit.csv and label-issues.png."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
):
    """Label issues, outliers, near-duplicates (and leaks into another cache), from the cache alone."""
    from . import api

    rep = CliReporter(quiet or as_json)
    result = api.audit(cache, against=against, top=top, out=out, reporter=rep)
    if as_json:
        emit_json(result.to_dict())
        return
    doubtful = sum(i.score > 0.5 for i in result.label_issues)
    typer.echo(f"audit of {result.cache}: {result.n_images} images, {len(result.classes)} classes")
    typer.echo(f"label issues (1 - p(given label)): {doubtful} score > 0.5; top {min(top, result.n_images)}:")
    for i in result.label_issues[:top]:
        typer.echo(f"  {i.score:.3f}  {i.label} -> {i.suggested}\t{i.key}")
    far = sum(o.score > 3 for o in result.outliers)
    typer.echo(f"outliers (robust z within the class): {far} score > 3; top {min(top, result.n_images)}:")
    for o in result.outliers[:top]:
        typer.echo(f"  {o.score:6.2f}  {o.label}\t{o.key}")
    d = result.duplicates
    typer.echo(f"near-duplicates (cosine >= {result.threshold}): {d.n_groups} group(s), {d.n_images_in_groups} "
               f"images, {d.n_cross_class} with mixed labels")
    for g in d.groups[:top]:
        flag = "CROSS-CLASS " if g.cross_class else ""
        typer.echo(f"  {flag}{g.size} images ({', '.join(g.labels)}), min similarity {round(g.min_score, 6):.4f}: "
                   f"{', '.join(m.key for m in g.members)}")
    if result.against is not None:
        typer.echo(f"leaks: {len(result.leaks)} image(s) of {result.against} with a near-copy in {result.cache}")
        for leak in result.leaks[:top]:
            typer.echo(f"  {leak.score:.4f}  {leak.other_key} ~ {leak.key}")
    for path in result.files:
        typer.echo(f"wrote {path}")

def _stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt  # `kill`, a scheduler or a container stop: progress is committed as for Ctrl-C


def run() -> None:  # console-script entry point
    import signal

    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        app()
    except BrokenPipeError:  # `embedflow predict ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    run()
