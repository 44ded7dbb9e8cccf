"""The time budget is shared by the views: their training seconds add up to it."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from synthetic import write_dataset

from minc_keras.data.prepare import prepare
from minc_keras.training import TrainOptions, train
from minc_keras.training.callbacks import BestAndLast, TimeBudget

BUDGET_MINUTES = 0.4


def test_the_views_training_seconds_add_up_to_the_budget(tmp_path, monkeypatch):
    """Each view's network gets what the ones before it left: the sum is the budget.

    The sum may pass it by one step, the one that crossed the last deadline (a training
    batch, and the validation and checkpoint of an epoch ending before it), and by the
    last validation and checkpoint after it.
    """
    source = write_dataset(tmp_path / "source", n_subjects=4)
    target = tmp_path / "run"
    prepare(source, target, input_str="T1w_anat", label_str="seg", ratios=(0.5, 0.5),
            quiet=True)
    fits: list[list[float]] = []  # per network: when training began, then each batch ended
    ended: list[float] = []  # when each network's training wrote its final state
    batch_end, write_state = TimeBudget.on_train_batch_end, BestAndLast.write_state

    def begin(self, logs=None):
        fits.append([time.perf_counter()])

    def end(self, batch, logs=None):
        fits[-1].append(time.perf_counter())
        return batch_end(self, batch, logs)

    def final_state(self, *, complete):
        ended.append(time.perf_counter())
        return write_state(self, complete=complete)

    monkeypatch.setattr(TimeBudget, "on_train_begin", begin, raising=False)
    monkeypatch.setattr(TimeBudget, "on_train_batch_end", end)
    monkeypatch.setattr(BestAndLast, "write_state", final_state)
    options = TrainOptions(model_type="unet", nK=[4], epochs=1000, batch_size=4,
                           views=["axial", "coronal"], time_budget=BUDGET_MINUTES,
                           schedule="cosine")
    result = train(target, options, quiet=True)

    states = sorted((target / "model" / "checkpoints").glob("state*.json"))
    assert [p.name for p in states] == ["state.json", "state_coronal.json"]
    seconds = [json.loads(p.read_text())["seconds"] for p in states]
    assert sum(seconds) == pytest.approx(result.seconds, abs=1.0)
    assert len(fits) == 2
    one_step = max(b - a for times in fits for a, b in itertools.pairwise(times))
    after_last_batch = ended[-1] - fits[-1][-1]  # the last validation and checkpoint
    budget = BUDGET_MINUTES * 60
    assert sum(seconds) <= budget + one_step + after_last_batch, (seconds, one_step,
                                                                  after_last_batch)
    assert sum(seconds) >= 0.9 * budget  # and the networks used it
    assert all(len(h["loss"]) < 1000 for h in result.histories.values())
