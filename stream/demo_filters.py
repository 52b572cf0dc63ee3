"""The classical image filters the trained demo model imitates, one per prompt (docs/demo-model.md).

Each filter maps images (B, 3, H, W) in [0, 1] to images of the same shape. Sizes are in pixels, chosen for a
512 px webcam frame, the size the demo serves by default. These are the training targets and, in the tests, the
judges: the engine's output for a style's prompt must lie closer to that style's filter than to any other.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA = (0.299, 0.587, 0.114)
_SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))
# thermal palette: cold black-blue, purple, red, orange, hot yellow-white (positions in luminance)
_THERMAL = ((0.0, (0.02, 0.0, 0.12)), (0.25, (0.35, 0.0, 0.6)), (0.5, (0.85, 0.05, 0.25)),
            (0.75, (1.0, 0.55, 0.0)), (1.0, (1.0, 1.0, 0.75)))


class DemoStyle(str, enum.Enum):
    """The prompts the demo model was trained on; the value is the prompt."""

    PENCIL_SKETCH = "pencil sketch"
    NEON_EDGES = "neon edges"
    SEPIA = "sepia photograph"
    THERMAL = "thermal camera"


def luminance(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W)."""
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of every channel, edges replicated."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    C = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


def edge_magnitude(gray: Tensor) -> Tensor:
    """Sobel gradient magnitude of (B, 1, H, W)."""
    sobel = gray.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))
    return torch.sqrt(gx**2 + gy**2 + 1e-8)


def pencil_sketch(images: Tensor) -> Tensor:
    """Colour-dodge sketch: grey lines on white paper where the luminance changes."""
    gray = luminance(images)
    dodge = gray / (1 - gaussian_blur(1 - gray, 3.0)).clamp_min(1e-3)
    lines = dodge.clamp(0, 1) ** 3 - 3 * edge_magnitude(gaussian_blur(gray, 1.5))
    return (0.97 * lines.clamp(0, 1)).expand(-1, 3, -1, -1)


def neon_edges(images: Tensor) -> Tensor:
    """Glowing edges in the picture's own, fully saturated colours, on black."""
    edges = (8 * edge_magnitude(gaussian_blur(luminance(images), 1.5))).clamp(0, 1)
    hue = images / images.amax(1, keepdim=True).clamp_min(0.05)
    glow = edges + 0.6 * gaussian_blur(edges, 3.0)
    return (glow * (0.35 + 0.65 * hue)).clamp(0, 1)


def sepia(images: Tensor) -> Tensor:
    """The sepia toning matrix, a little contrast and a vignette."""
    toned = torch.einsum("oc,bchw->bohw", images.new_tensor(_SEPIA), images)
    B, C, H, W = images.shape
    y = torch.linspace(-1, 1, H, device=images.device).view(H, 1)
    x = torch.linspace(-1, 1, W, device=images.device).view(1, W)
    vignette = 1 - 0.3 * (x**2 + y**2)
    return ((toned - 0.5) * 1.1 + 0.5).clamp(0, 1) * vignette


def thermal(images: Tensor) -> Tensor:
    """Blurred luminance through a thermal-camera palette (bright = hot)."""
    level = gaussian_blur(luminance(images), 2.0).clamp(0, 1)  # (B, 1, H, W)
    out = torch.zeros_like(images)
    for (lo, c0), (hi, c1) in zip(_THERMAL, _THERMAL[1:]):
        w = ((level - lo) / (hi - lo)).clamp(0, 1)
        inside = ((level >= lo) & (level <= hi)).to(images.dtype)
        colour = images.new_tensor(c0).view(1, 3, 1, 1) * (1 - w) + images.new_tensor(c1).view(1, 3, 1, 1) * w
        out = out * (1 - inside) + colour * inside
    return out


FILTERS: dict[DemoStyle, Callable[[Tensor], Tensor]] = {
    DemoStyle.PENCIL_SKETCH: pencil_sketch,
    DemoStyle.NEON_EDGES: neon_edges,
    DemoStyle.SEPIA: sepia,
    DemoStyle.THERMAL: thermal,
}


def apply_filter(style: DemoStyle | str, images: Tensor) -> Tensor:
    """``style``'s filter on (B, 3, H, W) images in [0, 1]."""
    try:
        style = DemoStyle(style)
    except ValueError:
        raise ValueError(f"style must be one of {', '.join(s.value for s in DemoStyle)}, got {style!r}") from None
    return FILTERS[style](images)
