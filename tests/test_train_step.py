"""optim.train_step, the step train.py runs, against the reference training loop's own
three-call sequence (train_seq_arc_rope.pt): rolling ACT carry, both optimisers."""
import os

import torch

from optim import AdamATan2, SignSGD, train_step
from test_model import check_grad, check_metrics, close, golden_model, strip_prefix


def test_three_step_sequence_matches_reference(golden):
    ref = torch.load(os.path.join(golden, "train_seq_arc_rope.pt"), weights_only=True)
    o = ref["optimizer"]
    model = golden_model(golden, "arc_rope").train()
    # the same order as the reference: the puzzle table's sign-SGD first, then AdamATan2
    optimizers = [SignSGD(model.puzzle_emb, lr=o["puzzle_emb_lr"], weight_decay=o["puzzle_emb_weight_decay"]),
                  AdamATan2(model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                            weight_decay=o["weight_decay"])]
    carry = None
    for call in ref["calls"]:
        batch = call["batch"]
        if carry is None:
            assert call["carry_before"]["current_data"] is None
            carry = model.initial_carry(batch)
        assert torch.equal(carry.halted, call["carry_before"]["halted"])
        assert torch.equal(carry.steps, call["carry_before"]["steps"])
        # keep the gradients for comparison: wrap zero_grad of both optimisers
        grads = {}

        def keep_grads():
            grads.update({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
            grads["local"] = optimizers[0].collected[0][1].clone()  # sign-SGD's rows, kept after backward

        first = optimizers[0].step
        optimizers[0].step = lambda: (keep_grads(), first())
        carry, metrics = train_step(model, carry, batch, optimizers, call["global_batch_size"])
        loss = metrics.pop("loss")
        optimizers[0].step = first

        torch.testing.assert_close(loss.double(), call["loss"], rtol=1e-5, atol=0)
        check_metrics(metrics, call["metrics"])
        for k in ("halted", "steps"):
            assert torch.equal(getattr(carry, k), call["carry_after"][k]), k
        for k, v in call["carry_after"]["current_data"].items():
            assert torch.equal(carry.current_data[k], v), k
        close(carry.z_H[:, 0], call["z_H_pos0"])
        for k, g in strip_prefix(call["grads"]).items():
            check_grad(grads[k], g, k)
        check_grad(grads["local"], call["puzzle_emb_local_grad"], "puzzle_emb local grad")
        ours = model.state_dict()
        for k, w in strip_prefix(call["state_dict_after"]).items():
            torch.testing.assert_close(ours[k], w, atol=1e-5, rtol=1e-4, msg=f"step {call['step']} {k}")
