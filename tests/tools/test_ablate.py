"""The ablation runner with a fake train_net.py: skip finished rows, resume interrupted ones,
collect final metrics, run one row per GPU, and the shapes smoke overrides on every row."""
import glob
import json
import os
import sys
import textwrap

import pytest

from sephnet.config import validate_sephnet_config
from sephnet.tools.ablate import (
    build_command,
    collect_metrics,
    main,
    run_rows,
    run_state,
    SHAPES_NUM_CLASSES,
    shapes_smoke_opts,
    shapes_smoke_row_opts,
)
from sephnet.tools.ablation_index import AblationRow, load_index
from sephnet.tools.proxy import DENSE_META_ARCHITECTURES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INDEX = os.path.join(REPO, "configs", "coco", "ablations.yaml")

# A stand-in for train_net.py: records its arguments (and CUDA_VISIBLE_DEVICES) in
# <OUTPUT_DIR>/calls.jsonl, writes last_checkpoint, then either fails (FAKE_FAIL names the
# output folder's basename) or appends two evaluation entries to metrics.json, the last with
# AP = 10 * (number of calls so far) percent.
FAKE_TRAIN_NET = textwrap.dedent(
    """
    import json, os, sys
    args = sys.argv[1:]
    out = args[args.index("OUTPUT_DIR") + 1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "calls.jsonl"), "a") as f:
        f.write(json.dumps({"argv": args, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    calls = sum(1 for _ in open(os.path.join(out, "calls.jsonl")))
    open(os.path.join(out, "last_checkpoint"), "w").write("model_0000004.pth")
    if os.environ.get("FAKE_FAIL") == os.path.basename(out):
        sys.exit(3)
    with open(os.path.join(out, "metrics.json"), "a") as f:
        f.write(json.dumps({"iteration": 4, "total_loss": 1.0}) + "\\n")
        f.write(json.dumps({"iteration": 4, "bbox/AP": 1.0, "bbox/AP50": 2.0}) + "\\n")
        f.write(json.dumps({"iteration": 9, "bbox/AP": 10.0 * calls, "bbox/AP50": 50.0,
                            "bbox/AP75": 5.0, "bbox/APs": float("nan"), "bbox/APm": 1.0,
                            "bbox/APl": 2.0, "segm/AP": 7.0}) + "\\n")
    """
)


@pytest.fixture
def fake_train_net(tmp_path):
    path = tmp_path / "fake_train_net.py"
    path.write_text(FAKE_TRAIN_NET, encoding="utf-8")
    return str(path)


def _row(row_id, log_ap=0.3):
    return AblationRow(row_id, f"label {row_id}", "FPN-3", f"/cfg/{row_id}.yaml", None, "H", "",
                       [log_ap] * 12)


