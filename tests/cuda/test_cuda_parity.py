"""CPU vs CUDA: the core's kernels and a whole model agree (run only where CUDA is available;
benchmarks/gpu_check.sh runs them on a GPU machine)."""
import copy

import pytest
import torch

from sephnet import add_sephnet_config, validate_sephnet_config
from sephnet.backend import build_model, get_cfg, nms, roi_align

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_nms_and_roi_align_agree_between_cpu_and_cuda():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 60 + 1], dim=1)
    scores = torch.rand(500, generator=g)
    assert torch.equal(nms(boxes, scores, 0.5), nms(boxes.cuda(), scores.cuda(), 0.5).cpu())
    feats = torch.randn(2, 8, 32, 32, generator=g)
    rois = torch.cat([torch.randint(0, 2, (50, 1), generator=g).float(), boxes[:50] / 8], dim=1)
    cpu = roi_align(feats, rois, (7, 7), 0.25, 0, True)
    gpu = roi_align(feats.cuda(), rois.cuda(), (7, 7), 0.25, 0, True).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


def test_quickstart_model_detects_the_same_on_cpu_and_cuda():
    cfg = get_cfg()
    add_sephnet_config(cfg)
    cfg.merge_from_file("configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml")
    validate_sephnet_config(cfg)
    model = build_model(cfg).eval()
    cuda_cfg = cfg.clone()
    cuda_cfg.MODEL.DEVICE = "cuda"
    cuda_model = build_model(cuda_cfg).eval()
    cuda_model.load_state_dict(copy.deepcopy(model.state_dict()))
    image = torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        cpu = model([{"image": image}])[0]["instances"]
        gpu = cuda_model([{"image": image.cuda()}])[0]["instances"].to("cpu")
    assert len(cpu) == len(gpu)
    torch.testing.assert_close(gpu.pred_boxes.tensor, cpu.pred_boxes.tensor, rtol=0, atol=1e-2)
    torch.testing.assert_close(gpu.scores, cpu.scores, rtol=0, atol=1e-4)
