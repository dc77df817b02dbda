"""The proxy study: the same overrides on every row, seeds in their own folders, timing,
and results.md / proxy_ap.png from crafted metrics (mean ± std, Spearman's rho)."""
import json
import os

import matplotlib.image as mpimg
import pytest

from sephnet.backend import get_cfg
from sephnet.config import add_sephnet_config, validate_sephnet_config
from sephnet.tools import ablate
from sephnet.tools.ablate import main, proxy_runs, run_proxy_study, run_state
from sephnet.tools.ablation_index import LOG_COLUMNS, AblationRow, load_index, select_rows
from sephnet.tools.proxy import (
    ANCHOR_SCALE,
    PRETRAIN_SEED,
    extract_backbone,
    pretrain_opts,
    proxy_opts,
    scaled_anchor_sizes,
)
from sephnet.tools.proxy_results import (
    aggregate_seeds,
    load_seed_metrics,
    rank_correlation,
    render_proxy_table,
    write_proxy_results,
)

from .test_ablate import FAKE_TRAIN_NET, INDEX, _calls, fake_train_net  # noqa: F401

STUDY_ROWS = ["fpn3-baseline", "c3-baseline", "seph-bn", "sephv14_1", "cascade"]


def _pairs(opts):
    return dict(zip(opts[::2], opts[1::2]))


