"""Every supported torchvision builder: built offline, sized by image_size, trainable."""

import pytest
import torch

from cvtrain.families import torchvision_models as tvm


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a builder tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize(
    "arch",
    [
        "ssdlite320_mobilenet_v3_large",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "fcos_resnet50_fpn",
        "retinanet_resnet50_fpn",
    ],
)
def test_detection_builders(arch):
    torch.manual_seed(0)
    side = 64
    model = tvm.build_detector(arch, num_classes=4, image_size=side)
    assert model.transform.min_size == (side,) and model.transform.max_size == side
    images = [torch.rand(3, side, side) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    model.train()
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        (out, _) = model(images)
    assert set(out) == {"boxes", "scores", "labels"}
    # The detector works at the letterboxed size: boxes never leave the input.
    assert out["boxes"].numel() == 0 or float(out["boxes"].max()) <= side
    assert out["boxes"].shape[0] <= 100


@pytest.mark.parametrize("arch", sorted(tvm.CLASSIFICATION_ARCHITECTURES))
def test_classifier_builders(arch):
    model = tvm.build_classifier(arch, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_pretrained_weights_skip_mismatched_heads():
    source = tvm.build_classifier("resnet18", num_classes=10).state_dict()
    target = tvm.build_classifier("resnet18", num_classes=3)
    loaded, skipped = tvm.load_pretrained(target, source)
    assert skipped == ["fc.bias", "fc.weight"]
    assert loaded == len(source) - 2
    assert torch.equal(target.state_dict()["conv1.weight"], source["conv1.weight"])
