"""A plugin whose second loss clashes with a built-in alias: it must be refused whole."""

import torch

from lossd.server.losses import Input, register_loss


def _example(dt):
    return {"input": torch.ones(2, dtype=dt)}


@register_loss("harmless_loss", inputs=(Input("input", "prediction", aliases=("y_pred",)),),
               description="Would be fine alone.", example=_example)
def harmless_loss(input):
    return input.sum()


@register_loss("my_mse", aliases=("mse",), inputs=(Input("input", "prediction", aliases=("y_pred",)),),
               description="Clashes with the built-in alias 'mse'.", example=_example)
def my_mse(input):
    return input.pow(2).mean()
