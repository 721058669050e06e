"""Fixtures shared by the tests of descend.nn."""

import pytest


@pytest.fixture(params=["stepwise", "outputs-first"])
def lstm_forward(request, monkeypatch):
    """Run the explicit LSTM path with each of its two forwards (chosen by step size)."""
    from descend.nn import recurrent

    monkeypatch.setattr(recurrent, "_STEPWISE_MIN_WORK", 0 if request.param == "stepwise" else 2**62)
    return request.param
