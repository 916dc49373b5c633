"""Trained text classifiers that read text: the model with its tokenizer and label names, and
the scores a classification run reports."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.data.base import TaskData
from attnlab.data.real_tasks import TextEncoder


class TextClassifier(nn.Module):
    """A trained classifier with its tokenizer: `predict(texts)` gives label names.

    Called on token ids (B, L) it is the bare model: logits (B, classes).
    """

    def __init__(self, model: nn.Module, encoder: TextEncoder, label_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.encoder, self.label_names = model, encoder, tuple(label_names)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    @torch.no_grad()
    def predict_proba(self, texts: list[str] | str) -> Tensor:
        """Class probabilities (N, classes), in the order of `label_names`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.model(self.encoder(texts)).softmax(-1)

    def predict(self, texts: list[str] | str) -> list[str]:
        """The most probable label name for each text."""
        return [self.label_names[i] for i in self.predict_proba(texts).argmax(-1).tolist()]


@torch.no_grad()
def predictions(model: nn.Module, data: TaskData, batch: int) -> Tensor:
    """Predicted class ids for every example of a classification split."""
    was_training = model.training
    model.eval()
    preds = torch.cat([model(data.inputs[i:i + batch]).argmax(-1)
                       for i in range(0, len(data), batch)])
    model.train(was_training)
    return preds


def f1_scores(preds: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """F1 of each class (0 where a class is neither predicted nor present)."""
    scores = []
    for c in range(num_classes):
        tp = int(((preds == c) & (labels == c)).sum())
        predicted, actual = int((preds == c).sum()), int((labels == c).sum())
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return scores
