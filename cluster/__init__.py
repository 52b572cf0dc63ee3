"""Scale-out on Ray: N engine workers (one per GPU, or per CPU share) behind one HTTP front.

Each worker is a Ray actor running the single-process server (engine, pipeline, aiortc peers, viewers) on its
own port; the front authenticates, places each stream, forwards its SDP exchange and aggregates health and
metrics. Media flows between each client and its worker, never through the front. See docs/scale.md.
"""
