"""The TAESANA-compatible tiny autoencoder (stream/models/tiny_autoencoder*.py), with random weights.

The published encoder is tested in test_taesana_weights.py; its decoder file is not at hand, so both layouts
are also checked against a transcription of ``F32Encoder`` / ``F32Decoder`` from madebyollin/taesd
``taesd.py`` at commit 2a1b4149efda2cb6da482e8d3ff017bdb4f98fc3 (the "Add support for Sana DC-AE" commit),
and the layer plan against docs/design.md#where-the-time-goes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stream.exceptions import IncompatibleWeightsError, ModelNotFoundError
from stream.models.tiny_autoencoder import (
    DCAE_SCALING_FACTOR,
    TinyAutoencoder,
    TinyAutoencoderConfig,
    TinyDecoder,
    TinyEncoder,
)
from stream.models.tiny_autoencoder_weights import (
    DECODER_FILENAME,
    ENCODER_FILENAME,
    load_tiny_autoencoder,
    save_tiny_autoencoder,
)

CPU = torch.device("cpu")


# --- the published layout, transcribed from taesd.py (2a1b414) ---------------------------------------------
# taesd.py builds both parts as nn.Sequential, so a key is "<index>.<param>". conv(n_in, n_out) is a 3x3
# Conv2d with bias unless bias=False; Block(n, n) holds conv.0 / conv.2 / conv.4 (3x3, bias) and, since
# n_in == n_out everywhere in the F32 plan, no skip conv. ReLU, Clamp and Upsample hold no parameters.
#
# F32Encoder: 0 conv(3,32,s2) 1 ReLU 2 conv(32,64,s2) 3 ReLU 4 Block(64)
#             5 conv(64,64,s2,nobias) 6-8 Block(64) 9 conv(s2,nobias) 10-12 Block(64) 13 conv(s2,nobias)
#             14-16 Block(64) 17 conv(64,32)
# F32Decoder: 0 Clamp 1 conv(32,256) 2 ReLU 3-5 Block(256) 6 Upsample 7 conv(256,128,nobias)
#             8-10 Block(128) 11 Upsample 12 conv(128,64,nobias) 13-15 Block(64) 16 Upsample 17 conv(nobias)
#             18-20 Block(64) 21 Upsample 22 conv(nobias) 23-25 Block(64) 26 Upsample 27 conv(nobias)
#             28 Block(64) 29 conv(64,3)
ENCODER_CONVS = {  # index: (out, in, has_bias)
    0: (32, 3, True), 2: (64, 32, True), 5: (64, 64, False), 9: (64, 64, False), 13: (64, 64, False),
    17: (32, 64, True),
}
ENCODER_BLOCKS = {4: 64, 6: 64, 7: 64, 8: 64, 10: 64, 11: 64, 12: 64, 14: 64, 15: 64, 16: 64}
DECODER_CONVS = {
    1: (256, 32, True), 7: (128, 256, False), 12: (64, 128, False), 17: (64, 64, False), 22: (64, 64, False),
    27: (64, 64, False), 29: (3, 64, True),
}
DECODER_BLOCKS = {3: 256, 4: 256, 5: 256, 8: 128, 9: 128, 10: 128, 13: 64, 14: 64, 15: 64, 18: 64, 19: 64,
                  20: 64, 23: 64, 24: 64, 25: 64, 28: 64}
# parameter counts; the decoder's 8.30 M float32 values match the ~33 MB size of taesana_decoder.pth
ENCODER_PARAMS, DECODER_PARAMS = 1_256_288, 8_301_763


def published_keys(convs: dict[int, tuple[int, int, bool]], blocks: dict[int, int]) -> dict[str, tuple[int, ...]]:
    keys: dict[int, dict[str, tuple[int, ...]]] = {}
    for index, (n_out, n_in, bias) in convs.items():
        keys[index] = {f"{index}.weight": (n_out, n_in, 3, 3), **({f"{index}.bias": (n_out,)} if bias else {})}
    for index, n in blocks.items():
        keys[index] = {}
        for sub in (0, 2, 4):
            keys[index] |= {f"{index}.conv.{sub}.weight": (n, n, 3, 3), f"{index}.conv.{sub}.bias": (n,)}
    return {k: shape for index in sorted(keys) for k, shape in keys[index].items()}


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def model() -> TinyAutoencoder:
    torch.manual_seed(0)
    return TinyAutoencoder(TinyEncoder(), TinyDecoder()).eval().requires_grad_(False)


def test_state_dicts_match_the_published_layout(model: TinyAutoencoder) -> None:
    assert model.encoder is not None and model.decoder is not None
    assert list(shapes(model.encoder).items()) == list(published_keys(ENCODER_CONVS, ENCODER_BLOCKS).items())
    assert list(shapes(model.decoder).items()) == list(published_keys(DECODER_CONVS, DECODER_BLOCKS).items())
    assert sum(p.numel() for p in model.encoder.parameters()) == ENCODER_PARAMS
    assert sum(p.numel() for p in model.decoder.parameters()) == DECODER_PARAMS
    # the decoder's first layer is the latent soft-clamp tanh(x / 3) * 3
    x = torch.linspace(-20, 20, 41)
    torch.testing.assert_close(model.decoder[0](x), torch.tanh(x / 3) * 3)


def test_spatial_factor_is_derived_from_the_layers() -> None:
    default = TinyAutoencoder(TinyEncoder(), TinyDecoder())
    assert default.encoder is not None and default.decoder is not None
    assert default.spatial_compression_ratio == default.encoder.spatial_compression_ratio == 32
    assert default.decoder.spatial_compression_ratio == 2 ** sum(
        isinstance(m, torch.nn.Upsample) for m in default.decoder
    ) == 32
    f16 = TinyAutoencoderConfig(
        latent_channels=4, encoder_stem_channels=(8,), encoder_stage_channels=(8, 8, 8, 8),
        encoder_stage_blocks=(1, 1, 1, 1), decoder_stage_channels=(16, 8, 8, 8, 8), decoder_stage_blocks=(1,) * 5,
    )
    small = TinyAutoencoder(TinyEncoder(f16), TinyDecoder(f16))
    assert small.spatial_compression_ratio == 16
    z = small.encode(torch.zeros(1, 3, 64, 32))
    assert z.shape == (1, 4, 4, 2)
    assert small.decode(z).shape == (1, 3, 64, 32)
    with pytest.raises(ValueError, match="halves the image 4 times but the decoder doubles it 5 times"):
        TinyAutoencoderConfig(encoder_stem_channels=(64,))


def test_encode_decode_shapes_and_range(model: TinyAutoencoder) -> None:
    torch.manual_seed(1)
    images = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        latents = model.encode(images)
        assert latents.shape == (1, 32, 8, 8)
        decoded = model.decode(latents)
        assert decoded.shape == (1, 3, 256, 256)
        assert decoded.min() >= -1 and decoded.max() <= 1
        # without the output clamp the values are whatever the (random) network makes, still finite
        small = torch.randn(1, 32, 2, 2)
        raw = model.decode(small, clamp=False)
        assert torch.isfinite(raw).all()
        torch.testing.assert_close(model.decode(small), raw.clamp(-1, 1))
        # the latent Clamp saturates: huge latents decode like other huge latents of the same sign pattern
        signs = small.sign()
        torch.testing.assert_close(model.decode(signs * 1e3, clamp=False), model.decode(signs * 1e4, clamp=False))
    with pytest.raises(ValueError, match="multiples of 32"):
        model.encode(torch.zeros(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 32, h, w\)"):
        model.decode(torch.zeros(1, 4, 2, 2))


def test_saved_files_load_back_with_identical_outputs(model: TinyAutoencoder, tmp_path: Path) -> None:
    assert model.encoder is not None and model.decoder is not None
    written = save_tiny_autoencoder(tmp_path, model.encoder, model.decoder)
    assert written == [tmp_path / ENCODER_FILENAME, tmp_path / DECODER_FILENAME]
    # the published format: a plain state dict that taesd.py's own loading code accepts strictly
    for path, part in zip(written, (TinyEncoder(), TinyDecoder())):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert all(v.dtype == torch.float32 for v in state.values())
        part.load_state_dict(state)
    loaded = load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.scaling_factor == DCAE_SCALING_FACTOR
    torch.manual_seed(2)
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    latents = torch.randn(1, 32, 2, 2)
    with torch.inference_mode():
        assert torch.equal(loaded.encode(images), model.encode(images))
        assert torch.equal(loaded.decode(latents), model.decode(latents))
    half = load_tiny_autoencoder(tmp_path, device=CPU, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_either_part_loads_alone(model: TinyAutoencoder, tmp_path: Path) -> None:
    save_tiny_autoencoder(tmp_path, None, model.decoder)
    decoder_only = load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32, encoder=False)
    assert decoder_only.encoder is None and decoder_only.spatial_compression_ratio == 32
    assert decoder_only.decode(torch.zeros(1, 32, 1, 1)).shape == (1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="without its encoder"):
        decoder_only.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ModelNotFoundError) as err:
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32)
    assert err.value.missing == [ENCODER_FILENAME]
    with pytest.raises(ValueError, match="at least one part"):
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32, encoder=False, decoder=False)


def test_missing_files_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32)
    assert err.value.missing == [ENCODER_FILENAME, DECODER_FILENAME]
    assert ENCODER_FILENAME in str(err.value) and DECODER_FILENAME in str(err.value)
    assert "github.com/madebyollin/taesd" in str(err.value)
    # a hub id that is not cached, with downloads off: no network, and the message names the file
    with pytest.raises(ModelNotFoundError) as err:
        load_tiny_autoencoder("someone/not-cached", device="cpu", dtype=torch.float32, encoder=False,
                              cache_dir=tmp_path / "hf", local_files_only=True)
    assert err.value.missing == [DECODER_FILENAME]
    assert DECODER_FILENAME in str(err.value) and "downloads are off" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="neither a directory nor a hub id"):
        load_tiny_autoencoder(tmp_path / "no" / "such" / "dir", device="cpu", dtype=torch.float32)


def test_hub_id_is_read_from_the_local_cache_first(model: TinyAutoencoder, tmp_path: Path) -> None:
    # the layout huggingface_hub keeps: models--owner--name/{refs/main, snapshots/<commit>/<file>}
    repo, commit = tmp_path / "hf" / "models--someone--taesana", "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_tiny_autoencoder(repo / "snapshots" / commit, None, model.decoder)
    loaded = load_tiny_autoencoder("someone/taesana", device="cpu", dtype=torch.float32, encoder=False,
                                   cache_dir=tmp_path / "hf", local_files_only=True)
    latents = torch.randn(1, 32, 1, 1)
    with torch.inference_mode():
        assert torch.equal(loaded.decode(latents), model.decode(latents))


def test_a_wrong_state_dict_fails_clearly(model: TinyAutoencoder, tmp_path: Path) -> None:
    """torch's own strict check, in an error that names the file (a ValueError)."""
    assert model.decoder is not None
    path = tmp_path / DECODER_FILENAME
    state = dict(model.decoder.state_dict())
    state["1.weight"] = torch.zeros(256, 16, 3, 3)  # a 16-channel latent decoder is not TAESANA
    torch.save(state, path)
    with pytest.raises(IncompatibleWeightsError, match=r"size mismatch for 1\.weight: copying a param with shape "
                       r"torch\.Size\(\[256, 16, 3, 3\]\) from checkpoint, the shape in current model is "
                       r"torch\.Size\(\[256, 32, 3, 3\]\)") as err:
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32, encoder=False)
    assert isinstance(err.value, ValueError) and err.value.path == str(path) and str(path) in str(err.value)
    assert err.value.target.startswith("TinyDecoder built from TinyAutoencoderConfig(")
    del state["1.weight"]
    state["3.skip.weight"] = torch.zeros(256, 256, 1, 1)
    torch.save(state, path)
    with pytest.raises(IncompatibleWeightsError, match=r'Missing key\(s\) in state_dict: "1\.weight"'
                       r'[\s\S]*Unexpected key\(s\) in state_dict: "3\.skip\.weight"'):
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32, encoder=False)
    torch.save([1, 2], path)
    with pytest.raises(IncompatibleWeightsError, match="Expected state_dict to be dict-like"):
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32, encoder=False)
    path.write_bytes(b"not a torch file")
    with pytest.raises(IncompatibleWeightsError, match="not a readable torch state dict"):
        load_tiny_autoencoder(tmp_path, device="cpu", dtype=torch.float32, encoder=False)


