"""Moved to ``tests.support.webrtc`` (the client) and ``tests.support`` (``running``, ``eventually``); kept only so
test branches written before the move still import. New tests import from ``tests.support``."""

from benchmarks.loopback import running  # noqa: F401
from tests.support.polling import eventually  # noqa: F401
from tests.support.webrtc import (FRAME_PTS, Client, OfferRejected, Received, StreamClient,  # noqa: F401
                                  SyntheticCamera, connect)
