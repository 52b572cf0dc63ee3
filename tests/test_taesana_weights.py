"""The published TAESANA encoder (tests/data/taesana, MIT License): the project's test on real weights.

It loads through the public path (StreamConfig / the serve options), settles the latent convention with the
statistics of its output on a photo and on synthetic natural-like images, and exports to ONNX with parity.
What is measured and why it settles the convention: docs/autoencoder.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.graphs import EncodeGraph
from engines.parity import FP32_TOLERANCE, check_parity, compare
from engines.specs import Component, PartSpec, TensorSpec
from server.cli import build_parser, main
from server.serve import build_settings
from stream import FrameKind, ModelNotFoundError, StreamConfig, StreamEngine
from stream.models.tiny_autoencoder import DCAE_SCALING_FACTOR, LATENT_CLAMP, TinyAutoencoder, TinyEncoder
from stream.models.tiny_autoencoder_weights import DECODER_FILENAME, ENCODER_FILENAME, load_tiny_autoencoder
from tests.support import camera_frame

TAESANA_DIR = Path(__file__).parent / "data" / "taesana"
# madebyollin/taesd at 2a1b414 ("Add support for Sana DC-AE"), as published
ENCODER_SHA256 = "858f4e4cc293f88efaf58107f4154b960b9ced0cb5d9c050dad11f926b618c1f"
ENCODER_PARAMS = 1_256_288
# std bounds halfway (in ratio) between the hypotheses: raw DC-AE latents (std 1 / 0.41407 = 2.415), scaled ones
# (std 1) and doubly scaled ones (std 0.414): a std inside them is nearer to 1 than to either
SCALED_STD_BOUNDS = (math.sqrt(DCAE_SCALING_FACTOR), 1 / math.sqrt(DCAE_SCALING_FACTOR))  # (0.644, 1.554)


@pytest.fixture(scope="module")
def taesana() -> TinyAutoencoder:
    return load_tiny_autoencoder(TAESANA_DIR, device="cpu", dtype=torch.float32, decoder=False)


def sample_image(width: int, height: int) -> torch.Tensor:
    """tests/data/taesana/sample.jpg (2048x768) resized to (1, 3, height, width) in [-1, 1]."""
    image = Image.open(TAESANA_DIR / "sample.jpg").convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 127.5 - 1


def pink_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Colour noise with a 1/f amplitude spectrum, as natural images have; (3, size, size) in [0, 1]."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    shared = rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)  # correlated channels, as in photos
    channels = []
    for _ in range(3):
        spectrum = (0.7 * shared + 0.3 * (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))) / f
        spectrum[0, 0] = 0
        x = np.fft.irfft2(spectrum, s=(size, size))
        channels.append((x - x.mean()) / x.std())
    return np.clip(np.stack(channels) * 0.18 + rng.uniform(0.35, 0.65, (3, 1, 1)), 0, 1)


def dead_leaves(rng: np.random.Generator, size: int, leaves: int = 300) -> np.ndarray:
    """Overlapping flat discs with power-law radii (the dead-leaves model of natural image statistics)."""
    image = np.tile(rng.uniform(0, 1, (3, 1, 1)), (1, size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(leaves):
        r = 0.02 * size / math.sqrt(rng.uniform(0.05, 1))
        cy, cx = rng.uniform(0, size, 2)
        image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, (3, 1))
    return image


def landscape(rng: np.random.Generator, size: int) -> np.ndarray:
    """A sky gradient over a wavy ground, with pink-noise texture."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    sky = np.stack([0.4 + 0.3 * yy, 0.6 + 0.2 * yy, 0.9 - 0.1 * yy])
    ground = np.stack([0.3 + 0.1 * xx, 0.5 - 0.2 * yy, 0.2 + 0 * xx])
    image = np.where((yy > 0.55 + 0.05 * np.sin(xx * 12))[None], ground, sky)
    return np.clip(image + 0.2 * pink_noise(rng, size) - 0.1, 0, 1)


def test_the_file_is_the_published_encoder_and_loads_strictly(taesana: TinyAutoencoder) -> None:
    assert hashlib.sha256((TAESANA_DIR / ENCODER_FILENAME).read_bytes()).hexdigest() == ENCODER_SHA256
    assert (TAESANA_DIR / "LICENSE").read_text().startswith("MIT License")
    state = torch.load(TAESANA_DIR / ENCODER_FILENAME, map_location="cpu", weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}  # published in half precision
    # strict=True in load_tiny_autoencoder: every published tensor has its place and every parameter its tensor
    assert taesana.encoder is not None and taesana.decoder is None
    assert sum(p.numel() for p in taesana.encoder.parameters()) == ENCODER_PARAMS
    for key, value in taesana.encoder.state_dict().items():
        assert torch.equal(value, state[key].float()), key
    with pytest.raises(RuntimeError, match="without its decoder"):
        taesana.decode(torch.zeros(1, 32, 1, 1))


def test_stream_config_uses_the_published_encoder_with_the_dcae_decoder(tiny_model_dir: Path) -> None:
    config = StreamConfig(width=64, height=64, t_list=(1.0,), encoder="tiny", decoder="dcae", tiny_vae=str(TAESANA_DIR))
    engine = StreamEngine.from_pretrained(tiny_model_dir, config)
    published = torch.load(TAESANA_DIR / ENCODER_FILENAME, map_location="cpu", weights_only=True)
    codec = engine.backend.encoder_codec
    assert isinstance(codec, TinyAutoencoder) and codec.encoder is not None and codec.decoder is None
    assert torch.equal(codec.encoder[0].weight, published["0.weight"].float())
    result = engine.process({"default": camera_frame(0)})["default"]
    assert result.kind is FrameKind.GENERATED and result.image.shape == (64, 64, 3)


