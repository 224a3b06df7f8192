"""Auth service: sites, API keys (hashed at rest), scopes and authentication for other services."""
