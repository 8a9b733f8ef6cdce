"""Model security scanning: pickles (modelscan + picklescan), safetensors and GGUF headers, shipped code."""
