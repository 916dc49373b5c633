"""Prior knowledge as attention: knowledge graphs, trees and rules turned into masks and biases."""

from attnlab.priors import rules as rules  # registers the built-in named rules
