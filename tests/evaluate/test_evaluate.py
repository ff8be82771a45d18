"""Evaluation protocols: weighted kNN against a loop implementation, features, linear probe,
fine-tuning and the label-fraction experiment on tiny models."""
import json
import math

import pytest
import torch
from torch import nn

from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD
from coursekit.data.images import ImageSet
from coursekit.evaluate import (extract_features, fine_tune, fit_linear_probe, knn_accuracy, knn_predict,
                                label_fraction_experiment, linear_probe, table_from_json, table_to_json,
                                train_from_scratch)


def knn_reference(train_features, train_labels, test_features, num_classes, k, temperature):
    """The DESIGN.md meaning, one test sample at a time, in plain Python."""
    predictions = []
    for test in test_features:
        similarities = [float(torch.dot(test / test.norm(), train / train.norm())) for train in train_features]
        nearest = sorted(range(len(similarities)), key=lambda j: -similarities[j])[:k]
        votes = [0.0] * num_classes
        for j in nearest:
            votes[int(train_labels[j])] += math.exp(similarities[j] / temperature)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(predictions)


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.07)])
def test_knn_predict_matches_the_loop_reference(k, temperature):
    generator = torch.Generator().manual_seed(k)
    train = torch.randn(40, 6, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    test = torch.randn(25, 6, generator=generator)
    predictions = knn_predict(train, labels, test, 4, k=k, temperature=temperature, chunk_size=7)
    assert predictions.dtype == torch.long and predictions.shape == (25,)
    assert torch.equal(predictions, knn_reference(train, labels, test, 4, k, temperature))


def test_knn_weights_votes_by_similarity_and_ignores_scale():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[5.0, 0.2]])  # next to the single class-0 sample
    assert knn_predict(train, labels, test, 2, k=3, temperature=0.1).tolist() == [0]  # similarity beats the count
    assert knn_predict(train, labels, test, 2, k=3, temperature=100.0).tolist() == [1]  # flat weights: the count wins
    assert knn_predict(train * 7, labels, test, 2, k=3, temperature=0.1).tolist() == [0]
    assert knn_predict(train, labels, test, 2, k=3, temperature=0.001).tolist() == [0]  # no overflow


def test_knn_errors_and_accuracy():
    train, labels = torch.eye(3), torch.arange(3)
    assert knn_accuracy(train, labels, train, labels, k=1) == 1.0
    with pytest.raises(ValueError, match="train_labels must be a long tensor"):
        knn_predict(train, labels.float(), train, 3)
    with pytest.raises(ValueError, match="same width"):
        knn_predict(train, labels, torch.ones(2, 4), 3)


class TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 6

    def forward(self, x):
        return self.net(x)


def color_dataset(n, seed):
    """Images whose class (0, 1, 2) is the dominant color channel: easy to learn."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 100, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
    images[torch.arange(n), labels] += 150
    return ImageSet(images=images, labels=labels, classes=["red", "green", "blue"])


def test_extract_features_in_eval_mode_without_gradient():
    torch.manual_seed(0)
    backbone = TinyBackbone().train()
    images = color_dataset(10, 0).images
    features = extract_features(backbone, images, batch_size=4)
    assert features.shape == (10, 6) and features.dtype == torch.float32 and not features.requires_grad
    assert backbone.training  # mode restored
    assert torch.allclose(features[:3], extract_features(backbone, images[:3], batch_size=2), atol=1e-6)  # eval BN
    with pytest.raises(TypeError, match="dtype"):
        extract_features(backbone, images.long())


def test_linear_probe_learns_separable_features_deterministically():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    features = torch.randn(90, 5, generator=generator) + 4 * nn.functional.one_hot(labels, 5).float()
    result = linear_probe(features[:60], labels[:60], features[60:], labels[60:], epochs=10, batch_size=16)
    again = linear_probe(features[:60], labels[:60], features[60:], labels[60:], epochs=10, batch_size=16)
    # every pair ties on the held-out part, so the smallest lr wins: 30 short steps, 26-27 of 30 right
    assert result.accuracy >= 0.8 and result == again
    assert len(result.search) == 9 and (result.lr, result.weight_decay) in result.search


def test_linear_probe_leaves_the_global_generator_alone():
    """So that a method built after scoring its random init (benchmarks/knn_methods.py) starts from the
    weights it gets without that scoring (coursekit.recipes.load_or_pretrain, the lessons)."""
    labels = torch.arange(30) % 3
    features = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    linear_probe(features[:20], labels[:20], features[20:], labels[20:], epochs=2, batch_size=8)
    after_probe = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_probe, torch.rand(3))


def test_fine_tune_leaves_the_pretrained_backbone_alone_and_beats_chance():
    torch.manual_seed(0)
    train, test = color_dataset(48, 0), color_dataset(30, 1)
    backbone = TinyBackbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = fine_tune(backbone, train.images, train.labels, test.images, test.labels, epochs=15, lr=0.05,
                       batch_size=16, progress=False)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert len(result.losses) == 45 and result.losses[-1] < result.losses[0]
    assert result.accuracy > 0.5
    scratch = train_from_scratch(TinyBackbone, train.images, train.labels, test.images, test.labels, epochs=2,
                                 lr=0.05, batch_size=16, progress=False)
    assert 0.0 <= scratch.accuracy <= 1.0 and len(scratch.losses) == 6
    torch.rand(7)  # whatever ran before, the baseline starts from the same weights
    again = train_from_scratch(TinyBackbone, train.images, train.labels, test.images, test.labels, epochs=2,
                               lr=0.05, batch_size=16, progress=False)
    assert again.losses == scratch.losses and again.accuracy == scratch.accuracy


def test_probe_as_head_is_the_probe_on_raw_features():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = 3 + 2 * torch.randn(60, 5, generator=generator) + 4 * nn.functional.one_hot(labels, 5).float()
    result = fit_linear_probe(features, labels, 3, epochs=5, batch_size=16)
    head = result.as_head()
    standardized = (features - features.mean(dim=0)) / features.std(dim=0, correction=0)
    with torch.no_grad():
        assert torch.allclose(head(features), result.classifier(standardized), atol=1e-5)
    assert torch.equal(result.predict(features), result.classifier(standardized).argmax(dim=1))


class NoNormBackbone(nn.Module):
    """No BatchNorm: with a zero learning rate, training changes nothing at all."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 6

    def forward(self, x):
        return self.net(x)


