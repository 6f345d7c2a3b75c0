"""Dataset layouts: class folders, train/val/test splits, unlabelled collections, labels from a CSV; NFC names;
folder links back into the dataset; files that are not images counted per extension; what --strict needs."""

from __future__ import annotations

import os
import unicodedata

import pytest

from embedflow.data import Discovery, discover, discover_labelled
from embedflow.errors import DatasetError

NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


def img(path, seed=1):
    """Discovery goes by names: any bytes will do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"image %d" % seed)
    return path


def keys(found: Discovery) -> list[str]:
    return [r.key for r in found.refs]


def test_class_folders_layout(tmp_path):
    for name in ["a.jpg", "b.jfif", "c.jpe", "d.tif", "e.TIFF", "f.png"]:
        img(tmp_path / "cats" / name)
    img(tmp_path / "dogs" / "x.jpg")
    found = discover(tmp_path)
    assert found.layout == "class-folders" and found.classes == ["cats", "dogs"] and found.split_of == {}
    assert keys(found) == ["cats/a.jpg", "cats/b.jfif", "cats/c.jpe", "cats/d.tif", "cats/e.TIFF", "cats/f.png",
                           "dogs/x.jpg"]
    assert found.dropped == [] and found.notes == []


def test_heic_heif_and_avif_names_are_images(tmp_path):
    for name in ["a.heic", "b.HEIF", "c.avif"]:
        (tmp_path / "cats").mkdir(exist_ok=True)
        (tmp_path / "cats" / name).write_bytes(b"\x00\x00\x00\x18ftypheic")  # discovery goes by name only
    assert keys(discover(tmp_path)) == ["cats/a.heic", "cats/b.HEIF", "cats/c.avif"]


@pytest.mark.parametrize("val", ["val", "validation"])
def test_train_val_test_splits_are_recognised(tmp_path, val):
    for split, classes in [("train", ["cats", "dogs"]), (val, ["cats", "dogs"]), ("test", ["cats"])]:
        for c in classes:
            img(tmp_path / split / c / "1.jpg")
            img(tmp_path / split / c / "deeper" / "2.jpg")
    found = discover(tmp_path)
    assert found.layout == "splits" and found.classes == ["cats", "dogs"]
    assert [(r.key, r.label) for r in found.refs][:2] == [("test/cats/1.jpg", "cats"), ("test/cats/deeper/2.jpg", "cats")]
    assert len(found.refs) == 10
    assert found.split_of[f"{val}/dogs/deeper/2.jpg"] == "val" and found.split_of["train/cats/1.jpg"] == "train"
    assert sorted(set(found.split_of.values())) == ["test", "train", "val"] and len(found.split_of) == 10
    assert found.notes == ["train/val/test layout: train 4, val 4, test 2 image(s); classes from the folders inside "
                           "each split"]
    refs, classes, notes = discover_labelled(tmp_path)  # today's callers get the classes, not the splits
    assert classes == ["cats", "dogs"] and [r.key for r in refs] == keys(found)


def test_a_split_with_a_class_train_lacks_is_reported(tmp_path):
    img(tmp_path / "train" / "cats" / "1.jpg")
    img(tmp_path / "val" / "cats" / "1.jpg")
    img(tmp_path / "val" / "owls" / "1.jpg")
    found = discover(tmp_path)
    assert found.classes == ["cats", "owls"]
    assert "classes in val but not in train: owls" in found.notes


def test_images_directly_in_the_root_are_an_unlabelled_collection(tmp_path):
    for i in range(3):
        img(tmp_path / f"{i}.jpg")
    (tmp_path / "empty").mkdir()
    found = discover(tmp_path)
    assert found.layout == "unlabelled" and found.classes == []
    assert [(r.key, r.label) for r in found.refs] == [("0.jpg", None), ("1.jpg", None), ("2.jpg", None)]
    with pytest.raises(DatasetError, match="no images found"):  # discover_labelled wants classes, as before
        discover_labelled(tmp_path)


def test_unlabelled_true_takes_a_nested_collection(tmp_path):
    img(tmp_path / "2023" / "a.jpg")
    img(tmp_path / "2024" / "june" / "b.png")
    img(tmp_path / "c.jpg")
    (tmp_path / "2023" / "again").symlink_to(tmp_path)  # back to the root: not followed
    found = discover(tmp_path, unlabelled=True)
    assert found.layout == "unlabelled" and keys(found) == ["2023/a.jpg", "2024/june/b.png", "c.jpg"]
    assert all(r.label is None for r in found.refs)
    assert [d.key for d in found.dropped] == ["2023/again"]
    assert discover(tmp_path).layout == "class-folders"  # not detected: there are folders with images


@pytest.mark.parametrize("header", [True, False])
def test_labels_from_a_csv(tmp_path, header):
    data = tmp_path / "data"
    for name in ["a.jpg", "sub/b.jpg", "c.jpg", f"{NFC}.jpg"]:
        img(data / name)
    rows = ["a.jpg,cat", "./sub/b.jpg,dog", "gone.jpg,cat", f"{NFD}.jpg,dog"]  # NFD in the CSV, NFC on disk
    (tmp_path / "labels.csv").write_text("\n".join((["path,label"] if header else []) + rows) + "\n")
    found = discover(data, labels_csv=tmp_path / "labels.csv")
    assert found.layout == "csv" and found.classes == ["cat", "dog"]
    assert [(r.key, r.label) for r in found.refs] == [("a.jpg", "cat"), (f"{NFC}.jpg", "dog"), ("sub/b.jpg", "dog")]
    assert f"1 path(s) in labels.csv not found in {data}: gone.jpg" in found.notes
    assert "1 image(s) not in labels.csv, left out: c.jpg" in found.notes
    assert [(d.key, d.kind) for d in found.dropped] == [("c.jpg", "file")]


def test_a_csv_inside_the_folder_is_not_a_stray_file(tmp_path):
    img(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("a.jpg,cat\n")
    found = discover(tmp_path, labels_csv=tmp_path / "labels.csv")
    assert found.ignored == {} and found.notes == [] and keys(found) == ["a.jpg"]


def test_class_names_and_keys_are_nfc(tmp_path):
    img(tmp_path / NFC / "1.jpg")
    img(tmp_path / NFD / "2.jpg")  # the same class, named on macOS
    img(tmp_path / "plain" / f"{NFD}.jpg")
    found = discover(tmp_path)
    assert found.classes == [NFC, "plain"]
    assert keys(found) == [f"{NFC}/1.jpg", f"{NFC}/2.jpg", f"plain/{NFC}.jpg"]
    assert all(unicodedata.is_normalized("NFC", r.label) for r in found.refs)


def test_two_names_differing_only_by_normalisation_keep_one_key(tmp_path):
    img(tmp_path / "cats" / f"{NFD}.jpg", 1)
    img(tmp_path / "cats" / f"{NFC}.jpg", 2)
    img(tmp_path / "cats" / "other.jpg", 3)
    found = discover(tmp_path)
    assert keys(found) == [f"cats/{NFC}.jpg", "cats/other.jpg"]
    kept = found.refs[0]
    assert os.path.basename(kept.path) == f"{NFC}.jpg"  # the file whose name is its key keeps it
    assert len(found.notes) == 1 and "only by Unicode normalisation" in found.notes[0]
    assert [(d.key, d.kind) for d in found.dropped] == [(f"cats/{NFC}.jpg", "file")]


def test_folder_links_back_into_the_dataset_are_not_followed(tmp_path):
    root = tmp_path / "data"
    img(root / "cats" / "1.jpg")
    img(root / "dogs" / "2.jpg")
    img(tmp_path / "elsewhere" / "3.jpg")
    (root / "cats" / "all").symlink_to(root)  # re-enters the root: would relabel every dog as a cat
    (root / "cats" / "up").symlink_to(tmp_path)  # an ancestor of the root
    (root / "cats" / "dogs_too").symlink_to(root / "dogs")  # another class
    (root / "cats" / "more").symlink_to(tmp_path / "elsewhere")  # outside the dataset: followed
    (root / "everything").symlink_to(root)  # a class folder that is the root itself
    found = discover(root)
    assert keys(found) == ["cats/1.jpg", "cats/more/3.jpg", "dogs/2.jpg"]
    assert found.classes == ["cats", "dogs"]
    assert sorted(d.key for d in found.dropped) == ["cats/all", "cats/dogs_too", "cats/up", "everything"]
    assert all(d.kind == "folder" for d in found.dropped)
    assert "folder link 'cats/all' leads back into the dataset: not followed" in found.notes


def test_ignored_files_are_counted_per_extension_in_one_note(tmp_path):
    img(tmp_path / "cats" / "1.jpg")
    for name in ["a.txt", "b.txt", "sub/c.txt", "d.psd", "e.raw", "f.RAW", "Makefile"]:
        (tmp_path / "cats" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cats" / name).write_bytes(b"x")
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"x")  # hidden: not counted
    found = discover(tmp_path)
    assert found.ignored == {".txt": 3, ".raw": 2, ".psd": 1, "": 1}
    assert found.notes == ["7 file(s) not embedded, by extension: .txt 3 (not an image), .raw 2 (camera RAW (RAW): "
                           "not supported), (no extension) 1 (not an image), .psd 1 (Photoshop PSD: not supported)"]
    assert sorted(d.key for d in found.dropped) == ["cats/d.psd", "cats/e.raw", "cats/f.RAW"]  # image-like only


def test_unreadable_files_without_an_extension_are_read_as_images(tmp_path):
    """A symlink loop, a broken link or a FIFO without an extension cannot be sniffed: it is taken as an image,
    so that reading it skips it with its reason as for a named image, never counted as "not an image"; a
    FIFO is never opened for reading (that would block discovery)."""
    img(tmp_path / "cats" / "1.jpg")
    (tmp_path / "cats" / "lz").symlink_to("lw")
    (tmp_path / "cats" / "lw").symlink_to("lz")
    (tmp_path / "cats" / "gone").symlink_to("nowhere")
    os.mkfifo(tmp_path / "cats" / "pipe")
    os.mkfifo(tmp_path / "cats" / "pipe.txt")  # another extension: named by it, and not opened either
    (tmp_path / "cats" / "scan.psd").symlink_to("scan.psd")
    found = discover(tmp_path)
    assert keys(found) == ["cats/1.jpg", "cats/gone", "cats/lw", "cats/lz", "cats/pipe"]
    assert found.by_content == []
    assert found.notes == ["2 file(s) not embedded, by extension: .psd 1 (Photoshop PSD: not supported), "
                           ".txt 1 (not an image)"]


def test_dropped_lists_what_strict_refuses(tmp_path):
    img(tmp_path / "cats" / "1.jpg")
    img(tmp_path / "loose.jpg")
    (tmp_path / "owls").mkdir()
    (tmp_path / "owls" / "readme.txt").write_text("no pictures yet")
    found = discover(tmp_path)
    assert sorted((d.key, d.kind) for d in found.dropped) == [("loose.jpg", "file"), ("owls", "class")]
    assert "class folder 'owls' holds no images: ignored" in found.notes
    clean = tmp_path / "clean"
    img(clean / "cats" / "1.jpg")
    assert discover(clean).dropped == []


def test_nothing_found_says_what_was_looked_for(tmp_path):
    (tmp_path / "x.txt").write_text("no pictures")
    (tmp_path / "labels.csv").write_text("a.jpg,cat\n")
    with pytest.raises(DatasetError, match="no images found .*: expected one subfolder per class"):
        discover(tmp_path)
    with pytest.raises(DatasetError, match="no images found"):
        discover(tmp_path, unlabelled=True)
    with pytest.raises(DatasetError, match="no image of labels.csv found"):
        discover(tmp_path, labels_csv=tmp_path / "labels.csv")
    with pytest.raises(DatasetError, match="cannot read labels file"):
        discover(tmp_path, labels_csv=tmp_path / "missing.csv")


@pytest.mark.parametrize("names", [("train", "valid", "test"), ("Training", "Testing"), ("train", "dev"),
                                   ("TRAIN", "Validation")])
def test_other_spellings_of_the_split_folders_are_recognised(tmp_path, names):
    """Issue 16 (tester): Kaggle's valid/, Training/ + Testing/ and dev/ became classes train/valid/test."""
    for name in names:
        for c in ("cats", "dogs"):
            img(tmp_path / name / c / "1.jpg")
    found = discover(tmp_path)
    want = {"train": "train", "training": "train", "valid": "val", "validation": "val", "dev": "val",
            "test": "test", "testing": "test"}
    assert found.layout == "splits" and found.classes == ["cats", "dogs"] and found.dropped == []
    assert {found.split_of[f"{n}/cats/1.jpg"] for n in names} == {want[n.lower()] for n in names}


