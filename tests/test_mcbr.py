"""MCBR, Eq. 9."""
import math

import pytest
import torch

from fixnorm_mm.mcbr import mcbr


def test_hand_computed_example():
    # 3 classes in 2-D: W_0=(1,0), W_1=(0,1), W_2=(-1,0)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # x=(1,0) with label 0: W_1-W_0=(-1,1) -> cos=-1/sqrt2; W_2-W_0=(-2,0) -> cos=-1
    # x=(0,2) with label 1: W_0-W_1=(1,-1) -> cos=-1/sqrt2; W_2-W_1=(-1,-1) -> cos=-1/sqrt2
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1])
    expected = (-1 / math.sqrt(2) - 1 - 1 / math.sqrt(2) - 1 / math.sqrt(2)) / (2 * 2)
    assert float(mcbr(x, w, y)) == pytest.approx(expected, abs=1e-6)


def test_matches_direct_definition_and_ignores_index():
    w = torch.randn(5, 7)
    x = torch.randn(11, 7)
    y = torch.randint(0, 5, (11,))
    y[3] = 255
    keep = y != 255
    total = 0.0
    for xi, yi in zip(x[keep], y[keep]):
        for j in range(5):
            if j != yi:
                total += torch.cosine_similarity(xi, w[j] - w[yi], dim=0).item()
    expected = total / (int(keep.sum()) * 4)
    assert float(mcbr(x, w, y, ignore_index=255)) == pytest.approx(expected, abs=1e-5)


def test_1x1_conv_weight_and_shape_error():
    w = torch.randn(3, 4, 1, 1)
    x = torch.randn(6, 4)
    y = torch.randint(0, 3, (6,))
    assert float(mcbr(x, w, y)) == pytest.approx(float(mcbr(x, w[:, :, 0, 0], y)))
    with pytest.raises(ValueError, match='features'):
        mcbr(torch.randn(6, 5), w, y)
