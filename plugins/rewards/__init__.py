"""Reward components."""
