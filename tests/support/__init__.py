"""What the tests share: a server on a free loopback port, polling, synthetic camera frames and how far two frames
differ, a real aiortc client (``tests.support.webrtc``), fault injection around a real backend
(``tests.support.backends``) and a sequential reference sampler (``tests.support.reference``).

The frames and the server runner live in ``benchmarks`` (the benchmarks use them too, and never import tests)."""

from benchmarks.frames import block_diff, camera_frame, mean_abs_diff
from benchmarks.loopback import ServerThread, free_port, running
from tests.support.polling import eventually, wait_until

__all__ = ["ServerThread", "block_diff", "camera_frame", "eventually", "free_port", "mean_abs_diff", "running",
           "wait_until"]
