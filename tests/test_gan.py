"""Adversarial training: the discriminators, the gradient penalty, one GAN step, resuming a GAN run, and the
schedule's collapse guard."""
import dataclasses

import pytest
import torch
from torch import nn

import Engine
import Quantization
from Adversarial import Adversary, DiscriminatorCollapse, gradient_penalty
from conftest import TINY
from DiscriminatorLayers import Critic, PatchDiscriminator, receptive_field
from Distributed import DistContext
from ModelIO import build_model, load_generator, save_checkpoint
from References import GanConfig
from Training import make_loss_fn, train_one_epoch

CPU = torch.device("cpu")
TINY_CLS = dataclasses.replace(TINY, loss="classification")


def single_process() -> DistContext:
    return DistContext(rank=0, world_size=1, local_rank=0, device=CPU)


@pytest.mark.parametrize("cls", [PatchDiscriminator, Critic])
def test_discriminator_output_shape_and_stated_receptive_field(cls):
    D = cls(width=8)
    out = D(torch.zeros(2, 1, 128, 96), torch.zeros(2, 2, 128, 96))
    assert out.shape == (2, 1, 128 // 8 - 2, 96 // 8 - 2)
    assert receptive_field(D) == 70  # pix2pix's 70x70 PatchGAN


def test_one_patch_logit_sees_exactly_a_70_pixel_window():
    """Measured, not computed: the input pixels that one logit's gradient reaches span 70 x 70."""
    torch.manual_seed(0)
    D = PatchDiscriminator(width=4).eval()  # eval: BatchNorm uses fixed statistics, nothing mixes positions
    L = torch.zeros(1, 1, 160, 160, requires_grad=True)
    ab = torch.zeros(1, 2, 160, 160, requires_grad=True)
    out = D(L, ab)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    reach = (L.grad.abs() + ab.grad.abs().sum(dim=1, keepdim=True))[0, 0] > 0
    rows, cols = reach.any(dim=1).nonzero(), reach.any(dim=0).nonzero()
    assert int(rows.max() - rows.min() + 1) == int(cols.max() - cols.min() + 1) == 70


class LinearCritic(nn.Module):
    """score(L, ab) = <w, ab>: its gradient in ab is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, L, ab):
        return (ab * self.w).flatten(1).sum(dim=1, keepdim=True)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic_and_positive_otherwise():
    torch.manual_seed(0)
    L, real, fake = torch.rand(3, 1, 8, 8), torch.rand(3, 2, 8, 8), torch.rand(3, 2, 8, 8)
    w = torch.randn(1, 2, 8, 8)
    unit = LinearCritic(w / w.norm())
    assert gradient_penalty(unit, L, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(LinearCritic(3 * w / w.norm()), L, real, fake).item() == pytest.approx(4.0, rel=1e-5)
    # bf16 autocast around it changes nothing: the penalty is computed in float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(LinearCritic(3 * w / w.norm()), L, real, fake)
    assert gp.dtype == torch.float32 and gp.item() == pytest.approx(4.0, rel=1e-5)
    # and it is differentiable in the critic's weights (create_graph), as the critic's update needs
    critic = LinearCritic(3 * w / w.norm())
    gradient_penalty(critic, L, real, fake).backward()
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["patchgan", "wgan-gp"])
def test_one_gan_step_changes_d_and_the_decoder_and_leaves_the_encoder_bit_identical(kind):
    torch.manual_seed(0)
    bins = Quantization.ab_bins(TINY_CLS.ab_grid)
    model = build_model(TINY_CLS, "none", len(bins))
    adversary = Adversary(GanConfig(kind=kind, pretrain_steps=0, d_width=8), TINY_CLS, bins, single_process())
    before = {name: {k: v.clone() for k, v in m.state_dict().items()}
              for name, m in (("encoder", model.encoder), ("decoder", model.decoder), ("D", adversary.D))}
    loss_fn = make_loss_fn(TINY_CLS, None, bins, torch.ones(len(bins)))
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
    batch = {"L": torch.rand(2, 1, 64, 64) * 2 - 1, "ab": (torch.rand(2, 2, 64, 64) - 0.5) * 0.5, "skipped": 0}
    stats = train_one_epoch(model, model.decoder, [batch], optimizer, torch.amp.GradScaler("cuda", enabled=False),
                            loss_fn, CPU, 0, 1.0, show=False, adversary=adversary)
    assert stats["steps"] == 1 and adversary.d_steps == 1 and adversary.epoch_stats()["g_adv_steps"] == 1
    changed = lambda name, m: any(not torch.equal(before[name][k], v) for k, v in m.state_dict().items())  # noqa: E731
    assert changed("D", adversary.D)
    assert changed("decoder", model.decoder)
    assert not changed("encoder", model.encoder)


def test_d_alone_during_pretraining_then_every_n_critic_th_step():
    bins = Quantization.ab_bins(TINY_CLS.ab_grid)
    adversary = Adversary(GanConfig(kind="wgan-gp", pretrain_steps=2, n_critic=3, d_width=8), TINY_CLS, bins,
                          single_process())
    turns = []
    for _ in range(8):
        turns.append(adversary.generator_turn())
        adversary.d_steps += 1
    assert turns == [False, False, True, False, False, True, False, False]


def test_a_discriminator_stuck_near_zero_loss_stops_the_run_with_advice():
    adversary = Adversary(GanConfig(kind="patchgan", collapse_steps=3, d_width=8), TINY_CLS, None, single_process())
    for loss in (0.001, 0.001, 0.5, 0.001, 0.001):  # the 0.5 breaks the streak
        adversary.check_collapse(loss)
    with pytest.raises(DiscriminatorCollapse, match="Lower --d-lr"):
        adversary.check_collapse(0.001)


def test_the_collapse_guard_leaves_a_wgan_critic_alone():
    """A critic's loss (-W + lambda_gp x penalty) is unbounded and near 0 whenever W is small: no signal of collapse."""
    critic = Adversary(GanConfig(kind="wgan-gp", collapse_steps=3, d_width=8), TINY_CLS, None, single_process())
    for _ in range(10):
        critic.check_collapse(0.001)
    assert critic.low_streak == 0


@pytest.mark.parametrize("cls", [PatchDiscriminator, Critic])
def test_discriminators_start_from_pix2pix_normal_initialisation(cls):
    torch.manual_seed(0)
    D = cls(width=64).requires_grad_(False)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in D.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))]
    assert len(convs) == 5 and len(norms) == 3
    for m in convs:  # N(0, 0.02); PyTorch's default gives std 1/sqrt(3 x fan_in): 0.083 to 0.0064 here
        assert abs(float(m.weight.mean())) < 0.005 and float(m.weight.std()) == pytest.approx(0.02, rel=0.15)
        assert m.bias is None or not m.bias.any()
    for m in norms:  # N(1, 0.02) scales, zero shifts
        assert float(m.weight.mean()) == pytest.approx(1.0, abs=0.01) and float(m.weight.std()) == pytest.approx(0.02, rel=0.3)
        assert not m.bias.any()


