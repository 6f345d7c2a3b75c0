"""`audit`: what the cached vectors say about the data (issue #17), from the cache alone.

Label issues (embedflow.insight.label_issues: out-of-fold logistic regression + 10-NN vote), outliers
(insight.outliers: distance to the nearest images of the same class, robust z per class), groups of
near-duplicates (search.find_duplicates, the `duplicates` command's groups, cross-class ones first) and,
against a second cache of the same backbone, the near-duplicates shared between the two (train/test
leakage). Results are objects; files (audit.json, audit.csv, label-issues.png) only when `out` is given.
Measured precision and recall: docs/insight.md."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cache, insight, search
from .errors import BadImage, DatasetError
from .progress import SILENT, Reporter
from .reports.write import write_text_atomically
from .search.exact import QUERY_ROWS, SEARCH_ROWS

THRESHOLD = 0.92  # cosine from which two images are near-duplicates (as `duplicates`)
TOP = 10  # entries of each list in the text summary, rows of the contact sheet
SHEET_NEIGHBORS = 4  # nearest cached images shown beside each label issue on the sheet
FILES = ("audit.json", "audit.csv", "label-issues.png")


@dataclass
class LabelIssue(search.CacheRow):
    """An image whose given label (`label`) the other images contradict: score = 1 - p(given label) in
    [0, 1], higher = more suspicious; suggested = the most probable class."""

    suggested: str
    score: float

    def to_dict(self) -> dict:
        return {"key": self.key, "given": self.label, "suggested": self.suggested, "score": round(self.score, 6)}


@dataclass
class Outlier(search.CacheRow):
    """An image far from the rest of its class: score = robust z of 1 - mean cosine to its 5 nearest
    same-class images (0 = typical of its class, > 3 = far)."""

    score: float

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "score": round(self.score, 6)}


@dataclass
class Leak:
    """An image of the other cache (`other_key`) with a near-copy in this one (`key`): cosine >= the
    threshold, 1.0 for identical bytes."""

    key: str
    label: str
    other_key: str
    other_label: str | None  # None when the other cache is unlabelled
    score: float

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "other_key": self.other_key,
                "other_label": self.other_label, "score": round(self.score, 6)}


@dataclass
class AuditResult:
    """What `audit` found. label_issues and outliers hold every image of the cache, most suspicious
    first; duplicates is the search.DuplicatesResult at `threshold`; leaks (only with `against`) the
    images of the other cache with a near-copy here, most similar first; files: what was written.
    `to_dict()` is the CLI's JSON and audit.json."""

    cache: Path
    classes: list[str]
    threshold: float
    label_issues: list[LabelIssue]
    outliers: list[Outlier]
    duplicates: search.DuplicatesResult
    against: Path | None = None
    leaks: list[Leak] = field(default_factory=list)
    top: int = TOP
    files: list[Path] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.label_issues)

    def to_dict(self) -> dict:
        return {"cache": str(self.cache), "n_images": self.n_images, "classes": self.classes,
                "threshold": self.threshold, "top": self.top,
                "label_issues": [i.to_dict() for i in self.label_issues],
                "outliers": [o.to_dict() for o in self.outliers],
                "duplicates": [g.to_dict() for g in self.duplicates.groups],
                "against": None if self.against is None else str(self.against),
                "leaks": [leak.to_dict() for leak in self.leaks], "files": [str(p) for p in self.files]}


def check_labelled(data: cache.Cache) -> None:
    """DatasetError unless the cache's images carry labels of at least two classes."""
    present = sorted({int(v) for v in np.unique(data.y)}) if len(data) else []
    if not present or present[0] < 0 or len(present) < 2:
        names = ", ".join(data.classes[i] for i in present if 0 <= i < len(data.classes)) or "none"
        raise DatasetError(f"audit needs a labelled cache with at least two classes; {data.path} has "
                           f"{len([i for i in present if i >= 0])} ({names})")