def _calls(run_dir):
    with open(os.path.join(run_dir, "calls.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_build_command_puts_flags_before_the_config_overrides():
    cmd = build_command("train_net.py", "c.yaml", "out/x", num_gpus=3, resume=True,
                        opts=["SOLVER.MAX_ITER", "10"])
    assert cmd == [sys.executable, "train_net.py", "--config-file", "c.yaml", "--num-gpus", "3",
                   "--resume", "OUTPUT_DIR", "out/x", "SOLVER.MAX_ITER", "10"]
    assert "--resume" not in build_command("t.py", "c", "o", num_gpus=1, resume=False, opts=[])


def test_run_state_follows_the_run_folder(tmp_path):
    assert run_state(str(tmp_path / "absent")) == "new"
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    assert run_state(str(tmp_path)) == "interrupted"
    (tmp_path / "final_metrics.json").write_text("{}")
    assert run_state(str(tmp_path)) == "finished"


def test_new_row_runs_once_and_its_last_evaluation_becomes_final(tmp_path, fake_train_net):
    root = str(tmp_path / "runs")
    status = run_rows([_row("a")], root, train_net=fake_train_net, opts=["K", "V"])
    assert status == {"a": "done"}
    (call,) = _calls(os.path.join(root, "a"))
    assert call["argv"] == ["--config-file", "/cfg/a.yaml", "--num-gpus", "1",
                            "OUTPUT_DIR", os.path.join(root, "a"), "K", "V"]
    final = json.load(open(os.path.join(root, "a", "final_metrics.json"), encoding="utf-8"))
    # last bbox entry (iteration 9), percent -> fraction, NaN kept, AR not in metrics.json
    assert final["bbox"][:3] == [0.1, 0.5, 0.05]
    assert final["bbox"][4:6] == [0.01, 0.02] and final["bbox"][3] != final["bbox"][3]
    assert final["bbox"][6:] == [None] * 6
    assert final["segm"][0] == 0.07 and final["segm"][1:] == [None] * 11
    table = open(os.path.join(root, "results.md"), encoding="utf-8").read()
    assert "|label a (ours)|0.100|0.500|0.050|-|0.010|0.020|-|" in table
    assert os.path.isfile(os.path.join(root, "ap_diff.png"))


def test_finished_rows_are_skipped_and_interrupted_rows_resume(tmp_path, fake_train_net):
    root = tmp_path / "runs"
    (root / "done").mkdir(parents=True)
    (root / "done" / "final_metrics.json").write_text(json.dumps({"bbox": [0.4] + [None] * 11}))
    (root / "half").mkdir()
    (root / "half" / "last_checkpoint").write_text("model_0000004.pth")
    status = run_rows([_row("done"), _row("half")], str(root), train_net=fake_train_net)
    assert status == {"done": "finished", "half": "done"}
    assert not (root / "done" / "calls.jsonl").exists()  # never started again
    (call,) = _calls(str(root / "half"))
    assert "--resume" in call["argv"]
    # the table covers the skipped row too
    assert "|label done (ours)|0.400|" in (root / "results.md").read_text(encoding="utf-8")


def test_a_failed_run_is_reported_resumed_next_time_and_does_not_stop_others(
    tmp_path, fake_train_net, monkeypatch
):
    root = str(tmp_path / "runs")
    monkeypatch.setenv("FAKE_FAIL", "a")
    status = run_rows([_row("a"), _row("b")], root, train_net=fake_train_net)
    assert status == {"a": "failed", "b": "done"}
    assert run_state(os.path.join(root, "a")) == "interrupted"
    assert "exited" not in open(os.path.join(root, "a", "ablate.log")).read()  # child's log only
    monkeypatch.delenv("FAKE_FAIL")
    status = run_rows([_row("a"), _row("b")], root, train_net=fake_train_net)
    assert status == {"a": "done", "b": "finished"}
    first, second = _calls(os.path.join(root, "a"))
    assert "--resume" not in first["argv"] and "--resume" in second["argv"]
    # AP of the second call (10% x 2 calls) is the final one
    final = json.load(open(os.path.join(root, "a", "final_metrics.json"), encoding="utf-8"))
    assert final["bbox"][0] == pytest.approx(0.2)


def test_parallel_gpus_give_each_run_one_gpu(tmp_path, fake_train_net):
    root = str(tmp_path / "runs")
    rows = [_row(r) for r in ("a", "b", "c")]
    status = run_rows(rows, root, train_net=fake_train_net, num_gpus=2, parallel_gpus=True)
    assert status == {"a": "done", "b": "done", "c": "done"}
    for row in rows:
        (call,) = _calls(os.path.join(root, row.id))
        assert call["gpus"] in ("0", "1")
        assert call["argv"][call["argv"].index("--num-gpus") + 1] == "1"


def test_run_rows_rejects_pending_rows_and_zero_gpus(tmp_path):
    pending = AblationRow("p", "Cascade", "FPN-3", None, "SephCascadeROIHeads", "H", "")
    with pytest.raises(ValueError, match="'p' is pending \\(SephCascadeROIHeads\\)"):
        run_rows([pending], str(tmp_path))
    with pytest.raises(ValueError, match="--num-gpus=0"):
        run_rows([_row("a")], str(tmp_path), num_gpus=0)


def _coco_gt(path):
    square = [[10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0]]
    wide = [[60.0, 20.0, 120.0, 20.0, 120.0, 60.0, 60.0, 60.0]]
    gt = {
        "images": [{"id": 1, "width": 128, "height": 128, "file_name": "1.png"}],
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "wide"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
             "iscrowd": 0, "segmentation": square},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 20, 60, 40], "area": 2400,
             "iscrowd": 0, "segmentation": wide},
        ],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(gt, f)
    return gt


def test_collect_metrics_recomputes_all_twelve_numbers_with_cocoeval(tmp_path):
    run = tmp_path / "run"
    (run / "inference").mkdir(parents=True)
    (run / "config.yaml").write_text("DATASETS:\n  TEST: [toy_val]\n")
    gt = _coco_gt(run / "inference" / "toy_val_coco_format.json")
    import pycocotools.mask as mask_util

    results = []
    # perfect predictions, plus a "wide" one on the square that outscores the true "wide"
    for ann in gt["annotations"]:
        rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], 128, 128))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": 1, "category_id": ann["category_id"], "bbox": ann["bbox"],
                        "score": 0.9, "segmentation": rle})
    results.append(dict(results[0], category_id=2, score=0.95))
    (run / "inference" / "coco_instances_results.json").write_text(json.dumps(results))
    (run / "metrics.json").write_text(json.dumps({"bbox/AP": 99.0, "segm/AP": 98.0}) + "\n")

    final = collect_metrics(str(run))
    for task in ("bbox", "segm"):
        values = final[task]
        # Both objects are medium (32^2 < area < 96^2). "square": AP 1. "wide": a false
        # positive ranked first, then the true one: precision 1/2 at recall 1, AP 0.5; with
        # one detection per image and class (AR@1) it is missed. Means over the 2 classes:
        assert values[:3] == pytest.approx([0.75, 0.75, 0.75])
        assert values[4] == pytest.approx(0.75)
        assert values[6:9] == pytest.approx([0.5, 1.0, 1.0])
        assert values[10] == pytest.approx(1.0)
        # no small or large ground truth: COCOeval's -1 becomes None
        assert values[3] is None and values[5] is None
        assert values[9] is None and values[11] is None