def gan_args(photo_dir, runs, name, *extra):
    return ["--mode", "training", "--data-dir", str(photo_dir), "--image-size", "32", "--batch-size", "2",
            "--workers", "0", "--samples", "2", "--runs-dir", str(runs), "--run-name", name, "--device", "cpu",
            "--lr", "1e-4", *extra]


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A classification generator checkpoint (random weights) to start GAN runs from."""
    torch.manual_seed(0)
    bins = Quantization.ab_bins(TINY_CLS.ab_grid)
    model = build_model(TINY_CLS, "none", len(bins))
    path = tmp_path_factory.mktemp("gen") / "gen.pt"
    save_checkpoint(path, model, TINY_CLS, extras={"ab_bins": bins, "ab_prior": torch.full((len(bins),), 1 / len(bins))})
    return path


def test_gan_run_resumes_with_both_optimizers_restored(photo_dir, tmp_path, generator):
    """Stop after 2 of the epoch's 4 steps, resume to its end: the final optimizers have taken 4 steps each
    (restored, not restarted), and a resumed Adversary's optimizer state equals what was saved."""
    runs = tmp_path / "runs"
    first = gan_args(photo_dir, runs, "g", "--init-from", str(generator), "--gan", "wgan-gp",
                     "--gan-pretrain-steps", "0", "--d-width", "8", "--epochs", "1", "--max-steps", "2")
    assert Engine.main(first) == 0
    mid = torch.load(runs / "g" / "last.pt", weights_only=True)
    assert mid["gan"]["d_steps"] == 2 and "optimizer" in mid["gan"]
    # --resume needs no GAN flags: the run's own settings come from its checkpoint
    assert Engine.main(gan_args(photo_dir, runs, "g", "--resume", str(runs / "g"), "--epochs", "1")) == 0
    end = torch.load(runs / "g" / "last.pt", weights_only=True)
    d_state, g_state = end["gan"]["optimizer"]["state"], end["optimizer"]["state"]
    assert end["gan"]["d_steps"] == 4 and end["gan"]["config"]["d_width"] == 8  # 7 photos, batches of 2
    assert {float(s["step"]) for s in d_state.values()} == {4.0}
    assert {float(s["step"]) for s in g_state.values()} == {4.0}
    saved = mid["gan"]["optimizer"]["state"]
    restored = Adversary(GanConfig(kind="wgan-gp", d_width=8), TINY_CLS, None, single_process(), mid["gan"])
    for k, s in restored.optimizer.state_dict()["state"].items():
        assert torch.equal(s["exp_avg"], saved[k]["exp_avg"]) and torch.equal(s["exp_avg_sq"], saved[k]["exp_avg_sq"])
    assert (runs / "g" / "loss.png").is_file() and list((runs / "g" / "samples").glob("*.png"))