def rank_label_issues(data: cache.Cache) -> list[LabelIssue]:
    """Every image of the cache as a LabelIssue (insight.label_issues), most suspicious first."""
    scores, suggested = insight.label_issues(data.X, data.y)
    return [LabelIssue(int(r), data.keys[r], data.classes[data.y[r]], data.classes[suggested[r]], float(scores[r]))
            for r in np.argsort(-scores, kind="stable")]


def rank_outliers(data: cache.Cache) -> list[Outlier]:
    """Every image of the cache as an Outlier (insight.outliers), most outlying first."""
    far = insight.outliers(data.X, data.y)
    return [Outlier(int(r), data.keys[r], data.classes[data.y[r]], float(far[r]))
            for r in np.argsort(-far, kind="stable")]


def audit(cache_path, *, against=None, top: int = TOP, threshold: float = THRESHOLD, out=None,
          reporter: Reporter = SILENT) -> AuditResult:
    """Audit the cache at `cache_path` (vectors (N, D) float32 read into memory once). against: a second
    cache (same backbone fingerprint, else FingerprintMismatch) searched for near-copies of this one's
    images, in blocks (memory: QUERY_ROWS x SEARCH_ROWS floats). out: a folder for audit.json, audit.csv
    and label-issues.png (the `top` label issues beside their nearest cached images).
    Raises CacheError (missing, damaged, replaced while read), DatasetError (empty, unlabelled or
    single-class cache), UsageError (a class of a single image; threshold outside (0, 1])."""
    search.check_threshold(threshold)
    columns = search.searchable(cache_path)
    data = cache.open_cache(cache_path)
    check_labelled(data)
    if against is not None:
        comparable_cache(cache_path, columns, against)  # refuse before the work, not after
    reporter.info(f"label issues: 5-fold logistic regression and 10-NN vote on {len(data)} vectors")
    issues = rank_label_issues(data)
    reporter.info("outliers: distance to the 5 nearest images of the same class")
    outliers = rank_outliers(data)
    reporter.info(f"near-duplicates: cosine >= {threshold}")
    duplicates = search.find_duplicates(cache_path, columns, threshold, "auto", reporter)
    result = AuditResult(Path(cache_path), list(data.classes), threshold, issues, outliers, duplicates, top=top)
    if against is not None:
        result.against = Path(against)
        result.leaks = find_leaks(cache_path, columns, against, threshold, reporter)
    if data.keys != columns.keys:
        raise cache.CacheError(f"cache {cache_path} was replaced by another run while it was being read; "
                               "run the command again")
    columns.check_unchanged()
    if out is not None:
        write_files(result, data, Path(out))
    return result


def comparable_cache(cache_path, columns: cache.CacheColumns, other_path) -> cache.CacheColumns:
    """The columns of the cache at `other_path`; FingerprintMismatch unless both caches were made by the
    same backbone (fingerprint id), CacheError if it is missing or damaged."""
    from . import backbones

    other = cache.load_columns(other_path)
    backbones.check_compatible(other.fingerprint, columns.fingerprint, f"cache {other_path}",
                               f"embed it like {cache_path} (same backbone, image size and precision)")
    return other


def find_leaks(cache_path, columns: cache.CacheColumns, other_path, threshold: float = THRESHOLD,
               reporter: Reporter = SILENT) -> list[Leak]:
    """For each image of the cache at `other_path`, its most similar image in this cache when the cosine
    is >= threshold (identical bytes: 1.0); most similar first. Exact search, the other cache read
    QUERY_ROWS vectors at a time. FingerprintMismatch if the two caches were made by different backbones."""
    other = comparable_cache(cache_path, columns, other_path)
    reporter.info(f"leaks: {len(other)} images of {other_path} against {len(columns)} of {cache_path}")
    label_of = columns.label_names()
    other_label = other.label_names()  # None for an unlabelled image
    leaks = []
    for start, block in cache.iter_vector_blocks(other_path, QUERY_ROWS):
        row_codes, query_codes = search.hash_codes(columns.hashes, other.hashes[start:start + len(block)])
        hits = search.exact_search(search.normalise(block), cache.iter_vector_blocks(cache_path, SEARCH_ROWS),
                                   1, row_codes, query_codes, include_self=True)
        for q in np.flatnonzero((hits.rows[:, 0] >= 0) & (hits.scores[:, 0] >= threshold)):
            r, o = int(hits.rows[q, 0]), start + int(q)
            leaks.append(Leak(columns.keys[r], label_of[r], other.keys[o], other_label[o],
                              min(float(hits.scores[q, 0]), 1.0)))
    other.check_unchanged()
    leaks.sort(key=lambda leak: (-leak.score, leak.other_key))
    return leaks


