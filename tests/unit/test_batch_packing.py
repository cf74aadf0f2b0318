"""``evaluate_many``'s packing: items into EvaluateLossBatch messages by count and bytes.

The SDK frames each batch from its items' serialized bytes; the result must parse to what
upb makes of ``EvaluateLossBatchRequest(items=...)``, with the same size (map entries may
come in another order: protobuf leaves it open), and no batch may exceed
either bound (an item larger than the byte bound travels alone).
"""

from __future__ import annotations

import numpy as np
import pytest

from lossd.client import build_request
from lossd.client._client import pack_many
from lossd.v1 import lossd_pb2


def _requests(sizes: list[int]) -> list[lossd_pb2.EvaluateLossRequest]:
    rng = np.random.default_rng(3)
    return [build_request("mse", rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32),
                          reduction="sum" if n % 2 else "mean")[0] for n in sizes]


@pytest.mark.parametrize("max_items, max_bytes", [(1, 1 << 20), (3, 1 << 20), (1000, 2000), (4, 900), (1000, 1)])
def test_batches_cover_every_item_in_order_within_both_bounds(max_items: int, max_bytes: int) -> None:
    requests = _requests([1, 5, 100, 0, 40, 7, 300, 2, 2, 60, 11])
    packed = list(pack_many(requests, max_items, max_bytes))
    assert [p.start for p in packed] == [sum(q.count for q in packed[:k]) for k in range(len(packed))]
    assert sum(p.count for p in packed) == len(requests)
    for p in packed:
        chunk = requests[p.start:p.start + p.count]
        expected = lossd_pb2.EvaluateLossBatchRequest(items=chunk)
        assert lossd_pb2.EvaluateLossBatchRequest.FromString(p.body) == expected
        assert len(p.body) == expected.ByteSize()
        assert 1 <= p.count <= max_items
        assert len(p.body) <= max_bytes or p.count == 1  # only a single item may exceed the byte bound


def test_no_requests_no_batches() -> None:
    assert list(pack_many([])) == []
