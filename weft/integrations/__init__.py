"""Third-party services weft talks to for its users (RelayCore: a dealer-management system)."""
