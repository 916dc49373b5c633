"""Prior knowledge as attention: knowledge graphs, trees and rules turned into masks and biases."""

from attnlab.priors import inputs as inputs  # registers the priors models compute per batch
from attnlab.priors import kbert as kbert  # registers K-BERT for text classifiers
from attnlab.priors import rules as rules  # registers the built-in named rules