def test_an_extra_folder_or_a_loose_image_beside_the_splits_is_dropped_with_a_reason(tmp_path):
    """Issue 16 (tester): train/val/test plus unlabeled/ (or a loose image at the root) was silently merged or
    dropped. They are reported in dropped (so --strict exits 7), and never become classes."""
    for split in ("train", "val", "test"):
        for c in ("cats", "dogs"):
            img(tmp_path / split / c / "1.jpg")
    img(tmp_path / "unlabeled" / "x.jpg")
    img(tmp_path / "unlabeled" / "sub" / "y.jpg")
    img(tmp_path / "stray.jpg")
    found = discover(tmp_path)
    assert found.layout == "splits" and found.classes == ["cats", "dogs"]
    assert not any(k.startswith("unlabeled") or k == "stray.jpg" for k in keys(found))
    assert sorted((d.key, d.kind) for d in found.dropped) == [("stray.jpg", "file"), ("unlabeled", "folder")]
    assert any("'unlabeled' beside the split folders is not a split" in n for n in found.notes)
    assert any("1 image(s) directly in" in n and "beside the split folders" in n for n in found.notes)


def _png(path, colour=(10, 20, 30), fmt="PNG"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path, format=fmt)
    return path


# (file name, first bytes, format named): pictures embedflow does not decode, by their content or extension
UNSUPPORTED_FILES = [
    ("layers.psd", b"8BPS\x00\x01" + bytes(40), "Photoshop PSD"),
    ("IMG_1.CR2", b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(40), "camera RAW (CR2)"),
    ("IMG_2.dng", b"II*\x00\x08\x00\x00\x00" + bytes(40), "camera RAW (DNG)"),  # TIFF inside: named by its extension
    ("IMG_3.cr3", b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + bytes(40), "camera RAW (CR3)"),
    ("photo.jxl", b"\xff\x0a" + bytes(40), "JPEG XL"),
    ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', "SVG drawing"),
    ("scan.pdf", b"%PDF-1.7\n" + bytes(40), "PDF document"),
    ("export", b"8BPS\x00\x01" + bytes(40), "Photoshop PSD"),  # no extension: named by its content
    ("raw.bin", b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(40), "camera RAW (CR2)"),
]


