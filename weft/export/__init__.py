"""Exporting a fine-tuned model: merge a peft adapter into its base, write a llama.cpp GGUF, check it."""
