"""Protocols made for few labels: kNN's neighbours capped by the smallest class, draws of n labeled
images per class, the raw-pixel baseline."""
import pytest
import torch

from coursekit.evaluate import knn_accuracy, knn_neighbours, pixel_features
from coursekit.data.subsets import per_class_subset
from coursekit.evaluate.few_labels import few_label_accuracies


def test_knn_never_uses_more_neighbours_than_the_smallest_class_has():
    labels = torch.tensor([0] * 3 + [1] * 10 + [2] * 7)
    assert knn_neighbours(labels, 200) == 3
    assert knn_neighbours(labels, 2) == 2
    assert knn_neighbours(torch.tensor([4] * 500 + [1] * 300), 200) == 200  # absent classes do not count


def test_the_cap_changes_the_vote_where_a_large_class_would_outvote_a_small_one():
    # test point [1, 0]; class 0: two bank images on it (similarity 1); class 1: fifty at similarity 0.8.
    # All 52 neighbours: class 0 gets 2 * exp(0) = 2, class 1 gets 50 * exp(-0.2 / 0.1) = 6.8: class 1 wins.
    # Capped at 2 neighbours (class 0's count): class 0 wins.
    bank = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(2, 1), torch.tensor([[0.8, 0.6]]).repeat(50, 1)])
    bank_labels = torch.tensor([0] * 2 + [1] * 50)
    test, test_labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    assert knn_accuracy(bank, bank_labels, test, test_labels, num_classes=2, k=200, temperature=0.1) == 1.0


def test_per_class_draws_are_exact_seeded_and_differ_between_seeds():
    labels = torch.arange(10).repeat_interleave(30)
    labels = torch.cat([labels, torch.tensor([10] * 4)])  # a class with fewer images than asked: all of them
    first = per_class_subset(labels, 7, seed=0)
    assert torch.equal(first, per_class_subset(labels, 7, seed=0))
    assert not torch.equal(first, per_class_subset(labels, 7, seed=1))
    counts = torch.bincount(labels[first], minlength=11)
    assert counts[:10].tolist() == [7] * 10 and counts[10] == 4
    assert len(set(first.tolist())) == len(first)
    with pytest.raises(ValueError, match="per_class must be at least 1"):
        per_class_subset(labels, 0, seed=0)


def test_few_label_protocols_on_features_that_separate_the_classes():
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(4) * 10
    train_labels = torch.arange(4).repeat(50)
    test_labels = torch.arange(4).repeat(25)
    train = centers[train_labels] + torch.randn(200, 4, generator=generator)
    test = centers[test_labels] + torch.randn(100, 4, generator=generator)
    for protocol in ("knn", "linear"):
        scores = few_label_accuracies(train, train_labels, test, test_labels, per_class=5, protocol=protocol, subsets=3)
        assert scores == [1.0, 1.0, 1.0]
    # random labels: nothing to learn, about chance (1/4)
    shuffled = train_labels[torch.randperm(200, generator=generator)]
    chance = few_label_accuracies(train, shuffled, test, test_labels, per_class=5, protocol="knn", subsets=3)
    assert max(chance) < 0.6


def test_pixel_features_are_the_normalized_pixels():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[1] = 255
    features = pixel_features(images)
    assert features.shape == (2, 48)
    # ImageNet normalization of the red channel: (0 - 0.485) / 0.229 and (1 - 0.485) / 0.229
    assert features[0, 0].item() == pytest.approx(-0.485 / 0.229, abs=1e-5)
    assert features[1, 0].item() == pytest.approx(0.515 / 0.229, abs=1e-5)
