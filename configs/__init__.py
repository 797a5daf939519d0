"""Settings and the shipped TOML profiles (embedded, production)."""
