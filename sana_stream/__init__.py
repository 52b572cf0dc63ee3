"""The ``sana-stream`` command: the composition root that wires the server, the camera bridge, the build of
compiled parts and the demo model. Nothing imports it; it imports every layer, each command's only when that
command runs (docs/architecture.md)."""
