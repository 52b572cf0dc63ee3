"""Small networks of our own that diffusers cannot express (see each module's docstring)."""

from stream.models.tiny_autoencoder import TinyAutoencoder, TinyAutoencoderConfig, TinyDecoder, TinyEncoder
from stream.models.tiny_autoencoder_weights import (
    DECODER_FILENAME,
    ENCODER_FILENAME,
    load_tiny_autoencoder,
    save_tiny_autoencoder,
)

__all__ = [
    "DECODER_FILENAME",
    "ENCODER_FILENAME",
    "TinyAutoencoder",
    "TinyAutoencoderConfig",
    "TinyDecoder",
    "TinyEncoder",
    "load_tiny_autoencoder",
    "save_tiny_autoencoder",
]