def test_formats_are_found_by_content_not_by_extension(tmp_path):
    """Issue 16: an extension-less JPEG, a PNG named .dat or without extension are images (embedded, with a
    note naming their format); .psd, RAW, .jxl, .svg, .pdf are left out with the format named, in
    Discovery.dropped (--strict) and in the one per-extension note, whose wording is true for each kind."""
    img(tmp_path / "cats" / "1.jpg")
    _png(tmp_path / "cats" / "IMG_0001", fmt="JPEG")
    _png(tmp_path / "cats" / "pixels.dat")
    _png(tmp_path / "cats" / "pixels")
    for name, head, _ in UNSUPPORTED_FILES:
        (tmp_path / "cats" / name).write_bytes(head)
    (tmp_path / "cats" / "notes.txt").write_text("not a picture")
    (tmp_path / "cats" / "LICENSE").write_text("not a picture either")
    found = discover(tmp_path)
    assert keys(found) == ["cats/1.jpg", "cats/IMG_0001", "cats/pixels", "cats/pixels.dat"]
    assert found.by_content == [("cats/IMG_0001", "JPEG"), ("cats/pixels", "PNG"), ("cats/pixels.dat", "PNG")]
    assert sorted((d.key, d.reason) for d in found.dropped) == sorted(
        (f"cats/{name}", f"{fmt}: not supported") for name, _, fmt in UNSUPPORTED_FILES)
    assert found.notes[0] == ("3 file(s) without an image extension embedded by their content: cats/IMG_0001 (JPEG), "
                              "cats/pixels (PNG), cats/pixels.dat (PNG)")
    assert found.notes[1] == (
        "11 file(s) not embedded, by extension: (no extension) 2 (Photoshop PSD: not supported 1, not an image 1), "
        ".bin 1 (camera RAW (CR2): not supported), .cr2 1 (camera RAW (CR2): not supported), .cr3 1 (camera RAW "
        "(CR3): not supported), .dng 1 (camera RAW (DNG): not supported), .jxl 1 (JPEG XL: not supported), .pdf 1 "
        "(PDF document: not supported), .psd 1 (Photoshop PSD: not supported), .svg 1 (SVG drawing: not supported), "
        ".txt 1 (not an image)")
    assert len(found.notes) == 2


