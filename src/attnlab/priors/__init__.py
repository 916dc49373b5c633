"""Prior knowledge for attention: knowledge sources, trees and tables turned into masks and biases."""
