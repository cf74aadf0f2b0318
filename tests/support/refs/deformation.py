"""bending_energy_loss and diffusion_loss: finite differences written element by element with torch.roll-free
index arithmetic (np.gradient-style central differences on the interior)."""

from __future__ import annotations

import itertools

import torch

from support.parity import Case, Reference, randn


def _interior(shape):
    return list(itertools.product(*[range(1, s - 1) for s in shape]))


def _at(u, n, c, point, shifts):
    return u[(n, c, *[p + shifts.get(k, 0) for k, p in enumerate(point)])]


def _terms(t, p, order):
    u = t["input"]
    n_, c_, *shape = u.shape
    points = _interior(shape)
    rows = []
    for n in range(n_):
        for c in range(c_):
            values = []
            for q in points:
                total = u.new_zeros(())
                for i in range(len(shape)):
                    wi = (shape[i] / shape[c]) if p.get("normalize") else 1.0
                    if order == 1:
                        g = (_at(u, n, c, q, {i: 1}) - _at(u, n, c, q, {i: -1})) / 2 * wi
                        total = total + g * g
                        continue
                    g = (_at(u, n, c, q, {i: 1}) - 2 * _at(u, n, c, q, {}) + _at(u, n, c, q, {i: -1})) * wi * shape[i]
                    total = total + g * g if p.get("normalize") else total + (g / shape[i]) ** 2
                    for j in range(i + 1, len(shape)):
                        wij = (shape[i] * shape[j] / shape[c]) if p.get("normalize") else 1.0
                        m = (_at(u, n, c, q, {i: 1, j: 1}) - _at(u, n, c, q, {i: 1, j: -1})
                             - _at(u, n, c, q, {i: -1, j: 1}) + _at(u, n, c, q, {i: -1, j: -1})) / 4 * wij
                        total = total + 2 * m * m
                values.append(total)
            rows.append(torch.stack(values).reshape([s - 2 for s in shape]))
    loss = torch.stack(rows).reshape(n_, c_, *[s - 2 for s in shape])
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def bending(t, p):
    return _terms(t, p, 2)


def diffusion(t, p):
    return _terms(t, p, 1)


REFERENCES = {
    "bending_energy_loss": Reference(bending, None, exact=False),
    "diffusion_loss": Reference(diffusion, None, exact=False),
}

_CASES = [
    Case("1d", lambda dt: {"input": randn(2, 1, 6, dtype=dt, seed=1)}),
    Case("2d-normalized", lambda dt: {"input": randn(1, 2, 4, 5, dtype=dt, seed=2)}, params={"normalize": True}),
    Case("3d", lambda dt: {"input": randn(1, 3, 3, 4, 3, dtype=dt, seed=3)}),
]

CASES = {"bending_energy_loss": list(_CASES), "diffusion_loss": list(_CASES)}