def test_a_class_of_extensionless_photos_is_a_class(tmp_path):
    for i in range(3):
        _png(tmp_path / "owls" / f"owl{i}", (i, 2, 3), fmt="JPEG")
    img(tmp_path / "cats" / "1.jpg")
    found = discover(tmp_path)
    assert found.classes == ["cats", "owls"] and found.dropped == []
    loose = tmp_path / "loose"
    _png(loose / "a", fmt="JPEG")
    _png(loose / "b.dat")
    assert discover(loose).layout == "unlabelled" and keys(discover(loose)) == ["a", "b.dat"]


def _photos(root):
    for name in ["2024/a.jpg", "2024/b, the second.jpg", "2024/c.jpg", "2024/d.jpg"]:
        img(root / name)
    return root


# (CSV bytes, what it is): every one of these must give a.jpg=red, "b, the second.jpg"=green, c.jpg=red, d.jpg=green
GOOD_CSVS = [
    (b'path,label\n2024/a.jpg,red\n"2024/b, the second.jpg",green\n2024/c.jpg,red\n2024/d.jpg,green\n', "plain"),
    (b'path;label\n2024/a.jpg;red\n2024/b, the second.jpg;green\n2024/c.jpg;red\n2024/d.jpg;green\n', "semicolons"),
    (b'label,path\nred,2024/a.jpg\ngreen,"2024/b, the second.jpg"\nred,2024/c.jpg\ngreen,2024/d.jpg\n', "swapped"),
    (b'red,2024/a.jpg\ngreen,"2024/b, the second.jpg"\nred,2024/c.jpg\ngreen,2024/d.jpg\n', "swapped, no header"),
    (b'2024/a.jpg,red\n"2024/b, the second.jpg",green\n2024/c.jpg,red\n2024/d.jpg,green\n', "no header"),
    (b'\xef\xbb\xbfpath,label\r\n2024/a.jpg,red\r\n"2024/b, the second.jpg",green\r\n2024/c.jpg,red\r\n'
     b'2024/d.jpg,green\r\n', "BOM and CRLF"),
    (b'id\tFilename\tClass\n1\t2024/a.jpg\tred\n2\t2024/b, the second.jpg\tgreen\n3\t2024/c.jpg\tred\n'
     b'4\t2024/d.jpg\tgreen\n', "tabs, three named columns"),
    (b'image_id,species\n2024/a.jpg,red\n"2024/b, the second.jpg",green\n2024/c.jpg,red\n2024/d.jpg,green\n',
     "a header of other names"),
]