def test_fine_tune_starts_from_the_probe_and_takes_min_steps():
    torch.manual_seed(0)
    train, test = color_dataset(48, 0), color_dataset(30, 1)
    backbone = NoNormBackbone()
    # lr 0: the model stays where it starts, so its predictions are the probe's on the frozen features
    frozen = fine_tune(backbone, train.images, train.labels, test.images, test.labels, epochs=1, lr=0.0,
                       batch_size=16, progress=False)
    probe = linear_probe(extract_features(backbone, train.images), train.labels,
                         extract_features(backbone, test.images), test.labels)
    assert frozen.accuracy == probe.accuracy and len(frozen.losses) == 3
    # a head from zero predicts class 0 everywhere before training: a third of these test images
    zero = fine_tune(backbone, train.images, train.labels, test.images, test.labels, epochs=1, lr=0.0,
                     batch_size=16, head_init="zeros", progress=False)
    assert zero.accuracy == pytest.approx(1 / 3)
    longer = fine_tune(backbone, train.images, train.labels, test.images, test.labels, epochs=1, min_steps=10,
                       batch_size=16, progress=False)
    assert len(longer.losses) == 12  # whole epochs of 3 steps: the first count of steps >= 10
    with pytest.raises(ValueError, match="head_init"):
        fine_tune(backbone, train.images, train.labels, test.images, test.labels, head_init="random")


def test_label_fraction_experiment_table():
    torch.manual_seed(0)
    train, test = color_dataset(60, 0), color_dataset(30, 1)
    backbone = TinyBackbone()
    measured = {"tiny": {"fine_tune": {1.0: 0.123}}}  # reused as it is, not trained again
    table = label_fraction_experiment({"tiny": backbone}, train, test, fractions=(0.1, 1.0), fine_tune_rows=["tiny"],
                                      scratch_factory=TinyBackbone, scratch_epochs=lambda labels: 1,
                                      measured=measured, progress=False)
    assert set(table) == {"raw pixels", "tiny", "supervised"}
    assert set(table["tiny"]) == {"knn", "linear", "fine_tune"} and set(table["raw pixels"]) == {"knn", "linear"}
    assert all(set(by_fraction) == {0.1, 1.0} for row in table.values() for by_fraction in row.values())
    assert table["tiny"]["fine_tune"][1.0] == 0.123
    # the raw-pixel kNN with all labels, computed here without the experiment
    pixels = lambda images: ((images.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
                             / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)).flatten(1)
    expected = knn_accuracy(pixels(train.images), train.labels, pixels(test.images), test.labels, 3)
    assert table["raw pixels"]["knn"][1.0] == pytest.approx(expected)
    assert table_from_json(json.loads(json.dumps(table_to_json(table)))) == table
    with pytest.raises(ValueError, match="scratch_epochs"):
        label_fraction_experiment({"tiny": backbone}, train, test, scratch_factory=TinyBackbone, progress=False)
    with pytest.raises(ValueError, match="not among the backbones"):
        label_fraction_experiment({"tiny": backbone}, train, test, fine_tune_rows=["other"], progress=False)