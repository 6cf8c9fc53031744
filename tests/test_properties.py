"""Property-based checks (hypothesis): whatever is broken in a dataset folder, and whatever a client sends,
the answer is one clear line (CLI exit 2) or a 4xx, never a traceback or a 500."""

import shutil

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from semshare.cli.main import main  # noqa: E402

FILES = ["labels.npy", "regions.npy", "region_mask.npy", "region_boxes.npy", "region_labels.npy", "image.npy",
         "split.json", "meta.json", "captions.jsonl", "label_names.txt"]


def _mutate(folder, name: str, how: str, fraction: float, junk: bytes) -> None:
    path = folder / name
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
    elif how == "random bytes":
        path.write_bytes(junk)
    elif how == "append garbage":
        path.write_bytes(path.read_bytes() + junk)
    elif name.endswith(".npy"):
        array = np.load(path)
        if how == "drop rows":
            array = array[: max(0, int(len(array) * fraction))]
        elif how == "drop a column" and array.ndim >= 2:
            array = array[:, :-1]
        elif how == "another dtype":
            array = array.astype(np.float64 if array.dtype.kind != "f" else np.int8)
        elif how == "poison values":
            array = array.astype(np.float32)
            array.flat[int(fraction * (array.size - 1))] = np.nan if fraction < 0.5 else 7.0
        elif how == "one more axis":
            array = array[..., None]
        np.save(path, array)
    else:  # a text file: cut a line in half, or blank it
        lines = path.read_text().splitlines()
        if lines:
            i = int(fraction * (len(lines) - 1))
            lines[i] = lines[i][: len(lines[i]) // 2] if how == "drop rows" else " "
        path.write_text("\n".join(lines) + "\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(FILES),
       how=st.sampled_from(["delete", "truncate", "random bytes", "append garbage", "drop rows", "drop a column",
                            "another dtype", "poison values", "one more axis"]),
       fraction=st.floats(0.0, 1.0), junk=st.binary(min_size=1, max_size=300))
def test_a_broken_dataset_folder_is_one_line_or_fine(tiny_data_dir, tmp_path_factory, capsys, name, how, fraction, junk):
    folder = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(tiny_data_dir, folder)
    _mutate(folder, name, how, fraction, junk)
    capsys.readouterr()
    code = main(["inspect", str(folder)])  # any exception here fails the property
    err = capsys.readouterr().err.strip()
    assert code in (0, 2)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("semshare: error: ") and "Traceback" not in err, err
        assert "np.int64" not in err and "np.float" not in err


TRAIN_ONE_EPOCH = ["--threads", "1", "--set", "train.epochs=1", "--set", "train.progress=false", "--set",
                   "models.semantic_sharing.dim=16", "--set", "models.semantic_sharing.heads=2", "--set",
                   "models.semantic_sharing.layers=1", "--set", "text.word_dim=8", "--set", "text.word2vec_epochs=1"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(FILES),
       how=st.sampled_from(["truncate", "append garbage", "drop rows", "drop a column", "another dtype",
                            "poison values", "one more axis"]),
       fraction=st.floats(0.0, 1.0), junk=st.binary(min_size=1, max_size=300))
def test_what_inspect_accepts_train_takes_or_refuses_in_one_line(tiny_data_dir, tmp_path_factory, capsys, name, how,
                                                                fraction, junk):
    """Issue 34: a dataset folder `inspect` passes trains for an epoch, or `train` says one line and leaves
    no folder: never a traceback after an inspection that said all was well."""
    work = tmp_path_factory.mktemp("agree")
    folder = work / "data"
    shutil.copytree(tiny_data_dir, folder)
    _mutate(folder, name, how, fraction, junk)
    capsys.readouterr()
    if main(["inspect", str(folder)]) != 0:
        return
    capsys.readouterr()
    code = main(["train", "--data", str(folder), "--out", str(work / "run"), *TRAIN_ONE_EPOCH])
    err = capsys.readouterr().err
    assert code in (0, 2), err[-2000:]
    if code == 2:
        errors = [line for line in err.splitlines() if "semshare: error:" in line]
        assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
        assert not (work / "run").exists()


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=30), lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)
BODIES = (st.dictionaries(st.sampled_from(["text", "item_id", "k", "extra"]), JSON, max_size=4)
          | st.fixed_dictionaries({"text": st.text(max_size=60)}, optional={"k": st.integers(-5, 2000)})
          | st.fixed_dictionaries({"item_id": st.integers(-5, 10**7)}, optional={"k": st.integers(-5, 2000)}) | JSON)