def test_every_row_gets_the_same_overrides_and_its_own_anchors_scaled(tmp_path):
    rows = select_rows(load_index(INDEX), STUDY_ROWS)
    runs = proxy_runs(rows, str(tmp_path), iterations=300, seeds=2, opts=["SOLVER.BASE_LR", "0.01"],
                      weights="/study/_pretrain/backbone.pth")
    # seed-major: seed 0 of every row, then seed 1 (rows in the index's order)
    ids = [r.id for r in rows]
    assert sorted(ids) == sorted(STUDY_ROWS)
    assert [os.path.relpath(d, str(tmp_path)) for _, d, _ in runs] == (
        [f"{r}/seed0" for r in ids] + [f"{r}/seed1" for r in ids])
    fixed = []
    for row, _, opts in runs:
        pairs = _pairs(opts)
        assert opts[-2:] == ["SOLVER.BASE_LR", "0.01"]  # user opts come last and win
        seed = int(pairs.pop("SEED"))
        anchors = pairs.pop("MODEL.ANCHOR_GENERATOR.SIZES")
        fixed.append(pairs)
        cfg = get_cfg()
        add_sephnet_config(cfg)
        cfg.merge_from_file(row.config)
        assert json.loads(anchors) == [[s * ANCHOR_SCALE for s in level]
                                       for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
        cfg.merge_from_list(opts)
        validate_sephnet_config(cfg)  # every row accepts the proxy overrides
        assert (cfg.SEED, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (seed, 300, (200, 250))
        assert cfg.DATASETS.TRAIN == ("clutter_train",) and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 8
        assert cfg.MODEL.WEIGHTS == "/study/_pretrain/backbone.pth"
        assert "MODEL.BACKBONE.FREEZE_AT" not in pairs  # a pretrained row keeps its own
    assert all(f == fixed[0] for f in fixed)
    # the anchor rule gives different values where rows differ (C3: 120-512, others 64-512)
    assert scaled_anchor_sizes([[120], [512]]) == [[30.0], [128.0]]


def test_from_scratch_trains_every_stage_and_pretraining_is_from_scratch():
    scratch = _pairs(proxy_opts(300, 3))
    assert scratch["MODEL.WEIGHTS"] == "" and scratch["MODEL.BACKBONE.FREEZE_AT"] == "0"
    pre = _pairs(pretrain_opts(1000))
    assert pre["SEED"] == str(PRETRAIN_SEED) and pre["SOLVER.MAX_ITER"] == "1000"
    assert pre["MODEL.WEIGHTS"] == "" and pre["MODEL.BACKBONE.FREEZE_AT"] == "0"
    assert "MODEL.ANCHOR_GENERATOR.SIZES" not in pre  # the quickstart's anchors are at scale


def test_extract_backbone_keeps_only_the_resnet_weights(tmp_path):
    torch = pytest.importorskip("torch")
    trunk = {"backbone.bottom_up.stem.conv1.weight": torch.arange(6.0).reshape(1, 6),
             "backbone.bottom_up.res2.0.conv1.norm.bias": torch.tensor([0.5, -1.0])}
    rest = {"backbone.fpn_lateral2.weight": torch.ones(2), "roi_heads.box_predictor.bias": torch.ones(3)}
    torch.save({"model": {**trunk, **rest}, "iteration": 999}, tmp_path / "model_final.pth")
    out = str(tmp_path / "backbone.pth")
    assert extract_backbone(str(tmp_path / "model_final.pth"), out) == 2
    saved = torch.load(out, weights_only=True)
    assert sorted(saved) == ["model"] and sorted(saved["model"]) == sorted(trunk)
    for key, value in trunk.items():
        assert torch.equal(saved["model"][key], value)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # atomic write left no temp file
    torch.save({"model": rest}, tmp_path / "heads.pth")
    with pytest.raises(ValueError, match="heads.pth: no 'backbone.bottom_up"):
        extract_backbone(str(tmp_path / "heads.pth"), out)
    with pytest.raises(FileNotFoundError, match="absent.pth: no such checkpoint"):
        extract_backbone(str(tmp_path / "absent.pth"), out)


def test_study_pretrains_once_and_every_row_starts_from_its_backbone(
        tmp_path, fake_train_net, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ablate, "row_anchor_sizes", lambda config: [[64.0], [128.0]])
    monkeypatch.setattr(ablate, "row_model_opts", lambda config, num_classes: [])
    extracted = []
    qs = str(tmp_path / "qs.yaml")
    open(qs, "w").write("# the pretraining config (the fake train_net does not read it)\n")

    def fake_extract(checkpoint, out):
        extracted.append(checkpoint)
        open(out, "w").write("weights")
        return 60

    monkeypatch.setattr(ablate, "extract_backbone", fake_extract)
    root = str(tmp_path / "study")
    rows = [_row("a", 0.3), _row("b", 0.2)]
    status = run_proxy_study(rows, root, iterations=20, seeds=1, pretrain_config=qs,
                             pretrain_iterations=50, train_net=fake_train_net)
    assert status == {"_pretrain": "done", "a/seed0": "done", "b/seed0": "done"}
    pre_dir = os.path.join(root, "_pretrain")
    assert extracted == [os.path.join(pre_dir, "model_final.pth")]
    (pre_call,) = _calls(pre_dir)
    assert pre_call["argv"][:2] == ["--config-file", qs]
    assert pre_call["argv"][pre_call["argv"].index("OUTPUT_DIR") + 2:] == pretrain_opts(50)
    weights = os.path.abspath(os.path.join(pre_dir, "backbone.pth"))
    for row_id in ("a", "b"):
        (call,) = _calls(os.path.join(root, row_id, "seed0"))
        argv = call["argv"]
        assert argv[argv.index("MODEL.WEIGHTS") + 1] == weights
        assert "MODEL.BACKBONE.FREEZE_AT" not in argv
    settings = json.load(open(os.path.join(root, "proxy.json")))
    assert settings["pretrain"] == {"config": os.path.relpath(qs), "iterations": 50,
                                    "seed": PRETRAIN_SEED, "folder": "_pretrain"}
    text = open(os.path.join(root, "results.md"), encoding="utf-8").read()
    assert "Backbone: pretrained once for every row and seed" in text
    assert "Its own bbox mAP on the test set: 0.100." in text
    # again: everything finished, the weights exist, nothing runs or is extracted
    status = run_proxy_study(rows, root, iterations=20, seeds=1, pretrain_config=qs,
                             pretrain_iterations=50, train_net=fake_train_net)
    assert set(status.values()) == {"finished"} and len(extracted) == 1


def test_a_failed_pretraining_runs_no_row(tmp_path, fake_train_net, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ablate, "row_anchor_sizes", lambda config: [[64.0], [128.0]])
    monkeypatch.setattr(ablate, "row_model_opts", lambda config, num_classes: [])
    monkeypatch.setenv("FAKE_FAIL", "_pretrain")
    root = tmp_path / "study"
    qs = tmp_path / "qs.yaml"
    qs.write_text("# the pretraining config\n")
    status = run_proxy_study([_row("a", 0.3)], str(root), iterations=20, seeds=1,
                             pretrain_config=str(qs), pretrain_iterations=50,
                             train_net=fake_train_net)
    assert status == {"_pretrain": "failed"} and not (root / "a").exists()
    with pytest.raises(ValueError, match="--pretrain-iters=-1"):
        run_proxy_study([_row("a", 0.3)], str(root), iterations=20, seeds=1,
                        pretrain_config=str(qs), pretrain_iterations=-1)
    with pytest.raises(ValueError, match="--pretrain-config '/cfg/absent.yaml' does not exist"):
        run_proxy_study([_row("a", 0.3)], str(root), iterations=20, seeds=1,
                        pretrain_config="/cfg/absent.yaml", pretrain_iterations=50)


def test_proxy_opts_reject_too_short_schedules():
    with pytest.raises(ValueError, match="--proxy-iters=5"):
        proxy_opts(5, 0)


def _row(row_id, log_ap):
    return AblationRow(row_id, f"label {row_id}", "FPN-3", f"/cfg/{row_id}.yaml", None, "H", "",
                       [log_ap] * 12)


def test_study_runs_each_seed_once_resumes_and_writes_results(tmp_path, fake_train_net, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ablate, "row_anchor_sizes", lambda config: [[64.0], [128.0]])
    monkeypatch.setattr(ablate, "row_model_opts", lambda config, num_classes: [])
    root = str(tmp_path / "study")
    rows = [_row("a", 0.3), _row("b", 0.2)]
    (tmp_path / "study" / "b" / "seed1").mkdir(parents=True)
    (tmp_path / "study" / "b" / "seed1" / "last_checkpoint").write_text("model_0000004.pth")
    status = run_proxy_study(rows, root, iterations=20, seeds=2, parallel=2,
                             train_net=fake_train_net, command="python -m x --proxy")
    assert status == {"a/seed0": "done", "b/seed0": "done", "a/seed1": "done", "b/seed1": "done"}
    (call,) = _calls(os.path.join(root, "b", "seed1"))
    assert "--resume" in call["argv"] and call["argv"][call["argv"].index("SEED") + 1] == "1"
    timing = json.load(open(os.path.join(root, "a", "seed0", "timing.json")))
    assert timing["attempts"] == 1 and timing["wall_s"] >= 0 and timing["cpu_s"] >= 0
    settings = json.load(open(os.path.join(root, "proxy.json")))
    assert settings["rows"] == ["a", "b"] and settings["seeds"] == 2
    assert settings["overrides"] == proxy_opts(20, 0)[:-2] and "SEED" not in settings["overrides"]
    text = open(os.path.join(root, "results.md"), encoding="utf-8").read()
    # the fake reports AP 10% on its first call in a folder: mean 0.1, std 0 over 2 seeds
    assert "|label a (ours)|2|0.100 ± 0.000|0.500 ± 0.000|" in text
    assert "Command: `python -m x --proxy`" in text and "4 of 4 runs timed" in text
    assert os.path.isfile(os.path.join(root, "proxy_ap.png"))
    status = run_proxy_study(rows, root, iterations=20, seeds=2, train_net=fake_train_net)
    assert set(status.values()) == {"finished"}
    assert run_state(os.path.join(root, "a", "seed0")) == "finished"


def _metrics(ap, segm=None):
    out = {"bbox": [ap] + [0.5] * 5 + [None] * 6}
    if segm is not None:
        out["segm"] = [segm] + [None] * 11
    return out


def test_aggregate_gives_mean_and_sample_std_by_hand():
    seeds = [[0.1] + [None] * 11, [0.3] + [float("nan")] * 11, [0.2] + [0.4] + [None] * 10]
    stats = aggregate_seeds(seeds)
    assert stats[0][0] == pytest.approx(0.2) and stats[0][2] == 3
    assert stats[0][1] == pytest.approx(0.1)  # sqrt(((-.1)^2 + .1^2 + 0) / 2)
    assert stats[1] == (0.4, None, 1)  # one seed: no std
    assert stats[2] == (None, None, 0)
    with pytest.raises(ValueError, match="expected 12"):
        aggregate_seeds([[0.1] * 3])


def test_table_and_rank_correlation_from_crafted_metrics(tmp_path):
    rows = [_row("a", 0.30), _row("b", 0.20), _row("c", 0.10), _row("d", 0.25)]
    metrics = {
        "a": {0: _metrics(0.50, 0.4), 1: _metrics(0.54, 0.42)},
        "b": {0: _metrics(0.40), 1: _metrics(0.40)},
        "c": {0: _metrics(0.45)},  # one seed finished
        # d: no run
    }
    text = render_proxy_table(rows, metrics)
    lines = text.splitlines()
    assert lines[0] == "|配置|seeds|" + "|".join(LOG_COLUMNS) + "|"
    assert "|label a|log|0.300|0.300|" in text
    assert "|label a (ours)|2|0.520 ± 0.028|0.500 ± 0.000|" in text
    assert "|label c (ours)|1|0.450|0.500|" in text
    assert "label d (ours)" not in text and "|label d|log|" in text
    # ours 0.52, 0.40, 0.45 vs the log's 0.30, 0.20, 0.10: ranks (3, 1, 2) vs (3, 2, 1)
    rho, p, n = rank_correlation(rows, metrics)
    assert n == 3 and rho == pytest.approx(0.5)
    assert rank_correlation(rows[:2], metrics) == (None, None, 2)
    segm = render_proxy_table(rows, metrics, "segm")
    assert "|label a (ours)|2|0.410 ± 0.014|-|" in segm


def test_written_results_hold_tables_correlation_times_and_chart(tmp_path):
    rows = [_row("a", 0.30), _row("b", 0.20), _row("c", 0.10)]
    metrics = {"a": {0: _metrics(0.5)}, "b": {0: _metrics(0.3)}, "c": {0: _metrics(0.1)}}
    timings = {"a": {0: {"wall_s": 120.0, "cpu_s": 60.0}}, "b": {0: {"wall_s": 60.0, "cpu_s": 30.0}}}
    settings = {"command": "python -m sephnet.tools.ablate --proxy", "iterations": 400, "seeds": 2,
                "anchor_scale": 0.25, "overrides": ["SOLVER.MAX_ITER", "400"], "user_opts": []}
    table, chart = write_proxy_results(rows, metrics, str(tmp_path), settings, timings)
    text = open(table, encoding="utf-8").read()
    assert "rho = 1.00" in text and "over 3 rows" in text
    assert "`SOLVER.MAX_ITER 400`" in text
    assert "2 of 6 runs timed; summed over runs: wall 3.0 min, CPU 1.5 min" in text
    assert "|a|0|2.0|1.0|" in text
    assert "## segm" not in text  # no row has segm numbers
    image = mpimg.imread(chart)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_load_seed_metrics_reads_only_seed_folders(tmp_path):
    rows = [_row("a", 0.3)]
    for name in ("seed0", "seed1", "seedx", "other"):
        (tmp_path / "a" / name).mkdir(parents=True)
        (tmp_path / "a" / name / "final_metrics.json").write_text(json.dumps(_metrics(0.2)))
    (tmp_path / "a" / "seed1" / "timing.json").write_text(json.dumps({"wall_s": 1.0, "cpu_s": 2.0}))
    metrics, timings = load_seed_metrics(rows, str(tmp_path))
    assert sorted(metrics["a"]) == [0, 1] and timings == {"a": {1: {"wall_s": 1.0, "cpu_s": 2.0}}}


def test_cli_rejects_proxy_with_shapes_smoke_and_zero_seeds(tmp_path):
    with pytest.raises(SystemExit, match="exclude each other"):
        main(["--rows", "sephv14", "--proxy", "--shapes-smoke"])
    with pytest.raises(SystemExit, match="--seeds=0"):
        main(["--rows", "sephv14", "--proxy", "--seeds", "0", "--output-root", str(tmp_path)])
