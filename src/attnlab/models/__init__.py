"""Models built from attnlab.nn blocks, one readable file each, each with one config dataclass;
`MODELS` maps a kind (`model.kind` in experiment files) to its class, so a saved (kind, config,
tensors) rebuilds its model (`load_model`). Kinds that live in a lower layer (a pretrained model
through attnlab.hf) are named in `PLUGINS` and imported when first asked for (`model_class`)."""

import importlib

from attnlab.models.base import Model, load_model, save_model
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.models.recommender import SequentialRecommender, SequentialRecommenderConfig
from attnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from attnlab.models.vit import ViT, ViTConfig

MODELS: dict[str, type[Model]] = {cls.kind: cls for cls in (
    EncoderClassifier, DecoderLM, Seq2Seq, ViT, SequentialRecommender)}
# kind -> the module that adds it to MODELS (it needs transformers, so it is imported only when used)
PLUGINS = {"pretrained_classifier": "attnlab.hf.classifier"}


def model_class(kind: str) -> type[Model]:
    """The class of a model kind, importing a plugin kind's module the first time."""
    if kind not in MODELS and kind in PLUGINS:
        importlib.import_module(PLUGINS[kind])
    return MODELS[kind]


__all__ = ["MODELS", "PLUGINS", "DecoderLM", "DecoderLMConfig", "EncoderClassifier",
           "EncoderClassifierConfig", "Model", "Seq2Seq", "Seq2SeqConfig", "SequentialRecommender",
           "SequentialRecommenderConfig", "ViT", "ViTConfig", "load_model", "model_class", "save_model"]