@pytest.mark.parametrize("data,what", GOOD_CSVS, ids=[w for _, w in GOOD_CSVS])
def test_labels_csv_variants_are_read_right(tmp_path, data, what):
    root = _photos(tmp_path / "photos")
    (tmp_path / "labels.csv").write_bytes(data)
    found = discover(root, labels_csv=tmp_path / "labels.csv")
    got = {r.key: r.label for r in found.refs}
    assert got == {"2024/a.jpg": "red", "2024/b, the second.jpg": "green", "2024/c.jpg": "red", "2024/d.jpg": "green"}
    assert found.dropped == [], found.notes


BAD_CSVS = [
    (b"2024/a.jpg red\n2024/c.jpg red\n", "has one column"),
    (b"1,2024/a.jpg,red,x\n2,2024/c.jpg,red,y\n", "has 4 columns and no header naming them"),
    (b"path,size,date\n2024/a.jpg,12,2024-01-01\n", "names no label column"),
    (b"a.jpg,red\nc.jpg,red\n", "none of its 2 path(s) names an image below the dataset folder (e.g. 'a.jpg')"),
    (b"", "is empty"),
    (b"\xff\xfep\x00a\x00", "is not UTF-8 text"),
]


@pytest.mark.parametrize("data,why", BAD_CSVS, ids=[w for _, w in BAD_CSVS])
def test_labels_csv_that_cannot_be_read_right_is_refused_saying_what_was_expected(tmp_path, data, why):
    root = _photos(tmp_path / "photos")
    (tmp_path / "labels.csv").write_bytes(data)
    with pytest.raises(DatasetError) as e:
        discover(root, labels_csv=tmp_path / "labels.csv")
    msg = str(e.value)
    assert why in msg and "expected path,label rows" in msg and "no image" not in msg.replace("names an image", "")
    assert "\n" not in msg


