"""The command line: list, train, evaluate, predict; user mistakes exit non-zero with one clear line."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from mnist_demo.__main__ import main

LOGREG = "checkpoints/logreg.safetensors"


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "mnist_demo", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_list_json():
    code, out, _ = cli("list", "--json")
    rows = json.loads(out)
    assert code == 0 and {"logreg", "cnn"} <= {r["name"] for r in rows}
    assert all(r["params"] > 0 and r["description"] for r in rows)


def test_train_then_evaluate_and_predict(tmp_path, mnist):
    out = tmp_path / "m.safetensors"
    code, stdout, _ = cli("train", "--arch", "logreg", "--epochs", "1", "--subset", "4000", "--device", "cpu",
                          "--out", str(out))
    assert code == 0 and "test accuracy" in stdout and out.exists()

    code, stdout, _ = cli("evaluate", str(out), "--json")
    report = json.loads(stdout)
    assert code == 0 and report["arch"] == "logreg" and 0.8 < report["test_accuracy"] <= 1

    seven = 255 - mnist.test.images[0].numpy()  # test image 0 is a 7; saved dark-on-light, upscaled
    Image.fromarray(seven).resize((200, 200)).save(tmp_path / "seven.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    code, stdout, _ = cli("predict", LOGREG, str(tmp_path / "seven.png"), str(tmp_path / "blank.png"), "--json")
    first, second = map(json.loads, stdout.splitlines())
    assert code == 0
    assert first["label"] == 7 and len(first["probabilities"]) == 10
    assert abs(sum(first["probabilities"]) - 1) < 1e-3
    assert second == {"path": str(tmp_path / "blank.png"), "label": None, "probabilities": None}


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0"], "epochs must be"),
    (["train", "--lr", "nan"], "learning rate"),
    (["train", "--arch", "nope"], "unknown architecture"),
    (["train", "--device", "cuda:7"], "not available"),
    (["train", "--dataset", "missing.csv"], "not found"),
    (["evaluate", "nothing.safetensors"], "checkpoint not found"),
    (["evaluate", "model.pt"], "only .safetensors"),
    (["predict", LOGREG, "no-such-image.png"], "no-such-image.png"),
])
def test_user_errors_are_one_line(args, message, capsys):
    code = main(args)  # in-process: the same code path as `python -m mnist_demo`, without a new interpreter
    err = capsys.readouterr().err
    assert code != 0
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_predict_unreadable_image(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    code, _, err = cli("predict", LOGREG, str(bad))
    assert code == 1 and "not an image" in err


def test_predict_a_missing_file_names_it_once(capsys):
    from mnist_demo.__main__ import main

    assert main(["predict", "checkpoints/cnn.safetensors", "no_such.png"]) == 1
    assert capsys.readouterr().err.strip() == "error: no_such.png: no such file"