def source_image(root: str, key: str) -> Path | BadImage | None:
    """The image of `key` under the cache's root; None when there is no root, the BadImage saying why when
    the key would leave it (the sheet shows the reason instead of reading the file): reports.sheets.source."""
    from .reports.sheets import source

    return source(root, key)


def per_image_csv(result: AuditResult) -> str:
    """One row per image, in cache order: key, label, label_issue_score, suggested, outlier_score,
    duplicate_group (index into result.duplicates.groups, empty when none)."""
    by_row_issue = {i.row: i for i in result.label_issues}
    by_row_outlier = {o.row: o for o in result.outliers}
    group_of = {m.row: g for g, group in enumerate(result.duplicates.groups) for m in group.members}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "label", "label_issue_score", "suggested", "outlier_score", "duplicate_group"])
    for row in sorted(by_row_issue):
        issue, far = by_row_issue[row], by_row_outlier[row]
        writer.writerow([issue.key, issue.label, f"{issue.score:.6f}", issue.suggested, f"{far.score:.6f}",
                         group_of.get(row, "")])
    return buf.getvalue()


def nearest(data: cache.Cache, row: int, k: int = SHEET_NEIGHBORS) -> list[tuple[int, float]]:
    """(row, cosine) of the k cached images most similar to `row`, best first, its own content left out."""
    row_codes, query_codes = search.hash_codes(data.hashes, [data.hashes[row]])
    hits = search.exact_search(search.normalise(data.X[row]), search.memory_blocks(data.X), k, row_codes, query_codes)
    return hits.for_query(0)


def issues_sheet(result: AuditResult, data: cache.Cache, out: Path) -> Path:
    """Contact sheet PNG of the `top` label issues: each image (given -> suggested, score) beside its
    nearest cached images, those of another label than the given one in red."""
    from .reports.sheets import render

    shown = result.label_issues[:result.top]
    rows = []
    for issue in shown:
        near = [{"image": source_image(data.root, data.keys[r]), "title": f"{s:.3f}  {data.classes[data.y[r]]}",
                 "detail": Path(data.keys[r]).name, "mismatch": data.classes[data.y[r]] != issue.label}
                for r, s in nearest(data, issue.row)]
        rows.append({"image": source_image(data.root, issue.key),
                     "title": f"{issue.score:.2f}  {issue.label} -> {issue.suggested}",
                     "detail": Path(issue.key).name, "neighbors": near})
    return render(rows, out, f"{result.cache}: top {len(shown)} label issues of {result.n_images} "
                             "(score, given -> suggested) and their nearest images (cosine, label)")


def write_files(result: AuditResult, data: cache.Cache, out_dir: Path) -> list[Path]:
    """audit.json (result.to_dict()), audit.csv (per_image_csv) and label-issues.png (issues_sheet) in
    out_dir, each written beside its target and renamed into place. Sets and returns result.files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.files = [out_dir / name for name in FILES]
    json_path, csv_path, sheet_path = result.files
    issues_sheet(result, data, sheet_path)
    write_text_atomically(csv_path, per_image_csv(result))
    write_text_atomically(json_path, json.dumps(result.to_dict(), indent=2))
    return result.files