def test_serve_options_use_the_published_encoder(tiny_model_dir: Path) -> None:
    args = build_parser().parse_args(["serve", "--backend", "torch", "--width", "64", "--height", "64",
                                      "--encoder", "tiny", "--tiny-vae", str(TAESANA_DIR)])
    settings = build_settings(args, str(tiny_model_dir))  # what `sana-stream serve` loads, minus the server
    assert settings.stream.tiny_vae == str(TAESANA_DIR) and settings.stream.decoder.value == "dcae"
    engine = StreamEngine.from_pretrained(settings.model, settings.stream)
    assert engine.process({"default": camera_frame(1)})["default"].kind is FrameKind.GENERATED


def test_asking_for_the_missing_decoder_is_a_clear_error(tiny_model_dir: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    config = StreamConfig(width=64, height=64, encoder="tiny", decoder="tiny", tiny_vae=str(TAESANA_DIR))
    with pytest.raises(ModelNotFoundError) as err:
        StreamEngine.from_pretrained(tiny_model_dir, config)
    assert err.value.missing == [DECODER_FILENAME] and err.value.model == str(TAESANA_DIR)
    message = str(err.value)
    assert f"{TAESANA_DIR} does not hold it" in message and "github.com/madebyollin/taesd" in message
    assert "decoder='tiny' (--decoder tiny)" in message and "choose decoder='dcae' or 'dcae-lite'" in message
    # the command line: one clear line and exit status 2, before any server starts
    with caplog.at_level(logging.ERROR, logger="sana_stream"):
        status = main(["serve", "--model", str(tiny_model_dir), "--backend", "torch", "--width", "64", "--height",
                       "64", "--encoder", "tiny", "--decoder", "tiny", "--tiny-vae", str(TAESANA_DIR)])
    assert status == 2 and f"is missing {DECODER_FILENAME}" in caplog.text


def latent_stats(taesana: TinyAutoencoder, images: torch.Tensor) -> tuple[float, float, float]:
    """Mean, std and share beyond the decoder's (-3, 3) clamp of TAESANA's own output (our latents x 0.41407)."""
    with torch.inference_mode():
        z = taesana.encode(images) * taesana.scaling_factor  # (B, 32, H/32, W/32), TAESANA's raw output
    assert taesana.encoder is not None
    with torch.inference_mode():
        torch.testing.assert_close(z, taesana.encoder((images + 1) / 2), rtol=1e-5, atol=1e-5)
    return float(z.mean()), float(z.std()), float((z.abs() > LATENT_CLAMP).float().mean())


def test_latents_on_the_sample_photo_are_scaled_dcae_latents(taesana: TinyAutoencoder) -> None:
    mean, std, clipped = latent_stats(taesana, sample_image(1024, 384))
    # measured: mean -0.100, std 1.286, 2.5% beyond +-3; raw DC-AE latents would have std ~2.4 and ~20% beyond
    assert mean == pytest.approx(-0.100, abs=0.01) and std == pytest.approx(1.286, abs=0.01)
    assert SCALED_STD_BOUNDS[0] < std < SCALED_STD_BOUNDS[1]
    assert clipped < 0.05


@pytest.mark.parametrize("make", [pink_noise, dead_leaves, landscape])
def test_latents_on_natural_like_images_are_scaled_dcae_latents(taesana: TinyAutoencoder, make) -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([make(rng, 256) for _ in range(2)])).float() * 2 - 1
    mean, std, clipped = latent_stats(taesana, images)
    # measured: std 0.763 (pink noise), 1.081 (dead leaves), 0.786 (landscape); 0.77-1.15 at 384 px, 3 seeds
    assert SCALED_STD_BOUNDS[0] < std < SCALED_STD_BOUNDS[1]
    assert abs(mean) < 0.3 and clipped < 0.05


@pytest.mark.parametrize("width, height", [(512, 512), (640, 384)])
def test_onnx_export_matches_torch(taesana: TinyAutoencoder, tmp_path: Path, width: int, height: int) -> None:
    from engines.export import export_onnx

    h, w = height // 32, width // 32
    spec = PartSpec(Component.ENCODER, (TensorSpec("images", (1, 3, height, width), "float32"),),
                    (TensorSpec("latents", (1, 32, h, w), "float32"),))
    graph = EncodeGraph(taesana)
    path = export_onnx(graph, spec, tmp_path)
    report = check_parity(graph, path, spec)  # random images in [-1, 1]
    assert report.finite and report.relative_error <= FP32_TOLERANCE, str(report)
    import onnxruntime as ort

    image = sample_image(width, height)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (latents,) = session.run(["latents"], {"images": image.numpy()})
    assert latents.shape == (1, 32, h, w)
    with torch.inference_mode():
        reference = taesana.encode(image).numpy()
    photo = compare("encoder", latents, reference, FP32_TOLERANCE)
    assert photo.passed, str(photo)


def test_a_random_encoder_is_not_mistaken_for_the_published_one() -> None:
    """The statistics above are the weights' doing: a random encoder of the same plan gives other numbers."""
    torch.manual_seed(0)
    random = TinyAutoencoder(TinyEncoder(), None).eval()
    _, std, _ = latent_stats(random, sample_image(1024, 384))
    assert not SCALED_STD_BOUNDS[0] < std < SCALED_STD_BOUNDS[1]  # measured: 0.033
