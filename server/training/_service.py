"""The gRPC servicer for ``lossd.v1.TrainingService`` (grpc.aio); the work is in :mod:`._manager`."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import itertools
import logging
import math
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc

from ..._framing import varint_size
from ..._settings import flag_name
from ..._wire import FieldError, reply_encoding
from ...v1 import training_pb2, training_pb2_grpc
from ..rpc import rich_status
from ._manager import JOB_ID, JobManager
from ._store import TERMINAL_STATES, JobRow

__all__ = ["TrainingService"]

log = logging.getLogger("lossd.server.training")

#: ListJobs' default and largest ``limit`` (and ``page_size``, which is clamped to it rather than refused).
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 100, 1000

#: A page token's bytes before base64: version, the last listed job's ``created`` and id, then a check.
_CURSOR = struct.Struct("<Bd12s")
_CHECK = 8


def _check(cursor: bytes, states: Sequence[int]) -> bytes:
    """The check that ties a page token to its bytes and to the listing's ``states``: not a secret (the token
    only names a position in a listing the caller may read), it makes an edited token or a token of another
    filter a refusal rather than another page."""
    return hashlib.sha256(cursor + bytes(repr([int(s) for s in states]), "ascii")).digest()[:_CHECK]


def page_token(last: JobRow, states: Sequence[int]) -> str:
    """The opaque ``next_page_token`` after ``last`` (base64url of the cursor and its check)."""
    cursor = _CURSOR.pack(1, last.created, last.job_id.encode("ascii"))
    return base64.urlsafe_b64encode(cursor + _check(cursor, states)).decode("ascii").rstrip("=")


def read_page_token(token: str, states: Sequence[int]) -> tuple[float, str]:
    """The ``(created, job_id)`` a :func:`page_token` holds; a ``FieldError`` naming ``page_token`` for one
    that this server did not make for these ``states`` (malformed, edited, or of another filter)."""
    refused = FieldError("page_token", "is not a next_page_token of a ListJobs call with these states; "
                         "send it unchanged, with the same states, or leave it empty for the first page")
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise refused from None
    if base64.urlsafe_b64encode(data).decode("ascii").rstrip("=") != token:  # the decoder skips characters
        raise refused  # outside its alphabet, and takes "+/" and padding: only the token as made is one
    cursor, check = data[:-_CHECK], data[-_CHECK:]
    if len(cursor) != _CURSOR.size or check != _check(cursor, states):
        raise refused
    version, created, job_id = _CURSOR.unpack(cursor)
    if version != 1 or not math.isfinite(created) or not JOB_ID.fullmatch(job_id.decode("latin-1")):
        raise refused
    return created, job_id.decode("ascii")


def _page_size(request: training_pb2.ListJobsRequest) -> int:
    """Jobs in the page: ``page_size`` (AIP-158: default 100, clamped to 1000, negative refused), else the
    older ``limit`` (over 1000 refused, as it always was)."""
    if request.page_size < 0:
        raise FieldError("page_size", f"is {request.page_size}; must be >= 0 (0: {DEFAULT_LIST_LIMIT}; "
                         f"at most {MAX_LIST_LIMIT} are listed per page)")
    if request.page_size:
        return min(request.page_size, MAX_LIST_LIMIT)
    if request.limit < 0 or request.limit > MAX_LIST_LIMIT:
        raise FieldError("limit", f"is {request.limit}; must be in [1, {MAX_LIST_LIMIT}] (0: {DEFAULT_LIST_LIMIT})")
    return request.limit or DEFAULT_LIST_LIMIT


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: FieldError) -> NoReturn:
    await context.abort_with_status(rich_status(error))
    raise AssertionError("unreachable")  # pragma: no cover


_Unary = TypeVar("_Unary", bound=Callable[..., Awaitable[Any]])


def _internal_when_unexpected(method: _Unary) -> _Unary:
    """``method`` (a unary RPC) with an exception nobody mapped logged with its traceback and answered
    INTERNAL, without its text: gRPC answered UNKNOWN with the exception's class and message."""
    @functools.wraps(method)
    async def answered(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}; see the server log")
    return answered  # type: ignore[return-value]


