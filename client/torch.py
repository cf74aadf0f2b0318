"""Remote losses as ``torch.nn`` modules: drop :class:`RemoteLoss` into a training loop.

This module imports torch (``import lossd.client`` does not). The forward pass
asks the server for the loss *and* its gradients; backward hands them to
autograd, scaled by the incoming gradient::

    >>> import torch
    >>> from lossd.client import Client
    >>> from lossd.client.torch import RemoteLoss
    >>> criterion = RemoteLoss("cross_entropy", client=Client(), label_smoothing=0.1)  # doctest: +SKIP
    >>> loss = criterion(model(x), y)      # one EvaluateLoss call           # doctest: +SKIP
    >>> loss.backward()                    # no call: the gradients came with the loss  # doctest: +SKIP

Round trips per forward + backward:

* a scalar loss (``reduction`` ``mean``/``sum``, composite objectives,
  regularization): **one** call when ``grad_output`` is 1 (``loss.backward()``).
  Otherwise (``(loss / accum_steps).backward()``, ``(0.5 * objective).backward()``)
  backward makes **one more** call that sends ``grad_output``, so that the
  server backpropagates it through the loss (an objective: through each weighted
  term and penalty) as torch's own backward does, and the gradients are torch's
  own to the bit (the forward's gradients times ``grad_output`` round differently).
* a non-scalar loss (``reduction='none'``): the forward call returns the loss
  (and gradients for an all-ones ``grad_output``); backward reuses them when
  ``grad_output`` is all ones (``loss.sum().backward()``), else makes **one
  more** call that sends ``grad_output`` and gets the vector-Jacobian product.
  That call resends the inputs as they were at forward time.

Double backward (gradients of gradients, ``create_graph=True``) is refused with a
``RuntimeError``: the gradients the server sends carry no graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import torch
from torch import nn

from ..v1 import lossd_pb2
from ._client import Client, EvaluateResult, LossSpecifier, build_request, named_inputs, under_explicit
from ._codec import encode
from ._modules import module_request

__all__ = ["RemoteLoss", "remote_loss"]

#: Where regularized parameters come from: a model, ``named_parameters()``, or a name -> tensor mapping.
ParameterSource: TypeAlias = nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


class _Call:
    """One evaluation: what is sent (names, the prepared request) and what came back."""

    def __init__(self, client: Client, timeout: float | None) -> None:
        self.client = client
        self.timeout = timeout
        self.input_names: list[str] = []
        self.parameter_names: list[str] = []
        self.request = lossd_pb2.EvaluateLossRequest()
        self.result: EvaluateResult | None = None

    def evaluate(self, grad_output: torch.Tensor | None = None) -> EvaluateResult:
        request = self.request
        if grad_output is not None:
            request = lossd_pb2.EvaluateLossRequest()
            request.CopyFrom(self.request)
            request.grad_output.CopyFrom(encode(grad_output))
        return self.client.evaluate_request(request, as_torch=True, timeout=self.timeout)


class _RemoteLossFunction(torch.autograd.Function):
    """Autograd node: forward calls the server, backward reuses (or asks again for) the gradients."""

    @staticmethod
    def forward(ctx: Any, call: _Call, *tensors: torch.Tensor) -> torch.Tensor:
        call.result = call.evaluate()
        # The differentiable ones saved, though backward does not read them: torch's own checks then apply,
        # as to a local loss (a second backward without retain_graph is an error, not gradients counted twice;
        # such an input changed in place since the forward is refused). Not the others: a target changed in
        # place, or made under inference_mode, is fine locally (torch does not save what it does not need).
        ctx.save_for_backward(*(t for t in tensors if t.requires_grad))
        ctx.call = call
        ctx.placement = [(t.device, t.dtype) for t in tensors]
        loss: torch.Tensor = call.result.loss
        return loss.to(device=tensors[0].device)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():  # backward(create_graph=True): the engine enables grad mode for it
            raise RuntimeError("a remote loss has no double backward (create_graph=True): the gradients the "
                               "server sends carry no graph; compute that part of the objective locally")
        ctx.saved_tensors  # noqa: B018 - raises where torch would: the graph freed, an input changed in place
        call: _Call = ctx.call
        result = call.result
        assert result is not None
        if not bool((grad_output == 1).all()):  # ones: the forward's gradients are the answer
            # A loss or an objective alike: the server applies grad_output as torch's own backward does.
            result = call.evaluate(grad_output.detach().cpu())
        found = [result.grads.get(n) for n in call.input_names]
        found += [result.parameter_grads.get(n) for n in call.parameter_names]
        grads: list[torch.Tensor | None] = [None]  # for `call`
        for needed, g, (device, dtype) in zip(ctx.needs_input_grad[1:], found, ctx.placement):
            if not needed or g is None:
                grads.append(None)
            else:  # back where the input lives (the server's replies are CPU tensors)
                grads.append(g.to(device=device, dtype=dtype))
        return tuple(grads)


def _named_parameters(source: ParameterSource | None) -> dict[str, torch.Tensor]:
    if source is None:
        return {}
    if isinstance(source, nn.Module):
        return dict(source.named_parameters())
    return dict(source.items() if isinstance(source, Mapping) else source)


def remote_loss(
    loss: LossSpecifier | nn.Module,
    y_pred: torch.Tensor,
    y_true: torch.Tensor | None = None,
    *,
    client: Client,
    inputs: Mapping[str, torch.Tensor] | None = None,
    params: Mapping[str, Any] | None = None,
    parameters: ParameterSource | None = None,
    regularization: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    allow_non_finite: bool = False,
    strict: bool = False,
) -> torch.Tensor:
    """``loss(y_pred, y_true, **inputs)`` computed by the server, differentiable by autograd.

    ``loss`` is a name (``"cross_entropy"``), the terms of a composite
    objective (``[{"loss": "bce_with_logits", "weight": 0.5}, ...]``) or a
    configured ``torch.nn`` loss module (``nn.HuberLoss(delta=2.0)``: its
    settings and buffers are sent, see :func:`~lossd.client.build_request`);
    ``params`` are its parameters; ``inputs`` more tensors by torch's argument
    names (``weight``, ``var``, ...). Every floating-point tensor that requires
    grad gets its gradient. ``parameters`` (a module, a mapping or
    ``named_parameters()``) with ``regularization`` (``{"l2": 1e-4}``, see
    ``docs/objectives.md``) adds L1/L2 terms whose gradients flow into those
    parameters. NaN or infinite values are refused (``InvalidArgument``) unless
    ``allow_non_finite=True``; ``strict=True`` refuses inputs outside the loss's
    documented domain too (by default they are computed, with a ``ServerWarning``).
    A tensor passed as two inputs (``loss(x, x)``) gets the sum of both
    gradients, as local autograd gives.

    >>> w = torch.tensor([0.5, 2.0], requires_grad=True)
    >>> out = remote_loss("mse", w, torch.ones(2), client=client)  # doctest: +SKIP
    >>> out.backward(); w.grad                                      # doctest: +SKIP
    tensor([-0.5000,  1.0000])
    """
    given = named_inputs(y_pred, y_true, inputs)
    if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in given.values()):
        raise RuntimeError("a remote loss cannot run under torch.func transforms (grad, vmap, jacrev, ...): its "
                           "inputs carry no data the client can send; compute that part locally, or use "
                           "torch.autograd")
    if isinstance(loss, nn.Module):  # its buffers and parameters are inputs: parameters get their gradients
        loss, module_params, module_inputs = module_request(loss)
        given, params = under_explicit(module_inputs, module_params, given, dict(params or {}))
    named_params = _named_parameters(parameters)
    call = _Call(client, timeout)
    call.input_names = list(given)
    call.parameter_names = list(named_params)
    call.request, _ = build_request(
        loss, inputs=given, params=params,
        # Only the gradients autograd needs; none (torch.no_grad, frozen inputs) sends [], which
        # the server reads as "all" -- the protocol cannot ask for none.
        grad_inputs=[n for n, t in given.items()
                     if t.requires_grad and (t.is_floating_point() or t.is_complex())],
        parameters=named_params or None, regularization=regularization, allow_non_finite=allow_non_finite,
        strict=strict,
    )
    tensors = [*given.values(), *named_params.values()]
    out: torch.Tensor = _RemoteLossFunction.apply(call, *tensors)  # type: ignore[no-untyped-call]
    return out


class RemoteLoss(nn.Module):
    """A loss computed by a lossd server, usable like ``nn.CrossEntropyLoss()``.

    Args:
        loss: a loss name or alias (``"cross_entropy"``, ``"CrossEntropyLoss"``,
            ``"sigmoid_focal_loss"``), the terms of a composite objective
            (``[{"loss": "bce_with_logits", "weight": 0.5}, {"loss": "dice"}]``), or a
            configured ``torch.nn`` loss module (``nn.CrossEntropyLoss(weight=w,
            label_smoothing=0.1)``): its settings and buffers are read, never pickled,
            at every call; any other object is a ``TypeError``.
        client: the :class:`~lossd.client.Client` to call (default: a new
            ``Client()`` configured from ``LOSSD_*`` variables).
        parameters: a model (or ``named_parameters()``, or a mapping) whose
            parameters ``regularization`` covers.
        regularization: ``{"l1": ..., "l2": ..., "include": [...], "exclude": [...]}``
            (see ``docs/objectives.md``).
        timeout: deadline of each call in seconds (default: the client's).
        allow_non_finite: let NaN and infinite values through to the loss (the server refuses
            them by default, naming the tensor and the first such element).
        strict: refuse inputs outside the loss's documented domain (``InvalidArgument``)
            instead of computing them as torch does with a ``ServerWarning``.
        **params: the loss's parameters (``reduction="sum"``, ``label_smoothing=0.1``);
            tensors (``weight=torch.tensor(...)``) are extra inputs, sent with every call. They are
            the module's buffers, as in ``nn.CrossEntropyLoss(weight=w)``: ``.double()`` and ``.to()``
            convert them, ``state_dict()`` holds them.

    Shape: as the server's loss; ``forward(y_pred, y_true, **inputs)`` takes
    torch's argument order (prediction first) and extra inputs by name.

    A ``RemoteLoss``, and a model holding one, can be deep-copied, pickled and
    ``torch.save``'d: its client travels as its settings, the token included, and
    the copy opens its own channel on its first call.

    Example::

        >>> criterion = RemoteLoss("cross_entropy", client=client)      # doctest: +SKIP
        >>> loss = criterion(model(x), y); loss.backward()                # doctest: +SKIP
    """

    def __init__(
        self,
        loss: LossSpecifier | nn.Module,
        *,
        client: Client | None = None,
        parameters: ParameterSource | None = None,
        regularization: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        allow_non_finite: bool = False,
        strict: bool = False,
        **params: Any,
    ) -> None:
        super().__init__()
        if isinstance(loss, nn.Module):
            module_request(loss)  # an unknown module is a TypeError now, not at the first call
        self.loss = loss
        self.client = client if client is not None else Client()
        self.params = {k: v for k, v in params.items() if not isinstance(v, torch.Tensor)}
        # Buffers, as torch's loss modules hold weight and pos_weight: .double(), .to() and state_dict see them.
        self._constant_names = [k for k, v in params.items() if isinstance(v, torch.Tensor)]
        for name in self._constant_names:
            self.register_buffer(name, params[name].detach())
        # In a tuple so that nn.Module does not adopt the model as a submodule. An iterable of pairs
        # (``model.named_parameters()``, a generator) is read once, here: read at the first call, the second
        # call had no parameters ("regularization needs the parameter tensors it applies to").
        if parameters is not None and not isinstance(parameters, (nn.Module, Mapping)):
            parameters = dict(parameters)
        self._parameter_source: tuple[ParameterSource | None] = (parameters,)
        self.regularization = None if regularization is None else dict(regularization)
        self.timeout = timeout
        self.allow_non_finite = allow_non_finite
        self.strict = strict

    @property
    def constant_inputs(self) -> dict[str, torch.Tensor]:
        """The tensors among the loss's parameters (``weight=...``), as they are now: the module's buffers."""
        return {name: self._buffers[name] for name in self._constant_names}  # type: ignore[misc]

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor | None = None, **inputs: torch.Tensor) -> torch.Tensor:
        """The loss of ``y_pred`` against ``y_true``; differentiable."""
        return remote_loss(
            self.loss, y_pred, y_true, client=self.client, inputs={**self.constant_inputs, **inputs},
            params=self.params, parameters=self._parameter_source[0], regularization=self.regularization,
            timeout=self.timeout, allow_non_finite=self.allow_non_finite, strict=self.strict,
        )

    def extra_repr(self) -> str:
        return f"{self.loss!r}, target={self.client.target!r}" + "".join(
            f", {k}={v!r}" for k, v in self.params.items()
        )
