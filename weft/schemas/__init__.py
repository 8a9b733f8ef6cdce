"""Request and response models of the REST resources, shared by the API and its Python client
(`weft.client`): one module per router (`weft.schemas.auth` for `api.routers.auth`, ...), the shared bits
(UTC datetimes, a page of a list) in `weft.schemas.common`. They import only pydantic and weft's light
modules, so a client loads neither torch, Prefect nor the database layer."""
