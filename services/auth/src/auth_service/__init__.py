"""Sites and API keys: creation, hashing, revocation, authentication."""
