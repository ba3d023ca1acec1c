"""Capacity planning: engine profiles measured on the real engine, a compiled cluster
simulator fed by traces, and the provisioning search (smallest N meeting SLOs)."""
from .profile import Profile, ProfileError, load_profile, save_profile

__all__ = ["Profile", "ProfileError", "load_profile", "save_profile"]
