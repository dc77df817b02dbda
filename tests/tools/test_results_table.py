"""The results table, the AP-difference chart and the README rows, from crafted metrics."""
import os

import matplotlib.image as mpimg
import pytest

from sephnet.tools.ablation_index import LOG_COLUMNS, AblationRow
from sephnet.tools.results_table import (
    _ap_differences,
    load_measured,
    main,
    plot_ap_differences,
    render_readme_rows,
    render_table,
    write_results,
)

LOG_A = [0.3, 0.5, 0.31, 0.04, 0.22, 0.45, 0.27, 0.4, 0.42, 0.05, 0.37, 0.57]
LOG_A_SEGM = [0.27, 0.49, 0.26, 0.03, 0.39, 0.48, 0.24, 0.37, 0.39, 0.18, 0.39, 0.48]
LOG_B = [0.2, 0.4, 0.21, 0.0, 0.1, 0.3, 0.2, 0.3, 0.3, 0.0, 0.1, 0.5]


def _rows(tmp_path):
    return [
        AblationRow("a", "sephv2+x", "FPN-3", str(tmp_path / "A.yaml"), None, "H", "adds x",
                    LOG_A, LOG_A_SEGM, "sephv2 + x"),
        AblationRow("b", "4) + y", "FPN-3", str(tmp_path / "B.yaml"), None, "M", "adds y", LOG_B),
        AblationRow("p", "Cascade", "FPN-3", None, "SephCascadeROIHeads", "H", "cascade", LOG_B),
        AblationRow("e", "e", "extra", str(tmp_path / "E.yaml"), None, "", "cosine classifier"),
    ]


def _ours(ap, n=len(LOG_COLUMNS)):
    return [ap] + [0.5] * 5 + [None] * (n - 6)


def test_table_has_the_logs_columns_and_our_line_beside_the_logs(tmp_path):
    rows = _rows(tmp_path)
    text = render_table(rows, {"a": {"bbox": _ours(0.123)}, "e": {"bbox": _ours(0.2)}})
    lines = text.splitlines()
    assert lines[0] == "|配置|" + "|".join(LOG_COLUMNS) + "|"
    assert lines[1] == "|" + "---|" * 13
    assert lines[2] == (
        "|sephv2+x|0.300|0.500|0.310|0.040|0.220|0.450|0.270|0.400|0.420|0.050|0.370|0.570|"
    )
    assert lines[3] == "|sephv2+x (ours)|0.123|0.500|0.500|0.500|0.500|0.500|-|-|-|-|-|-|"
    # b and p have log numbers only; e has ours only (an extra has no log line)
    assert lines[4].startswith("|4) + y|0.200|")
    assert lines[5].startswith("|Cascade|0.200|")
    assert lines[6].startswith("|e (ours)|0.200|")
    assert len(lines) == 7


def test_segm_table_uses_the_segm_label_and_skips_rows_without_segm(tmp_path):
    rows = _rows(tmp_path)
    text = render_table(rows, {"a": {"segm": _ours(0.25)}, "b": {"bbox": _ours(0.1)}}, "segm")
    lines = text.splitlines()[2:]
    assert lines == [
        "|sephv2 + x|0.270|0.490|0.260|0.030|0.390|0.480|0.240|0.370|0.390|0.180|0.390|0.480|",
        "|sephv2+x (ours)|0.250|0.500|0.500|0.500|0.500|0.500|-|-|-|-|-|-|",
    ]


def test_table_rejects_a_wrong_length_and_an_unknown_task(tmp_path):
    rows = _rows(tmp_path)
    with pytest.raises(ValueError, match=r"measured\['a'\]\['bbox'\] has 3 values"):
        render_table(rows, {"a": {"bbox": [0.1, 0.2, 0.3]}})
    with pytest.raises(ValueError, match="task='keypoints'"):
        render_table(rows, {}, "keypoints")


def test_ap_differences_are_ours_minus_the_logs_map(tmp_path):
    rows = _rows(tmp_path)
    measured = {"a": {"bbox": _ours(0.35), "segm": _ours(0.2)}, "b": {"bbox": _ours(None)},
                "e": {"bbox": _ours(0.4)}}
    names, diffs = _ap_differences(rows, measured, "bbox")
    assert names == ["a"]  # b has no AP, e no log numbers, p no run
    assert diffs == pytest.approx([0.05])
    names, diffs = _ap_differences(rows, measured, "segm")
    assert names == ["a"] and diffs == pytest.approx([0.2 - 0.27])


