"""The zoo's catalogue and exporter: the architectures (torchvision, timm, small modules built
here), the export kinds in the order the matrix is filled, and ``export_model`` that exports one
architecture one way under a time limit. Part of ``benchmarks.zoo``."""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 0  # every seeded weight and input of the zoo


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it (seeded by the caller) and the input side it runs at."""

    name: str
    source: str  # where the definition comes from
    build: Callable[[], object]
    size: int = 64


def _tv(fn: str, **kw: object) -> Callable[[], object]:
    def build() -> object:
        import torchvision.models as tvm

        return getattr(tvm, fn)(weights=None, **kw)

    return build


def _timm(name: str, **kw: object) -> Callable[[], object]:
    def build() -> object:
        import timm

        return timm.create_model(name, pretrained=False, **kw)

    return build


def _segmenter(fn: str, **kw: object) -> Callable[[], object]:
    """torchvision segmenters return a dict; users export ``out`` alone through a small wrapper."""

    def build() -> object:
        import torch
        import torchvision.models.segmentation as seg

        class OutOnly(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = getattr(seg, fn)(weights=None, weights_backbone=None, **kw)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x)["out"]

        return OutOnly()

    return build


def _unet() -> object:
    """A classic U-Net (Ronneberger et al.): double 3x3 conv+BN+ReLU, max-pool down, transposed
    conv up, skip Concat; widths 32..256 to keep it CPU-sized."""
    import torch
    from torch import nn

    def double(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), classes: int = 5) -> None:
            super().__init__()
            self.downs = nn.ModuleList()
            cin = 3
            for w in widths:
                self.downs.append(double(cin, w))
                cin = w
            self.ups = nn.ModuleList()
            self.up_convs = nn.ModuleList()
            for w in reversed(widths[:-1]):
                self.ups.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
                self.up_convs.append(double(2 * w, w))
                cin = w
            self.head = nn.Conv2d(cin, classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, down in enumerate(self.downs):
                x = down(x)
                if i < len(self.downs) - 1:
                    skips.append(x)
                    x = nn.functional.max_pool2d(x, 2)
            for up, conv in zip(self.ups, self.up_convs, strict=True):
                x = conv(torch.cat([up(x), skips.pop()], dim=1))
            return self.head(x)

    return UNet()


def _ssdlite() -> object:
    """SSDLite-style detector: torchvision's MobileNetV3-Large features, two extra strided
    depthwise-separable stages, and per-scale depthwise-separable class and box heads, outputs
    concatenated over anchors as SSD does (no box decoding or NMS: those are post-processing)."""
    import torch
    import torchvision.models as tvm
    from torch import nn

    def sep(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                             nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU6(inplace=True))

    class SSDLite(nn.Module):
        def __init__(self, classes: int = 21, anchors: int = 6) -> None:
            super().__init__()
            feats = tvm.mobilenet_v3_large(weights=None).features
            self.stage1, self.stage2 = feats[:13], feats[13:]  # stride 16 (112 ch) and 32 (960 ch)
            self.extra = nn.ModuleList([sep(960, 512, 2), sep(512, 256, 2)])
            chans = (112, 960, 512, 256)
            self.cls = nn.ModuleList([nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU6(),
                nn.Conv2d(c, anchors * classes, 1)) for c in chans])
            self.box = nn.ModuleList([nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU6(),
                nn.Conv2d(c, anchors * 4, 1)) for c in chans])
            self.classes = classes

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f1 = self.stage1(x)
            fs = [f1, self.stage2(f1)]
            for extra in self.extra:
                fs.append(extra(fs[-1]))
            n = x.shape[0]
            scores = [h(f).permute(0, 2, 3, 1).reshape(n, -1, self.classes)
                      for h, f in zip(self.cls, fs, strict=True)]
            boxes = [h(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, f in zip(self.box, fs, strict=True)]
            return torch.cat(scores, 1), torch.cat(boxes, 1)

    return SSDLite()


def _retinanet() -> object:
    """RetinaNet-style detector: ResNet-18 body, torchvision's FeaturePyramidNetwork (P3-P5 plus a
    P6 max-pool level), and the shared 4x(conv+ReLU) class and box subnets of Lin et al."""
    import torch
    import torchvision.models as tvm
    from torch import nn
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    class RetinaNetLike(nn.Module):
        def __init__(self, classes: int = 20, anchors: int = 9, width: int = 128) -> None:
            super().__init__()
            r = tvm.resnet18(weights=None)
            self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
            self.c3, self.c4, self.c5 = r.layer2, r.layer3, r.layer4
            self.fpn = FeaturePyramidNetwork([128, 256, 512], width, extra_blocks=LastLevelMaxPool())

            def subnet(out: int) -> nn.Sequential:
                layers: list[nn.Module] = []
                for _ in range(4):
                    layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
                return nn.Sequential(*layers, nn.Conv2d(width, out, 3, padding=1))

            self.cls, self.box = subnet(anchors * classes), subnet(anchors * 4)
            self.classes = classes

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            c3 = self.c3(self.stem(x))
            c4 = self.c4(c3)
            c5 = self.c5(c4)
            feats = list(self.fpn({"c3": c3, "c4": c4, "c5": c5}).values())
            n = x.shape[0]
            scores = torch.cat([self.cls(f).permute(0, 2, 3, 1).reshape(n, -1, self.classes)
                                for f in feats], 1)
            boxes = torch.cat([self.box(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for f in feats], 1)
            return scores, boxes

    return RetinaNetLike()


ARCHS: list[Arch] = [
    Arch("resnet18", "torchvision", _tv("resnet18")),
    Arch("resnet50", "torchvision", _tv("resnet50")),
    Arch("resnext50_32x4d", "torchvision", _tv("resnext50_32x4d")),
    Arch("wide_resnet50_2", "torchvision", _tv("wide_resnet50_2")),
    Arch("mobilenet_v2", "torchvision", _tv("mobilenet_v2")),
    Arch("mobilenet_v3_large", "torchvision", _tv("mobilenet_v3_large")),
    Arch("mobilenet_v3_small", "torchvision", _tv("mobilenet_v3_small")),
    Arch("efficientnet_b0", "torchvision", _tv("efficientnet_b0")),
    Arch("efficientnet_v2_s", "torchvision", _tv("efficientnet_v2_s")),
    Arch("regnet_y_400mf", "torchvision", _tv("regnet_y_400mf")),
    Arch("regnet_x_400mf", "torchvision", _tv("regnet_x_400mf")),
    Arch("mnasnet1_0", "torchvision", _tv("mnasnet1_0")),
    Arch("shufflenet_v2_x1_0", "torchvision", _tv("shufflenet_v2_x1_0")),
    Arch("squeezenet1_1", "torchvision", _tv("squeezenet1_1")),
    Arch("densenet121", "torchvision", _tv("densenet121")),
    Arch("inception_v3", "torchvision", _tv("inception_v3", aux_logits=False, init_weights=True), 96),
    Arch("googlenet", "torchvision", _tv("googlenet", aux_logits=False, init_weights=True)),
    # 224: the TorchScript exporter takes adaptive_avg_pool2d only where 7x7 (6x6) divides the map
    Arch("vgg16_bn", "torchvision", _tv("vgg16_bn"), 224),
    Arch("alexnet", "torchvision", _tv("alexnet"), 224),
    Arch("convnext_tiny", "torchvision", _tv("convnext_tiny")),
    Arch("vit_base_patch16", "timm", _timm("vit_base_patch16_224", img_size=64)),
    Arch("deit_small_patch16", "timm", _timm("deit_small_patch16_224", img_size=64)),
    Arch("swin_tiny_patch4", "timm", _timm("swin_tiny_patch4_window7_224", img_size=128, window_size=4),
         128),
    Arch("maxvit_tiny", "torchvision", _tv("maxvit_t"), 224),
    Arch("coatnet_0", "timm", _timm("coatnet_0_rw_224", img_size=64)),
    Arch("mobilevit_s", "timm", _timm("mobilevit_s"), 64),
    # 224: its attention biases are sized for a 7x7 last stage, img_size does not change them
    Arch("efficientformer_l1", "timm", _timm("efficientformer_l1"), 224),
    Arch("ghostnet_100", "timm", _timm("ghostnet_100")),
    Arch("repvgg_a0", "timm", _timm("repvgg_a0")),
    Arch("deeplabv3_mobilenet_v3", "torchvision", _segmenter("deeplabv3_mobilenet_v3_large")),
    Arch("fcn_resnet50", "torchvision", _segmenter("fcn_resnet50")),
    Arch("lraspp_mobilenet_v3", "torchvision", _segmenter("lraspp_mobilenet_v3_large")),
    Arch("unet", "local (U-Net)", _unet),
    Arch("ssdlite_mobilenet_v3", "local (torchvision backbone)", _ssdlite, 128),
    Arch("retinanet_resnet18_fpn", "local (torchvision backbone+FPN)", _retinanet, 128),
]


# --------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """One way of exporting: exporter ("ts" = TorchScript, "dynamo"), opset, BN folded or kept."""

    exporter: str
    opset: int
    bn: str  # "folded" (default eval export) or "kept" (TrainingMode.PRESERVE)

    @property
    def tag(self) -> str:
        return f"{self.exporter}{self.opset}-{self.bn}"


# In the order the matrix is filled, so that a partial run is useful: each phase is one or a few
# columns. Phases 5 and 6 complete the matrix where time allows.
PHASES: dict[int, list[Export]] = {
    1: [Export("ts", 17, "folded")],
    2: [Export("ts", o, "folded") for o in (11, 13, 20)],
    3: [Export("ts", 17, "kept")],
    4: [Export("dynamo", 18, "folded")],
    5: [Export("ts", o, "kept") for o in (11, 13, 20)],
    6: [Export("dynamo", o, "folded") for o in (20, 17)],
}
# Phase 7: the whole matrix above is ~270 exports (hours on 2 cores); phase 7 gives each
# architecture one more export, rotating through every other one, so each export kind is covered
# by several architectures and each architecture by two exports.
ROTATION = [how for phase in (2, 3, 4, 5, 6) for how in PHASES[phase]]


class Timeout(BaseException):
    """Raised by SIGALRM inside a time-boxed step. Not an Exception: the converter's best-effort
    steps catch Exception (a model it cannot measure still converts), and a Timeout caught there
    made an over-time conversion go on with fixed rules instead of measurements, silently, or
    fail as exit 7 (pass 'choose-plan' failed: Timeout) in the pass runner."""


def _alarm(seconds: int) -> None:
    def handler(signum: int, frame: object) -> None:
        raise Timeout(f"over {seconds} s")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


def export_model(model: object, x: object, path: Path, how: Export) -> None:
    """``torch.onnx.export`` with the arguments users write: names, dynamic batch, an opset."""
    import torch

    kwargs: dict[str, object] = dict(
        input_names=["input"], opset_version=how.opset,
        dynamic_axes={"input": {0: "batch"}},
    )
    if how.exporter == "ts":
        kwargs["dynamo"] = False
        if how.bn == "kept":
            kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    else:
        kwargs["dynamo"] = True
        kwargs["external_data"] = False
        kwargs["verbose"] = False
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **kwargs)


