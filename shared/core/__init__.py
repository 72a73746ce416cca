"""Pure core: parsing, validation, keys, the normalizer and the schema.

Standard library and orjson only: no google.*, no environment, no network, no clock.
"""
