"""Prices, a row's cost and a file's estimate, on hand-computed examples."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from local.vertex.responder import respond
from shared.core.cost import Estimator, EstimatorSettings, ModelPrice, Tier, default_prices, estimate, parse_prices
from shared.core.errors import PermanentError
from shared.core.normalize import MISSING, Normalizer, RowContext, missing_row
from shared.core.validate import ValidationOptions, ValidationSummary, scan

ROOT = Path(__file__).parents[2]
PRO = default_prices().price("gemini-2.5-pro")
FLASH = default_prices().price("gemini-2.5-flash")


def test_price_lookup_takes_the_longest_family_and_knows_versions_and_resource_names() -> None:
    table = default_prices()
    assert table.price("gemini-2.5-flash") is FLASH
    assert table.price("gemini-2.5-flash-lite").model == "gemini-2.5-flash-lite"  # type: ignore[union-attr]
    assert table.price("gemini-2.0-flash-001").model == "gemini-2.0-flash"  # type: ignore[union-attr]
    assert table.price("publishers/google/models/gemini-2.5-pro").model == "gemini-2.5-pro"  # type: ignore[union-attr]
    path = "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash@001"
    assert table.price(path) is FLASH
    assert table.price("gemini-2.5-flashy") is None  # not a version of a family
    assert table.price("my-tuned-model") is None
    assert table.price("gemini-2.5-flash-preview-05-20") is FLASH and table.price("gemini-2.5-flash-latest") is FLASH
    # Another model with prices of its own (image output) is not its base model's: no price, not a guess.
    assert table.price("gemini-2.5-flash-image") is None
    assert table.price("gemini-2.0-flash-preview-image-generation") is None


def test_non_numbers_in_a_price_table_are_refused() -> None:
    with pytest.raises(PermanentError, match="not a number"):
        parse_prices(b'{"version": "v", "models": {"m": {"input": NaN, "output": 1, "cached_input": 0}}}')


def test_the_shipped_table_says_where_and_when_it_was_taken() -> None:
    table = default_prices()
    assert table.version and table.taken and "cloud.google.com/vertex-ai/generative-ai/pricing" in table.source
    for price in table.models.values():
        assert price.batch_discount == 0.5
        assert 0 < price.base.cached_input <= price.base.input < price.base.output


def test_cost_at_the_batch_rate_with_thinking_billed_as_output() -> None:
    assert PRO is not None
    # 1,000 prompt tokens at 1.25, 200 output + 300 thinking at 10.00, all halved.
    assert PRO.cost(prompt=1000, output=200, thoughts=300) == pytest.approx((1000 * 1.25 + 500 * 10.0) / 2 / 1e6)


def test_cached_tokens_pay_the_cache_price_not_halved_again() -> None:
    assert FLASH is not None
    # 10,000 prompt tokens of which 8,000 cached: 2,000 at 0.30 / 2, 8,000 at 0.03; 100 output at 2.50 / 2.
    expected = (2000 * 0.30 / 2 + 8000 * 0.03 + 100 * 2.50 / 2) / 1e6
    assert FLASH.cost(prompt=10_000, output=100, cached=8000) == pytest.approx(expected)
    # A cached count above the prompt (a malformed line) is the prompt.
    assert FLASH.cost(prompt=10, cached=50) == pytest.approx(10 * 0.03 / 1e6)


def test_a_long_prompt_bills_every_token_at_the_long_context_tier() -> None:
    assert PRO is not None
    at_limit = PRO.cost(prompt=200_000, output=1000)
    above = PRO.cost(prompt=200_001, output=1000, cached=1)
    assert at_limit == pytest.approx((200_000 * 1.25 + 1000 * 10.0) / 2 / 1e6)
    assert above == pytest.approx((200_000 * 2.50 + 1000 * 15.0) / 2 / 1e6 + 1 * 0.25 / 1e6)


def test_audio_and_tool_use_prompt_tokens() -> None:
    assert FLASH is not None
    # 1,000 prompt tokens of which 600 audio (1.00), 400 text (0.30); 50 tool-use prompt tokens at the input price.
    expected = (400 * 0.30 + 600 * 1.00 + 50 * 0.30) / 2 / 1e6
    assert FLASH.cost(prompt=1000, tool_use=50, audio=600) == pytest.approx(expected)


def test_rows_get_their_cost_and_the_table_version_and_unknown_models_none() -> None:
    line = orjson.dumps(
        {
            "key": "k",
            "status": "",
            "response": {
                "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
                "usageMetadata": {
                    "promptTokenCount": 1000,
                    "candidatesTokenCount": 10,
                    "thoughtsTokenCount": 20,
                    "cachedContentTokenCount": 200,
                    "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 300}, {"modality": "TEXT"}],
                },
            },
        }
    )
    assert FLASH is not None
    priced = RowContext("r", price=FLASH)
    fast, facts = Normalizer(priced).ndjson_with_facts(line)
    row = Normalizer(priced).row(line)
    expected = (500 * 0.30 / 2 + 300 * 1.00 / 2 + 200 * 0.03 + 30 * 2.50 / 2) / 1e6
    assert facts["cost_usd"] == pytest.approx(expected) == row["cost_usd"]
    assert orjson.loads(fast)["price_version"] == row["price_version"] == default_prices().version
    failed = Normalizer(priced).row(b'{"key": "f", "status": "Internal error", "response": null}')
    assert failed["cost_usd"] == 0.0  # no usage: nothing billed
    assert Normalizer(priced).row(b"not json")["cost_usd"] == 0.0
    assert missing_row("m", priced)["cost_usd"] == 0.0 and missing_row("m", priced)["outcome"] == MISSING
    unpriced = Normalizer(RowContext("r"))
    assert unpriced.row(line)["cost_usd"] is None and unpriced.row(line)["price_version"] is None
    assert "cost_usd" not in unpriced.ndjson_with_facts(line)[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("version"), '"version" and "models"'),
        (lambda t: t["models"]["gemini-2.5-pro"].update(input=-1), "input must be a finite number of at least 0"),
        (lambda t: t["models"]["gemini-2.5-pro"].update(output="NaN"), "output must be a finite number"),
        (lambda t: t["models"]["gemini-2.5-pro"].update(batch_discount=1.5), "batch_discount must be a number in"),
        (lambda t: t["models"]["gemini-2.5-pro"].update(batch_discount="half"), "batch_discount must be a finite"),
        (
            lambda t: t["models"]["gemini-2.5-pro"].update(max_output_tokens=65536.0),
            "max_output_tokens must be a whole",
        ),
        (lambda t: t["models"]["gemini-2.5-pro"]["long_context"].update(above_prompt_tokens=0), "above_prompt_tokens"),
        (lambda t: t["estimator"]["part_tokens"].update({"image/*": -1}), "part_tokens"),
        (lambda t: t["models"]["gemini-2.5-pro"].pop("output"), "needs numbers"),
        (lambda t: t["models"]["gemini-2.5-pro"]["long_context"].pop("above_prompt_tokens"), "above_prompt_tokens"),
        (lambda t: t["models"]["gemini-2.5-pro"].update(max_output_tokens=0), "max_output_tokens"),
        (lambda t: t.update(batch_discount=1.5), "batch_discount"),
        (lambda t: t["estimator"].update(bytes_per_token=0), "bytes_per_token"),
    ],
)
def test_a_bad_price_table_is_refused_with_what_is_wrong(change: Any, message: str) -> None:
    table = orjson.loads((ROOT / "shared/core/schemas/prices.json").read_bytes())
    change(table)
    with pytest.raises(PermanentError, match=message):
        parse_prices(orjson.dumps(table))


def _request(parts: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"request": {"contents": [{"role": "user", "parts": parts}], **extra}})


def test_the_estimator_counts_text_bytes_media_by_type_system_text_and_the_output_bound() -> None:
    settings = EstimatorSettings(4.0, {"image/*": 1000, "application/pdf": 500, "audio/*": 300, "*/*": 7}, 512)
    estimator = Estimator(settings, max_output_tokens=8192, long_above=2000)
    text = "x" * 40  # 10 tokens
    assert estimator.add(_request([{"text": text}])) == (1, 10, 8192, 0, 0, 0, 0)
    image = {"fileData": {"fileUri": "gs://b/i.png", "mimeType": "image/png"}}
    pdf = {"inline_data": {"mime_type": "application/pdf", "data": "QUJD" * 1000}}  # its bytes are not text
    odd = {"fileData": {"fileUri": "gs://b/x", "mimeType": "model/gltf"}}
    voice = {"fileData": {"fileUri": "gs://b/a.mp3", "mimeType": "audio/mpeg"}}
    config = {"generationConfig": {"maxOutputTokens": 100}, "systemInstruction": {"parts": [{"text": "y" * 8}]}}
    tokens = 10 + 2 + 1000 + 500 + 7 + 300
    assert estimator.add(_request([{"text": text}, image, pdf, odd, voice], **config)) == (1, tokens, 100, 0, 0, 0, 300)
    assert estimator.add(b'{"request": {"contents": "odd"}}') == (1, 8, 8192, 0, 0, 0, 0)  # its bytes as text
    long = estimator.add(_request([{"text": "z" * 8004}]))  # 2,001 tokens: past the threshold
    assert long == (1, 2001, 8192, 1, 2001, 8192, 0)
    assert estimator.state() == [4, 10 + tokens + 8 + 2001, 8192 + 100 + 8192 + 8192, 1, 2001, 8192, 300]
    again = Estimator(settings, 8192, estimator.state())  # goes on from a checkpoint
    again.add(_request([{"text": text}]))
    assert again.state()[0] == 5
    assert Estimator(settings, 8192, [3, 30, 90]).state() == [3, 30, 90, 0, 0, 0, 0]  # a state of an earlier release


def test_estimate_expected_and_worst_case_by_hand() -> None:
    assert FLASH is not None and PRO is not None
    # 10 requests, 50,000 input tokens (2,000 of them audio), bound 10 x 1,000: 300 output each.
    made = estimate([10, 50_000, 10_000, 0, 0, 0, 2000], FLASH, 300.0, "history")
    assert made.expected_output == 3000 and made.output_basis == "history"
    input_usd = (48_000 * 0.30 + 2000 * 1.00) / 2 / 1e6
    assert made.expected_usd == pytest.approx(input_usd + 3000 * 2.50 / 2 / 1e6)
    assert made.worst_usd == pytest.approx(input_usd + 10_000 * 2.50 / 2 / 1e6)
    capped = estimate([10, 50_000, 1000], FLASH, 512.0)  # 512 a request is above the bound: the bound
    assert capped.expected_output == 1000 and capped.output_basis == "default"
    assert estimate([1, 10, 10], None, 512.0).expected_usd is None
    # gemini-2.5-pro: 3 requests, one of 250,000 prompt tokens (the long tier), 300 output each.
    tiered = estimate([3, 252_000, 3000, 1, 250_000, 1000, 0], PRO, 300.0)
    base_usd = (2000 * 1.25 + 600 * 10.0) / 2 / 1e6
    long_usd = (250_000 * 2.50 + 300 * 15.0) / 2 / 1e6
    assert tiered.expected_usd == pytest.approx(base_usd + long_usd)
    assert tiered.worst_usd == pytest.approx((2000 * 1.25 + 2000 * 10.0 + 250_000 * 2.50 + 1000 * 15.0) / 2 / 1e6)


def test_estimates_of_parts_add_up_to_the_whole() -> None:
    assert PRO is not None
    whole = estimate([10, 5000, 10_000, 1, 300_000, 1000, 40], PRO, 200.0)
    half = estimate([v * 0.5 for v in (10, 5000, 10_000, 1, 300_000, 1000, 40)], PRO, 200.0)
    assert whole.expected_usd == pytest.approx(2 * half.expected_usd)  # type: ignore[operator]


def test_the_estimators_error_on_real_vertex_usage_is_under_one_percent() -> None:
    """The fixtures' real lines (gemini-2.5-flash): Vertex counted 1,812 prompt tokens for each."""
    table = default_prices()
    for raw in (ROOT / "tests/fixtures/outputs/vertex_real.jsonl").read_bytes().splitlines():
        line = orjson.loads(raw)
        estimator = Estimator(table.estimator, 65_536)
        tokens = estimator.add(orjson.dumps({"request": line["request"]}))[1]
        real = line["response"]["usageMetadata"]["promptTokenCount"]
        assert abs(tokens - real) / real < 0.01


def test_the_estimators_error_on_the_emulators_text_requests_is_under_ten_percent() -> None:
    """examples/requests.jsonl's text requests through the Vertex emulator's own counts (they follow the text)."""
    table = default_prices()
    estimated = counted = 0
    for scanned in scan(
        io.BytesIO((ROOT / "examples/requests.jsonl").read_bytes()), ValidationOptions(), ValidationSummary()
    ):
        request = orjson.loads(scanned.data)["request"]
        if any("text" not in part for content in request["contents"] for part in content["parts"]):
            continue  # media: the emulator counts 258 an image, the estimator a photo's 1,806
        answer = respond(scanned.key, request, "gemini-2.5-flash", "2026-12-07T00:00:00Z", set())
        if answer.response is None:
            continue  # an injected fault: nothing counted
        estimated += Estimator(table.estimator, 65_536).add(scanned.keyed().data)[1]
        counted += answer.response["usageMetadata"]["promptTokenCount"]
    assert counted > 100
    assert abs(estimated - counted) / counted < 0.10


def test_model_price_is_a_plain_value() -> None:
    price = ModelPrice("m", Tier(1.0, 2.0, 0.1), 0.5, 10)
    assert price.tier(10**9) is price.base  # one tier
    assert price.cost() == 0.0
