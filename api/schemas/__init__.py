"""Request and response models of the REST resources: one module per router (`api.schemas.auth` for
`api.routers.auth`, ...), the shared bits in `api.schemas.common`. Paging lives in `api.paging`."""
