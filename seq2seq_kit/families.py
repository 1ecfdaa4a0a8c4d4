"""The model families seq2seq_kit runs, by config.json `model_type`: the one list that config validation and the
Hub's early check (before any weights are downloaded) both read."""

MODEL_TYPES = ("bart", "mbart")
