"""Opening and validating dataset folders: good ones open, each kind of broken one gets a clear error."""

import json
import shutil

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.data.dataset import open_dataset
from semshare.errors import DataFormatError

from conftest import shared_dataset


@pytest.fixture()
def data_copy(tiny_data_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_data_dir, target)
    return target


def test_tiny_synthetic_opens_with_memory_maps(tiny_data_dir):
    ds = open_dataset(tiny_data_dir)
    assert isinstance(ds.regions, np.memmap)
    assert ds.regions.shape == (120, 8, 32)
    assert ds.num_labels == 8
    assert len(ds.split("train")) == 80 and len(ds.split("val")) == 20 and len(ds.split("test")) == 20
    items = ds.text_items(ds.split("test"))
    assert len(items.rows) == 40  # two captions per item
    assert np.array_equal(items.rows[::2], ds.split("test"))
    assert ds.meta["num_text_items"] == 240


def save(path, array):
    np.save(path, array)


BROKEN_CASES = [
    # (what to break, expected words in the message)
    ("labels_missing", "labels.npy"),
    ("labels_not_binary", "only 0 and 1"),
    ("regions_nan", "finite values"),
    ("regions_rows", "rows"),
    ("mask_shape", "region_mask.npy: regions per item (axis 1)"),
    ("boxes_outside", "normalised coordinates"),
    ("split_overlap", "disjoint rows"),
    ("split_out_of_range", "row indices in [0, 120)"),
    ("split_unknown_name", "split 'trian'"),
    ("captions_count", "120 lines"),
    ("captions_bad_json", "invalid JSON"),
    ("captions_wrong_id", "'id'"),
    ("label_names_count", "8 label names"),
    ("text_vectors_dtype", "float dtype"),
    ("not_npy", "readable NumPy"),
]


