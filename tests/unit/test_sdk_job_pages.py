"""The SDK's ``jobs()`` reads ListJobs a page at a time: against a server from before paging (which reads only
``limit`` and sends no token) it still returns at most ``limit`` jobs, and a server that answers a token it was
sent, or a page without jobs, cannot keep it calling for ever (a review of the paging commit, 2026-12-06)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from lossd.client import AsyncClient, Client
from lossd.v1 import training_pb2 as pb
from lossd.v1 import training_pb2_grpc

#: The jobs of the stand-in servers, newest first.
JOBS = [pb.Job(job_id=f"{i:012x}") for i in range(250)]

Answer = Callable[[pb.ListJobsRequest], pb.ListJobsResponse]


def _before_paging(request: pb.ListJobsRequest) -> pb.ListJobsResponse:
    """A server from before paging: ``limit`` (0: 100) newest jobs, whatever ``page_size`` says (a field it
    does not know)."""
    return pb.ListJobsResponse(jobs=JOBS[:request.limit or 100])


def _same_token(request: pb.ListJobsRequest) -> pb.ListJobsResponse:
    return pb.ListJobsResponse(jobs=JOBS[:1], next_page_token="again")


def _empty_pages(request: pb.ListJobsRequest) -> pb.ListJobsResponse:
    return pb.ListJobsResponse(next_page_token=f"{request.page_token}x")


class _Listing(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, answer: Answer) -> None:
        self.answer, self.calls = answer, 0

    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        self.calls += 1
        if self.calls > 50:  # the loop the test looks for: end it with an error rather than hang the suite
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "called too often")
        return self.answer(request)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], tuple[str, _Listing]]]:
    servers: list[grpc.Server] = []

    def start(answer: Answer) -> tuple[str, _Listing]:
        server = grpc.server(ThreadPoolExecutor(2))
        servicer = _Listing(answer)
        training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        server.stop(None)


def _ids(jobs: list[pb.Job]) -> list[str]:
    return [j.job_id for j in jobs]


@pytest.mark.parametrize("limit", [5, 150, 0])
def test_a_server_from_before_paging_gives_at_most_limit_jobs(serve: Any, limit: int) -> None:
    address, servicer = serve(_before_paging)
    with Client(address, timeout=10) as client:
        # 0: every job, asked as a page of 1,000, which such a server reads as its limit (not its default 100)
        assert _ids(client.jobs(limit=limit)) == _ids(JOBS[:limit or None])
    assert servicer.calls == 1

    async def listed() -> list[pb.Job]:
        async with AsyncClient(address, timeout=10) as aclient:
            return await aclient.jobs(limit=limit)

    assert _ids(asyncio.run(listed())) == _ids(JOBS[:limit or None])


@pytest.mark.parametrize("answer", [_same_token, _empty_pages], ids=["same-token", "empty-pages"])
def test_a_server_that_would_page_for_ever_ends_the_listing(serve: Any, answer: Answer) -> None:
    address, servicer = serve(answer)
    with Client(address, timeout=10) as client:
        jobs = client.jobs()
    assert _ids(jobs) == _ids(JOBS[:1] * 2 if answer is _same_token else [])
    assert servicer.calls == (2 if answer is _same_token else 1)

    async def listed() -> list[pb.Job]:
        async with AsyncClient(address, timeout=10) as aclient:
            return await aclient.jobs()

    assert len(asyncio.run(listed())) == len(jobs)
