"""Fine-tuning with transformers + peft + trl: validated configs, storage checkpoints, resumable runs."""
