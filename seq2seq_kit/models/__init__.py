"""BART-family networks and their decoding state (KV caches, the CUDA-graphed step). Imports nothing from
seq2seq_kit.generation, loading, hub, pipeline, corpus or cli."""
