"""The classic pretext tasks of lesson 02's tour: labels made from the images themselves."""
import pytest
import torch

from coursekit.lessons.pretext import inpainting, jigsaw, rotations


def test_rotations_turn_each_image_four_times_with_the_turn_as_label():
    images = torch.arange(2 * 1 * 2 * 2).reshape(2, 1, 2, 2)
    turned, labels = rotations(images)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(turned[:2], images)
    assert turned[2, 0].tolist() == [[1, 3], [0, 2]]  # image 0 turned 90 degrees counter-clockwise
    assert torch.equal(turned[4 + 1], images[1].flip(1).flip(2))  # 180 degrees
    with pytest.raises(ValueError, match="square"):
        rotations(torch.zeros(1, 1, 2, 3))


def test_jigsaw_puts_tile_p_at_position_j_and_can_be_undone():
    images = torch.arange(16).reshape(1, 1, 4, 4)
    shuffled, permutations = jigsaw(images, 2, torch.Generator().manual_seed(0))
    tiles = [images[0, 0, r:r + 2, c:c + 2] for r in (0, 2) for c in (0, 2)]
    shown = [shuffled[0, 0, r:r + 2, c:c + 2] for r in (0, 2) for c in (0, 2)]
    for position, tile in enumerate(permutations[0].tolist()):
        assert torch.equal(shown[position], tiles[tile])
    assert sorted(permutations[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="divide"):
        jigsaw(images, 3)


def test_inpainting_hides_the_central_square():
    images = torch.full((1, 3, 8, 8), 7, dtype=torch.uint8)
    masked, mask = inpainting(images, hole=0.5, fill=0)
    assert mask.sum() == 16 and mask[0, 0, 2:6, 2:6].all()
    assert (masked[:, :, 2:6, 2:6] == 0).all() and (masked[:, :, 0] == 7).all()
