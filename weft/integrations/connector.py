"""A user's RelayCore connector: base URL + API key, kept together in the Prefect Secret block
`weft-relaycore-<user id>` (never in weft's tables, step data or logs).

Per user, like every other credential in weft (`Credential` rows and their Secret blocks): every resource
belongs to a user, a dealership's key must not be usable by another tenant, and the workflow that sends
recommendations runs as its owner and reads the owner's connector. `WEFT_RELAYCORE_URL` is only the default
base URL a user may leave out when configuring.

The functions are sync (Prefect's Secret API and httpx); async callers run them in a thread.
"""

from __future__ import annotations

import json
import logging

from pydantic import BaseModel, SecretStr

from weft.errors import Invalid, NotFound, Refused, Unavailable, UpstreamError
from weft.integrations.relaycore import Receipt, RecommendationBatch, RelayCoreClient, VehiclePage
from weft.schemas.integrations import ConnectorStatus
from weft.secret_blocks import block_name, remove_secret, save_secret
from weft.settings import get_settings

log = logging.getLogger(__name__)
NOT_CONFIGURED = "INTEGRATION_NOT_CONFIGURED"
KIND = "relaycore"


class Connector(BaseModel):
    base_url: str
    api_key: SecretStr  # SecretStr: a log line or repr shows '**********'


def block_of(user_id: str) -> str:
    return block_name(KIND, user_id)


def load(user_id: str) -> Connector | None:
    """The user's connector, or None when none is configured; `Unavailable` when Prefect is unreachable."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block_of(user_id)).get()
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None
    except Exception as exc:
        log.exception("could not read the RelayCore connector of user %s", user_id)
        raise Unavailable("could not read the RelayCore connector from Prefect; is the server up?") from exc
    return Connector.model_validate(json.loads(value) if isinstance(value, str) else value)


def require(user_id: str) -> Connector:
    """The user's connector; `Refused` (409, INTEGRATION_NOT_CONFIGURED) when there is none."""
    connector = load(user_id)
    if connector is None:
        raise Refused(NOT_CONFIGURED, "RelayCore is not configured: PUT /api/v1/integrations/relaycore "
                                      "{base_url, api_key} first", {"integration": KIND})
    return connector


def client(connector: Connector) -> RelayCoreClient:
    return RelayCoreClient(connector.base_url, connector.api_key.get_secret_value(),
                           timeout=get_settings().relaycore_timeout_seconds)


def configure(user_id: str, base_url: str | None, api_key: str) -> ConnectorStatus:
    """Check the key by listing one vehicle, then save the connector (replacing an earlier one). A key
    RelayCore refuses is `Invalid` (422); an unreachable RelayCore is `UpstreamError` (502); either way
    nothing is saved."""
    base_url = (base_url or get_settings().relaycore_url or "").rstrip("/")
    if not base_url:
        raise Invalid("base_url is required (no WEFT_RELAYCORE_URL default is set)",
                      [{"field": "base_url", "message": "required"}])
    connector = Connector(base_url=base_url, api_key=SecretStr(api_key))
    try:
        with client(connector) as relaycore:
            relaycore.vehicles(limit=1, offset=0)
    except UpstreamError as exc:
        if exc.details.get("status") in (401, 403):
            raise Invalid(f"RelayCore refused the API key: {exc.details.get('message')}",
                          [{"field": "api_key", "message": "refused by RelayCore"}],
                          {"upstream": exc.details}, code="INVALID_CREDENTIALS") from exc
        raise
    save_secret(block_of(user_id), json.dumps({"base_url": base_url, "api_key": api_key}))
    log.info("RelayCore connector of user %s saved (%s)", user_id, base_url)
    return ConnectorStatus(configured=True, base_url=base_url)


def status(user_id: str) -> ConnectorStatus:
    connector = load(user_id)
    return ConnectorStatus(configured=connector is not None, base_url=connector.base_url if connector else None)


def remove(user_id: str) -> None:
    """Delete the user's connector (its Secret block); `NotFound` when none is configured."""
    if load(user_id) is None:
        raise NotFound(f"no RelayCore connector is configured for user {user_id}",
                       {"resource": "integration", "id": KIND})
    remove_secret(block_of(user_id))


def vehicles(user_id: str, limit: int, offset: int) -> VehiclePage:
    """One page of the user's RelayCore vehicles, read live."""
    with client(require(user_id)) as relaycore:
        return relaycore.vehicles(limit=limit, offset=offset)


def send(user_id: str, batch: RecommendationBatch) -> Receipt:
    """Send a VIN's recommendations to the user's RelayCore; its receipt."""
    with client(require(user_id)) as relaycore:
        return relaycore.send_recommendations(batch)
