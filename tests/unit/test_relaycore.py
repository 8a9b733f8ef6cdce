"""RelayCore's pieces without the platform: document 000's prompt, the deterministic answer parser
(items, priorities, due dates, costs), and the client against the stand-in over real HTTP (paging, the
Bearer key, errors as UpstreamError with the URL and RelayCore's status and message)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tests.helpers.relaycore import VEHICLES, RelayCoreStandIn
from weft.errors import UpstreamError
from weft.integrations.recommendations import build_prompt, parse_answer, split_items
from weft.integrations.relaycore import Recommendation, RecommendationBatch, RelayCoreClient, Vehicle
from weft.net import free_port

NOW = datetime(2025, 8, 1, 16, 0, tzinfo=UTC)
CAMRY = Vehicle.model_validate(VEHICLES[0])  # 35000 miles, last service 2025-01-15 at 30000
# document 000's predict answer for the Camry prompt
ANSWER = (
    "Based on the information provided, here are my service recommendations for your 2022 Toyota Camry with "
    "35,000 miles:\n\n1. **Brake Inspection**: The strange noise during braking suggests potential brake issues. "
    "I recommend a complete brake system inspection, including:\n   - Brake pad thickness measurement\n   - Brake "
    "rotor condition assessment\n\n2. **Regular Maintenance**: Since you're at 35,000 miles and your last service "
    "was at 30,000 miles, you're due for:\n   - Oil and filter change (synthetic oil recommended for your "
    "vehicle)\n   - Tire rotation\n   - Brake fluid check\n\n3. **Multi-point Inspection**: A general inspection "
    "of other systems including:\n   - Battery health check\n\nThe noise while braking is most likely due to worn "
    "brake pads or a glazed surface on the rotors.")


def vehicle(**changes) -> Vehicle:
    return CAMRY.model_copy(update=changes)


def test_the_prompt_is_document_000s():
    assert build_prompt(CAMRY, "Strange noise when braking") == (
        "Vehicle: Toyota Camry 2022\nMileage: 35000\nLast Service: 2025-01-15\nLast Service Mileage: 30000\n"
        "Customer Concern: Strange noise when braking\n\nWhat service recommendations would you provide?")
    unknown = build_prompt(vehicle(last_service_date=None, last_service_mileage=None), None)
    assert "Last Service: unknown\nLast Service Mileage: unknown\nCustomer Concern: None reported\n\n" in unknown


def test_numbered_items_become_recommendations_in_the_models_words():
    found = parse_answer(ANSWER, CAMRY, now=NOW)
    assert [r.description.split(":")[0] for r in found] == ["Brake Inspection", "Regular Maintenance",
                                                            "Multi-point Inspection"]
    assert found[0].description.startswith("Brake Inspection: The strange noise during braking suggests")
    assert found[0].details["notes"] == ["Brake pad thickness measurement", "Brake rotor condition assessment"]
    assert [r.priority for r in found] == ["high", "medium", "medium"]  # brakes in a routine list do not count
    # brake work within a week; the service is due (5000 of 5000 miles): within two weeks
    assert [r.due_date for r in found] == [datetime(2025, 8, 8, tzinfo=UTC)] + [datetime(2025, 8, 15, tzinfo=UTC)] * 2
    assert found[1].details | {"notes": None} == {"current_mileage": 35000, "last_service_mileage": 30000,
                                                  "miles_since_service": 5000, "service_interval": 5000,
                                                  "source": "model", "notes": None}
    # the model's introduction and closing remark are not recommendations
    assert not any("Based on" in r.description or "glazed" in r.description for r in found)


def test_bullets_then_paragraphs_when_there_are_no_numbers():
    bullets = "Here is what I suggest:\n- Replace the cabin air filter, about $45\n  more text on it\n" \
              "* Check engine light: read the codes\n"
    items = split_items(bullets)
    assert items == [("Replace the cabin air filter, about $45", ["more text on it"]),
                     ("Check engine light: read the codes", [])]
    found = parse_answer(bullets, CAMRY, now=NOW)
    assert [(r.priority, r.estimated_cost) for r in found] == [("medium", 45.0), ("high", None)]
    paragraphs = parse_answer("rotate tires and align\n\nOptional: wax the paint, $1,250.50\n", CAMRY, now=NOW)
    assert [r.description for r in paragraphs] == ["rotate tires and align", "Optional: wax the paint, $1,250.50"]
    assert [r.priority for r in paragraphs] == ["medium", "low"] and paragraphs[1].estimated_cost == 1250.5
    assert parse_answer("  \n\n ", CAMRY, now=NOW) == []


@pytest.mark.parametrize(("changes", "text", "days"), [
    ({}, "Brake pads are thin", 7),  # high priority: a week
    ({"mileage": 41000}, "Oil change", 7),  # overdue by a whole interval more: a week
    ({"mileage": 36000}, "Oil change", 14),  # due or overdue: two weeks
    ({"last_service_mileage": None}, "Oil change", 14),  # unknown history: treated as due
    # 2000 miles in 50 days = 40/day; 3000 miles left = 75 days
    ({"mileage": 32000, "last_service_date": date(2025, 6, 12)}, "Oil change", 75),
    ({"mileage": 30100, "last_service_date": date(2025, 7, 31)}, "Oil change", 49),  # 100 miles/day: 4900 left
    ({"mileage": 30010, "last_service_date": date(2025, 1, 1)}, "Oil change", 180),  # capped at six months
    ({"mileage": 36000}, "Consider new wiper blades", 30),  # low priority: not before a month
])
def test_due_dates_follow_the_mileage_since_the_last_service(changes, text, days):
    (found,) = parse_answer(text, vehicle(**changes), now=NOW)
    assert (found.due_date.date() - NOW.date()).days == days


def test_the_client_pages_and_sends_with_the_bearer_key():
    with RelayCoreStandIn("k1") as relaycore, RelayCoreClient(relaycore.base_url, "k1") as client:
        page = client.vehicles(limit=1, offset=1)
        assert page.meta.total == 3 and [v.vin for v in page.data] == [VEHICLES[1]["vin"]]
        assert [v.id for v in client.all_vehicles(limit=5, page_size=2)] == [v["id"] for v in VEHICLES]
        assert [v.id for v in client.all_vehicles(limit=2, offset=1)] == [v["id"] for v in VEHICLES[1:3]]
        rec = Recommendation(description="Oil change", due_date=NOW)
        receipt = client.send_recommendations(RecommendationBatch(vin=VEHICLES[0]["vin"], recommendations=[rec]))
        assert receipt.status == "sent" and receipt.recommendations_count == 1
        assert relaycore.received == [{"vin": VEHICLES[0]["vin"], "recommendations": [
            {"description": "Oil change", "priority": "medium", "details": {}, "estimated_cost": None,
             "due_date": "2025-08-01T16:00:00Z"}]}]
        assert {r["authorization"] for r in relaycore.requests} == {"Bearer k1"}
        assert [r["path"] for r in relaycore.requests[1:3]] == ["/api/v1/vehicles?limit=2&offset=0",
                                                                "/api/v1/vehicles?limit=2&offset=2"]


def test_client_errors_name_the_url_and_relaycores_answer():
    with RelayCoreStandIn("right") as relaycore, RelayCoreClient(relaycore.base_url, "wrong") as client:
        with pytest.raises(UpstreamError) as refused:
            client.vehicles()
    assert refused.value.details == {"provider": "relaycore", "url": f"{relaycore.base_url}/vehicles",
                                     "status": 401, "message": "invalid API key"}
    assert "wrong" not in str(refused.value.details)
    closed = f"http://127.0.0.1:{free_port()}"
    with RelayCoreClient(closed, "k", timeout=2) as client, pytest.raises(UpstreamError) as unreachable:
        client.vehicles()
    assert unreachable.value.details["url"] == f"{closed}/vehicles" and "status" not in unreachable.value.details