@pytest.fixture(scope="module")
def client(tiny_data_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from semshare.api import load_index
    from semshare.search.service import create_app

    root = tmp_path_factory.mktemp("http")
    overrides = ["--set", "train.epochs=1", "--set", "models.semantic_sharing.dim=16",
                 "--set", "models.semantic_sharing.heads=2", "--set", "text.word2vec_epochs=1", "--set", "text.word_dim=8"]
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(root / "run"), *overrides]) == 0
    assert main(["index", "build", str(root / "run"), "--data", str(tiny_data_dir), "--side", "image",
                 "--out", str(root / "index")]) == 0
    return TestClient(create_app(load_index(root / "index")), raise_server_exceptions=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_any_json_body_gets_an_answer_or_a_4xx(client, body):
    response = client.post("/search", json=body)
    assert response.status_code in (200, 413, 422), (body, response.status_code, response.text[:300])
    if response.status_code == 200:
        assert isinstance(response.json()["results"], list)
    else:
        assert "detail" in response.json() and "Traceback" not in response.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=600), content_type=st.sampled_from(["application/json", "text/plain", "x/y"]))
def test_any_bytes_get_a_4xx_not_a_500(client, raw, content_type):
    response = client.post("/search", content=raw, headers={"content-type": content_type})
    assert response.status_code in (200, 400, 413, 422), (raw[:80], response.status_code, response.text[:300])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40))
def test_any_item_path_is_404_or_422(client, path):
    from urllib.parse import quote

    response = client.get(f"/items/{quote(path, safe='')}/image")  # the text as one path segment
    assert response.status_code in (404, 405, 422, 307), (path, response.status_code)
    assert "root:" not in response.text


def _config_keys() -> list[str]:
    from semshare.config import to_dict
    from semshare.training.recipes import resolve_config

    def dotted(values, prefix=""):
        return [k for key, value in values.items()
                for k in (dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])]
    return dotted(to_dict(resolve_config("ours")))


SET_VALUES = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=12), st.sampled_from(["[]", "{}", "[1, 2]", "{a: 1}", "null", "true", "-1", "0",
                                                              "1e400", "nan", "cuda", "'x'"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(_config_keys()), st.sampled_from(["models.cca.dim", "models.nope.dim", "train",
                                                                       "model", "x.y.z", "inputs"])),
       value=SET_VALUES)
def test_any_set_value_is_one_line_before_anything_is_made(tmp_path_factory, capsys, key, value):
    out = tmp_path_factory.mktemp("set") / "run"
    code = main(["train", "--data", str(out.parent / "no-data"), "--out", str(out), "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("semshare: error:") == 1, err
    assert not out.exists()


RUN_FILES = ["config.yaml", "model_spec.json", "splits.json", "data_fingerprint.json", "vocab.json",
             "best/state.json", "best/files.json", "best/model.safetensors", "fitted_inputs.safetensors"]


@pytest.fixture(scope="module")
def small_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("props") / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--set", "train.epochs=1",
                 "--set", "train.batch_size=16", "--set", "text.word_dim=8", "--set", "text.word2vec_epochs=1",
                 "--set", "train.progress=false", "--set", "model.dim=16", "--set", "model.heads=2"]) == 0
    assert main(["evaluate", str(run), "--data", str(tiny_data_dir)]) == 0  # the unbroken run evaluates
    return run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(RUN_FILES), how=st.sampled_from(["delete", "truncate", "random bytes", "json value"]),
       fraction=st.floats(0.0, 1.0), junk=st.binary(min_size=1, max_size=200),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                          max_leaves=6))
def test_a_broken_run_folder_is_one_line_or_fine(tiny_data_dir, small_run, tmp_path_factory, capsys, name, how,
                                                fraction, junk, value):
    import json

    run = tmp_path_factory.mktemp("broken-run") / "run"
    shutil.copytree(small_run, run)
    path = run / name
    if path.exists():
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])
        elif how == "random bytes":
            path.write_bytes(junk)
        else:
            path.write_text(json.dumps(value))
    capsys.readouterr()
    code = main(["evaluate", str(run), "--data", str(tiny_data_dir)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    assert code == 0 or err.count("semshare: error:") == 1