def test_collect_metrics_of_a_box_only_run_has_no_segm(tmp_path):
    # pycocotools' loadRes adds a polygon "segmentation" to box results; that must not make
    # a box-only run look like it has masks.
    run = tmp_path / "run"
    (run / "inference").mkdir(parents=True)
    (run / "config.yaml").write_text("DATASETS:\n  TEST: [toy_val]\n")
    gt = _coco_gt(run / "inference" / "toy_val_coco_format.json")
    results = [{"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    (run / "inference" / "coco_instances_results.json").write_text(json.dumps(results))
    (run / "metrics.json").write_text(json.dumps({"bbox/AP": 99.0}) + "\n")
    final = collect_metrics(str(run))
    assert list(final) == ["bbox"]
    assert final["bbox"][:3] == pytest.approx([1.0, 1.0, 1.0])
    assert final["bbox"][6:9] == pytest.approx([1.0, 1.0, 1.0])


def test_collect_metrics_is_empty_without_an_evaluation(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 3, "total_loss": 2.0}) + "\n")
    assert collect_metrics(str(tmp_path)) == {}
    assert collect_metrics(str(tmp_path / "absent")) == {}


def test_runner_marks_a_run_without_evaluation_failed(tmp_path):
    script = tmp_path / "no_eval.py"
    script.write_text("import sys; sys.exit(0)\n")
    status = run_rows([_row("a")], str(tmp_path / "runs"), train_net=str(script))
    assert status == {"a": "failed"}
    assert run_state(str(tmp_path / "runs" / "a")) == "new"


def test_shapes_smoke_overrides_merge_and_validate_on_every_runnable_row(sephnet_cfg):
    import sephnet.modeling.backbone  # noqa: F401  (registration)
    import sephnet.modeling.proposal_generator  # noqa: F401
    import sephnet.modeling.roi_heads  # noqa: F401
    from sephnet.data.shapes import SHAPES_CLASSES

    assert SHAPES_NUM_CLASSES == len(SHAPES_CLASSES) == 3
    rows = [r for r in load_index(INDEX) if r.runnable]
    row_opts = shapes_smoke_row_opts(rows, 8)
    assert rows and set(row_opts) == {r.id for r in rows}
    dense = 0
    for row in rows:
        cfg = sephnet_cfg()
        cfg.merge_from_file(row.config)
        cfg.merge_from_list(row_opts[row.id])
        validate_sephnet_config(cfg)
        assert cfg.DATASETS.TRAIN == ("shapes_train",) and cfg.MODEL.DEVICE == "cpu"
        assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.STEPS) == (8, 2, (6,))
        assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 0 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
        if cfg.MODEL.META_ARCHITECTURE in DENSE_META_ARCHITECTURES:
            dense += 1
            assert cfg.MODEL.RETINANET.NUM_CLASSES == 3, row.id
    assert dense >= 3  # RetinaNet, FCOS, ATSS rows
    with pytest.raises(ValueError, match="--smoke-iters=3"):
        shapes_smoke_opts(3)


def test_cli_runs_selected_rows_and_reports_user_mistakes(tmp_path, fake_train_net):
    index = tmp_path / "ablations.yaml"
    index.write_text(
        "rows:\n"
        "  - {id: a, label: 'row a', table: FPN-3, config: A.yaml}\n"
        "  - {id: c, label: Cascade, table: FPN-3, pending: SephCascadeROIHeads}\n"
    )
    root = tmp_path / "runs"
    common = ["--index", str(index), "--output-root", str(root), "--train-net", fake_train_net]
    assert main(common + ["--rows", "a", "--opts", "SOLVER.MAX_ITER", "5"]) == 0
    (call,) = _calls(str(root / "a"))
    assert call["argv"][-2:] == ["SOLVER.MAX_ITER", "5"]
    assert call["argv"][1] == str(tmp_path / "A.yaml")
    with pytest.raises(SystemExit, match="only pending rows"):
        main(common + ["--rows", "Cascade"])
    with pytest.raises(SystemExit, match="KEY VALUE pairs"):
        main(common + ["--rows", "a", "--opts", "SOLVER.MAX_ITER"])
    with pytest.raises(SystemExit, match="--smoke-iters=2"):
        main(common + ["--rows", "a", "--shapes-smoke", "--smoke-iters", "2"])


