"""The emulator's Logs Ingestion endpoint over real sockets: audience, rule and stream, gzip, the
1 MiB limit, 429 faults and the ground truth of every row received."""

from __future__ import annotations

import gzip
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from monitor.emulator import Emulator, EmulatorSettings, running_emulator
from monitor.emulator.ingestion import EMULATOR_RULE_ID, EMULATOR_STREAM, IngestionSettings

API = "api-version=2023-01-01"
PATH = f"/dataCollectionRules/{EMULATOR_RULE_ID}/streams/{EMULATOR_STREAM}?{API}"
MONITOR_SCOPE = "https://monitor.azure.com//.default"  # as the SDK asks for it


@pytest.fixture(name="emu")
async def _emu() -> AsyncIterator[Emulator]:
    settings = EmulatorSettings(ingestion=IngestionSettings(retry_after_s=7))
    async with running_emulator(settings) as emulator:
        yield emulator


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def token_for(http: aiohttp.ClientSession, emu: Emulator, scope: str) -> str:
    """A client-credentials token from the emulator's token endpoint for `scope`."""
    form = {
        "grant_type": "client_credentials",
        "client_id": "ingest-app",
        "client_secret": emu.arm.settings.client_secret,
        "scope": scope,
    }
    async with http.post(f"{emu.url}/{emu.tenant_id}/oauth2/v2.0/token", data=form) as response:
        assert response.status == 200
        return str((await response.json())["access_token"])


