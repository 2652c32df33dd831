"""The CPU training estimate (train.CpuEta): timed after warm-up, revised once after the first epoch."""
import warnings

import lightning as L
import pytest
import torch

from galaxy_finetune.training.train import CpuEta

# when each step ended: step 0 pays 10 s of start-up, steps 1-5 are still warming up (3 s), then 1 s a step
TRAIN_ENDS = [10, 13, 16, 19, 22, 25] + list(range(26, 40))


def test_pace_leaves_out_the_warm_up_steps():
    assert CpuEta.pace(TRAIN_ENDS, skip=5) == 1.0
    assert CpuEta.pace(TRAIN_ENDS[:16], skip=5) == 1.0  # steps 6-15: what the first estimate times
    assert CpuEta.pace(TRAIN_ENDS) == pytest.approx(29 / 19)  # from step 1 on: warm-up counts, too slow
    assert CpuEta.pace([10.0]) is None and CpuEta.pace(TRAIN_ENDS[:6], skip=5) is None


def test_minutes_count_validation_at_its_own_pace_or_a_share_of_a_train_step():
    assert CpuEta.minutes(1.0, 20, 10) == pytest.approx(200 / 60)
    assert CpuEta.minutes(1.0, 20, 10, val_steps=5) == pytest.approx((20 + 0.4 * 5) * 10 / 60)
    assert CpuEta.minutes(1.0, 20, 10, val_steps=5, val_pace=2.0) == pytest.approx(5.0)


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def estimates(val_step_s: float, **budget) -> list[str]:
    """The warnings of a real 10-epoch fit (20 train, 5 validation steps an epoch) on a fake clock: TRAIN_ENDS,
    then a validation whose first step pays 20 s of start-up and the others take `val_step_s`."""
    val_ends = [59 + val_step_s * i for i in range(5)]
    times = iter(TRAIN_ENDS + val_ends + [1e9] * 10_000)
    loader = lambda n: torch.utils.data.DataLoader(torch.rand(n, 2), batch_size=1)  # noqa: E731
    trainer = L.Trainer(accelerator="cpu", callbacks=[CpuEta(clock=lambda: next(times))],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **(budget or {"max_epochs": 10}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Tiny(), loader(20), loader(5))
    return [str(w.message) for w in caught if "training on CPU" in str(w.message)]


def test_the_estimate_after_warm_up_and_its_revision_after_the_first_epoch():
    said = estimates(val_step_s=2.0)  # validation: 10 s an epoch, not the 2 s assumed at first
    assert said == [
        "training on CPU: 1.00 s/step, about 4 min for 10 epochs (less if early stopping triggers); a GPU is far "
        "faster",  # (20 x 1 s + 5 x 0.4 s) x 10 epochs: the start-up and the warm-up steps left out
        "training on CPU, revised after the first epoch: 1.00 s/step, about 5 min for 10 epochs (the first steps "
        "said 4 min; less if early stopping triggers); a GPU is far faster"]  # (20 x 1 s + 5 x 2 s) x 10 epochs


def test_no_revision_when_the_first_epoch_agrees():
    assert len(estimates(val_step_s=0.5)) == 1  # 2.5 s of validation instead of 2 s: within a quarter


def test_a_step_budget_is_estimated_in_steps_with_its_validations():
    """lpft's budget: 40 steps, a validation every 20 (5 validation steps each) -> (20 x 1 s + 5 x 0.4 s) x 2."""
    said = estimates(val_step_s=0.4, max_steps=40, max_epochs=2, val_check_interval=20,
                     check_val_every_n_epoch=None)
    assert said[0] == ("training on CPU: 1.00 s/step, about 1 min for 40 steps (less if early stopping triggers); "
                       "a GPU is far faster")
