"""The public model classes. (Being moved here: the network from models/ plus checkpoint loading and generate.)"""

from .models.bart import BartForConditionalGeneration

__all__ = ["BartForConditionalGeneration"]
