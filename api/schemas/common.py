"""What every schema module shares: the row-reading base model and UTC datetimes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from weft.clock import as_utc

UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
"""A datetime returned as aware UTC (ISO 8601 with `Z`), whether the row held a naive or aware value."""


class Out(BaseModel):
    """A response model read from a table row."""

    model_config = ConfigDict(from_attributes=True)
