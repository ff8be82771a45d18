"""DINO: self-distillation with no labels; a student matches an EMA teacher across crops.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", 2021.

    2 global crops          -> teacher (EMA of the student) -> softmax((t - center) / teacher_temp)
    2 global + local crops  -> student                      -> log_softmax(s / student_temp)
    loss = cross-entropy over all (teacher crop i, student crop j) pairs with i != j

Centering (subtract a running mean of the teacher outputs) keeps one dimension from dominating;
sharpening (a low teacher temperature) keeps the output from becoming uniform. Together they
avoid collapse.
"""

import dataclasses
from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.engine import distributed
from coursekit.augment import DINOViews, Views
from coursekit.methods.base import MOMENTUM, TEMPERATURE, Method
from coursekit.methods.ema import make_target
from coursekit.models import DINOHead


def dino_loss(
    student_out: list[Tensor],
    teacher_out: list[Tensor],
    center: Tensor,
    student_temp: float,
    teacher_temp: float,
) -> Tensor:
    """Cross-entropy between the centered, sharpened teacher and the student over crop pairs.

    student_out: list of S tensors [N, K] (the first len(teacher_out) are the global crops, in the
    teacher's order); teacher_out: list of T tensors [N, K]; center: [1, K].
    Averages -sum_k softmax((t_i - center) / teacher_temp)_k * log_softmax(s_j / student_temp)_k
    over the N images and all pairs (i, j) with i != j. No gradient through the teacher or center.
    """
    if len(teacher_out) == 0 or len(student_out) < len(teacher_out):
        raise ValueError(f"need at least one teacher view and as many student views, got {len(teacher_out)} and {len(student_out)}")
    if len(student_out) < 2:
        raise ValueError("need at least two views: pairs of the same view are excluded")
    if student_temp <= 0 or teacher_temp <= 0:
        raise ValueError(f"temperatures must be positive, got student {student_temp}, teacher {teacher_temp}")
    shape = teacher_out[0].shape
    if any(t.shape != shape for t in [*teacher_out, *student_out]) or len(shape) != 2:
        raise ValueError("every student and teacher output must be [N, K] with the same shape")
    if center.shape != (1, shape[1]):
        raise ValueError(f"center must be [1, {shape[1]}], got {tuple(center.shape)}")

    teacher_probs = [F.softmax((t.detach() - center.detach()) / teacher_temp, dim=-1) for t in teacher_out]
    student_log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student_out]
    pair_losses = [
        -(t * s).sum(dim=-1).mean()  # cross-entropy H(teacher_i, student_j), mean over N
        for i, t in enumerate(teacher_probs)
        for j, s in enumerate(student_log_probs)
        if i != j
    ]
    return torch.stack(pair_losses).mean()


@torch.no_grad()
def update_center(center: Tensor, teacher_out: Tensor, momentum: float) -> Tensor:
    """New center [1, K] = momentum * center + (1 - momentum) * mean of teacher_out [M, K] over rows."""
    if teacher_out.ndim != 2 or center.shape != (1, teacher_out.shape[1]):
        raise ValueError(f"center must be [1, K] and teacher_out [M, K], got {tuple(center.shape)} and {tuple(teacher_out.shape)}")
    batch_center = teacher_out.mean(dim=0, keepdim=True)  # [1, K]
    return momentum * center + (1 - momentum) * batch_center


def teacher_temperature(progress: float, warmup_temp: float, final_temp: float, warmup_fraction: float) -> float:
    """Teacher temperature at ``progress`` in [0, 1]: linear from warmup_temp to final_temp over the
    first ``warmup_fraction`` of training, then constant (DINO's warmup keeps early training stable)."""
    if warmup_fraction <= 0 or progress >= warmup_fraction:
        return final_temp
    return warmup_temp + (final_temp - warmup_temp) * progress / warmup_fraction


def multicrop_forward(network: nn.Module, views: list[Tensor]) -> list[Tensor]:
    """network applied to every view, one batch per run of views of the same size (as DINO does).

    views: list of [N, C, S_i, S_i] -> list of [N, K], in the same order.
    """
    outputs = []
    for _, same_size in groupby(views, key=lambda view: view.shape[-2:]):
        same_size = list(same_size)
        outputs += network(torch.cat(same_size)).chunk(len(same_size))
    return outputs


