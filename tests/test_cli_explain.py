"""`glassnet explain` from the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from glassnet.cli import main
from glassnet.explain import Explanation, Step, render, worked_example


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr().out
    assert code == 0
    return out


def test_default_walks_through_the_seed_example(capsys):
    out = run(capsys, "explain", "--color", "never")
    for text in ["-0.8000", "1.1000", "1.5174", "0.6590", "0.4170", "-0.3410", "-0.6820", "0.0341"]:
        assert text in out
    assert "Summary" in out and "\x1b[" not in out
    assert out.startswith("Inputs") and "[ 0.2  -0.3   0.5]\n      [-0.5   0.7  -0.2]" in out
    assert "max |difference| = 0.0e+00" in out


def test_json_output_holds_every_step(capsys):
    data = json.loads(run(capsys, "explain", "--json"))
    titles = [s["title"] for s in data["steps"]]
    assert titles[0] == "Logits" and "Fused gradient" in titles and titles[-1] == "After the step"
    fused = next(s for s in data["steps"] if s["title"] == "Fused gradient")["value"]
    np.testing.assert_allclose(fused, [0.0985659, -0.3409989, 0.2424330], atol=1e-7)
    assert {row["step"] for row in data["summary"]} >= {"Loss", "Update"}


def test_from_logits_with_a_one_hot_target(capsys):
    data = json.loads(
        run(capsys, "explain", "--logits", "2.0,1.0,0.1", "--target", "0,0,1", "--json")
    )
    fused = next(s for s in data["steps"] if s["title"] == "Fused gradient")["value"]
    np.testing.assert_allclose(fused, [0.659, 0.242, -0.901], atol=1e-3)
    assert "Weight gradient" not in [s["title"] for s in data["steps"]]


def test_own_numbers_and_colour(capsys):
    out = run(
        capsys,
        "explain",
        "--x",
        "1,0,2",
        "--w",
        "1,0;0,1;0.5,0.5",
        "--target",
        "0",
        "--lr",
        "0.5",
        "--color",
        "always",
    )
    assert "\x1b[" in out and "lr = 0.5" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--x", "1,2,3"], "do not multiply"),
        (["--target", "5"], "target=5"),
        (["--target", "0.5,0.6,0"], "sum to 1"),
        (["--logits", "1,2", "--x", "1,2"], "either --logits or --x"),
        (["--logits", "a,b"], "comma-separated"),
    ],
)
def test_bad_options_exit_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["explain", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "glassnet.cli", "explain", "--logits", "1,2,3", "--target", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Softmax" in out


def test_every_input_is_printed_exactly_before_the_first_step(capsys):
    argv = ["--x", "0.123456789,-2", "--w", "1,0.5;0.25,-1", "--target", "1", "--lr", "0.03"]
    out = run(capsys, "explain", *argv, "--color", "never")
    inputs, steps = out.split(" 1. Logits")
    for text in ["[0.123456789  -2.0]", "[ 1.0   0.5]", "[0.25  -1.0]", "class 1", "0.03"]:
        assert text in inputs
    assert "[0.0  1.0]" in inputs and "lr = 0.03" in steps
    data = json.loads(run(capsys, "explain", *argv, "--json"))
    values = {item["title"]: item["value"] for item in data["inputs"]}
    assert values == {
        "x": [0.123456789, -2.0],
        "W": [[1.0, 0.5], [0.25, -1.0]],
        "y": [0, 1],
        "lr": 0.03,
    }
    logits = json.loads(run(capsys, "explain", "--logits", "1,2", "--target", "0", "--json"))
    assert [item["title"] for item in logits["inputs"]] == ["z", "y"]  # no lr: nothing is updated


def test_values_that_round_to_zero_never_print_a_minus_sign(capsys):
    # x[1] = 0 makes row 1 of dW zero, and -lr * 0 is -0.0 in floating point.
    argv = ["--x", "1,0,2", "--w", "1,0;0,1;0.5,0.5", "--target", "0", "--lr", "0.5"]
    w = np.array([[1, 0], [0, 1], [0.5, 0.5]])
    ex = worked_example(x=np.array([1.0, 0.0, 2.0]), w=w, target=0, lr=0.5)
    update = next(s.value for s in ex.steps if s.title == "SGD update")
    assert np.signbit(update[1]).any()  # the case this test is about does arise
    out = run(capsys, "explain", *argv, "--color", "never")
    assert "-0.0000" not in out and "[0.0000, 0.0000]" in out
    data = json.loads(run(capsys, "explain", *argv, "--json"))
    numbers = np.concatenate([np.ravel(s["value"]) for s in data["inputs"] + data["steps"]])
    assert not np.signbit(numbers[numbers == 0]).any()
    tiny = Explanation(inputs=[Step("z", "logits", np.array([-0.0, 1.0]))])
    tiny.add("Tiny", "t", np.array([-4e-5, 4e-5, -5e-4]))
    tiny.summary.append(("Tiny", "t"))
    text = render(tiny)
    assert "[0.0000  0.0000  -0.0005]" in text and "[0.0  1.0]" in text and "-0.0000" not in text
