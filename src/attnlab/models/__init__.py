"""Models built from attnlab.nn blocks, one readable file each; `MODELS` maps names to classes,
so a checkpoint's (name, config) rebuilds its model: `MODELS[name](**config)`."""

from attnlab.models.base import Model
from attnlab.models.decoder_lm import DecoderLM
from attnlab.models.encoder_classifier import EncoderClassifier
from attnlab.models.recommender import SequentialRecommender
from attnlab.models.seq2seq import Seq2Seq
from attnlab.models.vit import ViT

MODELS: dict[str, type[Model]] = {cls.__name__: cls for cls in (
    EncoderClassifier, DecoderLM, Seq2Seq, ViT, SequentialRecommender)}

__all__ = ["MODELS", "DecoderLM", "EncoderClassifier", "Model", "Seq2Seq",
           "SequentialRecommender", "ViT"]
