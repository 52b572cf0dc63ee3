"""The similarity filter (docs/design.md#similarity-filter): its statistics, forced processing, the engine's skips."""

from __future__ import annotations

import numpy as np
import torch

from stream import FrameKind
from stream.similarity_filter import SimilarityFilter
from tests.support import camera_frame


def test_identical_frames_skip_until_forced():
    f = SimilarityFilter(threshold=0.98, max_skip=10, seed=0)
    frame = torch.rand(3, 32, 32)
    decisions = [f.should_skip(frame) for _ in range(34)]
    # first frame is processed; then skip probability is 1, so exactly 10 skips, one forced process, ...
    assert decisions[0] is False
    assert decisions[1:12] == [True] * 10 + [False]
    assert sum(decisions) == 30


def test_changing_frames_are_never_skipped():
    f = SimilarityFilter(threshold=0.98, max_skip=10, seed=0)
    gen = torch.Generator().manual_seed(0)
    decisions = [f.should_skip(torch.rand(3, 32, 32, generator=gen) * 2 - 1) for _ in range(50)]
    assert not any(decisions)


def test_skip_rate_follows_the_probability_formula():
    base = torch.ones(1000)
    similar = base.clone()
    similar[:20] = -1.0  # cosine similarity 0.96
    c = torch.nn.functional.cosine_similarity(base, similar, dim=0).item()
    expected = max(0.0, 1 - (1 - c) / (1 - 0.9))
    assert 0.3 < expected < 0.7
    rng = np.random.default_rng(0)
    skipped = 0
    for _ in range(3000):  # a fresh filter per trial: one decision against the same processed frame
        f = SimilarityFilter(threshold=0.9, max_skip=10, seed=int(rng.integers(2**32)))
        f.should_skip(base)
        assert abs(f.skip_probability(similar) - expected) < 1e-6
        skipped += f.should_skip(similar)
    assert abs(skipped / 3000 - expected) < 0.04


def test_engine_skip_returns_last_output_and_does_not_advance(make_engine):
    filtered = make_engine(t_list=(1.2, 0.6), similarity_filter=True, max_skip_frames=3)
    plain = make_engine(t_list=(1.2, 0.6))
    still = camera_frame(0)
    kinds, plain_outputs = [], []
    for k in range(6):
        result = filtered.process({"default": still}, {"default": k})["default"]
        kinds.append(result.kind)
        if result.kind is not FrameKind.SKIPPED:
            plain_outputs.append(plain(still))
            assert np.array_equal(result.image, plain_outputs[-1])  # skips did not move the pipe
        else:
            assert result.tag == k
    assert kinds == [FrameKind.WARMUP, FrameKind.SKIPPED, FrameKind.SKIPPED, FrameKind.SKIPPED,
                     FrameKind.GENERATED, FrameKind.SKIPPED]
    last = filtered.process({"default": still})["default"]
    assert last.kind is FrameKind.SKIPPED and np.array_equal(last.image, plain_outputs[-1])


def test_filter_is_off_by_default(make_engine):
    engine = make_engine(t_list=(1.0,))
    kinds = {engine.process({"default": camera_frame(0)})["default"].kind for _ in range(5)}
    assert kinds == {FrameKind.GENERATED}
