"""The rates a model that learnt nothing scores, logged with every run for the reports."""
import torch

from fusionbench.train import reference_rates


def test_chance_and_majority_of_an_unbalanced_test_split():
    labels = torch.tensor([2, 2, 2, 0, 1, 2, 0])  # class 2 holds 4 of 7; class 3 is absent
    rates = reference_rates(labels, num_classes=4, multilabel=False)
    assert rates == {"data/num_classes": 4.0, "data/chance": 0.25, "data/majority_test": 4 / 7}


def test_multilabel_logs_only_the_class_count():
    labels = torch.zeros(3, 5)
    assert reference_rates(labels, num_classes=5, multilabel=True) == {"data/num_classes": 5.0}
