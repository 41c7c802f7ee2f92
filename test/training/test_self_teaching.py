"""The self-taught log-variance head (Poggi et al. CVPR 2020): its loss worked by hand,
a head that starts neutral and learns where the depth is wrong, and a student that
exports it as the model's second output, which the runtime turns into confidence."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depth_perception.models import build_depth_model
from depth_perception.models.uncertainty import INITIAL_LOG_VARIANCE, self_teaching_loss

from support.student_setup import SIZE, make_ssd_setup, student_overrides


def test_laplacian_nll_by_hand():
    """Student 11 m, teacher 10 m: e = ln 1.1 = 0.09531; with b = 0.1 (log variance
    ln 2b^2 = ln 0.02) the loss is e / b + ln b = 0.9531 - 2.3026 = -1.3495; it is
    lowest at b = e, where a larger or a smaller b costs more."""
    depth, target = torch.tensor([[[[11.0]]]]), torch.tensor([[[[10.0]]]])

    def loss(b):
        return float(self_teaching_loss(depth, torch.full_like(depth, math.log(2 * b * b)),
                                        target))
    assert loss(0.1) == pytest.approx(math.log(1.1) / 0.1 + math.log(0.1), rel=1e-5)
    e = math.log(1.1)
    assert loss(e) < loss(0.8 * e) and loss(e) < loss(1.25 * e)
    # the depth and the teacher get no gradient from it: only the head learns
    d = depth.clone().requires_grad_(True)
    s = torch.zeros_like(depth, requires_grad=True)
    self_teaching_loss(d, s, target).sum().backward()
    assert d.grad is None and s.grad is not None and float(s.grad.abs().sum()) > 0


@pytest.mark.parametrize("config", [{"arch": "mono", "encoder": "tiny"},
                                    {"arch": "dpt", "size": "tiny"}])
def test_an_added_head_starts_neutral_and_changes_nothing_else(config):
    torch.manual_seed(0)
    net = build_depth_model(dict(config)).eval()
    x = torch.randn(1, 3, 64, 128) if config["arch"] == "mono" else torch.randn(1, 3, 56, 112)
    with torch.no_grad():
        before = net(x)["depth"][0]
        net.add_uncertainty_head()
        out = net(x)
    assert net.config.uncertainty and torch.equal(out["depth"][0], before)
    assert out["log_variance"].shape == before.shape
    assert torch.allclose(out["log_variance"], torch.tensor(INITIAL_LOG_VARIANCE))
    head = [p for n, p in net.named_parameters() if "uncertainty" in n]   # trained with
    decoder = next(g for g in net.param_groups(1e-5, 1e-4) if g["name"] == "decoder")
    assert len(head) == 2 and all(any(p is q for q in decoder["params"]) for p in head)


def test_sql_has_no_head():
    net = build_depth_model({"arch": "sql", "encoder": "tiny", "patch_size": 8})
    with pytest.raises(ValueError, match="no log-variance head"):
        net.add_uncertainty_head()


def test_the_head_learns_where_the_depth_is_wrong():
    """A depth net whose 'teacher' is within 2 % noise of it on the left half and 1.5x
    off on the right: 100 Adam steps on the self-teaching loss (the net's depth held
    fixed) bring the log variance to its optimum ln(2 b^2) with b = E|e| on each half:
    right b = ln 1.5 = 0.405 -> -1.11; left b = 0.02 sqrt(2 / pi) = 0.016 -> -7.59."""
    torch.manual_seed(0)
    net = build_depth_model({"arch": "mono", "encoder": "tiny"})
    net.add_uncertainty_head()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        depth = net(x)["depth"][0]
    target = depth * (1 + 0.02 * torch.randn_like(depth))
    target[..., 64:] *= 1.5
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(100):
        loss = self_teaching_loss(depth, net(x)["log_variance"], target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = net(x)["log_variance"]
    left, right = float(s[..., :64].mean()), float(s[..., 64:].mean())
    assert right == pytest.approx(math.log(2 * math.log(1.5) ** 2), abs=0.1)
    assert left == pytest.approx(math.log(2 * (0.02 * math.sqrt(2 / math.pi)) ** 2), abs=0.3)


@pytest.fixture(scope="module")
def ssd_setup(tmp_path_factory):
    return make_ssd_setup(tmp_path_factory.mktemp("self_teaching"))


def test_a_self_taught_student_exports_its_uncertainty_and_the_node_reads_it(ssd_setup,
                                                                            tmp_path):
    """student_tiny with student.self_teaching_weight=1: the loss term is logged, the
    ONNX file has depth and log_variance, the checkpoint folder reloads with the head,
    and the estimator returns a confidence in [0, 1] beside the depth."""
    import onnx

    from depth_perception.data.samples import BagSequence, SampleConfig
    from depth_perception.runtime.estimator import DepthEstimator
    from depth_perception_training.train.config import load_config
    from depth_perception_training.train.student import train_student

    out = tmp_path / "run"
    result = train_student(load_config("student_tiny", student_overrides(
        ssd_setup, out, "student.export_onnx=true", "trainer.max_steps=3",
        "student.self_teaching_weight=1.0")))
    steps = [h for h in result.history if "terms" in h]
    assert len(steps) == 3 and all(math.isfinite(h["terms"]["self_teaching"]) for h in steps)
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["depth", "log_variance"]
    seq = BagSequence(ssd_setup["bags"]["night"], SampleConfig(offsets=(), skip_static=False))
    for model, backend in ((out / "model.onnx", "onnxruntime"), (out / "model", "torch")):
        with DepthEstimator.load(str(model), backend=backend) as est:
            assert est.uncertainty_output == "log_variance"
            res = est.estimate(seq.frame(0), seq.intrinsics)
        assert res.depth.shape == res.confidence.shape == (SIZE[1], SIZE[0])
        ok = np.isfinite(res.confidence)
        assert ok.mean() > 0.5 and res.confidence[ok].min() >= 0 and res.confidence[ok].max() <= 1
