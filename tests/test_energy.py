"""The residual-energy objective (WDA alignment) on the micro zoo teacher."""

from __future__ import annotations

import copy

import pytest
import torch

from distill.objectives import StepContext
from distill.objectives.energy import ResidualEnergy, energies, residual_streams


@pytest.fixture(scope="module")
def teacher(micro_zoo):
    from transformers import AutoModelForCausalLM

    from bbi import zoo

    return AutoModelForCausalLM.from_pretrained(zoo.model_path("teacher")).eval()


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    labels = ids.clone()
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_streams_are_pre_norm_and_energy_matches_definition(teacher):
    batch = _batch(teacher.config.vocab_size)
    out, streams = residual_streams(teacher, batch)
    assert len(streams) == teacher.config.num_hidden_layers + 1
    # HF's last hidden state is the normed one; ours is its input.
    assert torch.allclose(teacher.model.norm(streams[-1]), out.hidden_states[-1], atol=1e-5)
    e = energies(streams)
    direct = (streams[2] - streams[1]).pow(2).mean(-1).sqrt()
    assert torch.allclose(e[1], direct, atol=1e-6)


def test_energy_is_zero_against_itself_and_pulls_a_perturbed_student(teacher):
    batch = _batch(teacher.config.vocab_size)
    obj = ResidualEnergy(teacher, energy_weight=1.0)
    ctx = StepContext(0, 0, 0, 0)
    obj.prepare_batch(teacher, batch, ctx)
    same = copy.deepcopy(teacher)
    sums, counts = obj.token_losses(same, batch)
    assert obj.step_metrics()["energy"] == pytest.approx(0.0, abs=1e-10)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    with torch.no_grad():
        for p in student.model.layers[0].mlp.parameters():
            p.mul_(1.5)
    sums, counts = obj.token_losses(student, batch)
    m = obj.step_metrics()
    assert m["energy"] > 0 and "kl" not in m  # the logit KL is off unless asked for
    (sums.sum() / counts.sum()).backward()
    assert student.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    # Eval reports plain cross-entropy, whatever the energy term.
    ev_sums, ev_counts = obj.eval_token_losses(student.eval(), batch)
    assert float(ev_sums.sum() / ev_counts.sum()) == pytest.approx(m["ce"], rel=1e-4)


def test_energy_weight_schedule_and_named_kl(teacher):
    batch = _batch(teacher.config.vocab_size)
    seen = []
    obj = ResidualEnergy(
        teacher,
        energy_weight=lambda f: 0.5 * (1 - f),
        kl_weight=0.3,
        on_step=lambda model, f: seen.append(f),
    )
    obj.prepare_batch(teacher, batch, StepContext(0, 0, 0, 0, step=3, total_steps=4))
    assert seen == [0.75] and obj._w == pytest.approx(0.125)
    student = copy.deepcopy(teacher)
    obj.token_losses(student, batch)
    assert obj.step_metrics()["kl"] == pytest.approx(0.0, abs=1e-6)
    assert obj.identity()["energy_weight"] == 0.5 and obj.identity()["energy_weight_end"] == 0