def test_resume_cannot_turn_a_plain_run_into_a_gan_and_export_drops_d(photo_dir, tmp_path, generator, capsys):
    from Export import export_release

    runs = tmp_path / "runs"
    assert Engine.main(gan_args(photo_dir, runs, "p", "--init-from", str(generator), "--epochs", "1")) == 0
    assert Engine.main(gan_args(photo_dir, runs, "p", "--resume", str(runs / "p"), "--gan", "patchgan")) == 1
    assert "not a GAN run, so --resume cannot add --gan patchgan" in capsys.readouterr().err
    assert Engine.main(gan_args(photo_dir, runs, "q", "--init-from", str(generator), "--gan", "patchgan",
                                "--d-width", "8", "--gan-pretrain-steps", "1", "--epochs", "1")) == 0
    log = (runs / "q" / "metrics.jsonl").read_text()
    assert '"d_loss"' in log and '"g_adv"' in log
    assert "gan" in torch.load(runs / "q" / "last.pt", weights_only=True)
    export_release(runs / "q" / "last.pt", tmp_path / "release.pt")
    assert "gan" not in torch.load(tmp_path / "release.pt", weights_only=True)


def test_init_from_takes_a_resunet_warm_start_and_one_member_of_an_ensemble(tmp_path, generator):
    model, source, note = load_generator(generator, CPU, "resunet")
    assert source["model_config"].decoder == "resunet" and "new:" in note and "refine" in note
    assert model(torch.zeros(1, 1, 64, 64)).shape[1] == len(source["extras"]["ab_bins"])
    from Export import export_release

    ens = tmp_path / "ens.pt"
    export_release([generator, generator], ens, temperature=0.2)
    with pytest.raises(ValueError, match="pick it with --init-member 0..1"):
        load_generator(ens, CPU)
    member, source, _ = load_generator(ens, CPU, member=1)
    assert source["model_config"].members == 1 and source["model_config"].temperature == 0.38


def test_a_gan_checkpoint_missing_the_discriminator_is_one_line_naming_it():
    from Adversarial import gan_settings

    state = Adversary(GanConfig(kind="patchgan", d_width=8), TINY_CLS, None, single_process()).state_dict()
    del state["discriminator"]
    with pytest.raises(ValueError, match=r"^runs/x/last\.pt: damaged or incomplete GAN checkpoint, missing "
                                         r"gan\.discriminator$"):
        gan_settings(GanConfig(), {"gan": state}, {"checkpoint": "runs/x/last.pt"})
