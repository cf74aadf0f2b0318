"""The gRPC servicer for ``lossd.v1.LossService`` (grpc.aio).

Evaluations run on a thread pool so the event loop keeps serving health
checks and other calls while torch computes (torch releases the GIL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc
import torch
from google.protobuf import struct_pb2

from ..v1 import lossd_pb2, lossd_pb2_grpc
from ._evaluate import handle_evaluate
from .losses import LossError, LossSpec, Registry

__all__ = ["LossService", "describe_loss"]

log = logging.getLogger("lossd.server")


def describe_loss(spec: LossSpec) -> lossd_pb2.LossInfo:
    """The ``LossInfo`` that ``ListLosses`` publishes for ``spec``."""
    params = []
    for p in spec.params:
        default = struct_pb2.Value()
        if p.default is None:
            default.null_value = struct_pb2.NULL_VALUE
        elif isinstance(p.default, bool):
            default.bool_value = p.default
        elif isinstance(p.default, (int, float)):
            default.number_value = float(p.default)
        elif isinstance(p.default, str):
            default.string_value = p.default
        else:
            default.list_value.extend(list(p.default))
        params.append(
            lossd_pb2.ParamInfo(
                name=p.name, type=p.type, default=default, choices=list(p.choices),
                range=p.range_text(), doc=p.doc,
            )
        )
    return lossd_pb2.LossInfo(
        name=spec.name,
        aliases=list(spec.aliases),
        description=spec.description,
        inputs=[
            lossd_pb2.InputInfo(
                name=i.name, role=i.role, dtype_kind=i.kind, differentiable=i.differentiable,
                required=i.required, aliases=list(i.aliases), doc=i.doc,
            )
            for i in spec.inputs
        ],
        params=params,
        source=spec.source,
        dtypes=list(spec.float_dtypes),
        notes=spec.notes,
    )


class LossService(lossd_pb2_grpc.LossServiceServicer):
    """Serves ListLosses, EvaluateLoss and EvaluateLossStream from a registry."""

    def __init__(
        self, registry: Registry, executor: Executor, device: torch.device | None, max_tensor_elements: int
    ) -> None:
        self._registry = registry
        self._executor = executor
        self._device = device
        self._max_elements = max_tensor_elements

    async def ListLosses(
        self, request: lossd_pb2.ListLossesRequest, context: grpc.aio.ServicerContext
    ) -> lossd_pb2.ListLossesResponse:
        needle = request.filter.lower()
        specs = [
            s for s in self._registry
            if not needle or any(needle in n.lower() for n in (s.name, *s.aliases))
        ]
        return lossd_pb2.ListLossesResponse(losses=[describe_loss(s) for s in specs])

    async def _run(self, request: lossd_pb2.EvaluateLossRequest) -> lossd_pb2.EvaluateLossResponse:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, handle_evaluate, self._registry, request, self._device, self._max_elements
        )

    async def EvaluateLoss(
        self, request: lossd_pb2.EvaluateLossRequest, context: grpc.aio.ServicerContext
    ) -> lossd_pb2.EvaluateLossResponse:
        try:
            return await self._run(request)
        except LossError as e:
            await context.abort(grpc.StatusCode[e.code], str(e))
        except Exception:
            log.exception("EvaluateLoss failed for loss %r", request.loss)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error evaluating {request.loss!r}; see server log")
        raise AssertionError("unreachable")  # pragma: no cover

    async def EvaluateLossStream(
        self,
        request_iterator: AsyncIterator[lossd_pb2.EvaluateLossStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[lossd_pb2.EvaluateLossStreamResponse]:
        async for item in request_iterator:
            try:
                reply = await self._run(item.request)
                yield lossd_pb2.EvaluateLossStreamResponse(id=item.id, response=reply)
            except LossError as e:
                yield lossd_pb2.EvaluateLossStreamResponse(
                    id=item.id, error=lossd_pb2.Error(code=e.code, message=str(e), field=e.field)
                )
            except Exception:
                log.exception("EvaluateLossStream item %r failed", item.id)
                yield lossd_pb2.EvaluateLossStreamResponse(
                    id=item.id,
                    error=lossd_pb2.Error(code="INTERNAL", message="internal error; see server log"),
                )
