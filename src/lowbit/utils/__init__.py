"""Small helpers shared across lowbit (files, hashing, memory, machine facts)."""