class DINO(Method):
    """DINO: student (backbone + DINOHead) and its EMA teacher, multi-crop, centering, sharpening.

    Works with ResNet and ViT backbones (a ViT's position embeddings are interpolated for the
    smaller local crops). The teacher sees the 2 global crops, the student all crops. Buffers:
    ``center`` [1, out_dim] (running mean of the teacher outputs, averaged over processes under
    DDP) and ``progress`` (the last progress seen by on_after_step, for the temperature warmup,
    kept in the state_dict so that a resumed run continues identically; a Python copy,
    ``_progress``, is what a step reads, so that no step waits for the device to read a number).

    Schedules: teacher temperature linear from warmup_teacher_temp to teacher_temp over the first
    warmup_fraction of training; teacher momentum cosine from ``momentum`` to 1. During the first
    ``freeze_last_layer`` epochs the last layer of the student head (the prototypes) gets no
    update (its gradients are dropped before the optimizer step), as in the paper.
    ``head_batch_norm``: BatchNorm in the head's MLP (the paper's ResNet-50 runs use it; it helps
    a small ResNet on a short budget keep its outputs apart).
    ``views``: the recipe (default ``DINOViews(image_size, local_size, n_local)``; the first two
    views are the teacher's global crops).
    """

    command_line = (dataclasses.replace(TEMPERATURE, argument="student_temp",
                                        help="the student's softmax temperature"), MOMENTUM)

    # DINO evaluates and transfers the teacher: the better encoder during training (Caron et al.
    # 2021, section 5.3: the EMA teacher acts like Polyak averaging, an ensemble of past students).
    pretrained_backbone_name = "teacher_backbone"

    def __init__(self, backbone: nn.Module, image_size: int = 32, local_size: int | None = None,
                 n_local: int = 6, out_dim: int = 1024, student_temp: float = 0.1,
                 teacher_temp: float = 0.07, warmup_teacher_temp: float = 0.04,
                 warmup_fraction: float = 0.3, center_momentum: float = 0.9, momentum: float = 0.996,
                 hidden_dim: int | None = None, bottleneck_dim: int | None = None,
                 freeze_last_layer: float = 1.0, head_batch_norm: bool = False, views: Views | None = None):
        super().__init__()
        feature_dim = backbone.feature_dim
        self.backbone = backbone
        self.head = DINOHead(feature_dim, out_dim, hidden_dim or 4 * feature_dim, bottleneck_dim or min(256, feature_dim),
                             batch_norm=head_batch_norm)
        self.teacher_backbone = make_target(backbone)
        self.teacher_head = make_target(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("progress", torch.zeros(()))
        self._progress = 0.0
        self.register_load_state_dict_post_hook(_read_progress)
        self.views = views if views is not None else DINOViews(image_size, local_size, n_local)
        self.image_size, self.local_size, self.n_local, self.out_dim = image_size, local_size, n_local, out_dim
        self.teacher_outputs = out_dim  # its entropy reaches ln(out_dim) when the teacher's output goes uniform
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.warmup_teacher_temp, self.warmup_fraction = warmup_teacher_temp, warmup_fraction
        self.center_momentum, self.momentum = center_momentum, momentum
        self.hidden_dim, self.bottleneck_dim, self.freeze_last_layer = hidden_dim, bottleneck_dim, freeze_last_layer
        self.head_batch_norm = head_batch_norm

    def student_embedding(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] -> the student's unit-length bottleneck [N, bottleneck_dim] (before the prototypes)."""
        return self.head.bottleneck(self.backbone(x))

    @torch.no_grad()
    def teacher(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] -> teacher logits [N, out_dim], no gradient."""
        return self.teacher_head(self.teacher_backbone(x))

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 [N, C, H, W] -> DINO loss over all (global teacher crop, other student crop)
        pairs; then the center moves towards this batch's mean teacher output."""
        views = self.views(images, generator)  # 2 global [N, C, S, S], then locals [N, C, s, s]
        teacher_out = multicrop_forward(self.teacher, views[:2])  # 2 x [N, out_dim]
        student_embeddings = multicrop_forward(self.student_embedding, views)  # (2 + n_local) x [N, bottleneck]
        student_out = [self.head.last_layer(z) for z in student_embeddings]  # (2 + n_local) x [N, out_dim]
        temp = teacher_temperature(self._progress, self.warmup_teacher_temp, self.teacher_temp, self.warmup_fraction)
        loss = dino_loss(student_out, teacher_out, self.center, self.student_temp, temp)
        self._record_collapse_statistics(loss, teacher_out, student_embeddings[0], temp)
        if self.training:
            self._update_center(torch.cat(teacher_out))
        return loss

    @torch.no_grad()
    def _update_center(self, teacher_out: Tensor) -> None:
        """teacher_out [M, out_dim]: the batch mean, averaged over processes, enters the center."""
        batch_center = distributed.all_reduce_mean(teacher_out.mean(dim=0, keepdim=True))  # [1, out_dim]
        self.center.copy_(update_center(self.center, batch_center, self.center_momentum))

    @torch.no_grad()
    def _record_collapse_statistics(self, loss: Tensor, teacher_out: list[Tensor], student_embedding: Tensor,
                                    temp: float) -> None:
        """DINO's two collapses (``coursekit.engine.collapse``): the teacher's entropy per image reaches
        ln(out_dim) when its output is uniform (the loss less that entropy, the teacher-student KL, then
        goes to 0 too); ``prototypes_used`` (e^entropy of the batch's mean teacher output: how many
        prototypes share the images) falls to 1 when one prototype takes every image. The spread is
        read on the unit bottleneck [N, bottleneck_dim] the prototypes score, not on the logits: K
        cosine similarities to K prototypes are correlated across images (most prototypes sit unused
        or close together) and stay near each other even while the images spread over the sphere."""
        probs = F.softmax((torch.cat(teacher_out).float() - self.center) / temp, dim=-1)  # [2N, K]
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1).mean()
        mean_probs = probs.mean(dim=0)  # [K]: the share of the batch each prototype takes
        prototypes_used = torch.exp(-(mean_probs * torch.log(mean_probs.clamp_min(1e-12))).sum())
        self.record(student_embedding, teacher_entropy=entropy, teacher_student_kl=loss.detach().float() - entropy,
                    prototypes_used=prototypes_used)

    def on_before_optimizer_step(self, epoch: float) -> None:
        """Keep the prototypes (the head's last layer) fixed during the first ``freeze_last_layer`` epochs."""
        if epoch < self.freeze_last_layer:
            self.head.cancel_last_layer_gradients()

    def on_after_step(self, progress: float) -> None:
        """Keep ``progress`` (the teacher temperature's warmup reads it), then move the teacher."""
        self._progress = progress
        self.progress.fill_(progress)
        super().on_after_step(progress)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The teacher (backbone and head) trails the student, momentum rising from ``momentum`` to 1."""
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]


def _read_progress(module: DINO, incompatible_keys) -> None:
    """After load_state_dict: the Python copy of the progress buffer (one read, at load time)."""
    module._progress = float(module.progress)
