"""DeleteJob on a real server (SQLite store): an ended job goes with its events and parameters; a job that has
not ended is refused, naming the rule; an unknown or malformed id is refused as in GetJob."""

from __future__ import annotations

import grpc
import pytest

from lossd.v1 import training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.servers import start_in_process
from support.training import request, small_spec


def test_delete_job() -> None:
    with start_in_process(max_jobs=1) as address, grpc.insecure_channel(address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        events = [r.event for r in stub.TrainJob(request(small_spec()), timeout=120)]
        job_id = events[-1].job_id
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED
        long = request(small_spec(epochs=500))
        long.detach = True
        waiting = [r.event for r in stub.TrainJob(long, timeout=60)][0].job_id
        with pytest.raises(grpc.RpcError) as info:
            stub.DeleteJob(pb.DeleteJobRequest(job_id=waiting), timeout=30)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only ended jobs (SUCCEEDED, FAILED, CANCELLED) can be deleted; cancel it first" in info.value.details()
        stub.CancelJob(pb.CancelJobRequest(job_id=waiting), timeout=60)

        deleted = stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=30).job
        assert (deleted.job_id, deleted.state, deleted.last_seq) == (job_id, pb.JOB_STATE_SUCCEEDED, events[-1].seq)
        for call in (lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30),
                     lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30)),
                     lambda: stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=30)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert job_id not in {j.job_id for j in stub.ListJobs(pb.ListJobsRequest(), timeout=30).jobs}
        from lossd.client import Client

        with Client(address) as client:  # the SDK's call
            assert client.delete_job(waiting).state == pb.JOB_STATE_CANCELLED
        with pytest.raises(grpc.RpcError) as info:
            stub.DeleteJob(pb.DeleteJobRequest(job_id="../etc"), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
