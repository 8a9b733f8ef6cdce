"""Model serving: replica planning (plan), server processes (launch) and weft's own OpenAI-compatible
transformers server (openai_server; imported lazily, it pulls in torch)."""
