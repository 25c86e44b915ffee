"""Versioned prompt templates (TOML files), shipped as package data so workers have them too."""
