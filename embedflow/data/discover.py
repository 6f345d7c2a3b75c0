"""Finding images in folders: the dataset layouts (class folders, train/val/test splits, unlabelled
collections, labels from a CSV) and loose inputs, with their keys."""

from __future__ import annotations

import os
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError, UsageError
from .formats import DECODED, UNSUPPORTED, UNSUPPORTED_EXTENSIONS, identify_file
from .remote import RemotePath, is_url, list_objects, local_path_of, object_or_prefix

# Extensions discovered as images (any case). HEIC/HEIF and AVIF are decoded when the installed Pillow
# (and pillow-heif) can; otherwise each file is skipped with the format named, never silently.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".avif", ".heic", ".heif"})
# Pictures and documents in formats embedflow does not decode (raw camera files, layered or vector documents,
# ...): left out with the format named, and listed in Discovery.dropped so that --strict can refuse to go on.
# Any file without an image extension is also identified by its first bytes (embedflow.data.formats): a JPEG
# or PNG without an extension, or named .dat, is embedded; a Photoshop file named .bin is left out as one.
IMAGE_LIKE_EXTENSIONS = frozenset(UNSUPPORTED_EXTENSIONS)
# Split folder names (any case) -> the split: Kaggle's valid/, Training/ + Testing/, dev/ are common too.
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}
LAYOUTS = ("class-folders", "splits", "unlabelled", "csv")


@dataclass(frozen=True)
class ImageRef:
    key: str  # path relative to the dataset root, "/"-separated, NFC: the identity of an image in a cache
    path: Path | RemotePath  # where to read it now (a RemotePath: an object in an fsspec filesystem)
    label: str | None  # class name (NFC), None for unlabelled inputs
    refused: str | None = None  # why it must not be read (a cache key that leaves the dataset folder)


@dataclass(frozen=True)
class Dropped:
    """Something that looked like data and is not used: an image-like file, a class or a folder."""

    key: str  # path relative to the root, "/"-separated
    kind: str  # "file" | "class" | "folder"
    reason: str  # a short human sentence


@dataclass
class Discovery:
    """What `discover` found in a dataset folder.

    refs: images sorted by key (label None in the unlabelled layout); classes: sorted NFC class names;
    notes: warnings for the user, one line each; layout: one of LAYOUTS; split_of: key -> "train" | "val" |
    "test" for the images of a splits layout (empty otherwise); ignored: extension -> number of files not
    embedded ("" for none: files that are not pictures, and pictures in formats embedflow does not decode);
    ignored_why: extension -> {reason -> count} for the same files ("not an image", "Photoshop PSD: not
    supported", ...); by_content: (key, format) of the files embedded by their content although their
    extension is not an image's; dropped: image-like files, classes and folders left out (the caller's
    --strict refuses to go on when it is not empty).
    """

    refs: list[ImageRef]
    classes: list[str]
    notes: list[str] = field(default_factory=list)
    layout: str = "class-folders"
    split_of: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)
    ignored_why: dict[str, dict[str, int]] = field(default_factory=dict)
    by_content: list[tuple[str, str]] = field(default_factory=list)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _key_for(rel: str) -> str:
    """A printable UTF-8 key in NFC, even for file names that are not valid UTF-8 (escaped as \\xe9)."""
    return _nfc(os.fsencode(rel).decode("utf-8", "backslashreplace").replace(os.sep, "/"))


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


NOT_AN_IMAGE = "not an image"


