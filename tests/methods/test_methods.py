"""The method modules: the training interface, teachers, queues, centers, learning on a tiny
batch, and multi-process correctness (2 CPU processes, gloo)."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from coursekit.engine import distributed
from coursekit.methods import METHODS, build_method, nt_xent, update_center
from coursekit.methods.simclr import gathered_nt_xent
from tests.conftest import generator, tiny_backbone, tiny_method

IMAGE_SIZE = 32


def tiny_resnet():
    return tiny_backbone("resnet18")


def tiny_vit():
    return tiny_backbone("vit_tiny", IMAGE_SIZE)


SMALL = {  # small heads, queue and crops so that each step takes a fraction of a second
    "simclr": dict(out_dim=32),
    "moco": dict(out_dim=32, queue_size=40),
    "byol": dict(out_dim=32),
    "dino": dict(out_dim=64, n_local=2, local_size=16),
    "mae": dict(),
}
BACKBONE = {"simclr": tiny_resnet, "moco": tiny_resnet, "byol": tiny_resnet, "dino": tiny_vit, "mae": tiny_vit}
TEACHERS = {
    "moco": [("backbone", "key_backbone"), ("projection_head", "key_projection_head")],
    "byol": [("backbone", "target_backbone"), ("projection_head", "target_projection_head")],
    "dino": [("backbone", "teacher_backbone"), ("head", "teacher_head")],
}


def make(name, backbone=None, seed=0, **kwargs):
    return tiny_method(name, IMAGE_SIZE, seed, backbone, **{**SMALL[name], **kwargs})  # default backbone: BACKBONE[name]


def images(n=8, seed=0):
    """Shapes-like uint8 images: a bright square on a noisy background, one per image."""
    generator = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 80, (n, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator, dtype=torch.uint8)
    for i in range(n):
        top, left = torch.randint(0, IMAGE_SIZE - 12, (2,), generator=generator).tolist()
        color = torch.randint(120, 256, (3, 1, 1), generator=generator, dtype=torch.uint8)
        imgs[i, :, top : top + 12, left : left + 12] = color
    return imgs


def distance(a: nn.Module, b: nn.Module) -> float:
    return sum(((p - q) ** 2).sum() for p, q in zip(a.parameters(), b.parameters())).sqrt().item()


# --- interface ---------------------------------------------------------------------------------


OTHER_BACKBONE = {"simclr": tiny_vit, "moco": tiny_vit, "byol": tiny_vit, "dino": tiny_resnet}


@pytest.mark.parametrize("name, backbone", [(name, BACKBONE[name]) for name in METHODS] + list(OTHER_BACKBONE.items()))
def test_training_step_gives_a_finite_loss_and_gradients_only_to_the_online_network(name, backbone):
    method = make(name, backbone=backbone())
    loss = method.training_step(images(), generator())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())
    for _, target in TEACHERS.get(name, []):
        assert all(p.grad is None and not p.requires_grad for p in getattr(method, target).parameters())


# What each method evaluates and transfers, from the papers: DINO its teacher, the others the online network.
TRANSFERRED = {"dino": "teacher_backbone"}


@pytest.mark.parametrize("name", list(METHODS))
def test_pretrained_backbone_is_the_one_the_paper_evaluates_and_is_saved_under_its_name(name):
    method = make(name)
    expected = getattr(method, TRANSFERRED.get(name, "backbone"))
    assert method.pretrained_backbone is expected
    prefix = TRANSFERRED.get(name, "backbone") + "."
    saved = {key.removeprefix(prefix) for key in method.state_dict() if key.startswith(prefix)}
    assert saved == set(expected.state_dict())


@pytest.mark.parametrize("name", ["moco", "byol", "dino"])
def test_on_after_step_moves_the_teacher_towards_the_student_by_the_momentum(name):
    method = make(name, momentum=0.9)
    method.training_step(images(), generator()).backward()
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    before = {target: distance(getattr(method, online), getattr(method, target)) for online, target in TEACHERS[name]}
    method.on_after_step(0.0)  # the cosine schedule starts at the base momentum 0.9
    for online, target in TEACHERS[name]:
        after = distance(getattr(method, online), getattr(method, target))
        assert before[target] > 0
        assert after == pytest.approx(0.9 * before[target], rel=1e-4)
    method.on_after_step(1.0)  # momentum 1 at the end: the teacher stays put
    for online, target in TEACHERS[name]:
        assert distance(getattr(method, online), getattr(method, target)) == pytest.approx(0.9 * before[target], rel=1e-4)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_frozen_copy_is_a_declared_momentum_target(name):
    """A method's EMA targets are declared (momentum_pairs), so the base class moves them: a frozen copy of a
    network that is not declared would never move."""
    method = make(name)
    names = {id(module): attr for attr, module in method.named_children()}
    declared = {(names[id(online)], names[id(target)]) for online, target in method.momentum_pairs()}
    assert declared == set(TEACHERS.get(name, ()))
    frozen = {attr for attr, module in method.named_children()
              if any(True for _ in module.parameters()) and not any(p.requires_grad for p in module.parameters())}
    assert frozen == {target for _, target in declared}


def test_moco_queue_advances_and_wraps_around():
    method = make("moco")  # queue of 40, batches of 8
    method.training_step(images(), generator())
    assert int(method.queue_ptr) == 8
    old = method.queue.clone()
    for step in range(5):
        method.training_step(images(seed=step), generator(step))
    assert int(method.queue_ptr) == (8 * 6) % 40
    changed = (method.queue != old).any(dim=1)
    assert changed.all()  # 40 slots, 40 new keys since the snapshot
    torch.testing.assert_close(method.queue.norm(dim=1), torch.ones(40))
    method.eval()
    method.training_step(images(), generator())
    assert int(method.queue_ptr) == 8  # no enqueue outside training


def test_moco_queue_holds_the_keys_of_the_batch():
    method = make("moco")
    view_k = method.views(images(), generator())[1]
    method.training_step(images(), generator())
    keys_in_queue = method.queue[:8]
    # the keys came from BN sub-batches of a permutation, so compare as sets of unit vectors
    single = method.key(view_k)
    assert keys_in_queue.shape == single.shape
    assert (keys_in_queue @ single.T).max(dim=1).values.min() > 0.9


def test_dino_center_moves_to_the_mean_teacher_output_and_works_with_a_resnet():
    method = make("dino", backbone=tiny_resnet(), center_momentum=0.5)
    views = method.views(images(), generator())
    teacher_out = method.teacher(torch.cat(views[:2]))  # the global crops as one BN batch
    method.training_step(images(), generator())
    expected = update_center(torch.zeros(1, 64), teacher_out, 0.5)
    assert method.center.abs().sum() > 0
    torch.testing.assert_close(method.center, expected, atol=1e-5, rtol=1e-4)


def test_dino_teacher_temperature_follows_the_warmup():
    method = make("dino", warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_fraction=0.5)
    method.on_after_step(0.25)
    assert float(method.progress) == 0.25
    assert "progress" in method.state_dict() and "center" in method.state_dict()


def test_dino_head_batch_norm_puts_batchnorm_in_student_and_teacher_heads():
    plain, with_bn = make("dino", backbone=tiny_resnet()), make("dino", backbone=tiny_resnet(), head_batch_norm=True)
    for head in (with_bn.head, with_bn.teacher_head):
        assert any(isinstance(m, nn.BatchNorm1d) for m in head.mlp.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.head.mlp.modules())
    assert with_bn.hparams()["head_batch_norm"] is True
    assert torch.isfinite(with_bn.training_step(images(), generator()))


def test_mae_encoder_sees_only_the_visible_patches_and_reconstructs():
    method = make("mae", mask_ratio=0.75)  # 16 patches of 8 px, 4 visible
    seen = []
    original_encode = method.backbone.encode
    method.backbone.encode = lambda tokens: seen.append(tokens.shape) or original_encode(tokens)
    method.training_step(images(), generator())
    assert seen == [torch.Size([8, 4, 32])]
    masked, recon, mask = method.reconstruct(images(), generator())
    assert masked.shape == recon.shape == (8, 3, 32, 32) and mask.shape == (8, 1, 32, 32)
    assert torch.all(mask.mean(dim=(1, 2, 3)) == 0.75)
    assert torch.all(masked[mask.expand_as(masked) == 1] == 0)
    assert 0 <= recon.min() and recon.max() <= 1


def test_build_method_rejects_unknown_names_and_mae_on_a_resnet():
    with pytest.raises(ValueError, match="simclr, moco, byol, dino, mae"):
        build_method("swav", tiny_resnet())
    with pytest.raises(ValueError, match="ViT"):
        build_method("mae", tiny_resnet())


def test_state_dict_holds_the_whole_training_state():
    keys = make("moco").state_dict().keys()
    assert {"queue", "queue_ptr"} <= set(keys) and any(k.startswith("key_backbone.") for k in keys)


# --- learning ----------------------------------------------------------------------------------


# How each loss is watched on one repeated batch of 16:
# - MoCo's first loss uses the random initial queue (easy negatives); it is compared from step 2,
#   when a queue of 32 holds only real keys;
# - DINO's loss mixes the teacher's entropy (which the temperature warmup and the moving center
#   change on purpose) with the student-teacher mismatch; with the teacher, center and temperature
#   held fixed, what is left is the student learning to match the teacher.
LEARNING = {
    "moco": dict(kwargs=dict(queue_size=32), start=2),
    "dino": dict(kwargs=dict(momentum=1.0, center_momentum=1.0, warmup_teacher_temp=0.04, teacher_temp=0.04), lr=1e-4),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_few_steps_on_one_batch_reduce_the_loss(name):
    setting = LEARNING.get(name, {})
    method = make(name, **setting.get("kwargs", {}))
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=setting.get("lr", 1e-3))
    batch = images(16)
    losses = []
    for step in range(15):
        loss = method.training_step(batch, generator(0))  # the same views every step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.on_after_step(step / 15)
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[setting.get("start", 0)], losses


# --- multi-process (2 CPU processes, gloo) ------------------------------------------------------

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def full_batch():
    """A linear model and a global batch of 2 x 8 inputs (two views of 8 images)."""
    torch.manual_seed(0)
    model = nn.Linear(6, 5)
    x1, x2 = torch.randn(8, 6), torch.randn(8, 6)
    return model, x1, x2


def ddp_worker(rank: int, port: int, out_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model, x1, x2 = full_batch()
        ddp = nn.parallel.DistributedDataParallel(model)
        local = slice(rank * 4, (rank + 1) * 4)
        loss = gathered_nt_xent(ddp(x1[local]), ddp(x2[local]), 0.5)  # DDP averages the gradients
        loss.backward()

        teacher_out = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3) ** 1.5
        dino = make("dino", out_dim=3, center_momentum=0.7)
        dino.center.fill_(0.25)
        dino._update_center(teacher_out[local])

        moco = make("moco", out_dim=3, queue_size=12)
        moco._enqueue(teacher_out[local])

        total_loss = distributed.all_reduce_mean(loss.detach())
        if rank == 0:
            torch.save({"grads": [p.grad for p in model.parameters()], "loss": total_loss, "world": distributed.world_size(),
                        "center": dino.center, "queue": moco.queue, "ptr": moco.queue_ptr}, out_path)
    finally:
        dist.destroy_process_group()


def test_ddp_matches_the_single_process_full_batch(tmp_path):
    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(ddp_worker, args=(free_port(), out_path), nprocs=WORLD, join=True)
    result = torch.load(out_path)
    assert result["world"] == WORLD

    model, x1, x2 = full_batch()
    loss = nt_xent(model(x1), model(x2), 0.5)
    loss.backward()
    torch.testing.assert_close(result["loss"], loss.detach())
    for ddp_grad, grad in zip(result["grads"], model.parameters()):
        torch.testing.assert_close(ddp_grad, grad.grad)

    teacher_out = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3) ** 1.5
    torch.testing.assert_close(result["center"], update_center(torch.full((1, 3), 0.25), teacher_out, 0.7))

    moco = make("moco", out_dim=3, queue_size=12)
    moco._enqueue(teacher_out)  # the gathered keys of both processes, in rank order
    torch.testing.assert_close(result["queue"], moco.queue)
    assert int(result["ptr"]) == 8


def test_distributed_helpers_are_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.gather_with_grad(x) is x
    torch.testing.assert_close(distributed.concat_all_gather(x), x.detach())
    torch.testing.assert_close(distributed.all_reduce_mean(x), x.detach())
    torch.testing.assert_close(gathered_nt_xent(x, x.flip(0), 0.5), nt_xent(x, x.flip(0), 0.5))


def test_every_declared_command_line_option_sets_a_constructor_argument_and_a_flag_has_one_type():
    from coursekit.methods import command_line_options, method_options

    for name, cls in METHODS.items():
        for option in cls.command_line:
            default = method_options(name)[option.argument]  # a KeyError names an option the method does not have
            assert option.accepts(default), (name, option.flag, default)  # the method's own default is valid
            assert isinstance(default, option.type), (name, option.flag)
    for flag, per_method in command_line_options().items():
        assert len({option.type for option in per_method.values()}) == 1, flag
        assert list(per_method) == [name for name in METHODS if flag in {o.flag for o in METHODS[name].command_line}]
