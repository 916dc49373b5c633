"""Models built from attnlab.nn blocks, one readable file each, each with one config dataclass;
`MODELS` maps a kind (`model.kind` in experiment files) to its class, so a saved (kind, config,
tensors) rebuilds its model (`load_model`)."""

from attnlab.models.base import Model, load_model, save_model
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.models.recommender import SequentialRecommender, SequentialRecommenderConfig
from attnlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from attnlab.models.vit import ViT, ViTConfig

MODELS: dict[str, type[Model]] = {cls.kind: cls for cls in (
    EncoderClassifier, DecoderLM, Seq2Seq, ViT, SequentialRecommender)}

__all__ = ["MODELS", "DecoderLM", "DecoderLMConfig", "EncoderClassifier", "EncoderClassifierConfig", "Model",
           "Seq2Seq", "Seq2SeqConfig", "SequentialRecommender", "SequentialRecommenderConfig", "ViT",
           "ViTConfig", "load_model", "save_model"]
