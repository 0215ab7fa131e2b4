"""polar_lib's optimizers inside the training loops people already use: TRL's ``SFTTrainer`` and a
hand-written accelerate loop. The wrappers (scheduler, collator, accelerate's optimizer) may not change
the step: the accelerate loop must take the steps polar_lib's own loop takes on the same batch, and
TRL's trainer the steps polar_lib's optimizer takes from the gradients TRL computed (TRL computes the
loss its own way, a fused LM head: ≈ 4e-6 relative from the model's loss, and its gradient differs by
more than rounding, so only its gradients, captured, are replayed). Two steps with Θ ≠ 0 at the start,
so that every factor gets a real landing field; the base optimizer is SGD, whose step is linear in the
field (Adam's first step, ±lr wherever |g| ≲ eps, would turn rounding noise into whole steps).

Tolerance: the paths differ only in rounding: a step linear in the gradient carries the gradient's
relative rounding error (~1e-6), and writing it into the weights rounds to their ulp (≤ 6e-8 of the
weights' norm); so 1e-3 of the step plus 1e-6 of the weights is far above the noise, and far below the
steps, each more than 1e-4 of its weights.
"""
import copy

import pytest
import torch
from datasets import Dataset

import polar_lib
from polar_lib.data import answer_text, format_prompt, load_task

LR = 1.0
EXAMPLES = 4
STEPS = 2


@pytest.fixture
def polar_model(tiny_llama):
    model, tokenizer = tiny_llama
    torch.manual_seed(0)
    model = polar_lib.prepare(model, "polar", r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_S" in name:
                p.normal_(0.0, 0.5)
    return model, tokenizer


def optimizer(model):
    return polar_lib.make_optimizer(model, "polar", lr=LR, optimizer_cls=torch.optim.SGD)


def trainable(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def manual_steps(model, batch: dict) -> tuple[list[float], dict]:
    """``STEPS`` steps of polar_lib's optimizer on ``batch`` by hand: the reference of the accelerate loop."""
    model.train()
    step = optimizer(model)
    losses = []
    for _ in range(STEPS):
        loss = model(**batch).loss
        loss.backward()
        step.step()
        step.zero_grad()
        losses.append(loss.item())
    return losses, trainable(model)


def record_gradients(model) -> dict[str, list[torch.Tensor]]:
    """Every trainable parameter's gradient after each backward pass, in order."""
    gradients = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p, seen=gradients.setdefault(name, []): seen.append(p.grad.clone()))
    return gradients


def replay_steps(model, gradients: dict[str, list[torch.Tensor]]) -> dict:
    """polar_lib's optimizer stepped on the recorded gradients: the reference of the trainer."""
    step = optimizer(model)
    parameters = dict(model.named_parameters())
    for i in range(STEPS):
        for name, recorded in gradients.items():
            parameters[name].grad = recorded[i]
        step.step()
    return trainable(model)


def assert_same_step(before: dict, after: dict, reference: dict) -> None:
    assert after.keys() == reference.keys() == before.keys()
    for name in after:
        step, reference_step = after[name] - before[name], reference[name] - before[name]
        assert reference_step.norm() > 1e-4 * before[name].norm(), name  # every tensor moved
        assert (step - reference_step).norm() <= 1e-3 * reference_step.norm() + 1e-6 * before[name].norm(), name


def test_trl_sft_trainer_takes_polar_lib_steps(polar_model, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = polar_model
    reference_model = copy.deepcopy(model)
    before = trainable(model)
    examples = load_task("arc_easy", "train", limit=EXAMPLES)
    dataset = Dataset.from_list([{"prompt": format_prompt(e), "completion": " " + answer_text(e)} for e in examples])
    args = SFTConfig(output_dir=str(tmp_path), max_steps=STEPS, lr_scheduler_type="constant", per_device_train_batch_size=EXAMPLES, learning_rate=LR,
                     max_grad_norm=0.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         optimizers=(optimizer(model), None))
    batch = next(iter(trainer.get_train_dataloader()))  # the whole dataset: every step's batch, order irrelevant
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        model_loss = reference_model.train()(**batch).loss.item()
    gradients = record_gradients(model)
    trainer.train()

    assert type(trainer.optimizer.optimizer).__name__ == "LandingSGD"  # accelerate wraps ours, unchanged
    assert 0 < (batch["labels"] != -100).sum() < batch["attention_mask"].sum()  # loss on the completion only
    assert {len(g) for g in gradients.values()} == {STEPS}
    assert_same_step(before, trainable(model), replay_steps(reference_model, gradients))
    first_logged = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert first_logged == pytest.approx(model_loss, rel=1e-4)  # the model's loss, computed TRL's way


def test_accelerate_loop_takes_polar_lib_steps(polar_model):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    model, tokenizer = polar_model
    reference_model = copy.deepcopy(model)
    before = trainable(model)
    texts = [format_prompt(e) + " " + answer_text(e) for e in load_task("arc_easy", "train", limit=EXAMPLES)]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(EXAMPLES)] * STEPS,
                                         batch_size=EXAMPLES)  # STEPS batches, each the whole set

    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate's state is a process-wide singleton
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True)
    model, wrapped, loader = accelerator.prepare(model, optimizer(model), loader)
    model.train()
    losses = []
    for step_batch in loader:
        loss = model(**step_batch).loss
        accelerator.backward(loss)
        wrapped.step()
        wrapped.zero_grad()
        losses.append(loss.item())

    reference_losses, reference = manual_steps(reference_model, batch)
    print("LOSSES", losses, reference_losses)
    assert losses == pytest.approx(reference_losses, rel=1e-5)
    assert_same_step(before, trainable(accelerator.unwrap_model(model)), reference)
