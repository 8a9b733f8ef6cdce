"""Classic-model deployments (document 001, ServeML): an uploaded scikit-learn, PyTorch or Keras file and
its requirements become a scanned, isolated, versioned prediction endpoint. `formats` says what a file is,
`envs` builds the uv environment its requirements name, `sandbox` runs code from it under limits, and
`runtime/` holds the scripts that run inside that environment (standard library only, no weft)."""
