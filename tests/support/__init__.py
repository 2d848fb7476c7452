"""Test helpers: real LiveKit participants (phone, listener), a cloud client, and leak checks."""
