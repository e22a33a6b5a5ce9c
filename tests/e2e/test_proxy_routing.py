"""Every `/proxy` target reaches the proxy pipeline, whatever its decoded path holds.

aiohttp matches routes against the percent-decoded path. The catch-all once used `.*`,
which stops at a newline, so `/proxy/a%0Ab` fell through to aiohttp's bare text/plain 404
(found by tests/e2e/test_fuzz_no_5xx.py). The pipeline's own answer proves it ran: an
unknown connection is a 404 in our envelope with `X-Authgate-Error`.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Authgate, json_of


@pytest.mark.parametrize("raw_target", ["/proxy/a%0Ab", "/proxy%0A", "/proxy/%0D%0A/x?y=%0A"])
async def test_a_target_with_an_encoded_line_break_reaches_the_pipeline(
    authgate: Authgate, raw_target: str
) -> None:
    response = await authgate.proxy("GET", raw_target, connection_id="nobody")
    assert response.status == 404, await response.text()
    assert response.headers["X-Authgate-Error"] == "unknown_connection"
    assert (await json_of(response))["error"]["code"] == "unknown_connection"


async def test_a_target_beside_the_prefix_is_a_clear_error(authgate: Authgate) -> None:
    await authgate.integration("oauth", "fake-oauth")
    await authgate.connection("oauth", "conn-1", {"type": "OAUTH2", "access_token": "at-1"})
    response = await authgate.proxy("GET", "/proxy%2Fusers", connection_id="conn-1")
    assert response.status == 400, await response.text()
    assert (await json_of(response))["error"]["code"] == "invalid_request"
