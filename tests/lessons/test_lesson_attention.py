"""Lesson 05's measure of whether the CLS attention covers the object."""
import pytest
import torch

from coursekit.lessons.attention import attention_iou, attention_mask, cls_attention_maps


def _attention_to(weights: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """[N, L] patch weights -> [N, heads, 1 + L, 1 + L] attention whose CLS row puts them on the patches."""
    n, length = weights.shape
    attention = torch.zeros(n, heads, 1 + length, 1 + length)
    attention[:, :, 0, 1:] = weights[:, None, :]
    return attention


def test_mask_keeps_the_most_attended_patches_up_to_the_mass():
    maps = torch.tensor([[[0.5, 0.3], [0.1, 0.1]]])
    assert attention_mask(maps, 0.6).tolist() == [[[True, True], [False, False]]]
    assert attention_mask(maps, 0.5).tolist() == [[[True, False], [False, False]]]
    assert attention_mask(maps, 1.0).all()
    with pytest.raises(ValueError, match="mass"):
        attention_mask(maps, 0.0)


def test_cls_maps_average_heads_and_sum_to_one():
    attention = _attention_to(torch.tensor([[2.0, 1.0, 1.0, 0.0]]))
    attention[:, 1, 0, 1:] = torch.tensor([0.0, 1.0, 1.0, 2.0])  # head 1 attends elsewhere
    maps = cls_attention_maps(attention, (2, 2))
    assert torch.allclose(maps, torch.full((1, 2, 2), 0.25))


def test_iou_is_one_when_attention_sits_on_the_object_and_the_area_share_when_uniform():
    masks = torch.zeros(1, 8, 8, dtype=torch.uint8)
    masks[0, :4, :4] = 3  # the object fills the top-left patch of a 2 x 2 grid of 4-pixel patches
    on_object = _attention_to(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert attention_iou(on_object, (2, 2), masks).tolist() == [1.0]
    uniform = _attention_to(torch.full((1, 4), 0.25))
    assert attention_iou(uniform, (2, 2), masks, mass=1.0).tolist() == [0.25]
    with pytest.raises(ValueError, match="object_masks"):
        attention_iou(uniform, (2, 2), masks[0])
