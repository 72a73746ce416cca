"""What a request costs: the price table, a row's cost from its usage, and a request file's estimate.

The prices are data (``schemas/prices.json``, or a user's own file of the same shape named by
``PRICES_URI``): per model, the online price per 1M input, output and cached-input tokens, the
long-context tier where the model has one, the batch discount, with the date they were taken
and the page they came from. A model the table does not name has no price: its rows get no
cost (null), never a guess.

A row's cost is at the batch rate, from the row's own usage metadata: prompt tokens that were
not cached (plus tool-use prompt tokens) at the input price, cached tokens at the cached-input
price (Vertex bills a cache hit at the cache price, not discounted again for batch), candidate
and thinking tokens at the output price; the tier is the one the prompt falls in.

The estimate of a request file is made while it is staged, line by line (:class:`Estimator`):
input tokens from the text's bytes (``bytes_per_token``) plus a fixed count per non-text part by
MIME type, output tokens bounded by ``maxOutputTokens`` (else the model's maximum) and expected
from history or a default. The figures and how they were calibrated are in the table's
``estimator`` section.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Final

import msgspec

from shared.core.errors import PermanentError

PER_TOKENS: Final = 1_000_000  # prices are per 1M tokens
DEFAULT_MAX_OUTPUT_TOKENS: Final = 65_536  # the output bound of a model the price table does not name
PRICES_FILE: Final = "prices.json"


@dataclass(frozen=True, slots=True)
class Tier:
    """Online prices (USD per 1M tokens) of prompts up to a size."""

    input: float
    output: float
    cached_input: float
    input_audio: float | None = None  # a model that bills audio input apart


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The price of one model family at the batch rate.

    ``long_above``: prompts of more tokens than this are billed at ``long`` (None: one tier).
    """

    model: str
    base: Tier
    batch_discount: float
    max_output_tokens: int
    long_above: int | None = None
    long: Tier | None = None
    version: str = ""
    # USD per token at the batch rate (input, audio input, output, cached input) of each tier:
    # a row's cost is a few multiplications (the normalizer prices every output line).
    rates: tuple[tuple[float, float, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        paid = (1.0 - self.batch_discount) / PER_TOKENS

        def rates(tier: Tier) -> tuple[float, float, float, float]:
            audio = tier.input if tier.input_audio is None else tier.input_audio
            return (tier.input * paid, audio * paid, tier.output * paid, tier.cached_input / PER_TOKENS)

        tiers = (self.base,) if self.long is None else (self.base, self.long)
        object.__setattr__(self, "rates", tuple(rates(t) for t in tiers))

    def tier(self, prompt_tokens: int) -> Tier:
        """The tier a prompt of ``prompt_tokens`` falls in."""
        if self.long is not None and self.long_above is not None and prompt_tokens > self.long_above:
            return self.long
        return self.base

    def cost(
        self,
        prompt: int = 0,
        output: int = 0,
        thoughts: int = 0,
        cached: int = 0,
        tool_use: int = 0,
        audio: int = 0,
    ) -> float:
        """USD at the batch rate for one response's usage (thinking billed as output)."""
        rates = self.rates
        if len(rates) > 1 and self.long_above is not None and prompt > self.long_above:
            text, voice, out, cache = rates[1]
        else:
            text, voice, out, cache = rates[0]
        cached = min(cached, prompt)
        if audio:
            audio = min(audio, prompt - cached)
        usd = (prompt - cached - audio + tool_use) * text + audio * voice + (output + thoughts) * out + cached * cache
        return round(usd, 12)  # to the picodollar: 0.00003, not 0.000029999999999999997 (~0.2 µs a row)


@dataclass(frozen=True, slots=True)
class EstimatorSettings:
    """How request files are estimated (the table's ``estimator`` section)."""

    bytes_per_token: float = 4.0
    part_tokens: dict[str, int] = field(default_factory=lambda: {"*/*": 258})
    default_output_tokens: int = 512


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Every model's price, with where and when the prices were taken."""

    version: str
    models: dict[str, ModelPrice]
    estimator: EstimatorSettings
    taken: str = ""
    source: str = ""

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (an id, a publisher model or a full resource name), None when unknown.

        A model is a family of the table, or one of its versions: ``gemini-2.0-flash-001``,
        ``-latest``, ``-preview-05-20``, ``@default``. Anything else is another model with
        prices of its own (``gemini-2.5-flash-image``, ``gemini-2.5-flash-lite``), never a guess.
        """
        name = model.rsplit("/", 1)[-1].lower()
        found = _VERSIONED.fullmatch(name)
        if found is None:
            return None
        return self.models.get(found.group("family")) or self.models.get(name)


# A family and an optional version suffix (lazy: the longest suffix-free family name is tried first).
_VERSIONED: Final = re.compile(r"(?P<family>.+?)(?:-\d{3}|-latest|-(?:preview|exp)-\d{2}-\d{2,4}|@[\w.-]+)?")


def _number(value: object, where: str) -> float:
    """A finite number of at least 0 (PermanentError naming ``where``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise PermanentError(f"price table: {where} must be a finite number of at least 0, not {value!r}")
    return float(value)


def _tier(data: dict[str, Any], where: str) -> Tier:
    for name in ("input", "output", "cached_input"):
        if name not in data:
            raise PermanentError(f"price table: {where} needs numbers input, output, cached_input (no {name})")
    audio = data.get("input_audio")
    return Tier(
        _number(data["input"], f"{where}.input"),
        _number(data["output"], f"{where}.output"),
        _number(data["cached_input"], f"{where}.cached_input"),
        None if audio is None else _number(audio, f"{where}.input_audio"),
    )


def _discount(value: object, where: str) -> float:
    if _number(value, where) >= 1:
        raise PermanentError(f"price table: {where} must be a number in [0, 1), not {value!r}")
    return float(value)  # type: ignore[arg-type]


def _whole(value: object, where: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise PermanentError(f"price table: {where} must be a whole number of at least {least}, not {value!r}")
    return value


def _refuse_constant(name: str) -> float:
    raise PermanentError(f"price table: {name} is not a number")


def parse_prices(data: bytes | str) -> PriceTable:
    """Read and check a price table (PermanentError naming what is wrong)."""
    try:
        raw = json.loads(data, parse_constant=_refuse_constant)  # NaN, Infinity
    except ValueError as exc:
        raise PermanentError(f"price table: not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict) or not raw.get("version"):
        raise PermanentError('price table: needs "version" and "models" (see shared/core/schemas/prices.json)')
    version = str(raw["version"])
    discount = _discount(raw.get("batch_discount", 0.5), "batch_discount")
    models: dict[str, ModelPrice] = {}
    for name, entry in raw["models"].items():
        if not isinstance(entry, dict):
            raise PermanentError(f"price table: model {name} is not an object")
        long = entry.get("long_context")
        above = None
        if long is not None:
            if not isinstance(long, dict):
                raise PermanentError(f"price table: {name}.long_context must be an object")
            above = _whole(long.get("above_prompt_tokens"), f"{name}.long_context.above_prompt_tokens", 1)
        models[name.lower()] = ModelPrice(
            name.lower(),
            _tier(entry, name),
            _discount(entry.get("batch_discount", discount), f"{name}.batch_discount"),
            _whole(entry.get("max_output_tokens"), f"{name}.max_output_tokens", 1),
            above,
            None if long is None else _tier(long, f"{name}.long_context"),
            version,
        )
    est = raw.get("estimator") or {}
    if not isinstance(est, dict) or not isinstance(est.get("part_tokens", {}), dict):
        raise PermanentError("price table: estimator and estimator.part_tokens must be objects")
    bytes_per_token = _number(est.get("bytes_per_token", 4.0), "estimator.bytes_per_token")
    if bytes_per_token <= 0:
        raise PermanentError("price table: estimator.bytes_per_token must be positive")
    estimator = EstimatorSettings(
        bytes_per_token,
        {
            str(k): _whole(v, f"estimator.part_tokens.{k}", 0)
            for k, v in (est.get("part_tokens") or {"*/*": 258}).items()
        },
        _whole(est.get("default_output_tokens", 512), "estimator.default_output_tokens", 0),
    )
    return PriceTable(version, models, estimator, str(raw.get("taken", "")), str(raw.get("source", "")))


@cache
def default_prices() -> PriceTable:
    """The table shipped with the code."""
    return parse_prices(resources.files("shared.core.schemas").joinpath(PRICES_FILE).read_bytes())


# The estimator's view of a request line: only what it counts is decoded (in C). Text is kept
# raw (its JSON bytes, quotes and escapes included: a few bytes more than the text, never less).
class _Blob(msgspec.Struct):
    mimeType: Any = None
    mime_type: Any = None


_ABSENT: Final = msgspec.Raw()  # an absent member (a present null is b"null")
_NULL: Final = b"null"


def _present(raw: msgspec.Raw) -> bool:
    """A member that is there and not null (a Raw is compared by its bytes only when it could be null)."""
    return bool(raw) and (len(raw) != len(_NULL) or bytes(raw) != _NULL)


class _Part(msgspec.Struct):
    text: msgspec.Raw = _ABSENT
    inlineData: _Blob | None = None
    inline_data: _Blob | None = None
    fileData: _Blob | None = None
    file_data: _Blob | None = None
    functionCall: msgspec.Raw = _ABSENT
    function_call: msgspec.Raw = _ABSENT
    functionResponse: msgspec.Raw = _ABSENT
    function_response: msgspec.Raw = _ABSENT


class _Content(msgspec.Struct):
    parts: list[_Part] | None = None


class _Config(msgspec.Struct):
    maxOutputTokens: Any = None
    max_output_tokens: Any = None


class _Request(msgspec.Struct):
    contents: list[_Content] | None = None
    systemInstruction: _Content | None = None
    system_instruction: _Content | None = None
    tools: msgspec.Raw = _ABSENT
    generationConfig: _Config | None = None
    generation_config: _Config | None = None


class _Line(msgspec.Struct):
    request: _Request | None = None


_DECODER: Final = msgspec.json.Decoder(_Line)


STATE_SIZE: Final = 7  # see Estimator.state


class Estimator:
    """Counts a request file's expected tokens line by line (kept across checkpoints).

    Its state (:meth:`state`) is ``[requests, input_tokens, output_bound, long_requests,
    long_input_tokens, long_output_bound, audio_tokens]``: all requests, then those whose prompt
    is past the model's long-context threshold (billed at the long tier), then the input tokens of
    audio parts (billed at the audio price where the model has one). ``output_bound`` is the most
    output (and thinking) tokens the requests can produce.
    """

    __slots__ = ("bytes_per_token", "counts", "long_above", "max_output", "part_tokens")

    def __init__(
        self,
        settings: EstimatorSettings,
        max_output_tokens: int,
        state: list[int] | None = None,
        long_above: int | None = None,
    ) -> None:
        self.bytes_per_token = settings.bytes_per_token
        self.part_tokens = settings.part_tokens
        self.max_output = max_output_tokens
        self.long_above = long_above
        self.counts: list[int] = [*(state or ()), *[0] * STATE_SIZE][:STATE_SIZE]  # a shorter (older) state: zeros

    @classmethod
    def for_price(
        cls, settings: EstimatorSettings, price: ModelPrice | None, state: list[int] | None = None
    ) -> Estimator:
        """An estimator for a model (its maximum output, its long-context threshold); a default without a price."""
        if price is None:
            return cls(settings, DEFAULT_MAX_OUTPUT_TOKENS, state)
        return cls(settings, price.max_output_tokens, state, price.long_above if price.long is not None else None)

    @property
    def input_tokens(self) -> int:
        """Estimated prompt tokens so far."""
        return self.counts[1]

    def state(self) -> list[int]:
        """What :meth:`__init__` goes on from."""
        return list(self.counts)

    def add(self, line: bytes) -> tuple[int, ...]:
        """Count one valid request line; returns its own counts (the shape of :meth:`state`)."""
        try:
            request = _DECODER.decode(line).request
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            request = None  # a shape the estimator does not read: its bytes count as text
        text_bytes = fixed = audio = 0
        bound = self.max_output
        if request is None:
            text_bytes = len(line)
        else:
            contents = list(request.contents or ())
            system = request.systemInstruction or request.system_instruction
            if system is not None:
                contents.append(system)
            for content in contents:
                for part in content.parts or ():
                    text = part.text
                    if _present(text):
                        text_bytes += len(text) - 2  # its quotes
                        continue
                    blob = part.inlineData or part.inline_data or part.fileData or part.file_data
                    if blob is not None:
                        mime = blob.mimeType or blob.mime_type
                        tokens = self.media_tokens(mime)
                        fixed += tokens
                        if isinstance(mime, str) and mime.lower().startswith("audio/"):
                            audio += tokens
                        continue
                    for raw in (part.functionCall, part.function_call, part.functionResponse, part.function_response):
                        if _present(raw):
                            text_bytes += len(raw)
            if _present(request.tools):
                text_bytes += len(request.tools)
            config = request.generationConfig or request.generation_config
            if config is not None:
                limit = config.maxOutputTokens if config.maxOutputTokens is not None else config.max_output_tokens
                if type(limit) is int and 0 < limit < bound:
                    bound = limit
        tokens = math.ceil(max(text_bytes, 0) / self.bytes_per_token) + fixed
        long = self.long_above is not None and tokens > self.long_above
        mine = (1, tokens, bound, 1, tokens, bound, 0) if long else (1, tokens, bound, 0, 0, 0, audio)
        counts = self.counts
        for i, value in enumerate(mine):
            counts[i] += value
        return mine

    def media_tokens(self, mime: object) -> int:
        """The fixed count of a non-text part: its MIME type, else its kind (``image/*``), else ``*/*``."""
        table = self.part_tokens
        if isinstance(mime, str):
            mime = mime.lower()
            found = table.get(mime)
            if found is None:
                found = table.get(mime.split("/", 1)[0] + "/*")
            if found is not None:
                return found
        return table.get("*/*", 0)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected and worst-case cost of some requests of one model."""

    requests: int
    input_tokens: int
    output_bound: int  # maxOutputTokens (else the model's maximum) summed
    expected_output: float
    expected_usd: float | None  # None: the model has no price
    worst_usd: float | None
    output_basis: str  # "history" (average of the model's rows), "given", or "default"
    output_per_request: float
    price_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the run record, reports, the CLI's ``--json``)."""
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens_bound": self.output_bound,
            "output_tokens_expected": round(self.expected_output),
            "output_basis": self.output_basis,
            "output_per_request": round(self.output_per_request, 3),
            "expected_usd": None if self.expected_usd is None else round(self.expected_usd, 9),
            "worst_case_usd": None if self.worst_usd is None else round(self.worst_usd, 9),
            "price_version": self.price_version,
        }


def estimate(
    state: list[int] | list[float], price: ModelPrice | None, output_per_request: float, basis: str = "default"
) -> Estimate:
    """The estimate of requests counted by an :class:`Estimator` (``state``; a share of it for a retry).

    Expected output: ``output_per_request`` a request, never more than the requests' bound; the
    requests past the long-context threshold at the long tier. Linear in the counts: the
    estimates of a run's chunks add up to the run's.
    """
    requests, input_tokens, bound, long_requests, long_input, long_bound, audio = [
        *state,
        *[0] * STATE_SIZE,
    ][:STATE_SIZE]
    expected_long = min(long_bound, output_per_request * long_requests)
    expected_base = min(bound - long_bound, output_per_request * (requests - long_requests))
    made = {
        "requests": round(requests),
        "input_tokens": round(input_tokens),
        "output_bound": round(bound),
        "expected_output": expected_base + expected_long,
        "output_basis": basis,
        "output_per_request": output_per_request,
    }
    if price is None:
        return Estimate(**made, expected_usd=None, worst_usd=None)
    base = price.rates[0]
    long = price.rates[-1]
    text_in, audio_in, out = base[0], base[1], base[2]
    input_usd = (input_tokens - long_input - audio) * text_in + audio * audio_in + long_input * long[0]
    return Estimate(
        **made,
        expected_usd=input_usd + expected_base * out + expected_long * long[2],
        worst_usd=input_usd + (bound - long_bound) * out + long_bound * long[2],
        price_version=price.version,
    )
