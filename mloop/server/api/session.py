"""``/api/v1/whoami``: the caller's token name and role (what the UI shows, and what it may offer)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mloop.auth import Principal
from mloop.server.deps import principal

router = APIRouter(tags=["session"])


@router.get("/whoami", summary="The caller's token name and role")
def whoami(who: Annotated[Principal, Depends(principal("viewer"))]) -> dict[str, Any]:
    return {"name": who.name, "role": who.role}
