"""The per-identity memory shared by SMMD and Wan et al.: momentum update by hand, no gradient, resume."""

import torch

from crossreid.methods.memory import IdentityMemory


def test_momentum_update_matches_hand_computation():
    mem = IdentityMemory(num_ids=3, num_slots=2, dim=2, momentum=0.75)
    f1 = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    mem.update(f1, torch.tensor([0, 0, 2]), torch.tensor([1, 1, 0]))
    # first update ("first" init): the batch mean of each (id, slot)
    assert torch.equal(mem.get(torch.tensor([0]), 1), torch.tensor([[2.0, 1.0]]))
    assert torch.equal(mem.get(torch.tensor([2]), 0), torch.tensor([[5.0, 5.0]]))
    assert mem.filled.sum() == 2 and not mem.filled[1].any()
    mem.update(torch.tensor([[6.0, 5.0]]), torch.tensor([0]), 1)
    # 0.75 * [2, 1] + 0.25 * [6, 5] = [3, 2]
    assert torch.allclose(mem.get(torch.tensor([0]), 1), torch.tensor([[3.0, 2.0]]))


def test_zero_init_warms_up_from_zero():
    mem = IdentityMemory(2, 1, 1, momentum=0.5, init="zero")
    mem.update(torch.tensor([[4.0]]), torch.tensor([1]))
    assert mem.get(torch.tensor([1]), 0).item() == 2.0


def test_no_gradient_reaches_memory_and_state_round_trips():
    mem = IdentityMemory(4, 2, 3)
    x = torch.randn(5, 3, requires_grad=True)
    mem.update(x * 2, torch.tensor([0, 1, 1, 3, 3]), torch.tensor([0, 1, 1, 0, 1]))
    assert not mem.features.requires_grad and mem.get(torch.tensor([1]), 1).grad_fn is None
    other = IdentityMemory(4, 2, 3)
    other.load_state_dict(mem.state_dict())
    assert torch.equal(other.features, mem.features) and torch.equal(other.filled, mem.filled)
