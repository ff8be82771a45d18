"""The graders themselves: for every exercise the reference gets full marks, another correct
implementation written differently gets full marks, and typical mistakes get less than full marks
with feedback that names the mistake."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from coursekit.grading import EXERCISES, grade

# ------------------------------------------------------------------------------ bottleneck


def subset_by_random_scores(labels, fraction, seed):
    scores = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = []
    for cls in labels.unique():
        members = (labels == cls).nonzero().flatten()
        keep = max(1, math.ceil(fraction * len(members)))
        chosen.append(members[scores[members].argsort()[:keep]])
    return torch.cat(chosen)


def subset_with_replacement(labels, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    chosen = [(labels == c).nonzero().flatten() for c in labels.unique()]
    return torch.cat([m[torch.randint(len(m), (max(1, round(fraction * len(m))),), generator=g)] for m in chosen])


def subset_first_of_each_class(labels, fraction, seed):
    chosen = [(labels == c).nonzero().flatten() for c in labels.unique()]
    return torch.cat([m[:max(1, round(fraction * len(m)))] for m in chosen])


def subset_global_rng(labels, fraction, seed):
    chosen = [(labels == c).nonzero().flatten() for c in labels.unique()]
    return torch.cat([m[torch.randperm(len(m))[:max(1, round(fraction * len(m)))]] for m in chosen])


def subset_not_stratified(labels, fraction, seed):
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return order[:max(1, round(fraction * len(labels)))]


def subset_rounded_down(labels, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    chosen = [(labels == c).nonzero().flatten() for c in labels.unique()]
    return torch.cat([m[torch.randperm(len(m), generator=g)[:int(fraction * len(m))]] for m in chosen])


def subset_as_mask(labels, fraction, seed):
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[subset_by_random_scores(labels, fraction, seed)] = True
    return mask

# ------------------------------------------------------------------------------ simclr


def nt_xent_loops(z1, z2, temperature):
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n, losses = len(z1), []
    for i, anchor in enumerate(z):
        positive = (i + n) % (2 * n)
        others = torch.stack([anchor @ z[j] / temperature for j in range(2 * n) if j != i])
        positive_logit = anchor @ z[positive] / temperature
        losses.append(torch.logsumexp(others, 0) - positive_logit)
    return torch.stack(losses).mean()


def _nt_xent_variant(z1, z2, t, normalize=True, mask=float("-inf"), detach_z2=False, reduce="mean", anchors=None):
    z2 = z2.detach() if detach_z2 else z2
    z = torch.cat([z1, z2])
    z = F.normalize(z, dim=1) if normalize else z
    logits = z @ z.T / t
    if mask is not None:
        logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool), mask)
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    rows = slice(0, anchors) if anchors else slice(None)
    return F.cross_entropy(logits[rows], targets[rows], reduction=reduce)

# ------------------------------------------------------------------------------ moco


@torch.no_grad()
def momentum_update_copy(online, target, m):
    for p_online, p_target in zip(online.parameters(), target.parameters()):
        p_target.copy_(m * p_target + (1 - m) * p_online)


@torch.no_grad()
def momentum_swapped(online, target, m):
    for o, t in zip(online.parameters(), target.parameters()):
        t.mul_(1 - m).add_(o, alpha=m)


@torch.no_grad()
def momentum_copies_online(online, target, m):
    for o, t in zip(online.parameters(), target.parameters()):
        t.copy_(o)


@torch.no_grad()
def momentum_rebinds(online, target, m):
    for o, t in zip(online.parameters(), target.parameters()):
        t = m * t + (1 - m) * o  # noqa: F841 - the mistake: rebinding the loop variable


@torch.no_grad()
def momentum_into_online(online, target, m):
    for o, t in zip(online.parameters(), target.parameters()):
        o.mul_(m).add_(t, alpha=1 - m)
        t.mul_(m).add_(o, alpha=1 - m)


@torch.no_grad()
def momentum_with_buffers(online, target, m):
    online_state = online.state_dict()
    for name, t in target.state_dict().items():
        t.copy_(m * t + (1 - m) * online_state[name])


def momentum_without_no_grad(online, target, m):
    for o, t in zip(online.parameters(), target.parameters()):
        t.mul_(m).add_(o.detach(), alpha=1 - m)


def momentum_returns_new(online, target, m):
    new = copy.deepcopy(target)
    momentum_update_copy(online, new, m)
    return new


def infonce_loops(q, k, queue, temperature):
    losses = []
    for qi, ki in zip(q, k.detach()):
        logits = torch.cat([(qi @ ki).view(1), queue.detach() @ qi]) / temperature
        losses.append(-torch.log_softmax(logits, 0)[0])
    return sum(losses) / len(losses)


def _infonce_variant(q, k, queue, t, detach_k=True, detach_queue=True, reduce="mean", positive_last=False):
    k = k.detach() if detach_k else k
    queue = queue.detach() if detach_queue else queue
    parts = [(q * k).sum(1, keepdim=True), q @ queue.T]
    logits = torch.cat(parts[::-1] if positive_last else parts, 1) / t
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long), reduction=reduce)


def infonce_in_batch(q, k, queue, t):
    logits = torch.cat([q @ k.detach().T, q @ queue.detach().T], 1) / t
    return F.cross_entropy(logits, torch.arange(len(q)))

# ------------------------------------------------------------------------------ byol


def regression_cosine(p, z):
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def _regression_variant(p, z, detach=True, normalize=True):
    z = z.detach() if detach else z
    if normalize:
        p, z = F.normalize(p, dim=1), F.normalize(z, dim=1)
    return 2 - 2 * (p * z).sum(1)

# ------------------------------------------------------------------------------ dino


def dino_loss_loops(student_out, teacher_out, center, student_temp, teacher_temp):
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher_out):
        target = torch.softmax((t.detach() - center.detach()) / teacher_temp, dim=1)
        for j, s in enumerate(student_out):
            if i == j:
                continue
            total = total + torch.sum(-target * torch.log_softmax(s / student_temp, dim=1), dim=1).mean()
            pairs += 1
    return total / pairs


def _dino_variant(student_out, teacher_out, center, st, tt, same_view=False, center_sign=-1.0,
                  detach_teacher=True, detach_center=True, reduce=torch.mean):
    losses = []
    for i, t in enumerate(teacher_out):
        t = t.detach() if detach_teacher else t
        c = center.detach() if detach_center else center
        target = torch.softmax((t + center_sign * c) / tt, dim=1)
        for j, s in enumerate(student_out):
            if same_view or i != j:
                losses.append(-(target * torch.log_softmax(s / st, dim=1)).sum(1).mean())
    return reduce(torch.stack(losses))


def update_center_sum_divided(center, teacher_out, momentum):
    return center * momentum + (1 - momentum) * teacher_out.sum(0, keepdim=True) / len(teacher_out)

# ------------------------------------------------------------------------------ mae


def patchify_loops(imgs, p):
    n, c, h, w = imgs.shape
    patches = [imgs[:, :, i:i + p, j:j + p].permute(0, 2, 3, 1).reshape(n, -1)
               for i in range(0, h, p) for j in range(0, w, p)]
    return torch.stack(patches, dim=1)


def patchify_channel_first(imgs, p):
    return F.unfold(imgs, kernel_size=p, stride=p).transpose(1, 2)


def patchify_column_major(imgs, p):
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nwhpqc", x).reshape(n, -1, p * p * c)


def patchify_swapped_within(imgs, p):
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwqpc", x).reshape(n, -1, p * p * c)


def patchify_no_permute(imgs, p):
    n, c, h, w = imgs.shape
    return imgs.reshape(n, (h // p) * (w // p), p * p * c)


def patchify_square_only(imgs, p):
    n, c, h, w = imgs.shape
    side = h // p
    x = imgs[:, :, :side * p, :side * p].reshape(n, c, side, p, side, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, side * side, p * p * c)


def random_masking_scatter(x, mask_ratio, generator=None):
    n, length, d = x.shape
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, generator=generator)
    ids_shuffle = noise.argsort(dim=1, descending=True)  # keep the largest noise instead
    ids_restore = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, torch.arange(length).expand(n, -1))
    ids_keep = ids_shuffle[:, :keep]
    x_visible = x.gather(1, ids_keep[..., None].expand(-1, -1, d))
    mask = torch.ones(n, length).scatter_(1, ids_keep, 0.0)
    return x_visible, mask, ids_restore


def _masking_variant(x, mask_ratio, generator=None, kept_is_one=False, return_shuffle=False, shared_noise=False,
                     use_generator=True, rounding=int, unshuffle_mask=True):
    n, length, d = x.shape
    keep = rounding(length * (1 - mask_ratio))
    g = generator if use_generator else None
    noise = torch.rand(1 if shared_noise else n, length, generator=g).expand(n, -1)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    x_visible = x.gather(1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(n, length)
    mask[:, :keep] = 0
    if unshuffle_mask:
        mask = mask.gather(1, ids_restore)
    return x_visible, (1 - mask) if kept_is_one else mask, ids_shuffle if return_shuffle else ids_restore


def mae_loss_loops(pred, target, mask, norm_pix):
    total, count = 0.0, 0
    for n in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            if mask[n, i] == 1:
                t = target[n, i]
                if norm_pix:
                    t = (t - t.mean()) / torch.sqrt(t.var() + 1e-6)
                total = total + F.mse_loss(pred[n, i], t)
                count += 1
    return total / count


def _mae_variant(pred, target, mask, norm_pix, weights="removed", patch_reduce="mean", denominator="mask",
                 norm="per_patch_unbiased"):
    if norm_pix:
        if norm == "per_patch_unbiased":
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        elif norm == "biased":
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True, unbiased=False) + 1e-6) ** 0.5
        elif norm == "std_eps":
            target = (target - target.mean(-1, keepdim=True)) / (target.std(-1, keepdim=True) + 1e-6)
    error = (pred - target) ** 2
    per_patch = error.mean(-1) if patch_reduce == "mean" else error.sum(-1)
    w = {"removed": mask, "all": torch.ones_like(mask), "kept": 1 - mask}[weights]
    return (per_patch * w).sum() / (w.sum() if denominator == "mask" else w.numel())


def mae_loss_per_sample(pred, target, mask, norm_pix):
    per_patch = ((pred - target) ** 2).mean(-1)
    return ((per_patch * mask).sum(1) / mask.sum(1)).mean()

# ------------------------------------------------------------------------------ probe


def knn_loops(train_features, train_labels, test_features, num_classes, k, temperature):
    train = F.normalize(train_features, dim=1)
    predictions = []
    for feature in F.normalize(test_features, dim=1):
        similarities = (train @ feature).tolist()
        nearest = sorted(range(len(similarities)), key=lambda i: -similarities[i])[:k]
        votes = [0.0] * num_classes
        for i in nearest:
            votes[train_labels[i]] += math.exp(similarities[i] / temperature)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(predictions)


def _knn_variant(train_f, train_l, test_f, num_classes, k, temperature, normalize=True, weight="exp",
                 largest=True, first_k=False):
    if normalize:
        train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    similarity = test_f @ train_f.T
    top, index = similarity.topk(k, dim=1, largest=largest)
    labels = train_l[:k].expand(len(test_f), -1) if first_k else train_l[index]
    weights = {"exp": (top / temperature).exp(), "none": torch.ones_like(top), "sim": top}[weight]
    return torch.zeros(len(test_f), num_classes).scatter_add_(1, labels, weights).argmax(1)

# ------------------------------------------------------------------------------ segmentation


def mean_iou_loops(pred, target, num_classes, ignore_index=255):
    keep = target != ignore_index
    ious = []
    for c in range(num_classes):
        inter = ((pred == c) & (target == c) & keep).sum().item()
        union = (((pred == c) | (target == c)) & keep).sum().item()
        if union:
            ious.append(inter / union)
    return sum(ious) / len(ious)


def _iou_variant(pred, target, num_classes, ignore_index=255, per_image=False, use_ignore=True, absent=None,
                 as_tensor=False, fixed_ignore=False):
    if per_image:
        values = [_iou_variant(p[None], t[None], num_classes, ignore_index) for p, t in zip(pred, target)]
        return sum(values) / len(values)
    ignore = 255 if fixed_ignore else ignore_index
    keep = target != ignore if use_ignore else torch.ones_like(target, dtype=torch.bool)
    ious = []
    for c in range(num_classes):
        inter = ((pred == c) & (target == c) & keep).sum().item()
        union = (((pred == c) | (target == c)) & keep).sum().item()
        if union or absent is not None:
            ious.append(inter / union if union else absent)
    value = sum(ious) / len(ious)
    return torch.tensor(value) if as_tensor else value


ALTERNATIVES = {
    "bottleneck.stratified_subset": subset_by_random_scores,
    "simclr.nt_xent": nt_xent_loops,
    "moco.momentum_update": momentum_update_copy,
    "moco.infonce": infonce_loops,
    "byol.regression_loss": regression_cosine,
    "dino.dino_loss": dino_loss_loops,
    "dino.update_center": update_center_sum_divided,
    "mae.patchify": patchify_loops,
    "mae.random_masking": random_masking_scatter,
    "mae.loss": mae_loss_loops,
    "probe.knn_predict": knn_loops,
    "segmentation.mean_iou": mean_iou_loops,
}

# (exercise id, mistaken function, words the feedback must contain)
MISTAKES = [
    ("bottleneck.stratified_subset", subset_with_replacement, "sampled with replacement"),
    ("bottleneck.stratified_subset", subset_first_of_each_class, "not random"),
    ("bottleneck.stratified_subset", subset_global_rng, "not reproducible"),
    ("bottleneck.stratified_subset", subset_not_stratified, "not stratified"),
    ("bottleneck.stratified_subset", subset_rounded_down, "rounded down to 0"),
    ("bottleneck.stratified_subset", subset_as_mask, "boolean mask"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t, mask=None), "self-similarity not excluded"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t, mask=0.0), "self-similarity set to 0"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t * t), "divided by the temperature twice"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t, normalize=False), "inputs not L2-normalized"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t, anchors=len(a)), "only the z1 views"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t, reduce="sum"), "summed over the anchors"),
    ("simclr.nt_xent", lambda a, b, t: _nt_xent_variant(a, b, t, detach_z2=True), "no gradient reaches z2"),
    ("moco.momentum_update", momentum_swapped, "m and 1 - m swapped"),
    ("moco.momentum_update", momentum_copies_online, "overwritten with the online weights"),
    ("moco.momentum_update", momentum_rebinds, "target not updated"),
    ("moco.momentum_update", momentum_into_online, "went into the online network"),
    ("moco.momentum_update", momentum_with_buffers, "buffers also averaged"),
    ("moco.momentum_update", momentum_without_no_grad, "torch.no_grad()"),
    ("moco.momentum_update", momentum_returns_new, "instead of updating target in place"),
    ("moco.infonce", lambda q, k, Q, t: _infonce_variant(q, k, Q, t * t), "divided by the temperature twice"),
    ("moco.infonce", lambda q, k, Q, t: _infonce_variant(q, k, Q, 1.0), "temperature not applied"),
    ("moco.infonce", lambda q, k, Q, t: _infonce_variant(q, k, Q, t, positive_last=True), "not at index 0"),
    ("moco.infonce", infonce_in_batch, "keys of the other samples"),
    ("moco.infonce", lambda q, k, Q, t: _infonce_variant(q, k, Q, t, reduce="sum"), "summed over the batch"),
    ("moco.infonce", lambda q, k, Q, t: _infonce_variant(q, k, Q, t, detach_k=False), "gradient flows into the keys"),
    ("moco.infonce", lambda q, k, Q, t: _infonce_variant(q, k, Q, t, detach_queue=False), "gradient flows into the queue"),
    ("byol.regression_loss", lambda p, z: _regression_variant(p, z, normalize=False).mean(), "not L2-normalized"),
    ("byol.regression_loss", lambda p, z: (4 - _regression_variant(p, z)).mean(), "sign of the cosine flipped"),
    ("byol.regression_loss", lambda p, z: F.mse_loss(F.normalize(p, dim=1), F.normalize(z.detach(), dim=1)),
     "mean over the D dimensions"),
    ("byol.regression_loss", lambda p, z: _regression_variant(p, z).sum(), "summed over the batch"),
    ("byol.regression_loss", lambda p, z: _regression_variant(p, z, detach=False).mean(), "gradient flows into the target"),
    ("byol.regression_loss", lambda p, z: _regression_variant(p, z), "per-sample losses"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, tt, same_view=True), "same-view pairs included"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, tt, center_sign=0.0), "center not subtracted"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, tt, center_sign=1.0), "center added"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, tt, st), "temperatures swapped"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, st), "teacher not sharpened"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, tt, reduce=torch.sum), "summed over the pairs"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, tt, detach_teacher=False),
     "gradient flows into the teacher"),
    ("dino.dino_loss", lambda s, t, c, st, tt: _dino_variant(s, t, c, st, tt, detach_center=False),
     "gradient flows into the center"),
    ("dino.update_center", lambda c, t, m: (1 - m) * c + m * t.mean(0, keepdim=True), "momentum and 1 - momentum swapped"),
    ("dino.update_center", lambda c, t, m: m * c + (1 - m) * t.sum(0, keepdim=True), "summed over the rows"),
    ("dino.update_center", lambda c, t, m: m * c[0] + (1 - m) * t.mean(0), "keep the leading dimension"),
    ("dino.update_center", lambda c, t, m: m * c.mean() + (1 - m) * t.mean(dim=1), "wrong dimension"),
    ("dino.update_center", lambda c, t, m: t.mean(0, keepdim=True), "old center ignored"),
    ("dino.update_center", lambda c, t, m: m * c + t.mean(0, keepdim=True), "(1 - momentum) factor is missing"),
    ("mae.patchify", patchify_channel_first, "(C, p, p)"),
    ("mae.patchify", patchify_column_major, "column-major"),
    ("mae.patchify", patchify_swapped_within, "rows and columns swapped inside each patch"),
    ("mae.patchify", patchify_no_permute, "without permuting"),
    ("mae.patchify", patchify_square_only, "8 x 12 images"),
    ("mae.patchify", lambda x, p: patchify_loops(x, p).transpose(1, 2), "expected [2, 4, 48]"),
    ("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, kept_is_one=True), "mask uses 1 = kept"),
    ("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, return_shuffle=True),
     "returned ids_shuffle instead of ids_restore"),
    ("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, shared_noise=True), "same noise for all samples"),
    ("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, use_generator=False),
     "randomness not drawn from the generator"),
    ("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, rounding=round), "not with int()"),
    ("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, unshuffle_mask=False),
     "not in the original token order"),
    ("mae.loss", lambda *a: _mae_variant(*a, weights="all"), "loss over all patches, not only removed ones"),
    ("mae.loss", lambda *a: _mae_variant(*a, weights="kept"), "averaged over the kept patches"),
    ("mae.loss", lambda *a: _mae_variant(*a, patch_reduce="sum"), "summed over the P values"),
    ("mae.loss", lambda *a: _mae_variant(*a, denominator="all"), "divided by the number of all patches"),
    ("mae.loss", lambda p, t, m, norm_pix: _mae_variant(p, t, m, False), "norm_pix ignored"),
    ("mae.loss", lambda *a: _mae_variant(*a, norm="biased"), "biased variance"),
    ("mae.loss", lambda *a: _mae_variant(*a, norm="std_eps"), "added to the standard deviation"),
    ("mae.loss", mae_loss_per_sample, "averaged per sample first"),
    ("probe.knn_predict", lambda *a: _knn_variant(*a, weight="none"), "unweighted votes"),
    ("probe.knn_predict", lambda *a: _knn_variant(*a, weight="sim"), "weighted by the similarity itself"),
    ("probe.knn_predict", lambda *a: _knn_variant(*a, normalize=False), "features not L2-normalized"),
    ("probe.knn_predict", lambda *a: _knn_variant(*a, largest=False), "farthest neighbours"),
    ("probe.knn_predict", lambda *a: _knn_variant(*a, first_k=True), "first k training samples"),
    ("probe.knn_predict", lambda *a: _knn_variant(*a).int(), "expected torch.int64"),
    ("segmentation.mean_iou", lambda *a: _iou_variant(*a, per_image=True), "averaged per image instead of over the set"),
    ("segmentation.mean_iou", lambda *a: _iou_variant(*a, use_ignore=False), "ignore_index pixels counted"),
    ("segmentation.mean_iou", lambda *a: _iou_variant(*a, absent=0.0), "mean over all num_classes"),
    ("segmentation.mean_iou", lambda *a: _iou_variant(*a, absent=1.0), "absent classes counted as IoU 1"),
    ("segmentation.mean_iou", lambda p, t, c, i=255: ((p == t)[t != i]).double().mean().item(), "pixel accuracy"),
    ("segmentation.mean_iou", lambda *a: _iou_variant(*a, as_tensor=True), "return a Python float"),
    ("segmentation.mean_iou", lambda *a: _iou_variant(*a, fixed_ignore=True), "with ignore_index = 4"),
]


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_gets_full_marks(exercise_id):
    result = grade(exercise_id, EXERCISES[exercise_id].reference())
    assert result.passed and result.score == result.max_score, result.feedback


@pytest.mark.parametrize("exercise_id", sorted(ALTERNATIVES))
def test_another_correct_implementation_gets_full_marks(exercise_id):
    result = grade(exercise_id, ALTERNATIVES[exercise_id])
    assert result.passed, result.feedback


@pytest.mark.parametrize("exercise_id, mistaken, words", MISTAKES,
                         ids=[f"{m[0]}-{m[2][:30]}" for m in MISTAKES])
def test_mistake_loses_points_and_is_named(exercise_id, mistaken, words):
    result = grade(exercise_id, mistaken)
    assert result.score < result.max_score
    assert any(words in line for line in result.feedback), result.feedback


def test_every_exercise_has_an_alternative_and_five_named_mistakes():
    """Every registered exercise, wherever its grader tests live, has another correct version (not
    the reference) and at least five named mistakes."""
    from . import (test_analysis_exercises, test_lesson0708_exercises, test_lesson0910_exercises, test_masking_exercise,
                   test_spec_exercises)

    alternatives = {exercise_id: [fn] for exercise_id, fn in ALTERNATIVES.items()}
    mistakes = list(MISTAKES)
    for module in (test_analysis_exercises, test_lesson0708_exercises, test_lesson0910_exercises, test_masking_exercise,
                   test_spec_exercises):
        for exercise_id, fns in module.ALTERNATIVES.items():
            alternatives.setdefault(exercise_id, []).extend(fns if isinstance(fns, list) else [fns])
        mistakes += module.MISTAKES
    for exercise_id, exercise in EXERCISES.items():
        others = [fn for fn in alternatives.get(exercise_id, []) if fn is not exercise.reference()]
        assert others, f"{exercise_id} has no other correct version in the tests"
        assert sum(m[0] == exercise_id for m in mistakes) >= 5, exercise_id


def test_a_mask_in_shuffled_order_is_named_once():
    """The secondary checks of randomness read the kept tokens, not the mask: a mask left in
    shuffled order is one mistake with one feedback line."""
    result = grade("mae.random_masking", lambda x, r, g=None: _masking_variant(x, r, g, unshuffle_mask=False))
    text = " ".join(result.feedback)
    assert "not in the original token order" in text
    assert "same noise" not in text and "generator is not used" not in text and len(result.feedback) == 1
