"""The local cloud: real emulators, our Vertex batch emulator, and the event bridge.

``python -m local up|down|status`` starts, checks and stops it; see local/README.md.
"""