def test_chart_is_a_png_also_without_any_comparable_row(tmp_path):
    rows = _rows(tmp_path)
    path = plot_ap_differences(rows, {"a": {"bbox": _ours(0.35)}}, str(tmp_path / "d.png"))
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100
    empty = plot_ap_differences(rows, {}, str(tmp_path / "empty.png"))
    assert mpimg.imread(empty).ndim == 3


def test_write_results_writes_table_and_chart_with_segm_only_when_present(tmp_path):
    rows = _rows(tmp_path)
    table, chart = write_results(rows, {"b": {"bbox": _ours(0.1)}}, str(tmp_path / "out"))
    text = open(table, encoding="utf-8").read()
    assert "## bbox" in text and "## segm" not in text
    assert "|4) + y (ours)|0.100|" in text and "sephv2+x" not in text  # only measured rows
    assert os.path.getsize(chart) > 0
    table, _ = write_results(rows, {"a": {"bbox": _ours(0.3)}}, str(tmp_path / "out2"))
    assert "## segm" in open(table, encoding="utf-8").read()  # a has log segm numbers


def test_readme_rows_name_config_or_pending_component_and_the_logs_ap(tmp_path):
    lines = render_readme_rows(_rows(tmp_path)).splitlines()
    assert lines[0].startswith("| table | row (log label) | config |")
    assert lines[2] == "| FPN-3 | sephv2+x | `configs/coco/A.yaml` | H | adds x | 0.300 / 0.270 |"
    assert lines[3] == "| FPN-3 | 4) + y | `configs/coco/B.yaml` | M | adds y | 0.200 |"
    assert lines[4] == "| FPN-3 | Cascade | pending: SephCascadeROIHeads | H | cascade | 0.200 |"
    assert lines[5] == "| extra | e | `configs/coco/E.yaml` | - | cosine classifier | - |"


def test_cli_rebuilds_results_from_final_metrics(tmp_path, capsys):
    index = tmp_path / "ablations.yaml"
    index.write_text(
        "rows:\n"
        "  - {id: a, label: 'row a', table: FPN-3, config: A.yaml, confidence: H,\n"
        "     bbox: [0.3, 0.5, 0.31, 0.04, 0.22, 0.45, 0.27, 0.4, 0.42, 0.05, 0.37, 0.57]}\n"
    )
    root = tmp_path / "runs"
    with pytest.raises(SystemExit, match="no final_metrics.json"):
        main(["--index", str(index), "--output-root", str(root)])
    (root / "a").mkdir(parents=True)
    (root / "a" / "final_metrics.json").write_text('{"bbox": [0.25' + ', 0' * 11 + ']}')
    assert load_measured(
        [AblationRow("a", "row a", "FPN-3", "A.yaml", None, "H", "")], str(root)
    ) == {"a": {"bbox": [0.25] + [0] * 11}}
    assert main(["--index", str(index), "--output-root", str(root)]) == 0
    assert "|row a (ours)|0.250|0.000|" in (root / "results.md").read_text(encoding="utf-8")
    assert (root / "ap_diff.png").is_file()
    main(["--index", str(index), "--readme"])
    assert "| FPN-3 | row a | `configs/coco/A.yaml` | H |  | 0.300 |" in capsys.readouterr().out


def test_readme_rows_gain_cost_columns_from_row_costs(tmp_path):
    costs = {"a": {"gflops": 264.44, "params_m": 44.34, "latency_s": 3.456},
             "b": {"gflops": 300.0, "params_m": 50.0, "latency_s": None}}
    lines = render_readme_rows(_rows(tmp_path), costs=costs).splitlines()
    assert lines[0].endswith("| GFLOPs | params (M) | CPU latency (s) |")
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|"
    assert lines[2].endswith("| 0.300 / 0.270 | 264.4 | 44.3 | 3.46 |")
    assert lines[3].endswith("| 0.200 | 300.0 | 50.0 | - |")
    assert lines[4].endswith("| 0.200 | - | - | - |")  # no cost measured for this row


def test_readme_rows_name_configs_outside_the_index_folder_by_their_path(tmp_path):
    coco = tmp_path / "configs" / "coco"
    row = AblationRow("t", "t", "extra", str(tmp_path / "configs" / "tricks" / "T.yaml"), None,
                      "", "a trick")
    lines = render_readme_rows([row], index_folder=str(coco)).splitlines()
    assert lines[2] == "| extra | t | `configs/tricks/T.yaml` | - | a trick | - |"