def test_a_path_given_two_labels_is_one_warning_with_its_true_reason(tmp_path):
    """Tester (#16): a path listed as daisy and as roses got a second, false warning "not in C.csv" and that
    reason in dropped."""
    root = _photos(tmp_path / "photos")
    (tmp_path / "C.csv").write_text('path,label\n2024/a.jpg,daisy\n2024/a.jpg,roses\n"2024/b, the second.jpg",daisy\n'
                                    "2024/c.jpg,roses\n2024/d.jpg,daisy\n")
    found = discover(root, labels_csv=tmp_path / "C.csv")
    assert found.notes == ["C.csv: 2024/a.jpg has more than one label (daisy, roses): left out"]
    assert [(d.key, d.reason) for d in found.dropped] == [("2024/a.jpg", "C.csv gives it more than one label: "
                                                           "daisy, roses")]


def test_a_photo_library_with_images_at_the_top_and_one_subfolder_suggests_unlabelled(tmp_path):
    """Tester (#16): F/ (8 photos) + F/sub/ (8 photos) became one class `sub` with "put them in a class
    subfolder", and fit then refused. Not detected (a one-class folder with a stray photo is evaluate's
    input too): the warning names --unlabelled."""
    for i in range(8):
        img(tmp_path / f"top{i}.jpg", i)
        img(tmp_path / "sub" / f"s{i}.jpg", i)
    found = discover(tmp_path)
    assert found.layout == "class-folders" and found.classes == ["sub"]
    assert found.notes == [f"8 image(s) directly in {tmp_path} ignored: put them in a class subfolder, or embed with "
                           "--unlabelled if the folder has no classes (it has 1 class folder: sub)"]
    found = discover(tmp_path, unlabelled=True)
    assert len(found.refs) == 16 and found.layout == "unlabelled"
