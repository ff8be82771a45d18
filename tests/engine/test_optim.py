"""engine.optim.create_optimizer: the one optimizer factory (groups, learning rates, weight-decay rules)."""

import pytest
import torch
from torch import nn

from coursekit.engine.optim import create_optimizer


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def decay_of(optimizer):
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_one_dimensional_parameters_can_be_exempt_from_weight_decay():
    model = small_model()
    optimizer = create_optimizer([{"params": model.parameters()}], "adamw", lr=0.1, weight_decay=0.05, decay_1d=False)
    decay = decay_of(optimizer)
    assert len(decay) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.05 if name.endswith("weight") and p.ndim == 2 else 0.0), name
    every = create_optimizer([{"params": model.parameters()}], "adamw", lr=0.1, weight_decay=0.05)
    assert set(decay_of(every).values()) == {0.05}


def test_groups_keep_their_rate_and_their_other_keys():
    model = small_model()
    optimizer = create_optimizer([{"name": "head", "params": model[3].parameters(), "lr": 0.5},
                                  {"name": "backbone", "params": model[0].parameters()}], "adamw", lr=0.1)
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("head", 0.5), ("backbone", 0.1)]


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_steps_equal_the_torch_optimizer_built_by_hand(name, cls):
    """Same parameters after three steps as torch's optimizer with the same groups written out."""
    mine, theirs = small_model(), small_model()
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    by_hand = cls([{"params": [p for p in theirs.parameters() if p.ndim > 1], "weight_decay": 0.01},
                   {"params": [p for p in theirs.parameters() if p.ndim <= 1], "weight_decay": 0.0}], lr=0.05, **kwargs)
    factory = create_optimizer([{"params": mine.parameters()}], name, lr=0.05, weight_decay=0.01, decay_1d=False)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for model, optimizer in ((mine, factory), (theirs, by_hand)):
        for _ in range(3):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(mine.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="one of"):
        create_optimizer([{"params": small_model().parameters()}], "lion")