class TrainingService(training_pb2_grpc.TrainingServiceServicer):
    """Serves TrainJob, WatchJob, GetJob, ListJobs, CancelJob and DeleteJob from a :class:`JobManager`."""

    def __init__(self, manager: JobManager) -> None:
        self._jobs = manager

    async def _follow(self, job_id: str, after_seq: int, encoding: int,
                      context: grpc.aio.ServicerContext[Any, Any]) -> AsyncGenerator[training_pb2.JobEvent, None]:
        last = after_seq
        try:
            # aclosing: the manager's watch ends (its bookkeeping with it) when this does, not when collected.
            async with contextlib.aclosing(self._jobs.watch(job_id, after_seq, encoding)) as events:
                async for event in events:
                    last = event.seq
                    yield event
                    if event.kind == training_pb2.JOB_EVENT_KIND_STATE and event.state in TERMINAL_STATES:
                        return
        except FieldError as e:  # NOT_FOUND too: the job was deleted while its events were sent
            await _abort(context, e)
        except grpc.aio.AbortError:
            raise
        except Exception:  # as the unary methods (_internal_when_unexpected): not UNKNOWN naming the class
            log.exception("sending the events of job %s failed", job_id)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error sending the job's events; see the server log")
        if not self._jobs.closing:
            return  # nothing after `after_seq`: the job had already ended
        # The watch ended before the job did: the server is shutting down.
        await _abort(context, FieldError("", f"the server is shutting down; job {job_id} goes on after it restarts: "
                                        f"re-attach with WatchJob(job_id={job_id!r}, after_seq={last})", "UNAVAILABLE"))

    async def TrainJob(self, request: training_pb2.TrainJobRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[training_pb2.TrainJobResponse]:
        try:
            job_id = await self._jobs.submit(request)
        except FieldError as e:
            await _abort(context, e)
        except Exception:
            log.exception("TrainJob: validating the spec failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error validating the job spec; see server log")
        async with contextlib.aclosing(self._follow(job_id, 0, request.output_encoding, context)) as events:
            async for event in events:
                yield training_pb2.TrainJobResponse(event=event)
                if request.detach:
                    return

    async def WatchJob(self, request: training_pb2.WatchJobRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[training_pb2.WatchJobResponse]:
        async with contextlib.aclosing(
                self._follow(request.job_id, request.after_seq, request.output_encoding, context)) as events:
            async for event in events:
                yield training_pb2.WatchJobResponse(event=event)

    @_internal_when_unexpected
    async def GetJob(self, request: training_pb2.GetJobRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> training_pb2.GetJobResponse:
        try:
            reply_encoding(request.output_encoding, "values")  # an unknown number: refused, with or without a result
            if not request.include_parameters:
                row = await self._jobs.job(request.job_id, with_spec=True)
                return training_pb2.GetJobResponse(job=row.to_proto(with_spec=True))
            # the row and its parameters read together: a job deleted meanwhile is NOT_FOUND, not parameterless
            row, parameters = await self._jobs.job_with_parameters(request.job_id, request.output_encoding)
            reply = training_pb2.GetJobResponse(job=row.to_proto(with_spec=True))
            for name, t in parameters.items():
                reply.parameters[name].CopyFrom(t)
            return reply
        except FieldError as e:
            await _abort(context, e)

    @_internal_when_unexpected
    async def ListJobs(self, request: training_pb2.ListJobsRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> training_pb2.ListJobsResponse:
        # At most one entry per JobState value (server/rpc/_caps.py, before the call got here).
        for i, s in enumerate(request.states):
            if s not in training_pb2.JobState.values() or s == training_pb2.JOB_STATE_UNSPECIFIED:
                await _abort(context, FieldError(f"states[{i}]", f"{s} is not a job state"))
        states = sorted(set(request.states))
        try:
            size = _page_size(request)
            after = read_page_token(request.page_token, states) if request.page_token else None
            rows = await self._jobs.list_jobs(states, size + 1, after)  # one more: is there a next page?
        except FieldError as e:  # a refused field, or the job store is unavailable
            await _abort(context, e)
        rows, more = rows[:size], len(rows) > size
        reply = training_pb2.ListJobsResponse(jobs=[r.to_proto() for r in rows],
                                              next_page_token=page_token(rows[-1], states) if more else "")
        limit, size = self._jobs.config.limits.max_message_bytes, reply.ByteSize()
        if size > limit:  # gRPC's "Sent message larger than max" named nothing (the job audit, 2026-12-06)
            entries = itertools.accumulate(1 + varint_size(n) + n for n in (job.ByteSize() for job in reply.jobs))
            fit = sum(1 for total in entries if total <= limit)  # (a repeated field: tag, length, message)
            field = "page_size" if request.page_size else "limit"
            await _abort(context, FieldError(field, f"the {len(rows)} newest jobs make a reply of {size} bytes, "
                                             f"over the message limit of {limit} ({flag_name('max_message_bytes')}); "
                                             f"ask for at most {fit}", "RESOURCE_EXHAUSTED"))
        return reply

    @_internal_when_unexpected
    async def CancelJob(self, request: training_pb2.CancelJobRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> training_pb2.CancelJobResponse:
        try:
            row = await self._jobs.cancel(request.job_id)
        except FieldError as e:
            await _abort(context, e)
        return training_pb2.CancelJobResponse(job=row.to_proto())

    @_internal_when_unexpected
    async def DeleteJob(self, request: training_pb2.DeleteJobRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> training_pb2.DeleteJobResponse:
        try:
            row = await self._jobs.delete(request.job_id)
        except FieldError as e:
            await _abort(context, e)
        return training_pb2.DeleteJobResponse(job=row.to_proto())
