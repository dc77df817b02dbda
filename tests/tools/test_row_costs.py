"""row_costs: one measured row round-trips through the JSON file into the README table."""
import json
import os

import pytest

from sephnet.tools.results_table import main as results_table_main
from sephnet.tools.row_costs import load_costs, main

QUICKSTART = os.path.abspath("configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml")


def test_costs_of_an_index_row_reach_the_readme_table(tmp_path, capsys):
    index = tmp_path / "ablations.yaml"
    index.write_text(f"rows:\n  - {{id: qs, label: quick, table: extra, config: '{QUICKSTART}'}}\n")
    out = tmp_path / "costs.json"
    assert main(["--index", str(index), "--input-size", "64", "96", "--latency-iter", "1",
                 "--latency-size", "32", "48", "--clock", "cpu", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["input_size"] == [64, 96] and "torch threads" in data["machine"]
    assert (data["latency_size"], data["clock"], data["latency_iter"]) == ([32, 48], "cpu", 1)
    assert os.getcwd() not in data["machine"]  # a committed file names no local folder
    cost = load_costs(str(out))["qs"]
    assert cost["params_m"] == pytest.approx(12.388, abs=1e-3)  # the quickstart R18-FPN
    assert cost["gflops"] > 0 and cost["latency_s"] > 0
    capsys.readouterr()
    assert results_table_main(["--index", str(index), "--readme", "--costs", str(out)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.endswith(f"| {cost['gflops']:.1f} | 12.4 | {cost['latency_s']:.2f} |")


def test_a_costs_file_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text("[1]")
    with pytest.raises(ValueError, match="expected an object with 'rows'"):
        load_costs(str(path))
