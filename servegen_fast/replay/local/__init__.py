"""On-device replay: the engine interface, its adapters (transformers, vLLM), the models they
load and the release loop that drives them. torch is imported only when an engine is made."""
