"""The price table and the monthly cost model: editable prices, clear errors, break-even arithmetic."""

from __future__ import annotations

import pytest

from taxonomist.compare.costs import CostModel, PriceTable, break_even_volume, load_prices
from taxonomist.errors import ExperimentError


def test_default_prices_load_from_the_package():
    prices = load_prices()
    assert prices.llm_input_per_1m > prices.llm_cached_input_per_1m > 0
    assert prices.serve_hours_per_month == 730
    assert "defaults" in prices.source


def test_user_price_table_overrides_only_what_it_names(tmp_path):
    (tmp_path / "p.yaml").write_text("llm_api:\n  input_per_1m_tokens: 3.0\ncompute:\n  train_gpu_per_hour: 1.2\n")
    prices = load_prices(tmp_path / "p.yaml")
    assert prices.llm_input_per_1m == 3.0 and prices.train_gpu_per_hour == 1.2
    assert prices.llm_output_per_1m == PriceTable().llm_output_per_1m


@pytest.mark.parametrize(
    "text, match",
    [
        ("llm_api:\n  input_per_1m_tokens: cheap\n", "'llm_api.input_per_1m_tokens' is 'cheap'; expected a number"),
        ("compute:\n  tpu_per_hour: 1\n", "unknown price 'compute.tpu_per_hour'"),
        ("gpu:\n  x: 1\n", "unknown section 'gpu'"),
        ("compute:\n  serve_cpu_per_hour: -1\n", "non-negative"),
    ],
)
def test_bad_price_table_names_the_price(tmp_path, text, match):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ExperimentError, match=match):
        load_prices(tmp_path / "p.yaml")


def test_missing_price_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ExperimentError, match="copy taxonomist/prices.yaml"):
        load_prices(tmp_path / "nope.yaml")


def test_llm_cost_counts_cached_tokens_at_the_cached_price():
    prices = PriceTable(llm_input_per_1m=1.0, llm_cached_input_per_1m=0.1, llm_output_per_1m=4.0)
    assert prices.llm_cost(1_000_000, 0, 0) == pytest.approx(1.0)
    assert prices.llm_cost(1_000_000, 0, 1_000_000) == pytest.approx(0.1)
    assert prices.llm_cost(1000, 500, 800) == pytest.approx((200 * 1.0 + 800 * 0.1 + 500 * 4.0) / 1e6)


def test_self_hosted_cost_includes_serving_and_retraining():
    prices = PriceTable(serve_cpu_per_hour=0.1, serve_hours_per_month=730, train_cpu_per_hour=0.36,
                        retrain_review_hours=1.0, staff_per_hour=50.0)
    m = CostModel.self_hosted("t", prices=prices, seconds_per_item=0.036, train_seconds=100, retrains_per_month=2)
    assert m.per_item == pytest.approx(0.036 / 3600 * 0.1)
    assert m.fixed_per_month == pytest.approx(73.0 + 2 * (100 / 3600 * 0.36 + 50.0))
    assert m.monthly(1000) == pytest.approx(m.fixed_per_month + 1000 * m.per_item)


def test_break_even_volume():
    trained = CostModel("trained", per_item=0.00001, fixed_per_month=100.0)
    api = CostModel("api", per_item=0.00051, fixed_per_month=0.0)
    v = break_even_volume(trained, api)
    assert v == pytest.approx(100.0 / 0.0005)
    assert trained.monthly(v) == pytest.approx(api.monthly(v))
    assert break_even_volume(api, trained) == pytest.approx(v)
    # One approach cheaper at every volume: no break-even.
    assert break_even_volume(CostModel("a", 0.1, 10.0), CostModel("b", 0.2, 20.0)) is None
    assert break_even_volume(CostModel("a", 0.1, 10.0), CostModel("b", 0.1, 20.0)) is None
