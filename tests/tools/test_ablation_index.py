"""Loading the ablation index and choosing rows from it."""
import os

import pytest

from sephnet.tools.ablation_index import load_index, select_rows

NUMS = "[0.3, 0.5, 0.31, 0.04, 0.22, 0.45, 0.27, 0.4, 0.42, 0.05, 0.37, 0.57]"


def _write(tmp_path, text):
    path = tmp_path / "ablations.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _index(tmp_path):
    return _write(tmp_path, f"""
rows:
  - {{id: base, label: "base line", table: FPN-3, config: A.yaml, confidence: H,
     changes: nothing, bbox: {NUMS}, segm: {NUMS}, segm_label: "base  line"}}
  - {{id: sephv15, label: "4)+GIOUoutputs+reg loss x4 (sephv15)", table: FPN-3,
     config: sub/B.yaml, confidence: M, bbox: {NUMS}}}
  - {{id: sephv15_1, label: "4)+GIOUoutputs+reg loss x8 (sephv15_1)", table: FPN-3,
     config: C.yaml, confidence: H, bbox: {NUMS}}}
  - {{id: cascade, label: Cascade, table: FPN-3, pending: SephCascadeROIHeads, bbox: {NUMS}}}
extras:
  - {{id: cos, config: D.yaml, changes: cosine classifier}}
""")


def test_load_index_reads_rows_then_extras_with_paths_beside_the_index(tmp_path):
    rows = load_index(_index(tmp_path))
    assert [r.id for r in rows] == ["base", "sephv15", "sephv15_1", "cascade", "cos"]
    base, b, _, cascade, cos = rows
    assert base.config == os.path.join(str(tmp_path), "A.yaml")
    assert b.config == os.path.join(str(tmp_path), "sub", "B.yaml")
    assert base.log_bbox[2] == 0.31 and base.log_segm[11] == 0.57
    assert base.segm_label == "base  line" and b.log_segm is None
    assert cascade.config is None and cascade.pending == "SephCascadeROIHeads"
    assert not cascade.runnable and base.runnable
    assert (cos.table, cos.label, cos.log_bbox, cos.changes) == ("extra", "cos", None,
                                                                 "cosine classifier")


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{id: a, label: x, table: T, config: A.yaml, pending: P}", "exactly one of 'config'"),
        ("{id: a, label: x, table: T}", "exactly one of 'config'"),
        ("{id: a, label: x, table: T, config: A.yaml, bbox: [0.1, 0.2]}", "list of 12 numbers"),
        ("{id: a, label: x, table: T, config: A.yaml, colour: red}", "unknown keys \\['colour'\\]"),
        ("{id: a, table: T, config: A.yaml}", "non-string 'label'"),
        ("{label: x, table: T, config: A.yaml}", "missing 'id'"),
    ],
)
def test_load_index_names_the_malformed_entry(tmp_path, entry, message):
    path = _write(tmp_path, f"rows:\n  - {entry}\n")
    with pytest.raises(ValueError, match=message) as info:
        load_index(path)
    assert "rows[0]" in str(info.value)


def test_load_index_rejects_duplicate_ids_and_a_missing_rows_list(tmp_path):
    path = _write(tmp_path, "rows:\n  - {id: a, label: x, table: T, config: A.yaml}\n"
                  "extras:\n  - {id: a, config: B.yaml}\n")
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        load_index(path)
    with pytest.raises(ValueError, match="'rows' list"):
        load_index(_write(tmp_path, "extras: []\n"))


def test_select_rows_by_id_label_and_glob_in_index_order_once(tmp_path):
    rows = load_index(_index(tmp_path))
    picked = select_rows(rows, ["sephv15*", "base line", "cos", "sephv15"])
    assert [r.id for r in picked] == ["base", "sephv15", "sephv15_1", "cos"]
    # a glob over labels; the pending Cascade row matched by "*" is left out
    assert [r.id for r in select_rows(rows, ["4)+GIOU*"])] == ["sephv15", "sephv15_1"]
    assert "cascade" not in [r.id for r in select_rows(rows, ["*"])]


def test_row_groups_split_the_log_from_the_extras(tmp_path):
    rows = load_index(_index(tmp_path))
    log = [r.id for r in select_rows(rows, ["@log"])]
    extras = [r.id for r in select_rows(rows, ["@extras"])]
    assert log == [r.id for r in rows if r.table != "extra" and r.runnable] and "cascade" not in log
    assert extras == [r.id for r in rows if r.table == "extra"] and extras
    assert sorted(select_rows(rows, ["@log", "@extras"]), key=rows.index) == select_rows(rows, ["*"])


def test_an_exact_id_wins_over_another_rows_equal_label(tmp_path):
    path = _write(tmp_path, """
rows:
  - {id: sephv2-bn, label: sephv2, table: FPN-3, config: A.yaml}
  - {id: sephv2, label: "sephv2+cosine+EvoNormS head", table: FPN-3, config: B.yaml}
""")
    rows = load_index(path)
    assert [r.id for r in select_rows(rows, ["sephv2"])] == ["sephv2"]
    assert [r.id for r in select_rows(rows, ["sephv2+cosine+EvoNormS head"])] == ["sephv2"]
    assert [r.id for r in select_rows(rows, ["sephv2*"])] == ["sephv2-bn", "sephv2"]


def test_select_rows_errors_name_the_pattern_and_pending_component(tmp_path):
    rows = load_index(_index(tmp_path))
    with pytest.raises(ValueError, match="'sephv99' matches no id or label"):
        select_rows(rows, ["sephv99"])
    with pytest.raises(ValueError, match="only pending rows \\(cascade: SephCascadeROIHeads\\)"):
        select_rows(rows, ["Cascade"])
