"""A wire-compatible Vertex AI batch prediction emulator with an offline, deterministic model."""
