"""WebRTC pieces both ends of a sana-stream connection use: the client (``rtc.client``: the camera bridge, the
benchmarks, the tests and scripts), frame assembly on the RTP marker bit (``rtc.frame_assembly``: the server's
receivers and the client) and loopback ICE candidates (``rtc.ice``). Nothing here imports the server, the
stream engine or torch."""
