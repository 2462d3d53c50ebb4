"""Small utilities shared across mmmask."""