def _openable(path: str) -> bool:
    """A regular file that opens for reading: not a symlink loop, a broken link, a file denied to us, a FIFO
    (reading one would block) or a device."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        return False
    return True


def _classify(path: str, name: str) -> tuple[str, str | None] | None:
    """How a (not hidden) file is taken: ("image", None) by its extension, ("image", format) by its content,
    (UNSUPPORTED, format) for a picture embedflow does not decode, None for a file that is not a picture.
    Nothing tells what a file that cannot be read holds: without an extension it is taken as an image, so
    that reading it skips it with its reason (`cannot read: ...`) as for a named image; with another
    extension it is named by that extension."""
    ext = os.path.splitext(name)[1].lower()
    if is_image_name(name):
        return "image", None
    if not _openable(path):
        if not ext:
            return "image", None
        return (UNSUPPORTED, UNSUPPORTED_EXTENSIONS[ext]) if ext in UNSUPPORTED_EXTENSIONS else None
    found = identify_file(path, ext)
    if found is None:
        return None
    return ("image", found[1]) if found[0] == DECODED else found


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass
class _Walk:
    """The result of walking one folder: images (path, path relative to the folder) and what was left out."""

    files: list[tuple[Path, str]] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)
    other: list[str] = field(default_factory=list)  # relative paths of the files not embedded (image-like or not)
    why: dict[str, str] = field(default_factory=dict)  # relative path in other -> reason (NOT_AN_IMAGE, ...)
    unsupported: list[tuple[str, str]] = field(default_factory=list)  # (relative path, format) of pictures left out
    by_content: list[tuple[str, str]] = field(default_factory=list)  # (relative path, format): images by content
    loops: list[str] = field(default_factory=list)  # relative paths of folder links back into the dataset


def _walk(folder: Path, guard: Path | None = None) -> _Walk:
    """Every image file below folder, sorted by relative path, following symlinks but never looping
    (a folder already walked, by (device, inode), is not walked again). With guard (the dataset root), a
    folder symlink whose target is the root, an ancestor of it, or another part of the dataset outside
    `folder` is not followed and is listed in loops."""
    if isinstance(folder, _Prefix):
        return folder.walk()
    out = _Walk()
    seen_dirs: set[tuple[int, int]] = set()
    top = str(folder)
    real_root = os.path.realpath(guard) if guard is not None else None
    real_top = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:  # a symlink loop or a second link to a folder already walked
            dirnames[:] = []
            continue
        seen_dirs.add(ident)
        rel_dir = dirpath[len(top) + 1:]  # os.walk's dirpath is always top joined with the subfolders
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            full = os.path.join(dirpath, d)
            if real_root is not None and os.path.islink(full):
                target = os.path.realpath(full)
                if _inside(real_root, target) or (_inside(target, real_root) and not _inside(target, real_top)):
                    out.loops.append(os.path.join(rel_dir, d))
                    continue
            kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            if not f.startswith("."):
                _take(out, os.path.join(dirpath, f), os.path.join(rel_dir, f) if rel_dir else f)
    out.files.sort(key=lambda item: item[1])  # by the relative path: comparing Paths is slow
    out.unsupported.sort()
    out.by_content.sort()
    return out


def _take(out: _Walk, full: str, rel: str) -> None:
    """Adds one (not hidden) file to a walk: as an image, or as a file left out, with why."""
    kind = _classify(full, os.path.basename(rel))
    if kind is not None and kind[0] == "image":
        out.files.append((Path(full), rel))
        if kind[1] is not None:
            out.by_content.append((rel, kind[1]))
        return
    out.ignored[os.path.splitext(rel)[1].lower()] += 1
    out.other.append(rel)
    if kind is None:
        out.why[rel] = NOT_AN_IMAGE
    else:
        out.why[rel] = f"{kind[1]}: not supported"
        out.unsupported.append((rel, kind[1]))


def _loose(folder: Path) -> _Walk:
    """The files directly in folder (not below it), taken as _walk takes them."""
    if isinstance(folder, _Prefix):
        return folder.walk(deep=False)
    out = _Walk()
    for f in sorted(os.listdir(folder)):
        if not f.startswith(".") and (folder / f).is_file():
            _take(out, str(folder / f), f)
    return out


def walk_images(folder: Path) -> list[tuple[Path, str]]:
    """(path, path relative to folder) of every image file below folder, sorted, following symlinks
    but never looping."""
    return _walk(Path(folder)).files


def _check_root(root: Path) -> None:
    if isinstance(root, _Prefix):
        return  # listed: it holds objects
    if not root.exists():
        raise DatasetError(f"folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root} (embed takes a folder with one subfolder per class)")


def _subfolders(folder: Path) -> list[str]:
    if isinstance(folder, _Prefix):
        return sorted(d for d in folder.children()[0] if not d.startswith("."))
    return sorted(e for e in os.listdir(folder) if not e.startswith(".") and (folder / e).is_dir())


def _loose_images(folder: Path) -> list[str]:
    return [rel for _, rel in _loose(folder).files]


def _split_layout(root: Path) -> bool:
    """Split parents (SPLIT_NAMES, any case), at least one holding class folders, and either a train folder
    among them or nothing else beside them. Other folders beside a train split are reported as dropped, never
    taken as classes."""
    subs = _subfolders(root)
    splits = [s for s in subs if s.lower() in SPLIT_NAMES]
    if not splits or not any(_subfolders(root / s) for s in splits):
        return False
    return len(splits) == len(subs) or any(SPLIT_NAMES[s.lower()] == "train" for s in splits)


def discover(root: str | os.PathLike, *, labels_csv: str | os.PathLike | None = None,
             unlabelled: bool | None = None) -> Discovery:
    """The images of a dataset folder, in whichever layout it has.

    Layouts, in the order they are tried:
      * labels_csv given ("csv"): every image below root; its label is the CSV's (columns path,label,
        header optional, paths relative to root); rows naming no image and images missing from the
        CSV are reported in notes (the latter are dropped);
      * unlabelled=True, or no class folder holds an image while root itself does ("unlabelled"):
        every image below root (only those directly in root when detected), label None;
      * train/ val|validation/ test/ parents holding the same class folders ("splits"): the class is the
        second level, the key keeps the full relative path and split_of records each image's split. The
        plan for the commands: fit trains on train and reports on val, evaluate can take test;
      * otherwise one folder per class ("class-folders"; nested folders belong to their class).
    Class names and keys are NFC-normalised: a class folder named on macOS (NFD) and one named on Linux
    (NFC) are one class; of two files whose names differ only by normalisation one is kept (the NFC one)
    and the other dropped with a note. Files that are not images by extension are counted per extension
    in one note; folder symlinks back into the dataset are not followed (a note each).

    Raises DatasetError when root is missing, is not a folder, or holds no image at all.
    """
    root = _Prefix.listed(root) if is_url(root) else Path(local_path_of(root))
    _check_root(root)
    if labels_csv is not None:
        found = _discover_csv(root, Path(labels_csv))
    elif unlabelled or (unlabelled is None and _only_loose(root)):
        found = _discover_unlabelled(root, nested=bool(unlabelled))
    elif _split_layout(root):
        found = _discover_splits(root)
    else:
        found = _discover_class_folders(root)
    if isinstance(root, _Prefix):
        for rel in root.tree["unusable"]:
            _drop(found, rel, "file", f"object '{rel}' left out: a key with an empty, '.' or '..' part names no "
                  "path inside the prefix")
    if not found.refs:
        raise DatasetError(_nothing_found(root, found.layout, labels_csv))
    found.refs.sort(key=lambda r: r.key)
    found.refs = _without_key_collisions(found.refs, found)
    if found.split_of:
        kept = {r.key for r in found.refs}
        found.split_of = {k: s for k, s in found.split_of.items() if k in kept}
    _note_ignored(found)
    return found


def _nothing_found(root: Path, layout: str, labels_csv) -> str:
    kinds = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    if layout == "csv":
        return f"no image of {Path(labels_csv).name} found in {root} ({kinds} files)"
    if layout == "unlabelled":
        return f"no images found in {root} ({kinds} files)"
    return f"no images found in {root}: expected one subfolder per class holding {kinds} files"


def discover_labelled(root: str | os.PathLike) -> tuple[list[ImageRef], list[str], list[str]]:
    """Images of a class-per-subfolder tree (or of train/val/test splits of one).

    Returns (images sorted by key, class names sorted, notes about ignored things).
    Raises DatasetError when the folder is missing or holds no labelled image at all.
    """
    found = discover(root, unlabelled=False)
    return found.refs, found.classes, found.notes


def _only_loose(root: Path) -> bool:
    """Images directly in root and none in any subfolder: an unlabelled collection."""
    return bool(_loose_images(root)) and not any(_walk(root / s, guard=root).files for s in _subfolders(root))


def _class_folder(found: Discovery, root: Path, rel: str, label: str, split: str | None = None) -> None:
    """Adds the images of one class folder (root/rel) to found."""
    folder = root / rel
    if _reenters(folder, root):
        _drop(found, _key_for(rel), "folder", f"folder link '{_key_for(rel)}' leads back into the dataset: not followed")
        return
    walk = _walk(folder, guard=root)
    _record_walk(found, walk, rel)
    if not walk.files:
        _drop(found, _key_for(rel), "class", f"class folder '{_key_for(rel)}' holds no images: ignored")
        return
    if label not in found.classes:
        found.classes.append(label)
    for path, sub in walk.files:
        key = _key_for(os.path.join(rel, sub))
        found.refs.append(ImageRef(key, path, label))
        if split is not None:
            found.split_of[key] = split


def _reenters(folder: Path, root: Path) -> bool:
    """A top-level folder that is a link to the root itself or to an ancestor of it."""
    return not isinstance(folder, _Prefix) and folder.is_symlink() and _inside(os.path.realpath(root), os.path.realpath(folder))


def _record_walk(found: Discovery, walk: _Walk, rel: str) -> None:
    for ext, n in walk.ignored.items():
        found.ignored[ext] = found.ignored.get(ext, 0) + n
    for other in walk.other:
        why = found.ignored_why.setdefault(os.path.splitext(other)[1].lower(), {})
        why[walk.why[other]] = why.get(walk.why[other], 0) + 1
    for other, name in walk.unsupported:
        found.dropped.append(Dropped(_key_for(os.path.join(rel, other)), "file", f"{name}: not supported"))
    found.by_content.extend((_key_for(os.path.join(rel, f)), name) for f, name in walk.by_content)
    for loop in walk.loops:
        key = _key_for(os.path.join(rel, loop))
        _drop(found, key, "folder", f"folder link '{key}' leads back into the dataset: not followed")


def _drop(found: Discovery, key: str, kind: str, reason: str) -> None:
    found.dropped.append(Dropped(key, kind, reason))
    found.notes.append(reason)


def _discover_class_folders(root: Path) -> Discovery:
    found = Discovery(refs=[], classes=[], layout="class-folders")
    loose = _loose_images(root)
    for entry in _subfolders(root):
        _class_folder(found, root, entry, _key_for(entry))
    found.classes.sort()
    if loose:
        few = (f" (it has {len(found.classes)} class folder{'s' if len(found.classes) > 1 else ''}: "
               f"{_some(found.classes, 3)})" if len(found.classes) < 2 else "")
        found.notes.insert(0, f"{len(loose)} image(s) directly in {root} ignored: put them in a class subfolder, or "
                              f"embed with --unlabelled if the folder has no classes{few}")
        found.dropped[:0] = [Dropped(_key_for(f), "file", "image directly in the dataset folder") for f in loose]
    return found


def _discover_splits(root: Path) -> Discovery:
    found = Discovery(refs=[], classes=[], layout="splits")
    per_split: dict[str, set[str]] = {}
    loose = _loose_images(root)
    if loose:
        found.notes.append(f"{len(loose)} image(s) directly in {root}, beside the split folders, ignored")
        found.dropped.extend(Dropped(_key_for(f), "file", "image beside the split folders") for f in loose)
    for split_dir in _subfolders(root):
        if split_dir.lower() not in SPLIT_NAMES:
            _drop(found, _key_for(split_dir), "folder", f"folder '{_key_for(split_dir)}' beside the split folders is "
                  f"not a split ({'/'.join(sorted(set(SPLIT_NAMES)))}): ignored")
            continue
        split = SPLIT_NAMES[split_dir.lower()]
        loose = _loose_images(root / split_dir)
        if loose:
            found.notes.append(f"{len(loose)} image(s) directly in {split_dir}/ ignored: put them in a class subfolder")
            found.dropped.extend(Dropped(_key_for(f"{split_dir}/{f}"), "file", "image outside a class folder")
                                 for f in loose)
        for entry in _subfolders(root / split_dir):
            label = _key_for(entry)
            n = len(found.refs)
            _class_folder(found, root, os.path.join(split_dir, entry), label, split)
            if len(found.refs) > n:
                per_split.setdefault(split, set()).add(label)
    found.classes.sort()
    train = per_split.get("train", set())
    for split, labels in sorted(per_split.items()):
        if split != "train" and labels - train:
            found.notes.append(f"classes in {split} but not in train: {', '.join(sorted(labels - train))}")
    found.notes.insert(0, "train/val/test layout: " + ", ".join(
        f"{s} {sum(1 for v in found.split_of.values() if v == s)}" for s in ("train", "val", "test")
        if s in per_split) + " image(s); classes from the folders inside each split")
    return found


def _discover_unlabelled(root: Path, nested: bool) -> Discovery:
    found = Discovery(refs=[], classes=[], layout="unlabelled")
    if nested:
        walk = _walk(root, guard=root)
        _record_walk(found, walk, "")
        files = walk.files
    else:
        walk = _loose(root)
        _record_walk(found, walk, "")
        files = walk.files
        found.notes.append(f"no class folders in {root}: {len(files)} image(s) taken as unlabelled")
    found.refs.extend(ImageRef(_key_for(rel), path, None) for path, rel in files)
    return found


# Header names (any case) of the two columns of a labels CSV.
PATH_COLUMNS = ("path", "filepath", "file_path", "filename", "file_name", "file", "image", "image_path", "img",
                "relative_path", "fname")
LABEL_COLUMNS = ("label", "class", "class_name", "classname", "category", "target", "species", "labels")
_DELIMITERS = (",", ";", "\t", "|")
_EXPECTED = ("expected path,label rows (paths relative to the dataset folder; separated by , ; tab or |; a header "
             "naming the columns, e.g. path,label or filename,class, is optional)")


def _csv_rows(text: str) -> tuple[list[list[str]], str]:
    """The non-empty rows of a CSV and its delimiter: the one of , ; tab | that splits every row into the same
    number (>= 2) of fields, else the one that gives most rows 2 or more fields (comma on a tie)."""
    import csv
    import io

    best = None
    for d in _DELIMITERS:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=d) if r and any(c.strip() for c in r)]
        widths = {len(r) for r in rows}
        score = (len(widths) == 1 and min(widths, default=0) >= 2, sum(len(r) >= 2 for r in rows))
        if best is None or score > best[0]:
            best = (score, rows, d)
    return best[1], best[2]


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def read_labels_csv(path: Path, known: set[str] | None = None) -> tuple[dict[str, str], list[str]]:
    labels, notes, _ = _read_labels_csv(path, known)
    return labels, notes


def _read_labels_csv(path: Path, known: set[str] | None = None
                     ) -> tuple[dict[str, str], list[str], dict[str, list[str]]]:
    """(key -> label, notes) from a labels CSV; keys NFC, "/"-separated, relative to the dataset folder.

    Read right: UTF-8 with or without a BOM, CRLF or LF line ends, quoted fields (a path holding commas), the
    delimiter , ; tab or | (detected), a header naming the path column (PATH_COLUMNS, any case) and the label
    column (LABEL_COLUMNS) in any order and among other columns, or no header: then two columns, the path
    column being the one whose values name files of `known` (the keys of the images below the folder; without
    it the first), and a first row that names no file while others do taken as a header.
    Raises DatasetError (exit 2), with one line saying what was expected, for a file that cannot be read,
    is empty, has one column, or more than two columns without a header naming them; and, given `known`,
    when no row names an image. (The private form also returns key -> labels of the paths given more than one
    label, which are left out.)"""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except OSError as e:
        raise DatasetError(f"cannot read labels file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"labels file {path} is not UTF-8 text: {_EXPECTED}") from None
    rows, delimiter = _csv_rows(text)
    notes: list[str] = []
    if not rows:
        raise DatasetError(f"labels file {path} is empty: {_EXPECTED}")
    if max(len(r) for r in rows) < 2:
        raise DatasetError(f"labels file {path} has one column (first row: {rows[0][0]!r}): {_EXPECTED}")

    def key_of(cell: str) -> str:
        return _nfc(cell.strip().replace("\\", "/")).removeprefix("./")

    header = [c.strip().lower() for c in rows[0]]
    pcol, lcol = _column(header, PATH_COLUMNS), _column(header, LABEL_COLUMNS)
    if pcol is not None or lcol is not None:  # a header: the other column of two is the missing one
        if len(header) == 2:
            pcol = 1 - lcol if pcol is None else pcol
            lcol = 1 - pcol if lcol is None else lcol
        if pcol is None or lcol is None or pcol == lcol:
            raise DatasetError(f"labels file {path}: its header {','.join(rows[0])!r} names no "
                               f"{'path' if pcol is None else 'label'} column: {_EXPECTED}")
        rows = rows[1:]
    else:
        widths = {len(r) for r in rows}
        if max(widths) > 2:
            raise DatasetError(f"labels file {path} has {max(widths)} columns and no header naming them (first row: "
                               f"{delimiter.join(rows[0])!r}): {_EXPECTED}")
        pcol, lcol = 0, 1
        if known is not None:
            hits = [sum(len(r) > c and key_of(r[c]) in known for r in rows) for c in (0, 1)]
            if hits[1] > hits[0]:
                pcol, lcol = 1, 0
                notes.append(f"{path.name}: no header; its second column names the files: read as label,path rows")
            first = rows[0]
            if len(rows) > 1 and hits[pcol] and not any(key_of(c) in known for c in first):
                notes.append(f"{path.name}: first row {delimiter.join(first)!r} names no file: taken as a header")
                rows = rows[1:]
    labels: dict[str, str] = {}
    conflicts: dict[str, list[str]] = {}
    for row in rows:
        if len(row) <= max(pcol, lcol) or not row[pcol].strip() or not row[lcol].strip():
            notes.append(f"{path.name}: row {delimiter.join(row)!r} ignored: it has no path or no label")
            continue
        key, label = key_of(row[pcol]), _nfc(row[lcol].strip())
        if labels.get(key, label) != label or key in conflicts:
            conflicts[key] = sorted(set(conflicts.get(key, [labels[key]])) | {label})
        labels[key] = label
    for key in sorted(conflicts):
        notes.append(f"{path.name}: {key} has more than one label ({', '.join(conflicts[key])}): left out")
        del labels[key]
    if known is not None and known and not set(labels) & known:
        example = next(iter(labels), None)
        raise DatasetError(f"labels file {path}: none of its {len(labels)} path(s) names an image below the dataset "
                           f"folder" + (f" (e.g. {example!r})" if example else "") + f": {_EXPECTED}")
    return labels, notes, conflicts


def _discover_csv(root: Path, labels_csv: Path) -> Discovery:
    found = Discovery(refs=[], classes=[], layout="csv")
    walk = _walk(root, guard=root)
    here = os.path.realpath(labels_csv)
    if not isinstance(root, _Prefix) and any(os.path.realpath(root / o) == here for o in walk.other):  # the labels file itself is no stray file
        walk.other = [o for o in walk.other if os.path.realpath(root / o) != here]
        walk.ignored = Counter(os.path.splitext(o)[1].lower() for o in walk.other)
    labels, found.notes, conflicts = _read_labels_csv(labels_csv, {_key_for(rel) for _, rel in walk.files})
    _record_walk(found, walk, "")
    missing = []
    for path, rel in walk.files:
        key = _key_for(rel)
        if key in labels:
            found.refs.append(ImageRef(key, path, labels[key]))
        elif key in conflicts:
            found.dropped.append(Dropped(key, "file", f"{labels_csv.name} gives it more than one label: "
                                                      f"{', '.join(conflicts[key])}"))
        else:
            missing.append(key)
    found.dropped.extend(Dropped(k, "file", f"not in {labels_csv.name}") for k in missing)
    if missing:
        found.notes.append(f"{len(missing)} image(s) not in {labels_csv.name}, left out: {_some(missing)}")
    unknown = sorted((set(labels) | set(conflicts)) - {_key_for(rel) for _, rel in walk.files})
    if unknown:
        found.notes.append(f"{len(unknown)} path(s) in {labels_csv.name} not found in {root}: {_some(unknown)}")
    found.classes = sorted({r.label for r in found.refs})
    return found


def _some(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _note_ignored(found: Discovery) -> None:
    """One note for the files embedded by their content (extension not an image's), one for every file not
    embedded: how many of each extension, and why (not an image, or the picture format not supported)."""
    if found.by_content:
        shown = ", ".join(f"{key} ({name})" for key, name in found.by_content[:5])
        more = f" and {len(found.by_content) - 5} more" if len(found.by_content) > 5 else ""
        found.notes.append(f"{len(found.by_content)} file(s) without an image extension embedded by their content: "
                           f"{shown}{more}")
    if not found.ignored:
        return
    total = sum(found.ignored.values())
    parts = []
    for ext, n in sorted(found.ignored.items(), key=lambda item: (-item[1], item[0])):
        why = found.ignored_why.get(ext) or {NOT_AN_IMAGE: n}
        reasons = next(iter(why)) if len(why) == 1 else ", ".join(f"{r} {c}" for r, c in sorted(why.items()))
        parts.append(f"{ext or '(no extension)'} {n} ({reasons})")
    found.notes.append(f"{total} file(s) not embedded, by extension: {', '.join(parts)}")


def _raw_name_is_key(ref: ImageRef) -> bool:
    """The file's own relative path is its key: valid UTF-8 and already NFC."""
    if isinstance(ref.path, RemotePath):
        return ref.path.url.endswith("/" + ref.key)
    parts = os.fsencode(ref.path).split(os.fsencode(os.sep))[-(ref.key.count("/") + 1):]
    try:
        return "/".join(p.decode("utf-8") for p in parts) == ref.key
    except UnicodeDecodeError:
        return False


def _without_key_collisions(images: list[ImageRef], found: Discovery) -> list[ImageRef]:
    """Keys must stay unique. A name that is not valid UTF-8 gets a backslash-escaped key, which can equal a real
    file's name (b"caf\\xe9.jpg" and "caf\\\\xe9.jpg"); two names can differ only by Unicode normalisation (NFD
    "café" from macOS and NFC "café"). The file whose name is its key keeps it, the other is skipped."""
    kept: list[ImageRef] = []
    for ref in images:  # sorted by key: collisions are neighbours
        if not kept or kept[-1].key != ref.key:
            kept.append(ref)
            continue
        if not _raw_name_is_key(kept[-1]) and _raw_name_is_key(ref):
            kept[-1], ref = ref, kept[-1]
        try:
            str(ref.path) if isinstance(ref.path, RemotePath) else os.fsencode(ref.path).decode("utf-8")
            reason = (f"skipped {str(ref.path)!r}: its name differs from '{ref.key}' only by Unicode normalisation "
                      f"(NFD/NFC) and that name is taken by another file; rename it")
        except UnicodeDecodeError:
            reason = (f"skipped {os.fsencode(ref.path)!r}: its name is not valid UTF-8 and its printable key "
                      f"'{ref.key}' is the name of another file; rename it")
        found.notes.append(reason)
        found.dropped.append(Dropped(ref.key, "file", reason))
    return kept


def discover_inputs(paths: list[str | os.PathLike]) -> list[ImageRef]:
    """Files and folders given on a command line (predict, neighbors): unlabelled, in the order given."""
    refs: list[ImageRef] = []
    for p in paths:
        if is_url(p):
            refs.extend(ImageRef(str(rp), rp, None) for rp in object_or_prefix(p, is_image_name))
            continue
        p = Path(local_path_of(p))
        if p.is_dir():
            refs.extend(ImageRef(_key_for(str(f)), f, None) for f, _ in walk_images(p))
        elif p.exists() or p.is_symlink():
            refs.append(ImageRef(_key_for(str(p)), p, None))
        else:
            raise UsageError(f"no such file or folder: {p}")
    if not refs:
        raise UsageError(f"no images found in: {', '.join(map(str, paths))}")
    return refs


class _Prefix:
    """A folder of a listed object store (what discover walks instead of a local folder): rel is its path
    below the listed root ("" for the root), "/"-separated."""

    def __init__(self, tree: dict, root: str, rel: str = ""):
        self.tree, self.root, self.rel = tree, root, rel

    @classmethod
    def listed(cls, url: str) -> "_Prefix":
        """The root of everything below url, listed once (raises DatasetError when it cannot be)."""
        root, objects = list_objects(url)
        tree: dict[str, tuple[set, list]] = {"": (set(), [])}
        files, unusable = {}, []
        for rel, rp in objects:
            parts = rel.split("/")
            if any(p in ("", ".", "..") for p in parts):  # legal in S3, but no path inside the prefix
                unusable.append(rel)
                continue
            files[rel] = rp
            for i in range(len(parts) - 1):
                d = "/".join(parts[:i])
                tree.setdefault(d, (set(), []))[0].add(parts[i])
            tree.setdefault("/".join(parts[:-1]), (set(), []))[1].append(parts[-1])
        return cls({"dirs": tree, "files": files, "keys": sorted(files), "unusable": unusable}, root)

    def __truediv__(self, name: str) -> "_Prefix | RemotePath":
        rel = f"{self.rel}/{name}" if self.rel else name
        return self.tree["files"].get(rel) or _Prefix(self.tree, self.root, rel)

    def __str__(self) -> str:
        return f"{self.root}/{self.rel}" if self.rel else self.root

    def is_dir(self) -> bool:
        return self.rel in self.tree["dirs"]

    def exists(self) -> bool:
        return self.is_dir() or self.is_file()

    def is_file(self) -> bool:
        return self.rel in self.tree["files"]

    def is_symlink(self) -> bool:
        return False

    def children(self) -> tuple[set, list]:
        """(subfolder names, object names) directly in this folder."""
        return self.tree["dirs"].get(self.rel, (set(), []))

    def walk(self, deep: bool = True) -> _Walk:
        """Every object below this folder (directly in it: deep=False), as _walk gives the files of a local
        one (hidden ones left out). Formats are told by extension only: naming the content of an object
        with another extension would cost a request per object."""
        import bisect

        out = _Walk()
        keys, files = self.tree["keys"], self.tree["files"]
        prefix = self.rel + "/" if self.rel else ""
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            key = keys[i]
            if not key.startswith(prefix):
                break
            sub = key[len(prefix):]
            *dirs, f = sub.split("/")
            if (dirs and not deep) or any(d.startswith(".") for d in dirs) or f.startswith("."):
                continue
            if is_image_name(f):
                out.files.append((files[key], sub))
                continue
            ext = os.path.splitext(f)[1].lower()
            out.ignored[ext] += 1
            out.other.append(sub)
            if ext in UNSUPPORTED_EXTENSIONS:
                out.why[sub] = f"{UNSUPPORTED_EXTENSIONS[ext]}: not supported"
                out.unsupported.append((sub, UNSUPPORTED_EXTENSIONS[ext]))
            else:
                out.why[sub] = NOT_AN_IMAGE
        out.unsupported.sort()
        return out
