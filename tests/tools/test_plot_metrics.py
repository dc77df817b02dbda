"""plot_metrics: reading metrics.json (resume duplicates, NaN), the PNG it draws, and the
errors naming file and line for malformed input."""
import json

import matplotlib.colors as mplc
import numpy as np
import pytest
from matplotlib import image as mpimg

from sephnet.tools.plot_metrics import MetricsFileError, load_metrics, main, plot_runs


def _write_run(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.json"
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return str(path)


def _training_lines(scale):
    lines = []
    for it in range(19, 200, 20):
        loss = scale * 2.0 / (1 + it / 50)
        lines.append(
            {
                "iteration": it,
                "total_loss": loss,
                "loss_cls": loss / 2,
                "loss_mask": loss / 2,
                "lr": 0.02 if it < 150 else 0.002,
                "time": 0.3,
            }
        )
    lines.append({"iteration": 199, "bbox/AP": 40.0 * scale, "bbox/AP50": 70.0, "segm/AP": 35.0})
    return lines


def test_load_keeps_the_latest_value_of_a_repeated_iteration(tmp_path):
    path = _write_run(
        tmp_path / "run",
        [
            {"iteration": 0, "total_loss": 3.0},
            {"iteration": 1, "total_loss": 2.0},
            "",
            # a resumed run re-records iteration 1 and goes on
            {"iteration": 1, "total_loss": 2.5, "lr": 0.1},
            {"iteration": 2, "total_loss": float("nan")},
        ],
    )
    run = load_metrics(path)
    assert run.label == "run"
    iterations, values = run.curves["total_loss"]
    assert iterations == [0, 1, 2]
    assert values[:2] == [3.0, 2.5] and np.isnan(values[2])
    assert run.curves["lr"] == ([1], [0.1])
    assert load_metrics(path, label="mine").label == "mine"


def test_plot_overlays_runs_in_their_own_colours(tmp_path):
    runs = [
        load_metrics(_write_run(tmp_path / "a", _training_lines(1.0))),
        load_metrics(_write_run(tmp_path / "b", _training_lines(1.5))),
    ]
    out = tmp_path / "figs" / "curves.png"
    panels = plot_runs(runs, str(out))
    assert panels == ["total_loss", "loss_cls", "loss_mask", "lr", "bbox AP", "segm AP"]
    image = mpimg.imread(str(out))[:, :, :3]  # float RGB in [0, 1]
    # 6 panels in 3 columns: 2 rows of (4.2 x 3.0) inches at 80 dpi
    assert image.shape[:2] == (480, 1008)
    # both runs are drawn, each in its own colour of matplotlib's default cycle
    for color in ("#1f77b4", "#ff7f0e"):
        rgb = np.array(mplc.to_rgb(color))
        assert (np.abs(image - rgb).max(axis=2) < 0.02).sum() > 200, color


def test_cli_writes_png_and_reports_panels(tmp_path, capsys):
    path = _write_run(tmp_path / "quick", _training_lines(1.0))
    out = tmp_path / "curves.png"
    assert main([path, "--output", str(out), "--labels", "quickstart"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "panels: total_loss, loss_cls, loss_mask, lr, bbox AP, segm AP" in printed


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ('{"iteration": 40, "total_loss": 0.', "not valid JSON"),  # truncated by a crash
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"total_loss": 0.5}', "expected an integer 'iteration', got None"),
        ('{"iteration": "40", "total_loss": 0.5}', "expected an integer 'iteration', got '40'"),
        ('{"iteration": 4, "loss": "low"}', "scalar 'loss' is 'low'; expected a number"),
    ],
)
def test_malformed_line_is_named_by_file_and_line(tmp_path, capsys, bad_line, expected):
    lines = [{"iteration": 0, "total_loss": 1.0}, {"iteration": 20, "total_loss": 0.8}, bad_line]
    path = _write_run(tmp_path / "broken", lines)
    with pytest.raises(MetricsFileError, match=expected) as info:
        load_metrics(path)
    assert str(info.value).startswith(f"{path}:3: ")
    out = tmp_path / "never.png"
    assert main([path, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: " in err and expected in err
    assert not out.exists()


def test_empty_or_unplottable_inputs_fail_clearly(tmp_path):
    empty = _write_run(tmp_path / "empty", [""])
    with pytest.raises(MetricsFileError, match="holds no scalars"):
        load_metrics(empty)
    timing_only = load_metrics(_write_run(tmp_path / "t", [{"iteration": 0, "time": 0.2}]))
    with pytest.raises(ValueError, match=r"No plottable scalar.*found: \['time'\]"):
        plot_runs([timing_only], str(tmp_path / "x.png"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_metrics(str(tmp_path / "missing.json"))


def test_labels_must_match_files(tmp_path, capsys):
    path = _write_run(tmp_path / "r", [{"iteration": 0, "total_loss": 1.0}])
    with pytest.raises(SystemExit):
        main([path, path, "--output", str(tmp_path / "o.png"), "--labels", "one"])
    assert "--labels has 1 names for 2 metrics files" in capsys.readouterr().err