def test_cli_smoke_gives_each_row_its_overrides_before_user_opts(tmp_path, fake_train_net):
    rcnn = os.path.join(REPO, "configs", "coco", "Mask-RCNN-FPN-3-baseline.yaml")
    fcos = os.path.join(REPO, "configs", "detectors", "fcos_R_50_FPN_1x.yaml")
    index = tmp_path / "ablations.yaml"
    index.write_text("rows:\n"
                     f"  - {{id: rcnn, label: R-CNN, table: FPN-3, config: {rcnn}}}\n"
                     f"  - {{id: fcos, label: FCOS, table: extra, config: {fcos}}}\n")
    root = tmp_path / "runs"
    main(["--index", str(index), "--output-root", str(root), "--train-net", fake_train_net,
          "--rows", "rcnn", "fcos", "--shapes-smoke", "--smoke-iters", "6",
          "--opts", "SOLVER.MAX_ITER", "7"])
    smoke = shapes_smoke_opts(6)
    user = ["SOLVER.MAX_ITER", "7"]
    for row_id, own in (("rcnn", []), ("fcos", ["MODEL.RETINANET.NUM_CLASSES", "3"])):
        argv = _calls(str(root / row_id))[0]["argv"]
        assert argv[argv.index("OUTPUT_DIR") + 2:] == smoke + own + user, row_id
    assert glob.glob(str(root / "*.md")) == [str(root / "results.md")]


def test_cli_smoke_refuses_a_row_it_cannot_shrink_by_name(tmp_path, fake_train_net):
    detr = os.path.join(REPO, "configs", "detectors", "detr_R_50_coco.yaml")
    index = tmp_path / "ablations.yaml"
    index.write_text(f"rows:\n  - {{id: detr, label: DETR, table: extra, config: {detr}}}\n")
    root = tmp_path / "runs"
    with pytest.raises(SystemExit, match="row 'detr' cannot run under --shapes-smoke: .*AdamW"):
        main(["--index", str(index), "--output-root", str(root), "--train-net", fake_train_net,
              "--rows", "detr", "--shapes-smoke"])
    assert not root.exists()


@pytest.mark.slow  # subprocesses: over 10 s on 2 cores
def test_sigterm_stops_the_running_child_and_the_row_resumes_later(tmp_path):
    import signal
    import subprocess
    import time

    sleeper = tmp_path / "sleeping_train_net.py"
    sleeper.write_text(textwrap.dedent(
        """
        import os, sys, time
        out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
        open(os.path.join(out, "last_checkpoint"), "w").write("model_0000001.pth")
        open(os.path.join(out, "child.pid"), "w").write(str(os.getpid()))
        time.sleep(60)
        """
    ))
    index = tmp_path / "ablations.yaml"
    index.write_text("rows:\n  - {id: a, label: 'row a', table: FPN-3, config: A.yaml}\n")
    root = tmp_path / "runs"
    runner = subprocess.Popen(
        [sys.executable, "-m", "sephnet.tools.ablate", "--index", str(index), "--rows", "a",
         "--output-root", str(root), "--train-net", str(sleeper)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, text=True,
    )
    pid_file = root / "a" / "child.pid"
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    runner.send_signal(signal.SIGTERM)
    out, _ = runner.communicate(timeout=30)
    assert runner.returncode == 130
    assert "interrupted; running the same command again resumes" in out
    with pytest.raises(ProcessLookupError):  # terminated and reaped by the runner
        os.kill(child, 0)
    assert run_state(str(root / "a")) == "interrupted"


def test_stopping_a_run_keeps_its_cpu_time_in_timing_json(tmp_path):
    # The run's thread reaps the stopped child (os.wait4), so the CPU time the child used
    # before the stop reaches timing.json; stop_all only waits for the exit.
    import threading
    import time

    from sephnet.tools.ablate import _Runner

    busy = tmp_path / "busy_train_net.py"
    busy.write_text(textwrap.dedent(
        """
        import os, sys, time
        out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
        start = time.process_time()
        while time.process_time() - start < 0.3:  # burn 0.3 s of CPU
            pass
        open(os.path.join(out, "busy.done"), "w").write("1")
        time.sleep(60)
        """
    ))
    runner = _Runner(str(busy), str(tmp_path), 1)
    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run(_row("a"))))
    thread.start()
    deadline = time.time() + 60
    while not (tmp_path / "a" / "busy.done").is_file() and time.time() < deadline:
        time.sleep(0.02)
    runner.stop_all()
    thread.join(timeout=30)
    assert results == ["failed"]  # terminated: a non-zero exit
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert timing["attempts"] == 1 and timing["cpu_s"] >= 0.25