def break_folder(folder, case):
    if case == "labels_missing":
        (folder / "labels.npy").unlink()
    elif case == "labels_not_binary":
        labels = np.load(folder / "labels.npy")
        labels[3, 2] = 2
        save(folder / "labels.npy", labels)
    elif case == "regions_nan":
        regions = np.load(folder / "regions.npy")
        regions[5, 1, 0] = np.nan
        save(folder / "regions.npy", regions)
    elif case == "regions_rows":
        save(folder / "regions.npy", np.load(folder / "regions.npy")[:-1])
    elif case == "mask_shape":
        save(folder / "region_mask.npy", np.load(folder / "region_mask.npy")[:, :-1])
    elif case == "boxes_outside":
        boxes = np.load(folder / "region_boxes.npy")
        boxes[0, 0, 2] = 1.7
        save(folder / "region_boxes.npy", boxes)
    elif case in ("split_overlap", "split_out_of_range", "split_unknown_name"):
        split = json.loads((folder / "split.json").read_text())
        if case == "split_overlap":
            split["test"].append(split["train"][0])
        elif case == "split_out_of_range":
            split["test"].append(120)
        else:
            split["trian"] = split.pop("val")
        (folder / "split.json").write_text(json.dumps(split))
    elif case == "captions_count":
        lines = (folder / "captions.jsonl").read_text().splitlines()
        (folder / "captions.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    elif case == "captions_bad_json":
        lines = (folder / "captions.jsonl").read_text().splitlines()
        lines[7] = lines[7][:-3]
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "captions_wrong_id":
        lines = (folder / "captions.jsonl").read_text().splitlines()
        lines[0], lines[1] = lines[1], lines[0]
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "label_names_count":
        (folder / "label_names.txt").write_text("a\nb\n")
    elif case == "text_vectors_dtype":
        save(folder / "text.npy", np.zeros((120, 4), dtype=np.int32))
    elif case == "not_npy":
        (folder / "image.npy").write_bytes(b"this is not a numpy file")


@pytest.mark.parametrize("case,expected", BROKEN_CASES)
def test_broken_folder_gets_a_clear_error(data_copy, case, expected):
    break_folder(data_copy, case)
    with pytest.raises(DataFormatError) as info:
        open_dataset(data_copy)
    message = str(info.value)
    assert expected in message
    assert str(data_copy) in message  # names the file


@pytest.mark.parametrize("case,expected", BROKEN_CASES[:4])
def test_inspect_cli_reports_broken_folder_without_traceback(data_copy, case, expected, capsys):
    break_folder(data_copy, case)
    assert main(["inspect", str(data_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("semshare: error: ") and expected in err
    assert "Traceback" not in err


def test_unlabeled_items_are_allowed_and_counted(data_copy, capsys):
    labels = np.load(data_copy / "labels.npy")
    labels[:3] = 0
    save(data_copy / "labels.npy", labels)
    expected = int((labels.sum(1) == 0).sum())
    assert open_dataset(data_copy).summary()["unlabeled_items"] == expected
    assert main(["inspect", str(data_copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unlabeled_items"] == expected


def test_tag_word_texts(tmp_path, data_copy):
    lines = [json.dumps({"id": i, "tokens": ["Sky", "blue sea"], "text": "ignored"}) for i in range(120)]
    (data_copy / "captions.jsonl").write_text("\n".join(lines) + "\n")
    ds = open_dataset(data_copy)
    assert ds.captions[0] == [["Sky", "blue sea"]]
    assert ds.summary()["captions"]["tag_word_rows"] == 120


@pytest.mark.parametrize("name", ["pascal_sentences_img", "coco_tiny_val", "wikipedia", "mirflickr25k", "pascal_sentences"])
def test_inspect_every_shared_dataset(name, capsys):
    path = shared_dataset(name)
    assert main(["inspect", str(path)]) == 0
    assert "validation   ok" in capsys.readouterr().out


def test_a_file_with_the_wrong_row_count_is_the_one_named(tmp_path, capsys):
    from semshare.cli.main import main
    from semshare.data.synthetic import make_synthetic, preset

    root = make_synthetic(tmp_path / "d", preset("tiny"), progress=False)
    labels = np.load(root / "labels.npy")
    np.save(root / "labels.npy", labels[:-7])
    assert main(["inspect", str(root)]) == 2
    assert f"{root / 'labels.npy'}: rows: expected 120 (as regions.npy" in capsys.readouterr().err
    np.save(root / "labels.npy", labels)
    regions = np.load(root / "regions.npy")
    np.save(root / "regions.npy", regions[:, :-1])
    assert main(["inspect", str(root)]) == 2
    assert f"{root / 'regions.npy'}: regions per item (axis 1): expected 8 (as region_mask.npy" in capsys.readouterr().err


def test_numpy_scalars_read_as_plain_numbers():
    from semshare.errors import DataFormatError

    message = str(DataFormatError("f.npy", "x", "a value below np.int64(3)", "np.float32(4.5)"))
    assert message == "f.npy: x: expected a value below 3, found 4.5"


@pytest.mark.parametrize("caption", ["", "   ", "?!"])
def test_empty_or_blank_captions_are_an_error_naming_row_and_caption(tmp_path, capsys, caption):
    import json

    from semshare.cli.main import main
    from semshare.data.synthetic import make_synthetic, preset

    root = make_synthetic(tmp_path / "d", preset("tiny"), progress=False)
    lines = (root / "captions.jsonl").read_text().splitlines()
    record = json.loads(lines[5])
    record["captions"][1] = caption
    lines[5] = json.dumps(record)
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["inspect", str(root)]) == 2
    err = capsys.readouterr().err
    assert "captions.jsonl: line 6 (row 5) caption 1: expected a text with at least one word" in err
    # a row the dataset marks as having no text (an empty tag list) is fine
    lines[5] = json.dumps({"tokens": []})
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["inspect", str(root)]) == 0


def test_an_object_array_is_refused_not_unpickled(tmp_path):
    from semshare.data.dataset import load_npy
    from semshare.errors import DataFormatError

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match="objects.npy: labels: expected a readable NumPy .npy file"):
        load_npy(tmp_path / "objects.npy", "labels")
