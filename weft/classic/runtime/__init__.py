"""The scripts that run inside an uploaded classic model's own environment: `inspect_model.py` (load, describe,
one probe prediction) and `server.py` (the HTTP prediction server), both on `loader.py`.

They run as files with that environment's Python, which holds only the user's packages: they import the
standard library, numpy and the model's framework, never weft.
"""
