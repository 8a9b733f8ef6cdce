"""The model registry's services: where a model's artifacts are, download links, the streamed ZIP with its
model card, and creating, updating and deleting model records (documents 002 and 003)."""