async def post(
    http: aiohttp.ClientSession,
    emu: Emulator,
    body: bytes,
    *,
    token: str,
    path: str = PATH,
    gzipped: bool = False,
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    # A BytesIO: aiohttp warns about a body over 1 MiB given as bytes.
    async with http.post(emu.url + path, data=io.BytesIO(body), headers=headers) as response:
        raw = await response.read()
        return response.status, response.headers, orjson.loads(raw) if raw else None


async def ground_truth(http: aiohttp.ClientSession, emu: Emulator) -> dict[str, Any]:
    async with http.get(f"{emu.url}/_emulator/ingestion/rows") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


class TestIngestion:
    """The endpoint answers as the service does, and keeps what it accepted."""

    async def test_gzip_and_plain_bodies_are_kept_in_order(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A gzipped and a plain JSON array both get 204, and their rows are kept in order."""
        token = await token_for(http, emu, MONITOR_SCOPE)
        first = orjson.dumps([{"EventId": "a"}, {"EventId": "b"}])
        status, _, _ = await post(http, emu, gzip.compress(first), token=token, gzipped=True)
        assert status == 204
        status, _, _ = await post(http, emu, orjson.dumps([{"EventId": "c"}]), token=token)
        assert status == 204
        truth = await ground_truth(http, emu)
        assert truth["streams"] == [
            {
                "rule_id": EMULATOR_RULE_ID,
                "stream": EMULATOR_STREAM,
                "rows": [{"EventId": "a"}, {"EventId": "b"}, {"EventId": "c"}],
            }
        ]
        assert truth["requests"] == 2

    @pytest.mark.parametrize(
        "scope", ["https://management.azure.com/.default", "https://monitor.azure.us/.default"]
    )
    async def test_a_token_for_another_audience_is_refused(
        self, emu: Emulator, http: aiohttp.ClientSession, scope: str
    ) -> None:
        """A valid token issued for ARM or another cloud's monitor audience gets 401."""
        token = await token_for(http, emu, scope)
        status, headers, body = await post(http, emu, b"[{}]", token=token)
        assert status == 401
        assert body["error"]["code"] == "InvalidAudience"
        assert "https://monitor.azure.com" in body["error"]["message"]
        assert "WWW-Authenticate" in headers
        assert (await ground_truth(http, emu))["streams"] == []

    async def test_no_token_and_a_forged_token_are_refused(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A missing or foreign token gets 401 before anything is read."""
        async with http.post(emu.url + PATH, data=b"[]") as response:
            assert response.status == 401
        status, _, body = await post(http, emu, b"[]", token="emu1.eyJwIjoieCJ9.forged")
        assert status == 401
        assert body["error"]["code"] == "InvalidAuthenticationToken"

    async def test_unknown_rule_and_stream_are_404(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """A rule id or stream the emulator does not know gets 404 with the service's shape."""
        token = await token_for(http, emu, MONITOR_SCOPE)
        rule = f"/dataCollectionRules/dcr-ffff/streams/{EMULATOR_STREAM}?{API}"
        status, _, body = await post(http, emu, b"[{}]", token=token, path=rule)
        assert status == 404
        assert body["error"]["code"] == "NotFound"
        assert "dcr-ffff" in body["error"]["message"]
        stream = f"/dataCollectionRules/{EMULATOR_RULE_ID}/streams/Custom-Other_CL?{API}"
        status, _, body = await post(http, emu, b"[{}]", token=token, path=stream)
        assert status == 404
        assert body["error"]["code"] == "InvalidStream"
        assert "Custom-Other_CL" in body["error"]["message"]

    async def test_bodies_over_one_mib_are_413_as_sent_or_unzipped(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """Over 1 MiB on the wire, or a small gzip that unzips past 1 MiB, gets 413."""
        token = await token_for(http, emu, MONITOR_SCOPE)
        big = orjson.dumps([{"Padding": "x" * (1024 * 1024)}])
        status, _, body = await post(http, emu, big, token=token)
        assert status == 413
        assert body["error"]["code"] == "ContentLengthLimitExceeded"
        zipped = gzip.compress(big)
        assert len(zipped) < 64 * 1024
        status, _, _ = await post(http, emu, zipped, token=token, gzipped=True)
        assert status == 413
        just_fits = orjson.dumps([{"P": "x" * (1024 * 1024 - 10)}])
        assert len(just_fits) == 1024 * 1024
        status, _, _ = await post(http, emu, just_fits, token=token)
        assert status == 204
        truth = await ground_truth(http, emu)
        assert truth["refused"] == {"413": 2}

    async def test_bad_bodies_are_400(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        """Not JSON, not an array of objects, or a corrupt gzip: 400, nothing kept."""
        token = await token_for(http, emu, MONITOR_SCOPE)
        for body, gzipped in ((b"{", False), (b'{"a": 1}', False), (b"[1]", False), (b"xx", True)):
            status, _, answer = await post(http, emu, body, token=token, gzipped=gzipped)
            assert status == 400, body
            assert answer["error"]["code"] == "InvalidContent"
        assert (await ground_truth(http, emu))["streams"] == []

    async def test_throttle_the_next_n_requests(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """`throttle_next = 2` answers the next two requests 429 with Retry-After, then 204."""
        token = await token_for(http, emu, MONITOR_SCOPE)
        async with http.put(
            f"{emu.url}/_emulator/ingestion/faults", json={"throttle_next": 2}
        ) as response:
            assert response.status == 200
        statuses = []
        for _ in range(3):
            status, headers, body = await post(http, emu, b"[{}]", token=token)
            statuses.append(status)
            if status == 429:
                assert headers["Retry-After"] == "7"
                assert body["error"]["code"] == "TooManyRequests"
        assert statuses == [429, 429, 204]
        async with http.get(f"{emu.url}/_emulator/ingestion/faults") as response:
            faults = await response.json()
        assert faults["injected_429"] == 2
        assert faults["throttle_next"] == 0

    async def test_a_throttle_rate_of_one_refuses_everything(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """`throttle_rate = 1` answers every request 429; 0 again lets them through."""
        token = await token_for(http, emu, MONITOR_SCOPE)
        url = f"{emu.url}/_emulator/ingestion/faults"
        async with http.put(url, json={"throttle_rate": 1, "retry_after_s": 3}):
            pass
        status, headers, _ = await post(http, emu, b"[{}]", token=token)
        assert (status, headers["Retry-After"]) == (429, "3")
        async with http.put(url, json={"throttle_rate": 0}):
            pass
        status, _, _ = await post(http, emu, b"[{}]", token=token)
        assert status == 204

    @pytest.mark.parametrize(
        "change",
        [{"throttle_next": -1}, {"throttle_rate": 2}, {"nope": 1}, {"throttle_next": 1.5}],
    )
    async def test_bad_fault_settings_are_400(
        self, emu: Emulator, http: aiohttp.ClientSession, change: dict[str, object]
    ) -> None:
        """An unknown fault or a value out of range is refused and named."""
        async with http.put(f"{emu.url}/_emulator/ingestion/faults", json=change) as response:
            assert response.status == 400
            assert next(iter(change)) in await response.text()

    async def test_a_minted_token_for_the_monitor_audience_is_accepted(
        self, emu: Emulator, http: aiohttp.ClientSession
    ) -> None:
        """`POST /_emulator/tokens` with an audience gives a token the endpoint (and ARM) takes;
        without one, the endpoint refuses it."""
        url = f"{emu.url}/_emulator/tokens"
        async with http.post(url, json={"audience": "https://monitor.azure.com"}) as response:
            token = (await response.json())["token"]
        status, _, _ = await post(http, emu, b"[{}]", token=token)
        assert status == 204
        async with http.get(
            f"{emu.url}/subscriptions?api-version=2022-12-01",
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200
        async with http.post(url, json={}) as response:
            plain = (await response.json())["token"]
        status, _, body = await post(http, emu, b"[{}]", token=plain)
        assert (status, body["error"]["code"]) == (401, "InvalidAudience")
        async with http.post(url, json={"audience": 3}) as response:
            assert response.status == 400
