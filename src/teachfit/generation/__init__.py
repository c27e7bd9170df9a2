"""Text generation: the backend protocol, the transformers / vLLM / OpenAI-compatible backends,
the backend factory and the sharded, resumable driver."""
