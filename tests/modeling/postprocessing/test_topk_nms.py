"""batched_nms_topk: the same kept indices as batched_nms(...)[:k], in the same order, while
suppressing only the candidates that can reach the first k."""
import pytest
import torch

from sephnet.backend import batched_nms
from sephnet.modeling.postprocessing import topk_nms
from sephnet.modeling.postprocessing.topk_nms import batched_nms_topk


def candidates(count, classes, seed):
    """Clustered boxes (so that NMS suppresses many) with distinct random scores."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(count // 20 + 1, 2, generator=g) * 300
    xy = centres[torch.randint(len(centres), (count,), generator=g)] + torch.randn(
        count, 2, generator=g) * 6
    wh = 10 + torch.rand(count, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(count, generator=g)
    return boxes, scores, torch.randint(classes, (count,), generator=g)


@pytest.mark.parametrize("count,classes,k", [(5000, 80, 100), (3000, 3, 100), (3000, 1, 50),
                                             (3000, 80, 0), (800, 80, 100), (3000, 80, -1)])
def test_equals_batched_nms_truncated(count, classes, k):
    boxes, scores, cls = candidates(count, classes, seed=count + k)
    expected = batched_nms(boxes, scores, cls, 0.5)
    expected = expected if k < 0 else expected[:k]
    assert torch.equal(batched_nms_topk(boxes, scores, cls, 0.5, k), expected)


def test_suppresses_only_the_best_candidates_when_they_hold_the_answer(monkeypatch):
    boxes, scores, cls = candidates(20000, 80, seed=0)
    sizes = []

    def counting_nms(b, s, c, t):
        sizes.append(len(s))
        return batched_nms(b, s, c, t)

    monkeypatch.setattr(topk_nms, "batched_nms", counting_nms)
    keep = batched_nms_topk(boxes, scores, cls, 0.5, 100)
    assert sizes == [topk_nms.MIN_CANDIDATES]  # 1000 candidates of 20000 were enough
    assert torch.equal(keep, batched_nms(boxes, scores, cls, 0.5)[:100])


def test_grows_the_candidates_until_k_survive():
    # 3000 copies of one box in one class: each try keeps 1, so it ends with NMS on all
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(3000, 1)
    scores = torch.linspace(1, 0, 3000)
    cls = torch.zeros(3000, dtype=torch.int64)
    assert batched_nms_topk(boxes, scores, cls, 0.5, 10).tolist() == [0]


def test_a_tie_across_the_cut_is_not_cut(monkeypatch):
    # k=300: the first try would cut after the 1200th best score; the 1200th and 1201st are
    # equal, with the same box and class: which of the two survives is batched_nms's
    # business, so no NMS may see one of them without the other
    boxes, scores, cls = candidates(3000, 80, seed=1)
    order = scores.argsort(descending=True)
    tied = order[1199:1201]
    scores[tied] = scores[order[1199]].item()
    boxes[tied[1]], cls[tied[1]] = boxes[tied[0]], cls[tied[0]]
    seen = []

    def recording_nms(b, s, c, t):
        seen.append(int((s == scores[tied[0]]).sum()))
        return batched_nms(b, s, c, t)

    monkeypatch.setattr(topk_nms, "batched_nms", recording_nms)
    keep = batched_nms_topk(boxes, scores, cls, 0.5, 300)
    assert seen == [2]  # the cut moved past the tie (to 2400 candidates) in one step
    monkeypatch.undo()
    assert torch.equal(keep, batched_nms(boxes, scores, cls, 0.5)[:300])
