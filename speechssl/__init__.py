"""speechssl."""
