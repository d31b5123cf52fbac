"""The zoo's CI fixtures: tiny blocks of the real architectures, exported the ways the zoo
exports them, that ``tests/test_zoo_subset.py`` converts with no torch. Part of ``benchmarks.zoo``."""

from __future__ import annotations

from pathlib import Path

from .zoo_catalogue import ROOT, SEED, Export, export_model

# --------------------------------------------------------------------------------------------
# CI fixtures (tiny blocks)
# --------------------------------------------------------------------------------------------


def fixture_modules() -> dict[str, tuple[object, tuple[int, ...]]]:
    """Reduced-width blocks with the shapes of the zoo's awkward architectures: name -> (module,
    input shape). Kept small so each export is a few tens of kB."""
    import torch
    from torch import nn

    class DenseBlock(nn.Module):
        """DenseNet: pre-activation BN -> ReLU -> 1x1 -> BN -> ReLU -> 3x3 on a growing Concat."""

        def __init__(self, cin: int = 16, growth: int = 8, layers: int = 3) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, cin, 3, padding=1, bias=False)
            self.layers = nn.ModuleList()
            for i in range(layers):
                c = cin + i * growth
                self.layers.append(nn.Sequential(
                    nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4 * growth, 1, bias=False),
                    nn.BatchNorm2d(4 * growth), nn.ReLU(),
                    nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)))
            c = cin + layers * growth
            self.trans = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                       nn.AvgPool2d(2))
            self.fc = nn.Linear(c // 2, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = [self.stem(x)]
            for layer in self.layers:
                feats.append(layer(torch.cat(feats, 1)))
            y = self.trans(torch.cat(feats, 1))
            return self.fc(y.mean((2, 3)))

    class InceptionBlock(nn.Module):
        """GoogLeNet/Inception: four branches from one ReLU (1x1, 1x1->3x3, 1x1->5x5 as two 3x3,
        pool->1x1), Concat, then a 1x1 reading the Concat."""

        def __init__(self) -> None:
            super().__init__()

            def cbr(cin: int, cout: int, k: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                                     nn.BatchNorm2d(cout), nn.ReLU())

            self.stem = cbr(3, 16, 3)
            self.b1 = cbr(16, 8, 1)
            self.b2 = nn.Sequential(cbr(16, 8, 1), cbr(8, 12, 3))
            self.b3 = nn.Sequential(cbr(16, 4, 1), cbr(4, 6, 3), cbr(6, 6, 3))
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), cbr(16, 6, 1))
            self.mix = cbr(32, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)
            return self.fc(self.mix(y).mean((2, 3)))

    class MBv3Block(nn.Module):
        """MobileNetV3 inverted residual: 1x1 expand + HardSwish, depthwise 3x3 + HardSwish,
        squeeze-excitation (avg -> 1x1 -> ReLU -> 1x1 -> HardSigmoid -> Mul), 1x1 project, Add."""

        def __init__(self, c: int = 16, e: int = 48) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c),
                                      nn.Hardswish())
            self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False),
                                    nn.BatchNorm2d(e), nn.Hardswish())
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(e, 12, 1), nn.ReLU(),
                                    nn.Conv2d(12, e, 1), nn.Hardsigmoid())
            self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
            self.head = nn.Sequential(nn.Conv2d(c, 64, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            h = self.dw(self.expand(x))
            h = h * self.se(h)
            return self.head(x + self.project(h))

    class EncoderBlock(nn.Module):
        """ViT encoder: patch embedding Conv, pre-norm multi-head self-attention (MatMul, Softmax)
        and a GELU MLP, both residual, then a LayerNorm and a Linear head on the mean token."""

        def __init__(self, d: int = 32, heads: int = 4, patch: int = 4) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, d, patch, patch)
            self.norm1, self.norm2, self.norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            self.head = nn.Linear(d, 10)
            self.heads = heads

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x).flatten(2).transpose(1, 2)  # (n, tokens, d)
            n, s, d = t.shape
            q, k, v = self.qkv(self.norm1(t)).reshape(n, s, 3, self.heads, d // self.heads).permute(
                2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
            t = t + self.proj((att @ v).transpose(1, 2).reshape(n, s, d))
            t = t + self.mlp(self.norm2(t))
            return self.head(self.norm(t).mean(1))

    class UNetBlock(nn.Module):
        """U-Net, one level: conv-BN-ReLU x2, max-pool, conv-BN-ReLU x2, transposed conv up,
        Concat with the skip, conv-BN-ReLU x2, 1x1 head (per-pixel classes)."""

        def __init__(self, c: int = 8) -> None:
            super().__init__()

            def double(cin: int, cout: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(cout), nn.ReLU())

            self.down, self.mid = double(3, c), double(c, 2 * c)
            self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
            self.dec = double(2 * c, c)
            self.head = nn.Conv2d(c, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.down(x)
            y = self.mid(nn.functional.max_pool2d(s, 2))
            return self.head(self.dec(torch.cat([self.up(y), s], 1)))

    return {
        "densenet_block": (DenseBlock(), (1, 3, 16, 16)),
        "inception_block": (InceptionBlock(), (1, 3, 16, 16)),
        "mbv3_block": (MBv3Block(), (1, 3, 32, 32)),
        "encoder_block": (EncoderBlock(), (1, 3, 32, 32)),
        "unet_block": (UNetBlock(), (1, 3, 16, 16)),
    }


# Which fixture goes through which export. Kept BN where BN precedes the conv (DenseNet's layout,
# the one issue 10 section 3 is about); dynamo for the transformer and the SE block.
FIXTURE_EXPORTS: dict[str, list[Export]] = {
    "densenet_block": [Export("ts", 17, "kept")],
    "inception_block": [Export("ts", 13, "folded")],
    "mbv3_block": [Export("ts", 17, "folded"), Export("dynamo", 18, "folded")],
    "encoder_block": [Export("ts", 17, "folded"), Export("dynamo", 18, "folded")],
    "unet_block": [Export("ts", 11, "folded")],
}


def write_fixtures(folder: Path) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for name, (module, shape) in fixture_modules().items():
        for how in FIXTURE_EXPORTS[name]:
            torch.manual_seed(SEED)  # re-seeded per export: the same weights in both exporters
            fresh = type(module)().eval()
            _randomize_bn(fresh)
            path = folder / f"{name}.{how.tag}.onnx"
            export_model(fresh, torch.randn(*shape), path, how)
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
                  f"{path.stat().st_size / 1024:.1f} kB")


def _randomize_bn(module: object) -> None:
    """Give BatchNorm non-trivial running statistics and affine terms, as a trained model has;
    freshly built BN (mean 0, var 1, gamma 1, beta 0) would make kept and folded BN look alike."""
    import torch

    gen = torch.Generator().manual_seed(SEED + 1)
    for m in module.modules():  # type: ignore[attr-defined]
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=gen))