def test_scaling_convention_matches_dcae(model: TinyAutoencoder) -> None:
    from stream.tiny_model import TinyModelSpec, build_tiny_pipeline

    vae = build_tiny_pipeline(TinyModelSpec()).vae.eval()
    assert model.encoder is not None and model.decoder is not None
    assert vae.config.scaling_factor == pytest.approx(model.scaling_factor)
    assert vae.config.latent_channels == model.latent_channels
    assert vae.spatial_compression_ratio == model.spatial_compression_ratio
    torch.manual_seed(3)
    images = torch.rand(2, 3, 64, 96) * 2 - 1  # [-1, 1], as the engine feeds AutoencoderDC
    sf = model.scaling_factor
    with torch.inference_mode():
        dcae_latents = vae.encode(images).latent
        ours = model.encode(images)
        assert ours.shape == dcae_latents.shape == (2, 32, 2, 3)
        # encode: our unscaled latent x scaling_factor is TAESD's raw latent of the [0, 1] image
        torch.testing.assert_close(ours * sf, model.encoder((images + 1) / 2))
        # decode: the engine hands unscaled latents; TAESD sees them x scaling_factor, its [0, 1] image -> [-1, 1]
        assert model.decode(dcae_latents).shape == vae.decode(dcae_latents).sample.shape == images.shape
        torch.testing.assert_close(model.decode(dcae_latents, clamp=False),
                                   model.decoder(dcae_latents * sf) * 2 - 1)


def test_flops_match_the_published_plan() -> None:
    """docs/design.md#where-the-time-goes: tiny encoder ~8.3 GFLOPs, decoder ~148 GFLOPs at 512x512."""
    with torch.device("meta"):
        encoder, decoder = TinyEncoder(), TinyDecoder()
        with FlopCounterMode(display=False) as counter:
            latents = encoder(torch.empty(1, 3, 512, 512))
        encoder_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            images = decoder(torch.empty(1, 32, 16, 16))
        decoder_flops = counter.get_total_flops()
    assert latents.shape == (1, 32, 16, 16) and images.shape == (1, 3, 512, 512)
    assert encoder_flops == pytest.approx(8.3e9, rel=0.10)
    assert decoder_flops == pytest.approx(148e9, rel=0.10)
