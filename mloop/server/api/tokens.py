"""``/api/v1/tokens``: token management for admins (create: the secret is in that one answer only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from mloop.auth import Principal, create_token
from mloop.server.deps import check_id, jsonable, principal, workspace
from mloop.workspace import Workspace

router = APIRouter(prefix="/tokens", tags=["tokens"])
Admin = Annotated[Principal, Depends(principal("admin"))]
Ws = Annotated[Workspace, Depends(workspace)]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200)
    role: Literal["viewer", "feedback", "editor", "admin"]


@router.get("", summary="Every token (never a secret or a hash); admins")
def list_tokens(ws: Ws, _: Admin) -> dict[str, Any]:
    return {"tokens": [jsonable(t) for t in ws.tokens.list_tokens()]}


@router.post("", summary="Create a token; its secret is returned in this answer only; admins")
def new_token(body: NewToken, ws: Ws, who: Admin) -> dict[str, Any]:
    secret, token = create_token(ws.tokens, body.name, body.role, created_by=who.name)
    ws.tokens.record_audit(
        who.name, "token.create", f"token:{token.id}", details={"name": token.name, "role": token.role}
    )
    return jsonable(token) | {"token": secret}


@router.post("/{token_id}/revoke", summary="Revoke a token; admins")
def revoke(token_id: str, request: Request, ws: Ws, who: Admin) -> dict[str, Any]:
    token = ws.tokens.revoke_token(check_id(token_id, "token_id"))
    request.app.state.tokens.clear()  # refused at once by this process; by the others within the TTL
    ws.tokens.record_audit(who.name, "token.revoke", f"token:{token.id}", details={"name": token.name})
    return jsonable(token)
