"""Small shared helpers (config parsing, file I/O)."""
