"""seq2seq_kit: BART-family summarization and translation (BART, mBART, Pegasus, Marian, M2M100, NLLB) from Hugging
Face checkpoints, without transformers."""

from .config import BartConfig
from .modeling import AutoModelForSeq2SeqLM, BartForConditionalGeneration
from .generation import GenerationConfig
from .engine import Engine, EngineClosed, EngineFull
from .tokenizer import Tokenizer
from .family_tokenizers import AutoTokenizer
from .translation import pipeline
from .corpus import summarize_corpus, translate_corpus

__all__ = ["AutoModelForSeq2SeqLM", "AutoTokenizer", "BartConfig", "BartForConditionalGeneration", "Engine", "EngineClosed",
           "EngineFull", "GenerationConfig", "Tokenizer", "pipeline", "summarize_corpus", "translate_corpus"]
__version__ = "0.1.0"
